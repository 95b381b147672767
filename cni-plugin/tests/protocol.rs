//! The CNI protocol as the runtime sees it from outside: VERSION, error codes for bad input
//! with nothing left behind, stdout carrying exactly one JSON document, logging.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use common::{missing_netns, Fixture};
use serde_json::json;

const ALL_VERSIONS: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Asserts that a failed ADD left no veth, route, container interface or allocation.
fn assert_nothing_left(fx: &Fixture, network: &str) {
    assert!(fx.host_calis().is_empty(), "veth left: {:?}", fx.host_calis());
    assert!(fx.host_tabby_routes().is_empty(), "routes left: {:?}", fx.host_tabby_routes());
    assert!(fx.allocations(network).is_empty(), "allocation left: {:?}", fx.allocations(network));
    let links = Fixture::ip_json(&fx.container, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "container has more than lo: {links}");
}

#[test]
fn version_lists_every_version() {
    let fx = Fixture::new("ver");
    let cases = [
        ("", "1.1.0"),
        (r#"{"cniVersion":"0.2.0"}"#, "0.2.0"),
        (r#"{"cniVersion":"1.0.0"}"#, "1.0.0"),
        (r#"{"cniVersion":"7.0.0"}"#, "1.1.0"),
    ];
    for (asked, answered) in cases {
        let v = fx.run_env(&[("CNI_COMMAND", "VERSION")], asked).ok().json();
        assert_eq!(v["supportedVersions"], json!(ALL_VERSIONS), "{asked}");
        assert_eq!(v["cniVersion"], answered, "{asked}");
    }
}

#[test]
fn bad_input_gives_the_right_code_and_leaves_nothing() {
    let fx = Fixture::new("bad");
    let conf = fx.conf(Some("1.0.0"), "badnet", "10.210.0.0/24").to_string();
    let netns = fx.container.path();
    let netns = netns.to_str().unwrap();
    let full: Vec<(String, String)> = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "bad1"),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let without = |var: &str| -> Vec<(String, String)> {
        full.iter().filter(|(k, _)| k != var).cloned().collect()
    };
    let with = |var: &str, value: &str| -> Vec<(String, String)> {
        full.iter()
            .map(|(k, v)| (k.clone(), if k == var { value.to_owned() } else { v.clone() }))
            .collect()
    };
    let gone = missing_netns();
    let gone = gone.to_str().unwrap();
    let unknown_version = conf.replace("\"1.0.0\"", "\"0.9.9\"");
    let bad_mtu = conf.replace("\"name\"", "\"mtu\":10,\"name\"");
    // (what, environment, stdin, expected code, text the message must contain)
    type Case<'a> = (&'a str, Vec<(String, String)>, String, u64, &'a str);
    let cases: Vec<Case> = vec![
        ("malformed JSON", full.clone(), "{\"name\": ".into(), 6, "decode"),
        ("unknown cniVersion", full.clone(), unknown_version, 1, "0.9.9"),
        ("no CNI_CONTAINERID", without("CNI_CONTAINERID"), conf.clone(), 4, "CNI_CONTAINERID"),
        ("no CNI_IFNAME", without("CNI_IFNAME"), conf.clone(), 4, "CNI_IFNAME"),
        ("no CNI_NETNS", without("CNI_NETNS"), conf.clone(), 4, "CNI_NETNS"),
        ("no CNI_COMMAND", without("CNI_COMMAND"), conf.clone(), 4, "CNI_COMMAND"),
        ("ifname too long", with("CNI_IFNAME", "eth0123456789abc"), conf.clone(), 4, "CNI_IFNAME"),
        ("bad container id", with("CNI_CONTAINERID", "-x"), conf.clone(), 4, "CNI_CONTAINERID"),
        ("netns missing", with("CNI_NETNS", gone), conf.clone(), 3, "does not exist"),
        (
            "netns not a netns",
            with("CNI_NETNS", "/etc/hostname"),
            conf.clone(),
            4,
            "not a network namespace",
        ),
        ("mtu out of range", full.clone(), bad_mtu, 7, "mtu"),
    ];
    for (what, env, stdin, code, needle) in cases {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let run = fx.run_env(&env, &stdin);
        assert_eq!(run.code(), code, "{what}: {}", run.stdout);
        assert!(run.msg().contains(needle), "{what}: {:?} lacks {needle:?}", run.msg());
        assert_eq!(run.stdout.lines().count(), 1, "{what}: one JSON line on stdout");
        assert_nothing_left(&fx, "badnet");
    }
}

#[test]
fn missing_ipam_plugin_is_a_config_error() {
    let fx = Fixture::new("noipam");
    let mut conf = fx.conf(Some("1.0.0"), "n", "10.211.0.0/24");
    conf["ipam"]["type"] = json!("no-such-ipam");
    let run = fx.run("ADD", "ni1", "eth0", &conf);
    assert_eq!(run.code(), 7);
    assert!(run.msg().contains("no-such-ipam"));
    assert_nothing_left(&fx, "n");
    // DEL with the same config still succeeds at removing the (absent) veth and reports the
    // IPAM problem.
    let del = fx.run("DEL", "ni1", "eth0", &conf);
    assert_eq!(del.code(), 7);
}

#[test]
fn exhausted_pool_passes_the_ipam_error_on() {
    let fx = Fixture::new("full");
    // A /30 leaves host-local one usable address (.1 is its gateway).
    let conf = fx.conf(Some("1.0.0"), "tiny", "10.212.0.0/30");
    fx.run("ADD", "full1", "eth0", &conf).ok();
    // Same namespace, free interface name: only the pool stands in the way.
    let run = fx.run("ADD", "full2", "eth1", &conf);
    assert!(!run.success);
    assert!(run.msg().starts_with("host-local ADD:"), "{}", run.stdout);
    assert_eq!(fx.host_calis().len(), 1, "only the first attachment exists");
    assert_eq!(fx.allocations("tiny").len(), 1);
}

#[test]
fn stdout_is_one_document_and_logs_go_elsewhere() {
    let fx = Fixture::new("logs");
    let log = fx.data_dir.path().join("tabby.log");
    let mut conf = fx.conf(Some("0.3.1"), "lognet", "10.213.0.0/24");
    conf["log_level"] = json!("debug");
    conf["log_file_path"] = json!(log.to_str().unwrap());
    let run = fx.run("ADD", "log1", "eth0", &conf).ok();
    assert_eq!(run.stdout.trim().lines().count(), 1, "{}", run.stdout);
    assert_eq!(run.json()["cniVersion"], "0.3.1");
    assert!(run.stderr.contains("IPAM assigned"), "debug log on stderr: {}", run.stderr);
    let file = std::fs::read_to_string(&log).unwrap();
    assert!(file.contains("attached"), "log file: {file}");

    conf["log_level"] = json!("error");
    let quiet = fx.run("DEL", "log1", "eth0", &conf).ok();
    assert_eq!(quiet.stdout, "");
    assert_eq!(quiet.stderr, "", "nothing below error level is logged");
}

#[test]
fn result_shape_follows_the_requested_version() {
    let fx = Fixture::new("shape");
    for (n, version) in ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"].iter().enumerate() {
        let conf = fx.conf(Some(version), "shapenet", "10.214.0.0/24");
        let id = format!("shape{n}");
        let v = fx.run("ADD", &id, "eth0", &conf).ok().json();
        assert_eq!(v["cniVersion"], *version);
        if version.starts_with("0.1") || version.starts_with("0.2") {
            assert!(v["ip4"]["ip"].as_str().unwrap().ends_with("/32"), "{v}");
            assert!(v.get("ips").is_none());
        } else {
            assert_eq!(v["interfaces"].as_array().unwrap().len(), 2);
            assert_eq!(v["ips"][0].get("version").is_some(), !version.starts_with('1'), "{v}");
        }
        fx.run("DEL", &id, "eth0", &conf).ok();
    }
}

#[test]
fn gc_and_status_forward_to_the_delegate() {
    let fx = Fixture::new("gc");
    let conf = fx.conf(Some("1.1.0"), "gcnet", "10.215.0.0/24");
    // host-local 1.1.1 predates spec 1.1.0, so the delegate refuses with its own error; what
    // matters is that tabby forwarded the verb and passed the answer on.
    for verb in ["GC", "STATUS"] {
        let run =
            fx.run_env(&[("CNI_COMMAND", verb), ("CNI_PATH", "/usr/lib/cni")], &conf.to_string());
        assert!(!run.success, "{verb}");
        assert!(run.msg().starts_with(&format!("host-local {verb}")), "{verb}: {}", run.stdout);
    }
    let no_ipam = json!({"cniVersion": "1.1.0", "name": "x", "type": "tabby"}).to_string();
    let gc = fx.run_env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &no_ipam).ok();
    assert_eq!(gc.stdout, "");
    let status = fx.run_env(&[("CNI_COMMAND", "STATUS")], &no_ipam);
    assert_eq!(status.code(), 50);
    let old = fx.run_env(&[("CNI_COMMAND", "STATUS")], &no_ipam.replace("1.1.0", "1.0.0"));
    assert_eq!(old.code(), 1, "STATUS does not exist before 1.1.0");
}
