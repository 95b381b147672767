//! Failures with the datastore in the path: etcd unreachable or hung (code 11, within the
//! timeout), the pool exhausted, the plugin killed mid-ADD. Each leaves nothing behind, or
//! leaves what the next DEL removes.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use std::time::{Duration, Instant};

use common::store::StoreHost;
use common::{expected_host_veth, Fixture};
use serde_json::json;
use testkit::Netns;

/// Only `lo` in the container.
#[track_caller]
fn container_is_clean(ns: &Netns) {
    let links = Fixture::ip_json(ns, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "container has more than lo: {links}");
}

#[test]
fn unreachable_etcd_is_code_11_fast_and_leaves_nothing() {
    let h = StoreHost::new("unrch");
    let mut conf = h.conf(Some("1.0.0"), "net-u");
    // Nothing listens on port 1 of the host's loopback.
    conf["etcd_endpoints"] = json!("http://127.0.0.1:1");
    let start = Instant::now();
    let run = h.run("ADD", "u1", "eth0", &conf);
    assert_eq!(run.code(), 11, "{}", run.stdout);
    assert!(run.msg().contains("127.0.0.1:1"), "names the endpoint: {}", run.msg());
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert!(h.fx.host_calis().is_empty(), "{:?}", h.fx.host_calis());
    container_is_clean(&h.fx.container);

    // DEL still removes the veth of an earlier attachment, then reports the datastore.
    let good = h.conf(Some("1.0.0"), "net-u");
    h.add_pool("pool-u", "10.180.0.0/24", None, false);
    h.run("ADD", "u2", "eth0", &good).ok();
    let run = h.run("DEL", "u2", "eth0", &conf);
    assert_eq!(run.code(), 11);
    assert!(h.fx.host_calis().is_empty(), "veth removed although etcd is unreachable");
    // The retry, with etcd back, finishes the job.
    h.run("DEL", "u2", "eth0", &good).ok();
    h.assert_nothing_left();
}

#[test]
fn hung_etcd_is_code_11_within_etcd_timeout() {
    let mut h = StoreHost::new("hung");
    h.add_pool("pool-h", "10.181.0.0/24", None, false);
    let mut conf = h.conf(Some("1.0.0"), "net-h");
    conf["etcd_timeout"] = json!(2);
    h.etcd.freeze();
    let start = Instant::now();
    let run = h.run("ADD", "h1", "eth0", &conf);
    let took = start.elapsed();
    h.etcd.thaw();
    assert_eq!(run.code(), 11, "{}", run.stdout);
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(4), "took {took:?}");
    assert!(run.msg().contains("etcd"), "{}", run.msg());
    assert!(h.fx.host_calis().is_empty());
    container_is_clean(&h.fx.container);
    h.assert_nothing_left();

    // The default bound is 10 s: without etcd_timeout the same ADD gives up within it.
    let conf = h.conf(Some("1.0.0"), "net-h");
    h.etcd.freeze();
    let start = Instant::now();
    let run = h.run("ADD", "h2", "eth0", &conf);
    let took = start.elapsed();
    h.etcd.thaw();
    assert_eq!(run.code(), 11);
    assert!(took < Duration::from_secs(12), "took {took:?}");
    h.assert_nothing_left();
}

#[test]
fn exhausted_pool_is_a_clear_error_and_leaves_nothing() {
    let h = StoreHost::new("exh");
    // Four addresses in all.
    h.add_pool("tiny", "10.182.0.0/30", Some(30), false);
    let conf = h.conf(Some("1.0.0"), "net-x");
    let containers: Vec<Netns> = (0..5).map(|i| Netns::new(&format!("x{i}"))).collect();
    for (i, ns) in containers.iter().take(4).enumerate() {
        h.run_in("ADD", &format!("x{i}"), "eth0", Some(ns), &conf).ok();
    }
    let run = h.run_in("ADD", "x4", "eth0", Some(&containers[4]), &conf);
    assert!(!run.success);
    assert!(run.msg().contains("pool exhausted"), "{}", run.msg());
    assert!(run.msg().contains("10.182.0.0/30"), "names the pool: {}", run.msg());
    container_is_clean(&containers[4]);
    assert!(!h.fx.host_calis().contains(&expected_host_veth("x4", "eth0")));
    assert_eq!(h.fx.host_calis().len(), 4);
    assert_eq!(h.endpoint_keys().len(), 4);
    let report = h.check();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.counts.allocations, 4);
    for (i, ns) in containers.iter().take(4).enumerate() {
        h.run_in("DEL", &format!("x{i}"), "eth0", Some(ns), &conf).ok();
    }
    h.assert_nothing_left();
}

#[test]
fn del_cleans_up_after_add_killed_at_any_point() {
    let h = StoreHost::new("kill");
    h.add_pool("pool-k", "10.183.0.0/24", None, false);
    let conf = h.conf(Some("1.0.0"), "net-k");
    let netns = h.fx.container.path();
    let netns = netns.to_str().unwrap();
    let mut outcomes = Vec::new();
    // A debug build's ADD takes some tens of milliseconds: kills spread over it land before,
    // during and after the allocation, the veth and the endpoint write.
    for (i, delay_ms) in [0u64, 2, 4, 6, 8, 10, 13, 16, 20, 25, 30, 40, 60].into_iter().enumerate()
    {
        let id = format!("k{i}");
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        let mut child = h.fx.spawn_env(&env, &conf.to_string());
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        outcomes.push((
            delay_ms,
            status.success(),
            h.fx.host_calis().len(),
            h.endpoint_keys().len(),
            h.allocated(),
        ));
        h.run("DEL", &id, "eth0", &conf).ok();
        h.assert_attachments_gone();
        container_is_clean(&h.fx.container);
    }
    eprintln!("(delay ms, finished, veths, endpoints, allocations) before DEL: {outcomes:?}");
    // Kills landed at different stages, including after something was made.
    assert!(
        outcomes.iter().any(|o| o.2 + o.3 + o.4 > 0),
        "no kill left anything to clean: {outcomes:?}"
    );
    // The attachment can be made again afterwards, and that allocation confirms a block
    // claim a kill may have left pending, so IPAM ends up clean.
    h.run("ADD", "again", "eth0", &conf).ok();
    h.run("DEL", "again", "eth0", &conf).ok();
    h.assert_nothing_left();
}
