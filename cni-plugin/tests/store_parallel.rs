//! 200 ADDs launched at once on one host, each its own plugin process against one etcd:
//! 200 distinct addresses, 200 veths, 200 endpoints; then 200 DELs at once leave nothing.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::time::Instant;

use common::store::StoreHost;
use serde_json::json;
use testkit::Netns;

const N: usize = 200;

fn launch(h: &StoreHost, verb: &str, containers: &[Netns], conf: &str) -> Vec<Child> {
    containers
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let (id, path) = (format!("par{i}"), ns.path());
            h.fx.spawn_env(
                &[
                    ("CNI_COMMAND", verb),
                    ("CNI_CONTAINERID", &id),
                    ("CNI_NETNS", path.to_str().unwrap()),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_PATH", "/usr/lib/cni"),
                ],
                conf,
            )
        })
        .collect()
}

/// Waits for every child; returns their stdouts, panicking with the first failure.
fn finish(verb: &str, children: Vec<Child>) -> Vec<String> {
    children
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let out = c.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{verb} par{i} failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
        .collect()
}

#[test]
fn two_hundred_parallel_adds_then_dels() {
    let h = StoreHost::new("par");
    h.add_pool("pool-par", "10.200.0.0/16", None, false);
    let mut conf = h.conf(Some("1.0.0"), "parnet");
    conf["log_level"] = json!("warn");
    // 200 processes on a small machine: the host lock queues them, so the bound on one
    // invocation's etcd work must cover the wait behind the others.
    conf["etcd_timeout"] = json!(120);
    let conf = conf.to_string();
    let containers: Vec<Netns> = (0..N).map(|i| Netns::new(&format!("pa{i}"))).collect();

    let start = Instant::now();
    let outputs = finish("ADD", launch(&h, "ADD", &containers, &conf));
    eprintln!("{N} parallel ADDs took {:?}", start.elapsed());
    let addresses: BTreeSet<String> = outputs
        .iter()
        .map(|o| {
            let v: serde_json::Value = serde_json::from_str(o).unwrap();
            v["ips"][0]["address"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(addresses.len(), N, "distinct addresses");
    assert_eq!(h.fx.host_calis().len(), N, "veths");
    assert_eq!(h.fx.host_tabby_routes().len(), N, "host routes");
    assert_eq!(h.endpoint_keys().len(), N, "endpoints");
    let report = h.check();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.counts.allocations, N);
    for ns in containers.iter().step_by(37) {
        let links = common::Fixture::ip_json(ns, &["link", "show"]);
        assert_eq!(links.as_array().unwrap().len(), 2, "lo and eth0: {links}");
    }

    let start = Instant::now();
    finish("DEL", launch(&h, "DEL", &containers, &conf));
    eprintln!("{N} parallel DELs took {:?}", start.elapsed());
    h.assert_nothing_left();
    for ns in &containers {
        let links = common::Fixture::ip_json(ns, &["link", "show"]);
        assert_eq!(links.as_array().unwrap().len(), 1, "only lo: {links}");
    }
}
