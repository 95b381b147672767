//! GC and STATUS (spec 1.1.0) with in-process IPAM: GC removes exactly the attachments of
//! this network on this node that the runtime no longer lists; STATUS says whether an ADD
//! could succeed now.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use common::expected_host_veth;
use common::store::StoreHost;
use serde_json::{json, Value};
use testkit::Netns;

fn gc(h: &StoreHost, conf: &Value) -> common::Run {
    h.fx.run_env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &conf.to_string())
}

fn status(h: &StoreHost, conf: &Value) -> common::Run {
    h.fx.run_env(&[("CNI_COMMAND", "STATUS")], &conf.to_string())
}

#[test]
fn gc_removes_only_attachments_the_runtime_no_longer_knows() {
    let h = StoreHost::new("gc");
    h.add_pool("pool-g", "10.190.0.0/24", None, false);
    let net = h.conf(Some("1.1.0"), "gcnet");
    // A network whose name starts like ours: its handles begin "gcnet." too.
    let lookalike = h.conf(Some("1.1.0"), "gcnet.x");
    let other = h.conf(Some("1.1.0"), "othernet");
    let ns: Vec<Netns> = (0..5).map(|i| Netns::new(&format!("g{i}"))).collect();
    let attach = [("g0", &net), ("g1", &net), ("g2", &net), ("g3", &lookalike), ("g4", &other)];
    for (i, (id, conf)) in attach.iter().enumerate() {
        h.run_in("ADD", id, "eth0", Some(&ns[i]), conf).ok();
    }
    assert_eq!(h.allocated(), 5);

    // Without the list of live attachments GC refuses rather than collecting everything.
    let run = gc(&h, &net);
    assert_eq!(run.code(), 7, "{}", run.stdout);
    assert!(run.msg().contains("cni.dev/valid-attachments"), "{}", run.msg());
    assert_eq!(h.allocated(), 5);

    let mut req = net.clone();
    req["cni.dev/valid-attachments"] = json!([{"containerID": "g0", "ifname": "eth0"}]);
    assert_eq!(gc(&h, &req).ok().stdout, "");
    let mut calis = h.fx.host_calis();
    calis.sort();
    let mut want: Vec<String> =
        ["g0", "g3", "g4"].iter().map(|id| expected_host_veth(id, "eth0")).collect();
    want.sort();
    assert_eq!(calis, want, "g1 and g2 collected, the others kept");
    assert_eq!(h.endpoint_keys().len(), 3);
    assert_eq!(h.allocated(), 3);
    let report = h.check();
    assert!(report.is_clean(), "{report:?}");
    // The kept attachments still pass CHECK.
    for (i, (id, conf)) in attach.iter().enumerate() {
        if ["g0", "g3", "g4"].contains(id) {
            h.run_in("CHECK", id, "eth0", Some(&ns[i]), conf).ok();
        }
    }
    // The older key name works too, and a second GC with everything listed is a no-op.
    let mut req = net.clone();
    req["cni.dev/attachments"] = json!([{"containerID": "g0", "ifname": "eth0"}]);
    gc(&h, &req).ok();
    assert_eq!(h.allocated(), 3);

    for (i, (id, conf)) in attach.iter().enumerate() {
        h.run_in("DEL", id, "eth0", Some(&ns[i]), conf).ok();
    }
    h.assert_nothing_left();
}

#[test]
fn status_reports_etcd_and_pool_room() {
    let h = StoreHost::new("stat");
    let conf = h.conf(Some("1.1.0"), "statnet");
    let run = status(&h, &conf);
    assert_eq!(run.code(), 50, "no pool yet: {}", run.stdout);
    assert!(run.msg().contains("no IPv4 pool"), "{}", run.msg());

    h.add_pool("one", "10.191.0.0/32", Some(32), false);
    assert_eq!(status(&h, &conf).ok().stdout, "");
    h.run("ADD", "st1", "eth0", &conf).ok();
    let run = status(&h, &conf);
    assert_eq!(run.code(), 50, "the pool is full: {}", run.stdout);

    let mut unreachable = conf.clone();
    unreachable["etcd_endpoints"] = json!("http://127.0.0.1:1");
    let run = status(&h, &unreachable);
    assert_eq!(run.code(), 50);
    assert!(run.msg().contains("127.0.0.1:1"), "{}", run.msg());

    // STATUS does not exist before 1.1.0.
    let old = h.conf(Some("1.0.0"), "statnet");
    assert_eq!(status(&h, &old).code(), 1);
    h.run("DEL", "st1", "eth0", &conf).ok();
    h.assert_nothing_left();
}
