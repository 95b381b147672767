//! `tabby-ipam` as other plugins use it: the reference `ptp` plugin delegating its IPAM to
//! it, and the IPAM verbs (VERSION, CHECK, GC, STATUS) called directly.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use std::path::Path;

use common::store::{tabby_ipam_dir, StoreHost};
use common::Fixture;
use serde_json::{json, Value};

const PTP: &str = "/usr/lib/cni/ptp";

fn cni_path() -> String {
    format!("{}:/usr/lib/cni", tabby_ipam_dir().display())
}

/// A ptp config whose IPAM is tabby-ipam against the host's etcd.
fn ptp_conf(h: &StoreHost, version: &str, name: &str) -> Value {
    let mut conf = h.conf(Some(version), name);
    conf["type"] = json!("ptp");
    conf
}

fn run(h: &StoreHost, program: &Path, verb: &str, id: &str, conf: &Value) -> common::Run {
    let netns = h.fx.container.path();
    let path = cni_path();
    h.fx.run_program(
        program,
        &[
            ("CNI_COMMAND", verb),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns.to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", &path),
        ],
        &conf.to_string(),
    )
}

#[test]
fn ptp_with_tabby_ipam() {
    let h = StoreHost::new("ptp");
    h.add_pool("pool-p", "10.195.0.0/16", None, false);
    let conf = ptp_conf(&h, "1.0.0", "ptpnet");
    let result = run(&h, Path::new(PTP), "ADD", "p1", &conf).ok().json();
    let address = result["ips"][0]["address"].as_str().unwrap();
    let (ip, prefix) = address.split_once('/').unwrap();
    assert_eq!(prefix, "26", "the block's prefix, which ptp needs: {result}");
    assert_eq!(result["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(h.holder(ip.parse().unwrap()).as_deref(), Some("ptpnet.p1.eth0"));

    // ptp configured the container; the host reaches it through ptp's host route.
    let addrs = Fixture::ip_json(&h.fx.container, &["-4", "addr", "show", "eth0"]);
    assert_eq!(addrs[0]["addr_info"][0]["local"], ip, "{addrs}");
    let ping = h.fx.host.sh(&format!("busybox ping -c 1 -W 2 {ip}"));
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));

    // ptp's CHECK calls tabby-ipam's CHECK with the prevResult.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    run(&h, Path::new(PTP), "CHECK", "p1", &with_prev).ok();
    // tabby-ipam's CHECK notices an address it does not hold for this attachment.
    let mut wrong = with_prev.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.195.255.1/26");
    let bad = run(&h, &common::tabby_ipam(), "CHECK", "p1", &wrong);
    assert_eq!(bad.code(), 999);
    assert!(bad.msg().contains("10.195.255.1"), "{}", bad.msg());

    run(&h, Path::new(PTP), "DEL", "p1", &conf).ok();
    run(&h, Path::new(PTP), "DEL", "p1", &conf).ok();
    let report = h.check();
    assert_eq!(report.counts.allocations, 0, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn ipam_verbs_called_directly() {
    let h = StoreHost::new("ipamv");
    h.add_pool("pool-v", "10.196.0.0/24", None, false);
    let ipam = &common::tabby_ipam();
    let version = h.fx.run_program(ipam, &[("CNI_COMMAND", "VERSION")], "{}").ok().json();
    assert_eq!(version["supportedVersions"].as_array().unwrap().len(), 7);

    // ADD answers addresses only: no interfaces, nothing made in the container.
    let conf = ptp_conf(&h, "1.1.0", "direct");
    let r = run(&h, ipam, "ADD", "d1", &conf).ok().json();
    assert!(r.get("interfaces").is_none(), "{r}");
    assert_eq!(r["ips"].as_array().unwrap().len(), 1);
    assert_eq!(Fixture::ip_json(&h.fx.container, &["link", "show"]).as_array().unwrap().len(), 1);
    assert_eq!(h.allocated(), 1);

    let status = h.fx.run_program(ipam, &[("CNI_COMMAND", "STATUS")], &conf.to_string());
    assert_eq!(status.ok().stdout, "");

    // GC with d1 no longer listed releases it; nothing else is touched.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let path = cni_path();
    h.fx.run_program(ipam, &[("CNI_COMMAND", "GC"), ("CNI_PATH", &path)], &gc.to_string()).ok();
    assert_eq!(h.allocated(), 0);
    assert!(h.check().is_clean());

    // DEL of what is already gone is success.
    run(&h, ipam, "DEL", "d1", &conf).ok();
}
