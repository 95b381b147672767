#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

const PREFIX: &str = "/t";

fn layout() -> KeyLayout {
    KeyLayout::new(PREFIX)
}

fn kv(key: &str, value: &serde_json::Value, rev: i64) -> Kv {
    kv_raw(key, value.to_string().as_bytes(), rev)
}

fn kv_raw(key: &str, value: &[u8], rev: i64) -> Kv {
    Kv {
        key: key.into(),
        value: value.to_vec(),
        mod_revision: rev,
        create_revision: rev,
        version: 1,
    }
}

fn profile_key(name: &str) -> String {
    layout().resource(Kind::Profile, None, name)
}

fn profile(name: &str, selector: &str) -> serde_json::Value {
    json!({
        "kind": "Profile", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name},
        "spec": {"ingress": [{"action": "Allow", "source": {"selector": selector}}]}
    })
}

fn block_key(cidr: &str) -> String {
    layout().block(cidr.parse().unwrap())
}

fn block(cidr: &str, host: &str) -> serde_json::Value {
    json!({
        "cidr": cidr, "affinity": format!("host:{host}"),
        "allocations": [null, null, null, null], "unallocated": [0, 1, 2, 3],
        "attributes": [], "deleted": false
    })
}

fn synced() -> ClusterModel {
    let mut model = ClusterModel::new(layout());
    for source in WatchSource::ALL {
        model.apply(source, WatchEvent::Snapshot { kvs: vec![], revision: 1 });
    }
    model
}

#[test]
fn in_sync_only_after_every_source_listed() {
    let mut model = ClusterModel::new(layout());
    assert!(!model.in_sync());
    model.apply(WatchSource::Resources, WatchEvent::Snapshot { kvs: vec![], revision: 5 });
    assert!(!model.in_sync() && model.source_in_sync(WatchSource::Resources));
    model.apply(WatchSource::Ipam, WatchEvent::Snapshot { kvs: vec![], revision: 6 });
    assert!(model.in_sync());
    assert_eq!(model.revision(), 6);
}

#[test]
fn puts_and_deletes_patch_and_bump_generation() {
    let mut model = synced();
    let g0 = model.generation();
    let key = profile_key("web");
    assert!(model
        .apply(WatchSource::Resources, WatchEvent::Put(kv(&key, &profile("web", "has(web)"), 7))));
    assert_eq!(model.generation(), g0 + 1);
    assert!(model.profile("web").is_some());
    // The same value again is no change.
    assert!(!model
        .apply(WatchSource::Resources, WatchEvent::Put(kv(&key, &profile("web", "has(web)"), 8))));
    assert_eq!(model.generation(), g0 + 1);
    assert!(model
        .apply(WatchSource::Resources, WatchEvent::Delete { key: key.clone(), mod_revision: 9 }));
    assert!(model.profile("web").is_none());
    assert_eq!(model.generation(), g0 + 2);
    // Keys the agent does not use change nothing.
    let handle = format!("{PREFIX}/ipam/v2/handle/net.c1.eth0");
    assert!(
        !model.apply(WatchSource::Ipam, WatchEvent::Put(kv(&handle, &json!({"block": {}}), 10)))
    );
    assert_eq!(model.generation(), g0 + 2);
}

#[test]
fn snapshot_replaces_only_its_own_source() {
    let mut model = synced();
    let pkey = profile_key("web");
    let bkey = block_key("10.65.0.0/30");
    model.apply(WatchSource::Resources, WatchEvent::Put(kv(&pkey, &profile("web", "all()"), 2)));
    model.apply(WatchSource::Ipam, WatchEvent::Put(kv(&bkey, &block("10.65.0.0/30", "h1"), 3)));
    let g = model.generation();

    // A re-list of the resources without the profile drops it, keeps the block.
    assert!(model.apply(WatchSource::Resources, WatchEvent::Snapshot { kvs: vec![], revision: 9 }));
    assert!(model.profiles().is_empty());
    assert_eq!(model.blocks().len(), 1);
    assert_eq!(model.generation(), g + 1);

    // A re-list that brings nothing new is no change.
    let same = vec![kv(&bkey, &block("10.65.0.0/30", "h1"), 3)];
    assert!(!model.apply(WatchSource::Ipam, WatchEvent::Snapshot { kvs: same, revision: 10 }));
    assert_eq!(model.generation(), g + 1);
}

#[test]
fn affinities_are_read_from_key_and_value() {
    let mut model = synced();
    let key = layout().affinity("host-a", "10.65.0.0/26".parse().unwrap());
    model.apply(WatchSource::Ipam, WatchEvent::Put(kv(&key, &json!({"state": "confirmed"}), 2)));
    let record = &model.affinities()[&key];
    assert_eq!(record.host, "host-a");
    assert_eq!(record.cidr, "10.65.0.0/26".parse::<ipnet::IpNet>().unwrap());
}

#[test]
fn names_come_from_the_key_when_missing_and_must_agree() {
    let mut model = synced();
    let key = profile_key("web");
    let mut nameless = profile("web", "all()");
    nameless["metadata"] = json!({});
    model.apply(WatchSource::Resources, WatchEvent::Put(kv(&key, &nameless, 2)));
    assert_eq!(model.profile("web").unwrap().metadata.name, "web");

    let wrong = profile("db", "all()");
    model.apply(WatchSource::Resources, WatchEvent::Put(kv(&key, &wrong, 3)));
    assert!(model.profile("web").is_none());
    assert!(model.invalid()[&key].reason.contains("metadata.name"), "{:?}", model.invalid());
}

#[test]
fn invalid_values_are_logged_once_and_treated_as_absent() {
    let mut model = synced();
    let good = profile_key("good");
    let bad_selector = profile_key("badsel");
    let bad_json = profile_key("badjson");
    let bad_action = profile_key("badaction");
    let bad_block = block_key("10.65.0.4/30");
    let mut unknown_action = profile("badaction", "all()");
    unknown_action["spec"]["ingress"][0]["action"] = json!("Maybe");
    let mut short_block = block("10.65.0.4/30", "h1");
    short_block["allocations"] = json!([null]);

    let resources = vec![
        kv(&good, &profile("good", "has(good)"), 2),
        kv(&bad_selector, &profile("badsel", "has(("), 3),
        kv_raw(&bad_json, b"{\"kind\": \"Profile\",", 4),
        kv(&bad_action, &unknown_action, 5),
    ];
    let ipam = vec![kv(&bad_block, &short_block, 6)];

    // The reports are logged with the key and the reason (what the log shows is checked
    // end to end by the agent_daemon test); here, that each is reported exactly once.
    model.apply(
        WatchSource::Resources,
        WatchEvent::Snapshot { kvs: resources.clone(), revision: 6 },
    );
    model.apply(WatchSource::Ipam, WatchEvent::Snapshot { kvs: ipam.clone(), revision: 6 });
    assert_eq!(model.invalid_reports(), 4);
    for key in [&bad_selector, &bad_json, &bad_action, &bad_block] {
        assert!(model.invalid().contains_key(key), "{key} not refused");
    }
    assert!(!model.invalid().contains_key(&good));
    let reason = |key: &String| model.invalid()[key].reason.clone();
    assert!(reason(&bad_selector).contains("spec.ingress[0].source.selector"));
    assert!(reason(&bad_action).contains("spec.ingress[0].action"), "{}", reason(&bad_action));
    assert!(reason(&bad_block).contains("allocations"));
    // The rest is in the model.
    assert_eq!(model.profiles().len(), 1);
    assert!(model.profile("good").is_some());
    assert!(model.blocks().is_empty());

    // A re-list (after a compaction, say) brings the same bad values back: not reported again.
    model.apply(
        WatchSource::Resources,
        WatchEvent::Snapshot { kvs: resources.clone(), revision: 20 },
    );
    model.apply(WatchSource::Ipam, WatchEvent::Snapshot { kvs: ipam.clone(), revision: 20 });
    assert_eq!(model.invalid_reports(), 4);

    // A new revision of a bad value is news.
    model.apply(
        WatchSource::Resources,
        WatchEvent::Put(kv(&bad_selector, &profile("badsel", "x ==="), 21)),
    );
    assert_eq!(model.invalid_reports(), 5);

    // Fixing a value makes it count again; a good value turning bad disappears.
    model.apply(
        WatchSource::Resources,
        WatchEvent::Put(kv(&bad_selector, &profile("badsel", "has(x)"), 22)),
    );
    assert!(model.profile("badsel").is_some());
    assert!(!model.invalid().contains_key(&bad_selector));
    model.apply(WatchSource::Resources, WatchEvent::Put(kv_raw(&good, b"nope", 23)));
    assert!(model.profile("good").is_none());

    // Deleting a bad key forgets it.
    model.apply(
        WatchSource::Resources,
        WatchEvent::Delete { key: bad_json.clone(), mod_revision: 24 },
    );
    assert!(!model.invalid().contains_key(&bad_json));
}

#[test]
fn block_must_match_its_key() {
    let mut model = synced();
    let key = block_key("10.65.0.8/30");
    model.apply(WatchSource::Ipam, WatchEvent::Put(kv(&key, &block("10.65.0.0/30", "h1"), 2)));
    assert!(model.blocks().is_empty());
    assert!(model.invalid()[&key].reason.contains("cidr"));
}

#[test]
fn node_lookup_and_local_endpoints() {
    let wep = |name: &str, node: &str| {
        json!({
            "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"node": node, "interfaceName": "cali0", "ipNetworks": ["10.65.0.1/32"]}
        })
    };
    let node = json!({
        "kind": "Node", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "host-a"},
        "spec": {"bgp": {"ipv4Address": "192.0.2.1/24"}}
    });
    let l = layout();
    let model = ClusterModel::from_kvs(
        l.clone(),
        &[
            kv(&l.resource(Kind::WorkloadEndpoint, Some("default"), "a"), &wep("a", "host-a"), 2),
            kv(&l.resource(Kind::WorkloadEndpoint, Some("default"), "b"), &wep("b", "host-b"), 3),
            kv(&l.resource(Kind::Node, None, "host-a"), &node, 4),
        ],
        4,
    );
    assert!(model.in_sync());
    assert_eq!(model.local_endpoints("host-a").count(), 1);
    assert_eq!(model.node_address("host-a", true), Some("192.0.2.1".parse().unwrap()));
    assert_eq!(model.node_address("host-a", false), None);
    assert_eq!(model.node_address("host-b", true), None);
}

#[test]
fn bgp_resources_are_kept_and_bad_ones_refused_once() {
    let peer = |ip: &str, asn: serde_json::Value| {
        json!({
            "kind": "BGPPeer", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": "tor"},
            "spec": {"peerIP": ip, "asNumber": asn}
        })
    };
    let config = json!({
        "kind": "BGPConfiguration", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "default"},
        "spec": {"nodeToNodeMeshEnabled": false, "asNumber": 65001}
    });
    let l = layout();
    let peer_key = l.resource(Kind::BgpPeer, None, "tor");
    let mut model = ClusterModel::from_kvs(
        l.clone(),
        &[
            kv(&peer_key, &peer("192.0.2.254", json!(65000)), 2),
            kv(&l.resource(Kind::BgpConfiguration, None, "default"), &config, 3),
        ],
        3,
    );
    assert_eq!(model.bgp_peers().len(), 1);
    let cfg = model.bgp_config().unwrap();
    assert!(!cfg.spec.effective_mesh_enabled());

    for (rev, bad) in [(4, peer("tor.example", json!(65000))), (6, peer("192.0.2.254", json!(0)))] {
        let good = peer("192.0.2.254", json!(65000));
        model.apply(WatchSource::Resources, WatchEvent::Put(kv(&peer_key, &good, rev - 1)));
        assert_eq!(model.bgp_peers().len(), 1);
        let before = model.invalid_reports();
        assert!(model.apply(WatchSource::Resources, WatchEvent::Put(kv(&peer_key, &bad, rev))));
        assert!(model.bgp_peers().is_empty(), "a bad peer must not stay programmed");
        assert_eq!(model.invalid_reports(), before + 1);
        // The same value again (a re-list) is not reported twice.
        model.apply(WatchSource::Resources, WatchEvent::Put(kv(&peer_key, &bad, rev)));
        assert_eq!(model.invalid_reports(), before + 1);
    }
    assert!(model.invalid()[&peer_key].reason.contains("spec.asNumber"));
}

#[test]
fn labels_stamp_moves_only_with_what_selectors_see() {
    let mut model = synced();
    let key = profile_key("web");
    let mut stamp = model.labels_stamp();
    let mut step = |model: &mut ClusterModel, event: WatchEvent, moves: bool, what: &str| {
        model.apply(WatchSource::Resources, event);
        assert_eq!(model.labels_stamp() != stamp, moves, "{what}");
        stamp = model.labels_stamp();
    };
    let labelled = |labels: serde_json::Value, port: u16| {
        json!({"kind": "Profile", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "web"},
               "spec": {"labelsToApply": labels,
                        "ingress": [{"action": "Allow", "protocol": "TCP",
                                     "destination": {"ports": [port]}}]}})
    };
    let put = |v: &serde_json::Value, rev| WatchEvent::Put(kv(&key, v, rev));
    step(&mut model, put(&profile("web", "all()"), 2), false, "a profile without labels");
    step(&mut model, put(&labelled(json!({"a": "1"}), 80), 3), true, "labels appear");
    step(&mut model, put(&labelled(json!({"a": "1"}), 81), 4), false, "a rule changes");
    step(&mut model, put(&labelled(json!({"a": "2"}), 81), 5), true, "a label value changes");
    let delete = |rev| WatchEvent::Delete { key: key.clone(), mod_revision: rev };
    step(&mut model, delete(6), true, "a labelled profile goes");
    step(&mut model, put(&profile("web", "all()"), 7), false, "an unlabelled profile comes");
    step(&mut model, delete(8), false, "an unlabelled profile goes");
    let wep_key = layout().resource(Kind::WorkloadEndpoint, Some("default"), "h-cni-c1-eth0");
    let wep = json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "h-cni-c1-eth0", "namespace": "default"},
        "spec": {"node": "h", "containerID": "c1", "endpoint": "eth0",
                 "ipNetworks": ["10.0.0.1/32"], "interfaceName": "cali1"}
    });
    step(&mut model, WatchEvent::Put(kv(&wep_key, &wep, 9)), true, "an endpoint comes");
    step(&mut model, WatchEvent::Put(kv(&wep_key, &wep, 10)), false, "the same endpoint again");
    step(
        &mut model,
        WatchEvent::Delete { key: wep_key.clone(), mod_revision: 11 },
        true,
        "an endpoint goes",
    );
    // A clone keeps the stamp; once either copy changes, they differ.
    let mut copy = model.clone();
    assert_eq!(copy.labels_stamp(), model.labels_stamp());
    copy.apply(WatchSource::Resources, WatchEvent::Put(kv(&wep_key, &wep, 12)));
    assert_ne!(copy.labels_stamp(), model.labels_stamp());
}
