//! `setup_host_side`, the Docker driver's veth: both ends made in the host namespace, the
//! host end configured and routed, the other end left down and bare for Docker to move.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

use std::net::IpAddr;

use cni_plugin::dataplane::{setup_host_side, teardown, Error, Netns as NsHandle, WorkloadLink};
use testkit::Netns;

fn link(host: &str, peer: &str) -> WorkloadLink {
    WorkloadLink {
        host_ifname: host.into(),
        container_ifname: peer.into(),
        mtu: 1480,
        addresses: vec!["10.221.0.7".parse::<IpAddr>().unwrap()],
    }
}

#[test]
fn both_ends_on_the_host_then_torn_down() {
    testkit::require_root();
    let h = Netns::new("dkh");
    let host = NsHandle::open(&h.path()).unwrap();
    let want = link("calidk0000001", "tmpdk0000001");

    let attached = setup_host_side(&host, &want).unwrap();
    assert_eq!(attached.container_ifname, "tmpdk0000001");
    let peer = h.ip_ok(["-o", "link", "show", "tmpdk0000001"]);
    assert!(peer.contains(&attached.container_mac), "{peer}");
    assert!(peer.contains("mtu 1480") && !peer.contains(",UP"), "peer left down: {peer}");
    assert!(h.ip_ok(["-4", "-o", "addr", "show", "tmpdk0000001"]).trim().is_empty());
    let hostend = h.ip_ok(["-o", "link", "show", "calidk0000001"]);
    assert!(hostend.contains("ee:ee:ee:ee:ee:ee") && hostend.contains(",UP"), "{hostend}");
    let routes = h.ip_ok(["route", "show", "proto", "112"]);
    assert!(routes.contains("10.221.0.7 dev calidk0000001 scope link"), "{routes}");
    let proxy = h.sh_ok("cat /proc/sys/net/ipv4/conf/calidk0000001/proxy_arp");
    assert_eq!(proxy.trim(), "1");

    assert!(teardown(&host, "calidk0000001").unwrap());
    let left = h.ip_ok(["-o", "link", "show"]);
    assert!(!left.contains("calidk") && !left.contains("tmpdk"), "{left}");
    assert!(h.ip_ok(["route", "show", "proto", "112"]).trim().is_empty());
}

#[test]
fn a_taken_peer_name_is_refused_and_nothing_is_made() {
    testkit::require_root();
    let h = Netns::new("dkh");
    let host = NsHandle::open(&h.path()).unwrap();
    h.ip_ok(["link", "add", "tmpdk0000002", "type", "veth", "peer", "name", "otherdk2"]);

    let err = setup_host_side(&host, &link("calidk0000002", "tmpdk0000002")).unwrap_err();
    assert!(
        matches!(err, Error::InterfaceExists { ref ifname, .. } if ifname == "tmpdk0000002"),
        "{err}"
    );
    let left = h.ip_ok(["-o", "link", "show"]);
    assert!(!left.contains("calidk0000002"), "{left}");
}
