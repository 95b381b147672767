//! The route applier against a real kernel, in a private network namespace: what it reads
//! back is what it wrote, and it never changes a route that is not tabby's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use agent::routes::{self, DesiredRoute, NetlinkRoutes, RouteTable};
use testkit::Netns;

/// Runs `f` on a thread inside `ns` with its own runtime: netlink sockets belong to the
/// namespace of the thread that opens them, and the test's own threads stay where they are.
fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    ns.enter(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(f())
    })
}

/// `ip route show` lines of the namespace's main table (both families).
fn show(ns: &Netns) -> String {
    let v4 = ns.ip_ok(["route", "show"]);
    let v6 = ns.ip_ok(["-6", "route", "show"]);
    format!("{v4}{v6}")
}

fn desired(routes: &[&str]) -> BTreeSet<DesiredRoute> {
    routes.iter().map(|r| r.parse().unwrap()).collect()
}

/// Plans, applies and re-reads `want` in `ns`; returns the operations applied and the diff
/// after them.
fn sync(ns: &Netns, want: BTreeSet<DesiredRoute>) -> (Vec<String>, Vec<String>) {
    in_netns(ns, move || {
        Box::pin(async move {
            let mut table = NetlinkRoutes::new().unwrap();
            let observed = table.dump().await.unwrap();
            let ops = routes::diff(&want, &observed);
            for op in &ops {
                table.apply(op).await.unwrap_or_else(|e| panic!("{op}: {e}"));
            }
            let after = routes::diff(&want, &table.dump().await.unwrap());
            (
                ops.iter().map(ToString::to_string).collect(),
                after.iter().map(ToString::to_string).collect(),
            )
        })
    })
}

#[test]
fn applier_programs_ours_and_never_touches_foreign_routes() {
    testkit::require_root();
    let ns = Netns::new("routes");
    // A veth pair inside the namespace stands in for the uplink (no dummy module here).
    ns.ip_ok(["link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1"]);
    ns.ip_ok(["link", "set", "dummy1", "up"]);
    ns.ip_ok(["link", "set", "dummy0", "up"]);
    ns.ip_ok(["addr", "add", "192.0.2.1/24", "dev", "dummy0"]);
    ns.ip_ok(["-6", "addr", "add", "fd01::1/64", "dev", "dummy0", "nodad"]);
    // Someone else's routes, one of them on a destination tabby wants.
    ns.ip_ok(["route", "add", "10.65.0.0/26", "via", "192.0.2.5", "proto", "static"]);
    ns.ip_ok(["route", "add", "blackhole", "10.77.0.0/24", "proto", "static"]);
    // The CNI plugin's device route: tabby's protocol, but not the agent's to manage.
    ns.ip_ok(["route", "add", "10.65.3.7/32", "dev", "dummy0", "scope", "link", "proto", "112"]);

    let want = desired(&[
        "blackhole 10.65.1.0/26",
        "10.65.2.0/26 via 192.0.2.3",
        "10.65.0.0/26 via 192.0.2.4",
        "blackhole fd00:65::/122",
        "fd00:65::40/122 via fd01::2",
    ]);
    let (ops, after) = sync(&ns, want);
    assert_eq!(ops.len(), 4, "{ops:?}");
    assert!(after.is_empty(), "not converged: {after:?}");
    let table = show(&ns);
    for line in [
        "blackhole 10.65.1.0/26 proto 112",
        "10.65.2.0/26 via 192.0.2.3 dev dummy0 proto 112",
        "blackhole fd00:65::/122 dev lo proto 112",
        "fd00:65::40/122 via fd01::2 dev dummy0 proto 112",
        // The foreign route on a wanted destination is left as it was.
        "10.65.0.0/26 via 192.0.2.5 dev dummy0 proto static",
    ] {
        assert!(table.contains(line), "missing {line:?} in:\n{table}");
    }
    assert!(!table.contains("192.0.2.4"), "a foreign route was replaced:\n{table}");

    // A block moves: the route is replaced in place.
    let moved = desired(&[
        "blackhole 10.65.1.0/26",
        "10.65.2.0/26 via 192.0.2.9",
        "blackhole fd00:65::/122",
        "fd00:65::40/122 via fd01::2",
    ]);
    let (ops, _) = sync(&ns, moved);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(ops[0].starts_with("replace 10.65.2.0/26 via 192.0.2.9"), "{ops:?}");

    // Nothing wanted: every route of ours goes, nothing else does.
    let (ops, after) = sync(&ns, BTreeSet::new());
    assert_eq!(ops.len(), 4, "{ops:?}");
    assert!(after.is_empty());
    let table = show(&ns);
    assert!(!table.contains("blackhole 10.65.1.0/26"), "{table}");
    assert!(!table.contains("fd00:65::"), "{table}");
    for line in [
        "10.65.0.0/26 via 192.0.2.5 dev dummy0 proto static",
        "blackhole 10.77.0.0/24 proto static",
        "10.65.3.7 dev dummy0 proto 112 scope link",
        "192.0.2.0/24 dev dummy0 proto kernel",
    ] {
        assert!(table.contains(line), "foreign route {line:?} was touched:\n{table}");
    }
}

#[test]
fn unreachable_gateway_is_a_permanent_error() {
    testkit::require_root();
    let ns = Netns::new("rtfail");
    let err = in_netns(&ns, || {
        Box::pin(async {
            let mut table = NetlinkRoutes::new().unwrap();
            let op = routes::RouteOp::Add("10.65.2.0/26 via 198.51.100.1".parse().unwrap());
            table.apply(&op).await.unwrap_err()
        })
    });
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("10.65.2.0/26"), "{err}");
}

/// A tunnel route either lands as `via <node> dev tunl0 onlink` and reads back as itself, or,
/// on a kernel without IPIP, fails with an error that says so (never a half-made route).
#[test]
fn tunnel_routes_go_through_tunl0_or_say_why_not() {
    testkit::require_root();
    let ns = Netns::new("tunnel");
    ns.ip_ok(["link", "set", "lo", "up"]);
    let ipip = ns.ip(["link", "add", "name", "tabbyprobe", "type", "ipip"]).status.success();
    let route: DesiredRoute = "10.65.2.0/26 via 198.51.100.7 dev tunl0 onlink".parse().unwrap();
    let op = routes::RouteOp::Add(route);
    let result = in_netns(&ns, move || {
        Box::pin(async move {
            let mut table = NetlinkRoutes::new().unwrap();
            let applied = table.apply(&op).await.map_err(|e| e.to_string());
            let back: Vec<String> = table
                .dump()
                .await
                .unwrap()
                .iter()
                .filter_map(|r| r.as_desired().filter(|_| r.is_ours()))
                .map(|d| d.to_string())
                .collect();
            (applied, back)
        })
    });
    match result {
        (Ok(()), back) => {
            assert!(ipip, "the route went in although this kernel cannot make IPIP devices");
            assert_eq!(back, [route.to_string()]);
            let shown = ns.ip_ok(["route", "show", "dev", "tunl0"]);
            assert!(shown.contains("198.51.100.7") && shown.contains("onlink"), "{shown}");
        }
        (Err(e), back) => {
            assert!(!ipip, "IPIP works here, yet: {e}");
            assert!(e.contains("CONFIG_NET_IPIP"), "{e}");
            assert!(back.is_empty(), "{back:?}");
        }
    }
}

/// One route reconcile with the agent's own [`Reconciler`] (no nftables) over `model`, in
/// `ns`; returns how many route changes it made.
fn reconcile_once(ns: &Netns, model: agent::model::ClusterModel) -> usize {
    use agent::reconcile::{LoopSettings, Reconciler};
    use std::sync::Arc;
    in_netns(ns, move || {
        Box::pin(async move {
            let mut reconciler = Reconciler::new(
                agent::host::HostInfo::new("host-a"),
                NetlinkRoutes::new().unwrap(),
                Vec::new(),
                Arc::new(agent::health::Health::new()),
                Arc::new(agent::metrics::Metrics::default()),
                LoopSettings::default(),
            );
            reconciler.reconcile(&model, false).await.unwrap().route_ops
        })
    })
}

/// A model holding one endpoint of `host-a` on `interface` with `addresses`.
fn model_with_endpoint(interface: &str, addresses: &[&str]) -> agent::model::ClusterModel {
    use datastore::keys::{KeyLayout, Kind};
    let layout = KeyLayout::new("/calico");
    let wep = serde_json::json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "host--a-cni-c1-eth0", "namespace": "default"},
        "spec": {"orchestrator": "cni", "node": "host-a", "containerID": "c1", "endpoint": "eth0",
                 "ipNetworks": addresses, "profiles": ["kns.default"], "interfaceName": interface}
    });
    let kv = datastore::client::Kv {
        key: layout.resource(Kind::WorkloadEndpoint, Some("default"), "host--a-cni-c1-eth0"),
        value: serde_json::to_vec(&wep).unwrap(),
        mod_revision: 1,
        create_revision: 1,
        version: 1,
    };
    let model = agent::model::ClusterModel::from_kvs(layout, &[kv], 1);
    assert!(model.invalid().is_empty(), "{:?}", model.invalid());
    assert_eq!(model.local_endpoints("host-a").count(), 1);
    model
}

/// Felix's repair: a workload's device route deleted by hand comes back on the next route
/// reconcile, exactly as the CNI plugin made it; never on a down veth (the CNI plugin's DEL
/// downs it first), and a device route with no endpoint in the model is left alone.
#[test]
fn missing_device_route_of_an_up_veth_is_put_back() {
    testkit::require_root();
    let ns = Netns::new("devrt");
    ns.ip_ok(["link", "set", "lo", "up"]);
    for (host, peer) in [("calitest000001", "peer1"), ("calistray00001", "peer2")] {
        ns.ip_ok(["link", "add", host, "type", "veth", "peer", "name", peer]);
        ns.ip_ok(["link", "set", peer, "up"]);
        ns.ip_ok(["link", "set", host, "up"]);
    }
    // A device route the agent has no endpoint for (a workload it has not seen yet).
    let stray = ["10.65.0.77/32", "dev", "calistray00001", "scope", "link", "proto", "112"];
    ns.ip_ok([&["route", "add"][..], &stray[..]].concat());
    let v4 = ["route", "show", "10.65.0.5/32"];
    let v6 = ["-6", "route", "show", "fd00:65::5/128"];

    let model = || model_with_endpoint("calitest000001", &["10.65.0.5/32", "fd00:65::5/128"]);
    // Nothing there (as if deleted by hand): both addresses come back.
    assert_eq!(reconcile_once(&ns, model()), 2);
    let shown = ns.ip_ok(v4);
    assert_eq!(shown.trim(), "10.65.0.5 dev calitest000001 proto 112 scope link", "{shown}");
    let shown = ns.ip_ok(v6);
    assert!(shown.contains("fd00:65::5 dev calitest000001 proto 112"), "{shown}");
    // In step: nothing more to do.
    assert_eq!(reconcile_once(&ns, model()), 0);
    let stray_shown = ns.ip_ok(["route", "show", "10.65.0.77/32"]);
    assert!(stray_shown.contains("dev calistray00001 proto 112 scope link"), "{stray_shown}");

    // The CNI plugin's DEL: veth down, routes gone. The agent must not bring them back.
    ns.ip_ok(["link", "set", "calitest000001", "down"]);
    let _ = ns.ip(["route", "del", "10.65.0.5/32"]);
    let _ = ns.ip(["-6", "route", "del", "fd00:65::5/128"]);
    assert_eq!(reconcile_once(&ns, model()), 0);
    assert_eq!(ns.ip_ok(v4).trim(), "", "route came back on a down veth");
    assert_eq!(ns.ip_ok(v6).trim(), "", "route came back on a down veth");
    let stray_shown = ns.ip_ok(["route", "show", "10.65.0.77/32"]);
    assert!(stray_shown.contains("dev calistray00001"), "stray route touched: {stray_shown}");
}

/// A workload's address already routed out of another interface is left as it is.
#[test]
fn device_route_on_another_interface_is_left_alone() {
    testkit::require_root();
    let ns = Netns::new("devcf");
    for (host, peer) in [("calitest000002", "peer1"), ("caliother0002", "peer2")] {
        ns.ip_ok(["link", "add", host, "type", "veth", "peer", "name", peer]);
        ns.ip_ok(["link", "set", peer, "up"]);
        ns.ip_ok(["link", "set", host, "up"]);
    }
    let elsewhere = ["10.65.0.6/32", "dev", "caliother0002", "scope", "link", "proto", "112"];
    ns.ip_ok([&["route", "add"][..], &elsewhere[..]].concat());
    assert_eq!(reconcile_once(&ns, model_with_endpoint("calitest000002", &["10.65.0.6/32"])), 0);
    let shown = ns.ip_ok(["route", "show", "10.65.0.6/32"]);
    assert_eq!(shown.trim(), "10.65.0.6 dev caliother0002 proto 112 scope link", "{shown}");
}
