//! `tabby` driven exactly as the Mesos CNI isolator drives it (`src/slave/containerizer/
//! mesos/isolators/network/cni/cni.cpp`): its environment and nothing else, no `CNI_ARGS`,
//! the config with `args["org.apache.mesos"].network_info` injected, cniVersion 0.2.0, the
//! result read as Mesos reads it, and DEL without `CNI_NETNS` once the namespace is gone.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use common::expected_host_veth;
use common::store::StoreHost;
use datastore::keys::Kind;
use serde_json::{json, Value};

/// What Mesos takes from a result: the protobuf `NetworkInfo{ip4{ip, gateway, routes}, ip6,
/// dns}` with unknown fields ignored. The container's address is `ip4.ip`; without it Mesos
/// has no address to report. `dns`, when present, must be an object.
fn parse_like_mesos(result: &Value) -> (String, Option<Value>) {
    let obj = result.as_object().expect("a JSON object");
    let ip4 = obj.get("ip4").and_then(Value::as_object).expect("ip4 is required by Mesos");
    let ip = ip4.get("ip").and_then(Value::as_str).expect("ip4.ip is required");
    ip.parse::<ipnet::IpNet>().expect("ip4.ip is a CIDR");
    if let Some(gw) = ip4.get("gateway") {
        gw.as_str().unwrap().parse::<std::net::IpAddr>().expect("gateway is an address");
    }
    for route in ip4.get("routes").and_then(Value::as_array).into_iter().flatten() {
        route["dst"].as_str().unwrap().parse::<ipnet::IpNet>().expect("route dst");
    }
    let dns = obj.get("dns").cloned();
    if let Some(d) = &dns {
        assert!(d.is_object(), "dns must be an object: {d}");
    }
    (ip.to_owned(), dns)
}

/// The config the operator wrote (manifests/mesos/tabby.conf shape) with what Mesos injects.
fn mesos_conf(h: &StoreHost, network: &str, labels: &[(&str, &str)], ip: Option<&str>) -> Value {
    let mut conf = h.conf(Some("0.2.0"), network);
    let labels: Vec<Value> = labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    let mut info = json!({"name": network, "labels": {"labels": labels}});
    if let Some(ip) = ip {
        info["ip_addresses"] = json!([{"protocol": "IPv4", "ip_address": ip}]);
    }
    conf["args"] = json!({"org.apache.mesos": {"network_info": info}});
    conf
}

/// The Mesos environment: exactly these variables (plus the agent's PATH), never CNI_ARGS.
fn mesos_env<'a>(
    command: &'a str,
    id: &'a str,
    ifname: &'a str,
    netns: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_PATH", "/usr/lib/cni"),
        ("CNI_IFNAME", ifname),
    ];
    if let Some(ns) = netns {
        env.push(("CNI_NETNS", ns));
    }
    env
}

#[test]
fn mesos_isolator_add_and_del() {
    let h = StoreHost::new("mesos");
    h.add_pool("mesos-pool", "10.170.0.0/16", None, false);
    let id = "5f2a9a3e-7b7c-4d42-8c1e-0a1b2c3d4e5f";
    let netns = h.fx.container.path();
    let netns = netns.to_str().unwrap();
    let conf = mesos_conf(
        &h,
        "mesos-net",
        &[("app", "web/front end"), ("tier", "1"), ("projectcalico.org/namespace", "team-a")],
        Some("10.170.3.4"),
    );
    let run = h.fx.run_env(&mesos_env("ADD", id, "eth0", Some(netns)), &conf.to_string()).ok();
    let result = run.json();
    assert_eq!(result["cniVersion"], "0.2.0");
    let (ip, dns) = parse_like_mesos(&result);
    assert_eq!(ip, "10.170.3.4/32", "the address Mesos asked for");
    assert_eq!(dns, Some(json!({})));

    let name = format!("{}-cni-{}-eth0", h.node.replace('-', "--"), id.replace('-', "--"));
    let wep =
        h.resource(Kind::WorkloadEndpoint, Some("team-a"), &name).expect("endpoint in team-a");
    assert_eq!(
        wep["metadata"]["labels"],
        json!({"app": "web.front-end", "tier": "1",
               "projectcalico.org/namespace": "team-a", "projectcalico.org/orchestrator": "cni"})
    );
    assert_eq!(wep["spec"]["ipNetworks"], json!(["10.170.3.4/32"]));
    assert_eq!(wep["spec"]["profiles"], json!(["mesos-net"]));
    assert!(h.check().is_clean());

    // Mesos omits CNI_NETNS on DEL once the namespace is gone; DEL must still release the
    // address and remove the endpoint (and the veth, found by name).
    let run = h.fx.run_env(&mesos_env("DEL", id, "eth0", None), &conf.to_string()).ok();
    assert_eq!(run.stdout, "");
    h.assert_nothing_left();
}

#[test]
fn nested_container_and_a_second_network() {
    let h = StoreHost::new("mnest");
    h.add_pool("pool-a", "10.171.0.0/24", None, false);
    h.add_pool("pool-b", "10.172.0.0/24", None, false);
    let id = "0c3d1e2f-aaaa-bbbb-cccc-000000000001.9e8d7c6b-1111-2222-3333-444455556666";
    let netns = h.fx.container.path();
    let netns = netns.to_str().unwrap();
    let mut a = mesos_conf(&h, "net-a", &[("role", "api")], None);
    a["ipam"]["ipv4_pools"] = json!(["pool-a"]);
    let mut b = mesos_conf(&h, "net-b", &[("role", "api")], None);
    b["ipam"]["ipv4_pools"] = json!(["10.172.0.0/24"]);

    let ra = h.fx.run_env(&mesos_env("ADD", id, "eth0", Some(netns)), &a.to_string()).ok().json();
    let rb = h.fx.run_env(&mesos_env("ADD", id, "eth1", Some(netns)), &b.to_string()).ok().json();
    let (ipa, _) = parse_like_mesos(&ra);
    let (ipb, _) = parse_like_mesos(&rb);
    assert!(ipa.starts_with("10.171.0."), "{ipa}");
    assert!(ipb.starts_with("10.172.0."), "{ipb}");
    let mut calis = h.fx.host_calis();
    calis.sort();
    let mut want = vec![expected_host_veth(id, "eth0"), expected_host_veth(id, "eth1")];
    want.sort();
    assert_eq!(calis, want, "one veth per network");
    let links = common::Fixture::ip_json(&h.fx.container, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 3, "lo, eth0, eth1: {links}");
    assert_eq!(h.endpoint_keys().len(), 2);
    assert!(h.check().is_clean(), "{:?}", h.check());
    // The container keeps its first default route; eth1 adds its own address.
    let routes = common::Fixture::ip_json(&h.fx.container, &["-4", "route", "show", "default"]);
    assert_eq!(routes.as_array().unwrap().len(), 1, "{routes}");
    assert_eq!(routes[0]["dev"], "eth0");

    // CHECK on both (Mesos never calls it, but the attachments must pass).
    for (ifname, conf) in [("eth0", &a), ("eth1", &b)] {
        let mut conf = conf.clone();
        conf["cniVersion"] = json!("0.4.0");
        h.run("CHECK", id, ifname, &conf).ok();
    }

    // DEL of one network leaves the other whole.
    h.fx.run_env(&mesos_env("DEL", id, "eth1", Some(netns)), &b.to_string()).ok();
    assert_eq!(h.fx.host_calis(), vec![expected_host_veth(id, "eth0")]);
    assert_eq!(h.endpoint_keys().len(), 1);
    assert_eq!(h.allocated(), 1);
    h.fx.run_env(&mesos_env("DEL", id, "eth0", None), &a.to_string()).ok();
    h.assert_nothing_left();
}
