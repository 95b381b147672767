//! ADD, CHECK and DEL with in-process IPAM against a real etcd: what the container, the host
//! and the datastore hold after each step, and that nothing is left at the end.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use common::store::StoreHost;
use common::{expected_host_veth, sysctl_in, Fixture};
use datastore::keys::Kind;
use serde_json::{json, Value};

/// The container's addresses on `ifname` as `(address, prefix)`.
fn container_addresses(fx: &Fixture, ifname: &str) -> Vec<(String, u64)> {
    let addrs = &Fixture::ip_json(&fx.container, &["addr", "show", ifname])[0]["addr_info"];
    addrs
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| (a["local"].as_str().unwrap().to_owned(), a["prefixlen"].as_u64().unwrap()))
        .collect()
}

/// `(dst, gateway, scope)` of the container's routes of one family through `ifname`.
fn container_routes(fx: &Fixture, family: &str, ifname: &str) -> Vec<(String, String, String)> {
    Fixture::ip_json(&fx.container, &[family, "route", "show", "dev", ifname])
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
        .collect()
}

fn wep_name(node: &str, id: &str, ifname: &str) -> String {
    let esc = |s: &str| s.replace('-', "--");
    format!("{}-cni-{}-{}", esc(node), esc(id), esc(ifname))
}

#[test]
fn add_check_del_with_tabby_ipam() {
    let h = StoreHost::new("cycle");
    h.add_pool("pool-a", "10.150.0.0/16", None, false);
    let conf = h.conf(Some("1.0.0"), "web");
    let id = "cycle1";
    let host_if = expected_host_veth(id, "eth0");

    let result = h.run("ADD", id, "eth0", &conf).ok().json();
    let address = result["ips"][0]["address"].as_str().unwrap().to_owned();
    let ip = address.strip_suffix("/32").expect("a /32").to_owned();
    assert!(ip.starts_with("10.150."), "{address}");
    assert_eq!(result["ips"].as_array().unwrap().len(), 1);
    assert_eq!(result["interfaces"][0]["name"], host_if);
    assert_eq!(result["interfaces"][1]["name"], "eth0");

    // The container: exactly one veth besides lo, exactly the /32, exactly two routes.
    let links = Fixture::ip_json(&h.fx.container, &["-d", "link", "show"]);
    let names: Vec<&str> =
        links.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap()).collect();
    assert_eq!(names, ["lo", "eth0"]);
    assert_eq!(links[1]["linkinfo"]["info_kind"], "veth");
    assert_eq!(links[1]["mtu"], 1500);
    assert_eq!(container_addresses(&h.fx, "eth0"), vec![(ip.clone(), 32)]);
    assert_eq!(
        container_routes(&h.fx, "-4", "eth0"),
        vec![
            ("default".into(), "169.254.1.1".into(), "global".into()),
            ("169.254.1.1".into(), String::new(), "link".into()),
        ]
    );
    // The gateway's MAC is known up front, so the container never has to ARP for it.
    let neigh = Fixture::ip_json(&h.fx.container, &["neigh", "show", "dev", "eth0"]);
    assert_eq!(neigh.as_array().unwrap().len(), 1, "{neigh}");
    assert_eq!(neigh[0]["dst"], "169.254.1.1");
    assert_eq!(neigh[0]["lladdr"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(neigh[0]["state"], json!(["PERMANENT"]));
    // The host: the veth, its MAC, its sysctls and the /32 route with tabby's protocol.
    let hl = &Fixture::ip_json(&h.fx.host, &["-d", "link", "show", &host_if])[0];
    assert_eq!(hl["address"], "ee:ee:ee:ee:ee:ee");
    assert!(hl["flags"].as_array().unwrap().contains(&json!("UP")));
    for (key, want) in [
        (format!("net/ipv4/conf/{host_if}/proxy_arp"), "1"),
        (format!("net/ipv4/conf/{host_if}/forwarding"), "1"),
        (format!("net/ipv4/conf/{host_if}/route_localnet"), "1"),
        (format!("net/ipv4/neigh/{host_if}/proxy_delay"), "0"),
        (format!("net/ipv6/conf/{host_if}/accept_ra"), "0"),
    ] {
        assert_eq!(h.fx.host_sysctl(&key), want, "{key}");
    }
    assert_eq!(h.fx.host_tabby_routes(), vec![(ip.clone(), host_if.clone())]);

    // The datastore: the endpoint with every field, the profile with the classic default,
    // the allocation held by this attachment's handle.
    let name = wep_name(&h.node, id, "eth0");
    let wep = h.resource(Kind::WorkloadEndpoint, Some("default"), &name).expect("endpoint written");
    let mac = links[1]["address"].as_str().unwrap();
    assert_eq!(wep["kind"], "WorkloadEndpoint");
    assert_eq!(wep["metadata"]["namespace"], "default");
    assert_eq!(
        wep["metadata"]["labels"],
        json!({"projectcalico.org/namespace": "default", "projectcalico.org/orchestrator": "cni"})
    );
    assert_eq!(
        wep["spec"],
        json!({
            "orchestrator": "cni", "workload": id, "node": h.node, "containerID": id,
            "endpoint": "eth0", "ipNetworks": [address], "profiles": ["web"],
            "interfaceName": host_if, "mac": mac,
        })
    );
    let profile = h.resource(Kind::Profile, None, "web").expect("profile created");
    assert_eq!(
        profile["spec"],
        json!({"ingress": [{"action": "Allow", "source": {"selector": "has(web)"}}],
               "egress": [{"action": "Allow"}], "labelsToApply": {"web": ""}})
    );
    assert_eq!(h.holder(ip.parse().unwrap()), Some(format!("web.{id}.eth0")));
    let report = h.check();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.counts.allocations, 1);

    // CHECK passes with and without prevResult, and prints nothing.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    assert_eq!(h.run("CHECK", id, "eth0", &with_prev).ok().stdout, "");
    assert_eq!(h.run("CHECK", id, "eth0", &conf).ok().stdout, "");

    // Drift on the host: the route.
    h.fx.host.ip_ok(["route", "del", &format!("{ip}/32"), "dev", &host_if]);
    let run = h.run("CHECK", id, "eth0", &with_prev);
    assert_eq!(run.code(), 999);
    assert!(run.msg().contains("host route missing"), "{}", run.msg());
    h.fx.host.ip_ok([
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        &host_if,
        "scope",
        "link",
        "proto",
        "112",
    ]);
    h.run("CHECK", id, "eth0", &with_prev).ok();

    // Drift in the datastore: the endpoint.
    let key = h.keys().resource(Kind::WorkloadEndpoint, Some("default"), &name);
    let stored = h.get_json(&key).unwrap();
    h.with_client(|c, _| {
        let key = key.clone();
        async move { c.delete(&key, None).await.unwrap() }
    });
    let run = h.run("CHECK", id, "eth0", &with_prev);
    assert_eq!(run.code(), 999);
    assert!(run.msg().contains("is missing from the datastore"), "{}", run.msg());
    // And an endpoint that names other addresses.
    let mut wrong = stored.clone();
    wrong["spec"]["ipNetworks"] = json!(["10.150.255.254/32"]);
    h.with_client(|c, _| {
        let (key, value) = (key.clone(), wrong.to_string());
        async move { c.put(&key, value.into_bytes(), None).await.unwrap() }
    });
    let run = h.run("CHECK", id, "eth0", &with_prev);
    assert!(run.msg().contains("ipNetworks"), "{}", run.msg());
    h.with_client(|c, _| {
        let (key, value) = (key.clone(), stored.to_string());
        async move { c.put(&key, value.into_bytes(), None).await.unwrap() }
    });
    h.run("CHECK", id, "eth0", &with_prev).ok();

    // DEL removes everything; a second DEL and a DEL of an unknown container succeed.
    assert_eq!(h.run("DEL", id, "eth0", &conf).ok().stdout, "");
    h.assert_nothing_left();
    assert_eq!(Fixture::ip_json(&h.fx.container, &["link", "show"]).as_array().unwrap().len(), 1);
    h.run("DEL", id, "eth0", &conf).ok();
    h.run("DEL", "neverseen", "eth0", &conf).ok();
    h.assert_nothing_left();
    // The profile stays: it belongs to the network, not to one container.
    assert!(h.resource(Kind::Profile, None, "web").is_some());
}

#[test]
fn existing_profile_is_left_alone_and_ipip_pools_get_a_smaller_mtu() {
    let h = StoreHost::new("prof");
    h.add_pool("tunnelled", "10.151.0.0/16", None, true);
    let custom = json!({"kind": "Profile", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "db"}, "spec": {"ingress": [{"action": "Deny"}], "x-extra": 1}});
    let key = h.keys().resource(Kind::Profile, None, "db");
    h.with_client(|c, _| {
        let (key, value) = (key.clone(), custom.to_string());
        async move { c.put(&key, value.into_bytes(), None).await.unwrap() }
    });
    let conf = h.conf(Some("1.1.0"), "db");
    let result = h.run("ADD", "prof1", "eth0", &conf).ok().json();
    assert_eq!(result["interfaces"][1]["mtu"], 1480, "{result}");
    let link = &Fixture::ip_json(&h.fx.container, &["link", "show", "eth0"])[0];
    assert_eq!(link["mtu"], 1480);
    assert_eq!(h.get_json(&key).unwrap(), custom, "existing profile untouched");
    h.run("CHECK", "prof1", "eth0", &conf).ok();

    // An explicit mtu wins over the pool's.
    let mut conf2 = conf.clone();
    conf2["mtu"] = json!(1400);
    let c2 = testkit::Netns::new("prof2");
    let r2 = h.run_in("ADD", "prof2", "eth0", Some(&c2), &conf2).ok().json();
    assert_eq!(r2["interfaces"][1]["mtu"], 1400);
    h.run_in("DEL", "prof2", "eth0", Some(&c2), &conf2).ok();
    h.run("DEL", "prof1", "eth0", &conf).ok();
    h.assert_nothing_left();
}

#[test]
fn specific_addresses_are_assigned_or_refused_clearly() {
    let h = StoreHost::new("spec");
    h.add_pool("pool-s", "10.152.0.0/24", None, false);
    let conf = h.conf(Some("1.0.0"), "net-s");

    // The `ips` capability.
    let mut by_capability = conf.clone();
    by_capability["runtimeConfig"] = json!({"ips": ["10.152.0.77/24"]});
    let r = h.run("ADD", "s1", "eth0", &by_capability).ok().json();
    assert_eq!(r["ips"][0]["address"], "10.152.0.77/32");
    assert_eq!(h.holder("10.152.0.77".parse().unwrap()).as_deref(), Some("net-s.s1.eth0"));

    // CNI_ARGS IP= asking for the same address: refused, naming it, nothing left behind.
    let c2 = testkit::Netns::new("spec2");
    let run = h.fx.run_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "s2"),
            ("CNI_NETNS", c2.path().to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.152.0.77"),
        ],
        &conf.to_string(),
    );
    assert!(!run.success);
    assert!(run.msg().contains("10.152.0.77 is already assigned"), "{}", run.msg());
    assert_eq!(Fixture::ip_json(&c2, &["link", "show"]).as_array().unwrap().len(), 1);
    assert_eq!(h.fx.host_calis(), vec![expected_host_veth("s1", "eth0")]);
    assert_eq!(h.endpoint_keys().len(), 1);

    // Outside every pool: refused.
    let mut outside = conf.clone();
    outside["args"] = json!({"cni": {"ips": ["192.0.2.9"]}});
    let run = h.run_in("ADD", "s3", "eth0", Some(&c2), &outside);
    assert!(run.msg().contains("192.0.2.9 is not inside any enabled IP pool"), "{}", run.msg());

    // CNI_ARGS IP= for a free address works.
    let run = h.fx.run_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "s4"),
            ("CNI_NETNS", c2.path().to_str().unwrap()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            ("CNI_ARGS", "IP=10.152.0.88"),
        ],
        &conf.to_string(),
    );
    assert_eq!(run.ok().json()["ips"][0]["address"], "10.152.0.88/32");
    h.run_in("DEL", "s4", "eth0", Some(&c2), &conf).ok();
    h.run("DEL", "s1", "eth0", &conf).ok();
    h.assert_nothing_left();
}

#[test]
fn dual_stack_from_two_pools() {
    let h = StoreHost::new("dual");
    h.add_pool("v4", "10.153.0.0/24", None, false);
    h.add_pool("v6", "fd00:153::/112", None, false);
    let mut conf = h.conf(Some("0.4.0"), "dual");
    conf["ipam"]["assign_ipv6"] = json!("true");
    let r = h.run("ADD", "d1", "eth0", &conf).ok().json();
    let ips: Vec<&str> =
        r["ips"].as_array().unwrap().iter().map(|i| i["address"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 2, "{r}");
    assert!(ips[0].starts_with("10.153.0.") && ips[0].ends_with("/32"), "{ips:?}");
    assert!(ips[1].starts_with("fd00:153::") && ips[1].ends_with("/128"), "{ips:?}");
    assert_eq!(r["ips"][1]["version"], "6");
    let v6 = container_routes(&h.fx, "-6", "eth0");
    assert!(
        v6.contains(&("default".into(), "fe80::ecee:eeff:feee:eeee".into(), "global".into())),
        "{v6:?}"
    );
    assert_eq!(
        sysctl_in(
            &h.fx.host,
            &format!("net/ipv6/conf/{}/proxy_ndp", expected_host_veth("d1", "eth0"))
        ),
        "1"
    );
    h.run("CHECK", "d1", "eth0", &conf).ok();
    let wep = h
        .resource(Kind::WorkloadEndpoint, Some("default"), &wep_name(&h.node, "d1", "eth0"))
        .unwrap();
    assert_eq!(wep["spec"]["ipNetworks"].as_array().unwrap().len(), 2);
    h.run("DEL", "d1", "eth0", &conf).ok();
    h.assert_nothing_left();
}

#[test]
fn results_in_every_version_carry_the_assigned_address() {
    let h = StoreHost::new("vers");
    h.add_pool("pool-v", "10.154.0.0/24", None, false);
    for (i, version) in
        ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate()
    {
        let conf = h.conf(Some(version), "vers");
        let id = format!("v{i}");
        let r: Value = h.run("ADD", &id, "eth0", &conf).ok().json();
        assert_eq!(r["cniVersion"], *version);
        let address = if version.starts_with("0.1") || version.starts_with("0.2") {
            r["ip4"]["ip"].as_str().unwrap().to_owned()
        } else {
            r["ips"][0]["address"].as_str().unwrap().to_owned()
        };
        assert_eq!(
            h.holder(address.trim_end_matches("/32").parse().unwrap()).unwrap(),
            format!("vers.{id}.eth0")
        );
        h.run("DEL", &id, "eth0", &conf).ok();
    }
    h.assert_nothing_left();
}

#[test]
fn a_plan_on_a_stale_memo_ends_with_the_committed_address_everywhere() {
    let h = StoreHost::new("memo");
    h.add_pool("pool-m", "10.153.0.0/16", None, false);
    let conf = h.conf(Some("1.0.0"), "net-m");
    // The first ADD claims a block; the second reads what the claim left and leaves the
    // memo the next process plans on.
    h.run("ADD", "m1", "eth0", &conf).ok();
    let c1b = testkit::Netns::new("memo1b");
    h.run_in("ADD", "m1b", "eth0", Some(&c1b), &conf).ok();

    // Another allocator of this node, outside the plugin (the memo cannot know), takes the
    // address the memo says is next.
    let node = h.node.clone();
    let foreign: std::net::IpAddr = h.with_client(|c, k| async move {
        let opts = ipam::AllocatorOptions { lock_file: None, ..Default::default() };
        let a = ipam::Allocator::new(c, k, node, opts).unwrap();
        let req =
            ipam::AssignRequest { handle: "other.f1.eth0".into(), num_v4: 1, ..Default::default() };
        a.assign(&req).await.unwrap().v4[0].addr()
    });

    // The next ADD plans that very address on the memo, may configure its veth with it while
    // the transaction runs, learns the truth from the failed transaction and commits another.
    let c2 = testkit::Netns::new("memo2");
    let run = h.run_in("ADD", "m2", "eth0", Some(&c2), &conf).ok();
    let guessed = run.stderr.contains("the IPAM memo was stale");
    println!(
        "stale memo seen: {guessed}; pair re-made: {}",
        run.stderr.contains("re-making the veth pair")
    );
    assert!(guessed, "the ADD did not plan on the memo: {}", run.stderr);
    let address = run.json()["ips"][0]["address"].as_str().unwrap().to_owned();
    let ip = address.strip_suffix("/32").expect("a /32").to_owned();
    assert_ne!(ip, foreign.to_string(), "handed out twice");
    let inside = &Fixture::ip_json(&c2, &["-4", "addr", "show", "eth0"])[0]["addr_info"];
    let inside: Vec<&str> =
        inside.as_array().unwrap().iter().map(|a| a["local"].as_str().unwrap()).collect();
    assert_eq!(inside, [ip.as_str()], "the container holds the committed address only");
    let host_if = expected_host_veth("m2", "eth0");
    let routes = h.fx.host_tabby_routes();
    assert!(routes.contains(&(ip.clone(), host_if.clone())), "{routes:?}");
    assert!(!routes.iter().any(|(dst, _)| *dst == foreign.to_string()), "{routes:?}");
    assert_eq!(h.holder(ip.parse().unwrap()).as_deref(), Some("net-m.m2.eth0"));
    h.run_in("CHECK", "m2", "eth0", Some(&c2), &conf).ok();

    h.run_in("DEL", "m2", "eth0", Some(&c2), &conf).ok();
    h.run_in("DEL", "m1b", "eth0", Some(&c1b), &conf).ok();
    h.run("DEL", "m1", "eth0", &conf).ok();
    let node = h.node.clone();
    h.with_client(|c, k| async move {
        let opts = ipam::AllocatorOptions { lock_file: None, ..Default::default() };
        let a = ipam::Allocator::new(c, k, node, opts).unwrap();
        a.release_by_handle("other.f1.eth0").await.unwrap();
    });
    h.assert_nothing_left();
}
