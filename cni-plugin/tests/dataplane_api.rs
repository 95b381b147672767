//! The dataplane as a library (as the Docker driver will use it): both namespaces opened by
//! path from the test process, so host-side work runs through the netns thread too.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

use std::net::IpAddr;

use cni_plugin::dataplane::{
    delete_detached, detach, host_veth_name, inspect, setup, teardown, Error, Netns as NsHandle,
    WorkloadLink,
};
use testkit::Netns;

fn link(id: &str, addresses: &[&str]) -> WorkloadLink {
    WorkloadLink {
        host_ifname: host_veth_name(id, "eth0"),
        container_ifname: "eth0".into(),
        mtu: 1400,
        addresses: addresses.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
    }
}

#[test]
fn setup_inspect_teardown() {
    testkit::require_root();
    let (h, c) = (Netns::new("libh"), Netns::new("libc"));
    let host = NsHandle::open(&h.path()).unwrap();
    let container = NsHandle::open(&c.path()).unwrap();
    let want = link("lib1", &["10.220.0.5", "fd00:220::5"]);

    let attached = setup(&host, &container, &want).unwrap();
    assert_eq!(attached.host_ifname, want.host_ifname);
    let shown = c.ip_ok(["-o", "link", "show", "eth0"]);
    assert!(shown.contains(&attached.container_mac), "{shown} vs {}", attached.container_mac);
    // Host sysctls were written in the host namespace opened by path, not in ours.
    let key = format!("/proc/sys/net/ipv4/conf/{}/proxy_arp", want.host_ifname);
    assert_eq!(h.sh_ok(&format!("cat {key}")).trim(), "1");
    assert!(!std::path::Path::new(&key).exists(), "no such interface in the test's own netns");

    assert_eq!(inspect(&host, &container, &want).unwrap(), Vec::<String>::new());

    h.ip_ok(["route", "del", "10.220.0.5/32"]);
    c.ip_ok(["link", "set", "eth0", "mtu", "1300"]);
    h.sh_ok(&format!("echo 0 > /proc/sys/net/ipv6/conf/{}/proxy_ndp", want.host_ifname));
    let drift = inspect(&host, &container, &want).unwrap();
    assert_eq!(drift.len(), 3, "{drift:#?}");
    assert!(drift.iter().any(|d| d.contains("host route missing: 10.220.0.5/32")), "{drift:?}");
    assert!(drift.iter().any(|d| d.contains("eth0 has MTU 1300, want 1400")), "{drift:?}");
    assert!(drift.iter().any(|d| d.contains("proxy_ndp is 0")), "{drift:?}");

    assert!(teardown(&host, &want.host_ifname).unwrap());
    assert!(!teardown(&host, &want.host_ifname).unwrap(), "second teardown finds nothing");
    let left = c.ip_ok(["-o", "link", "show"]);
    assert_eq!(left.lines().count(), 1, "{left}");
    let drift = inspect(&host, &container, &want).unwrap();
    assert!(drift.iter().any(|d| d.contains("eth0 is missing")), "{drift:?}");
    assert!(drift.iter().any(|d| d.contains("is missing")), "{drift:?}");
}

#[test]
fn detached_pair_is_cut_off_then_replaced_or_deleted() {
    testkit::require_root();
    let (h, c) = (Netns::new("deth"), Netns::new("detc"));
    let host = NsHandle::open(&h.path()).unwrap();
    let container = NsHandle::open(&c.path()).unwrap();
    let want = link("det1", &["10.221.0.5"]);
    setup(&host, &container, &want).unwrap();

    // What DEL does before it answers: our host route gone, the link down, the pair still
    // there for a reaper to delete.
    let cut = detach(&host, &want.host_ifname).unwrap().expect("the link was there");
    assert!(h.ip_ok(["route", "show", "proto", "112"]).trim().is_empty());
    let shown = h.ip_ok(["-o", "link", "show", want.host_ifname.as_str()]);
    assert!(!shown.contains(",UP"), "{shown}");
    assert!(c.ip(["link", "show", "eth0"]).status.success(), "the kernel has not deleted it yet");

    // A new attachment of the same container and ifname before the reaper ran finishes
    // the old pair's deletion instead of failing with "eth0 already exists".
    let again = setup(&host, &container, &want).unwrap();
    assert_eq!(again.host_ifname, want.host_ifname);
    assert_ne!(again.host_index, cut.index, "a new pair");
    assert!(h.ip_ok(["route", "show", "proto", "112"]).contains("10.221.0.5"));
    // The reaper of the old pair comes late: it must not touch the new one.
    delete_detached(&host, &cut).unwrap();
    assert!(inspect(&host, &container, &want).unwrap().is_empty());

    let cut = detach(&host, &want.host_ifname).unwrap().unwrap();
    delete_detached(&host, &cut).unwrap();
    assert!(!c.ip(["link", "show", "eth0"]).status.success(), "pair deleted with its host end");
    assert!(detach(&host, &want.host_ifname).unwrap().is_none());
    delete_detached(&host, &cut).unwrap();
}

#[test]
fn an_up_pair_or_a_foreign_eth0_is_never_taken_for_a_detached_one() {
    testkit::require_root();
    let (h, c) = (Netns::new("deuh"), Netns::new("deuc"));
    let host = NsHandle::open(&h.path()).unwrap();
    let container = NsHandle::open(&c.path()).unwrap();
    let want = link("det2", &["10.221.0.6"]);
    setup(&host, &container, &want).unwrap();
    // Still attached (up): a second ADD for the same attachment is refused.
    match setup(&host, &container, &want) {
        Err(Error::InterfaceExists { .. }) => {}
        other => panic!("expected InterfaceExists, got {other:?}"),
    }
    assert!(inspect(&host, &container, &want).unwrap().is_empty(), "the first one untouched");
    assert!(teardown(&host, &want.host_ifname).unwrap());
}

#[test]
fn namespace_handles_are_checked() {
    testkit::require_root();
    let gone = std::path::PathBuf::from("/var/run/netns").join(testkit::unique_name("gone", 15));
    assert!(matches!(NsHandle::open(&gone), Err(Error::NetnsMissing { .. })));
    assert!(matches!(
        NsHandle::open(std::path::Path::new("/etc/hostname")),
        Err(Error::NotANetns { .. })
    ));
    let host = NsHandle::current();
    let err = setup(&host, &NsHandle::current(), &link("same", &["10.221.0.1"])).unwrap_err();
    assert!(matches!(err, Error::SameNetns { .. }), "{err}");
}

#[test]
fn teardown_refuses_what_is_not_a_veth() {
    testkit::require_root();
    let h = Netns::new("notveth");
    let name = host_veth_name("nv1", "eth0");
    h.ip_ok(["link", "add", name.as_str(), "type", "bridge"]);
    let host = NsHandle::open(&h.path()).unwrap();
    let err = teardown(&host, &name).unwrap_err();
    assert!(matches!(err, Error::NotAVeth { .. }), "{err}");
    assert!(h.ip(["link", "show", name.as_str()]).status.success(), "the bridge survives");
}
