//! Kernel tests: the `tabby` binary run inside a test-made host namespace, as a runtime runs
//! it, attaching a test-made container namespace, with host-local IPAM in a temp dir.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use common::{expected_host_veth, sysctl_in, Fixture};
use serde_json::{json, Value};

/// Asserts the container side of an IPv4 attachment: exactly one address (the /32), exactly
/// the two routes, a veth that is up with the MTU.
fn assert_container_v4(fx: &Fixture, ifname: &str, ip: &str, mtu: u64) {
    let link = &Fixture::ip_json(&fx.container, &["-d", "link", "show", ifname])[0];
    assert_eq!(link["linkinfo"]["info_kind"], "veth");
    assert_eq!(link["mtu"], mtu);
    assert!(link["flags"].as_array().unwrap().contains(&json!("UP")), "{link}");
    let addrs = &Fixture::ip_json(&fx.container, &["-4", "addr", "show", ifname])[0]["addr_info"];
    let got: Vec<(String, u64)> = addrs
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["local"].as_str().unwrap().to_owned(), a["prefixlen"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, vec![(ip.to_owned(), 32)]);
    let routes = Fixture::ip_json(&fx.container, &["-4", "route", "show", "dev", ifname]);
    let got: Vec<(String, String, String)> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap().to_owned(),
                r["gateway"].as_str().unwrap_or("").to_owned(),
                r["scope"].as_str().unwrap_or("global").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("default".into(), "169.254.1.1".into(), "global".into()),
            ("169.254.1.1".into(), String::new(), "link".into()),
        ]
    );
}

/// Asserts the host side: the veth with its MAC, MTU and state, the sysctls, the route.
fn assert_host_side(fx: &Fixture, host_if: &str, ips: &[&str], mtu: u64) {
    let link = &Fixture::ip_json(&fx.host, &["-d", "link", "show", host_if])[0];
    assert_eq!(link["address"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(link["linkinfo"]["info_kind"], "veth");
    assert_eq!(link["mtu"], mtu);
    assert!(link["flags"].as_array().unwrap().contains(&json!("UP")), "{link}");
    for (key, want) in [
        (format!("net/ipv4/conf/{host_if}/proxy_arp"), "1"),
        (format!("net/ipv4/conf/{host_if}/forwarding"), "1"),
        (format!("net/ipv4/conf/{host_if}/route_localnet"), "1"),
        (format!("net/ipv4/neigh/{host_if}/proxy_delay"), "0"),
        (format!("net/ipv6/conf/{host_if}/accept_ra"), "0"),
        ("net/ipv4/ip_forward".to_owned(), "1"),
    ] {
        assert_eq!(fx.host_sysctl(&key), want, "{key}");
    }
    let mut want: Vec<(String, String)> =
        ips.iter().map(|ip| ((*ip).to_owned(), host_if.to_owned())).collect();
    want.sort();
    let mut got: Vec<_> =
        fx.host_tabby_routes().into_iter().filter(|(_, dev)| dev == host_if).collect();
    got.sort();
    assert_eq!(got, want);
    // scope link, as for a directly attached neighbour.
    let route = &Fixture::ip_json(&fx.host, &["-4", "route", "show", "dev", host_if])[0];
    assert_eq!(route["scope"], "link", "{route}");
}

#[test]
fn add_check_del_full_cycle() {
    let fx = Fixture::new("cycle");
    let conf = fx.conf(Some("1.0.0"), "net1", "10.200.0.0/24");
    let host_if = expected_host_veth("cycle1", "eth0");

    let add = fx.run("ADD", "cycle1", "eth0", &conf).ok();
    let result = add.json();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"][0]["name"], host_if.as_str());
    assert_eq!(result["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["sandbox"], fx.container.path().to_str().unwrap());
    assert_eq!(
        result["ips"],
        json!([{"interface": 1, "address": "10.200.0.2/32", "gateway": "169.254.1.1"}])
    );
    let container_mac = result["interfaces"][1]["mac"].as_str().unwrap().to_owned();
    let link = &Fixture::ip_json(&fx.container, &["link", "show", "eth0"])[0];
    assert_eq!(link["address"], container_mac.as_str(), "result reports the real MAC");

    assert_container_v4(&fx, "eth0", "10.200.0.2", 1500);
    assert_host_side(&fx, &host_if, &["10.200.0.2"], 1500);
    assert_eq!(fx.allocations("net1"), vec!["10.200.0.2".parse::<std::net::IpAddr>().unwrap()]);

    // CHECK with the cached result passes silently...
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result.clone();
    let check = fx.run("CHECK", "cycle1", "eth0", &check_conf).ok();
    assert_eq!(check.stdout, "", "CHECK success prints nothing");
    // ...and fails once the host route is gone.
    fx.host.ip_ok(["route", "del", "10.200.0.2/32", "dev", host_if.as_str()]);
    let check = fx.run("CHECK", "cycle1", "eth0", &check_conf);
    assert!(!check.success);
    assert!(check.msg().contains("host route"), "{}", check.stdout);

    fx.run("DEL", "cycle1", "eth0", &check_conf).ok();
    assert!(fx.host_calis().is_empty(), "veth left: {:?}", fx.host_calis());
    assert!(fx.host_tabby_routes().is_empty());
    let links = Fixture::ip_json(&fx.container, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "only lo remains: {links}");
    assert!(fx.allocations("net1").is_empty());

    // DEL is idempotent.
    let again = fx.run("DEL", "cycle1", "eth0", &conf).ok();
    assert_eq!(again.stdout, "");
}

#[test]
fn check_without_prev_result_uses_what_is_there() {
    let fx = Fixture::new("chk");
    let conf = fx.conf(Some("0.4.0"), "net1", "10.201.0.0/24");
    fx.run("ADD", "chk1", "eth0", &conf).ok();
    fx.run("CHECK", "chk1", "eth0", &conf).ok();
    // Drift inside the container is seen too.
    fx.container.ip_ok(["route", "del", "default"]);
    let check = fx.run("CHECK", "chk1", "eth0", &conf);
    assert!(check.msg().contains("missing route default via 169.254.1.1"), "{}", check.stdout);
    fx.container.ip_ok(["link", "set", "eth0", "down"]);
    let check = fx.run("CHECK", "chk1", "eth0", &conf);
    assert!(check.msg().contains("eth0 is down"), "{}", check.stdout);
}

#[test]
fn dual_stack_attachment() {
    let fx = Fixture::new("dual");
    let conf = fx.conf_dual("0.4.0", "net6", "10.202.0.0/24", "fd00:202::/64");
    let host_if = expected_host_veth("dual1", "eth0");
    let result = fx.run("ADD", "dual1", "eth0", &conf).ok().json();
    assert_eq!(result["ips"][1]["version"], "6");
    assert_eq!(result["ips"][1]["address"], "fd00:202::2/128");

    let addrs = &Fixture::ip_json(&fx.container, &["-6", "addr", "show", "eth0"])[0]["addr_info"];
    let global: Vec<&Value> =
        addrs.as_array().unwrap().iter().filter(|a| a["scope"] == "global").collect();
    assert_eq!(global.len(), 1, "{addrs}");
    assert_eq!(global[0]["local"], "fd00:202::2");
    assert_eq!(global[0]["prefixlen"], 128);
    assert!(global[0]["nodad"].as_bool().unwrap_or(false), "{addrs}");
    // With DAD on, the link-local address would stay tentative for a second or more; the
    // carrier comes up asynchronously, so allow a short moment for that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        let addrs = Fixture::ip_json(&fx.container, &["-6", "addr", "show", "eth0"]);
        let tentative =
            addrs[0]["addr_info"].as_array().unwrap().iter().any(|a| a.get("tentative").is_some());
        if !tentative {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "an address still waits for DAD: {addrs}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(sysctl_in(&fx.container, "net/ipv6/conf/eth0/accept_dad"), "0");
    let default6 = Fixture::ip_json(&fx.container, &["-6", "route", "show", "default"]);
    assert_eq!(default6[0]["gateway"], "fe80::ecee:eeff:feee:eeee");
    assert_eq!(default6[0]["dev"], "eth0");

    assert_host_side(&fx, &host_if, &["10.202.0.2", "fd00:202::2"], 1500);
    for (key, want) in [("proxy_ndp", "1"), ("forwarding", "1"), ("accept_dad", "0")] {
        assert_eq!(fx.host_sysctl(&format!("net/ipv6/conf/{host_if}/{key}")), want, "{key}");
    }
    // The container's gateway is the host veth's link-local address.
    let host_ll = &Fixture::ip_json(&fx.host, &["-6", "addr", "show", &host_if])[0]["addr_info"][0];
    assert_eq!(host_ll["local"], "fe80::ecee:eeff:feee:eeee");

    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result;
    fx.run("CHECK", "dual1", "eth0", &check_conf).ok();
    fx.run("DEL", "dual1", "eth0", &conf).ok();
    assert!(fx.host_calis().is_empty());
    assert!(fx.allocations("net6").is_empty());
}

#[test]
fn mtu_and_second_network_on_eth1() {
    let fx = Fixture::new("two");
    let mut a = fx.conf(None, "neta", "10.203.0.0/24");
    a["mtu"] = json!(1480);
    let b = fx.conf(Some("1.0.0"), "netb", "10.204.0.0/24");
    fx.run("ADD", "two1", "eth0", &a).ok();
    fx.run("ADD", "two1", "eth1", &b).ok();
    // eth0 keeps the container's routes; eth1 gets its own veth and address.
    assert_container_v4(&fx, "eth0", "10.203.0.2", 1480);
    let eth1 = &Fixture::ip_json(&fx.container, &["-4", "addr", "show", "eth1"])[0];
    assert_eq!(eth1["addr_info"][0]["local"], "10.204.0.2");
    assert_eq!(eth1["mtu"], 1500);
    assert_host_side(&fx, &expected_host_veth("two1", "eth1"), &["10.204.0.2"], 1500);
    fx.run("CHECK", "two1", "eth1", &b).ok();
    let mut calis = fx.host_calis();
    calis.sort();
    let mut want = vec![expected_host_veth("two1", "eth0"), expected_host_veth("two1", "eth1")];
    want.sort();
    assert_eq!(calis, want);

    fx.run("DEL", "two1", "eth1", &b).ok();
    assert_eq!(fx.host_calis(), vec![expected_host_veth("two1", "eth0")]);
    assert_container_v4(&fx, "eth0", "10.203.0.2", 1480);
    fx.run("DEL", "two1", "eth0", &a).ok();
    assert!(fx.host_calis().is_empty());
}

#[test]
fn mesos_style_invocation() {
    // As the Mesos CNI isolator calls: no cniVersion (so 0.2.0), no CNI_ARGS, a nested
    // container id, an injected args block; DEL later without CNI_NETNS.
    let fx = Fixture::new("mesos");
    let mut conf = fx.conf(None, "mesosnet", "10.205.0.0/24");
    conf["args"] = json!({"org.apache.mesos": {"network_info": {
        "name": "mesosnet",
        "labels": {"labels": [{"key": "app", "value": "web"}]}
    }}});
    let id = "8a1c2e7d-0000-4f4f-9e9e-1234567890ab.c0ffee00-1111-2222-3333-444455556666";
    let result = fx.run("ADD", id, "eth0", &conf).ok().json();
    assert_eq!(result["cniVersion"], "0.2.0");
    assert_eq!(result["ip4"]["ip"], "10.205.0.2/32");
    assert_eq!(result["dns"], json!({}));
    assert!(result.get("ips").is_none());
    assert_eq!(fx.host_calis(), vec![expected_host_veth(id, "eth0")]);

    let del = fx.run_env(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ],
        &conf.to_string(),
    );
    del.ok();
    assert!(fx.host_calis().is_empty());
    assert!(fx.allocations("mesosnet").is_empty());
}

#[test]
fn del_of_unknown_container_and_gone_netns_succeed() {
    let fx = Fixture::new("delu");
    let conf = fx.conf(Some("1.0.0"), "net1", "10.206.0.0/24");
    fx.run("DEL", "neverseen", "eth0", &conf).ok();
    let gone = common::missing_netns();
    let run = fx.run_env(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "neverseen"),
            ("CNI_NETNS", gone.to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ],
        &conf.to_string(),
    );
    run.ok();
}

#[test]
fn stale_host_veth_is_replaced() {
    let fx = Fixture::new("stale");
    let conf = fx.conf(Some("1.0.0"), "net1", "10.207.0.0/24");
    let host_if = expected_host_veth("stale1", "eth0");
    // What a plugin killed mid-ADD leaves: the host end, its peer somewhere else.
    fx.host.ip_ok(["link", "add", host_if.as_str(), "type", "veth", "peer", "name", "leftover"]);
    fx.run("ADD", "stale1", "eth0", &conf).ok();
    assert_container_v4(&fx, "eth0", "10.207.0.2", 1500);
    assert_eq!(fx.host_calis(), vec![host_if]);
    fx.run("DEL", "stale1", "eth0", &conf).ok();
}

#[test]
fn existing_ifname_in_container_is_an_error_and_rolls_back() {
    let fx = Fixture::new("exist");
    let conf = fx.conf(Some("1.0.0"), "net1", "10.208.0.0/24");
    fx.container.ip_ok(["link", "add", "eth0", "type", "veth", "peer", "name", "mine0"]);
    let run = fx.run("ADD", "exist1", "eth0", &conf);
    assert!(!run.success);
    assert!(run.msg().contains("already exists"), "{}", run.stdout);
    assert!(fx.host_calis().is_empty());
    assert!(fx.allocations("net1").is_empty(), "address released on failure");
    let own = &Fixture::ip_json(&fx.container, &["link", "show", "eth0"])[0];
    assert_eq!(own["link"], "mine0", "the container's own eth0 is untouched: {own}");
}

#[test]
fn failure_after_veth_creation_rolls_everything_back() {
    let fx = Fixture::new("rollb");
    // IPv6 disabled for new links in the container: the veth is made, then adding the /128
    // fails, and ADD must undo the veth and the allocation.
    fx.container.sh_ok("echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6");
    let conf = fx.conf_dual("1.0.0", "net6", "10.209.0.0/24", "fd00:209::/64");
    let run = fx.run("ADD", "rb1", "eth0", &conf);
    assert!(!run.success, "{}", run.stdout);
    assert!(fx.host_calis().is_empty(), "{:?}", fx.host_calis());
    assert!(fx.host_tabby_routes().is_empty());
    assert!(fx.allocations("net6").is_empty());
    let links = Fixture::ip_json(&fx.container, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
}

#[test]
fn del_cleans_up_after_a_killed_add() {
    let fx = Fixture::new("killed");
    let conf = fx.conf(Some("1.0.0"), "net1", "10.216.0.0/24");
    let host_if = expected_host_veth("killed1", "eth0");
    // A plugin killed right after creating the pair leaves both ends, unconfigured.
    let netns = fx.container.name().to_owned();
    fx.host.ip_ok([
        "link",
        "add",
        host_if.as_str(),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &netns,
    ]);
    fx.run("DEL", "killed1", "eth0", &conf).ok();
    assert!(fx.host_calis().is_empty());
    let links = Fixture::ip_json(&fx.container, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
    // And the attachment can be made again.
    fx.run("ADD", "killed1", "eth0", &conf).ok();
    assert_container_v4(&fx, "eth0", "10.216.0.2", 1500);
}

#[test]
fn parallel_adds_on_one_host() {
    const N: usize = 20;
    let fx = Fixture::new("par");
    let conf = fx.conf(Some("1.0.0"), "parnet", "10.217.0.0/24");
    let containers: Vec<testkit::Netns> =
        (0..N).map(|i| testkit::Netns::new(&format!("p{i}"))).collect();
    let run = |i: usize, command: &str| {
        let netns = containers[i].path();
        fx.run_env(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &format!("par{i}")),
                ("CNI_NETNS", netns.to_str().unwrap()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
            ],
            &conf.to_string(),
        )
    };
    let results: Vec<common::Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N).map(|i| s.spawn(move || run(i, "ADD"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addresses: Vec<String> = results
        .into_iter()
        .map(|r| r.ok().json()["ips"][0]["address"].as_str().unwrap().to_owned())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), N, "distinct addresses");
    assert_eq!(fx.host_calis().len(), N);
    assert_eq!(fx.host_tabby_routes().len(), N);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..N).map(|i| s.spawn(move || run(i, "DEL"))).collect();
        for h in handles {
            h.join().unwrap().ok();
        }
    });
    assert!(fx.host_calis().is_empty());
    assert!(fx.host_tabby_routes().is_empty());
    assert!(fx.allocations("parnet").is_empty());
}
