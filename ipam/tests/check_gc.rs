//! `check` finds what a killed allocator, a crashed claim or a hand edit leaves behind, and
//! `gc` repairs exactly what is provably wrong.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::{Duration, SystemTime};

use common::{request, Env};
use datastore::keys::Kind;
use datastore::model::ipam::{AffinityState, BlockAffinity, IpamHandle};
use ipam::gc::{gc, GcOptions};
use ipam::{Attrs, Block};

const OLD: &str = "2020-01-01T00:00:00Z";

fn attrs(node: &str, container: &str, ts: &str) -> Attrs {
    Attrs::from([
        ("node".to_string(), node.to_string()),
        ("containerID".to_string(), container.to_string()),
        ("timestamp".to_string(), ts.to_string()),
    ])
}

async fn put_json<T: serde::Serialize>(env: &Env, key: &str, value: &T) {
    env.put_raw(key, &serde_json::to_vec(value).unwrap()).await;
}

async fn put_wep(env: &Env, node: &str, container: &str, addr: &str) {
    let name = datastore::keys::workload_endpoint_name(node, "cni", container, "eth0").unwrap();
    let wep = serde_json::json!({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"node": node, "orchestrator": "cni", "workload": container, "endpoint": "eth0",
                 "containerID": container, "ipNetworks": [format!("{addr}/32")]}
    });
    let key = env.keys.resource(Kind::WorkloadEndpoint, Some("default"), &name);
    env.put_raw(&key, wep.to_string().as_bytes()).await;
}

fn no_netns(_: &str) -> bool {
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_allocator_leftovers_are_reported_and_repaired() {
    let env = Env::new().await;
    env.add_pool("p", "10.95.0.0/16", None).await;
    env.put_node("n1", &[]).await;
    let a = env.allocator("n1");

    // A healthy allocation with its endpoint: must survive everything below.
    let live = a
        .assign(&ipam::AssignRequest {
            attrs: attrs("n1", "live", OLD),
            ..request("net.live.eth0", 1, 0)
        })
        .await
        .unwrap();
    let live_ip = live.v4[0].addr();
    put_wep(&env, "n1", "live", &live_ip.to_string()).await;
    // A young allocation without endpoint (an ADD in progress): inside the grace period.
    let young = a.assign(&request("net.young.eth0", 1, 0)).await.unwrap().v4[0].addr();
    // An old allocation without endpoint whose container still has a netns on this node.
    let netns = a
        .assign(&ipam::AssignRequest {
            attrs: attrs("n1", "has-netns", OLD),
            ..request("net.netns.eth0", 1, 0)
        })
        .await
        .unwrap()
        .v4[0]
        .addr();

    // Killed between writes (as Calico's allocator can be): a handle whose block write never
    // happened, and a block allocation whose handle write never happened.
    let usage = a.usage().await.unwrap();
    let cidr = usage.host_blocks("n1").next().unwrap().cidr;
    let orphan_handle = IpamHandle {
        block: [(cidr.to_string(), 1)].into_iter().collect(),
        ..IpamHandle::default()
    };
    put_json(&env, &env.keys.handle("net.killed1.eth0"), &orphan_handle).await;
    let block_key = env.keys.block(cidr);
    let kv = env.client.get(&block_key).await.unwrap().unwrap();
    let mut block = Block::from_record(serde_json::from_slice(&kv.value).unwrap()).unwrap();
    let lost = block.assign(1, "net.killed2.eth0", &attrs("n1", "killed2", OLD))[0];
    put_json(&env, &block_key, block.record()).await;

    // A crashed claim on another host: pending affinity with its block; and an affinity
    // whose block was never created.
    let b = env.allocator("n2");
    b.assign(&request("net.n2.eth0", 1, 0)).await.unwrap();
    let n2_block = b.usage().await.unwrap().host_blocks("n2").next().unwrap().cidr;
    let n2_aff = env.keys.affinity("n2", n2_block);
    put_json(
        &env,
        &n2_aff,
        &BlockAffinity { state: AffinityState::Pending, ..BlockAffinity::default() },
    )
    .await;
    let ghost = "10.95.200.0/26".parse().unwrap();
    put_json(&env, &env.keys.affinity("n2", ghost), &BlockAffinity::default()).await;
    b.release_by_handle("net.n2.eth0").await.unwrap();

    let report = env.check().await;
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(!report.is_clean());
    assert_eq!(report.handles_without_allocations.len(), 1);
    assert_eq!(report.handles_without_allocations[0].handle, "net.killed1.eth0");
    assert_eq!(report.allocations_without_handles.len(), 1);
    assert_eq!(report.allocations_without_handles[0].ip, lost);
    let leaked: Vec<_> = report.leaked.iter().map(|l| l.ip).collect();
    assert!(leaked.contains(&lost) && leaked.contains(&young) && leaked.contains(&netns));
    assert!(!leaked.contains(&live_ip), "an address with an endpoint is not leaked");
    let killed = report.leaked.iter().find(|l| l.ip == lost).unwrap();
    assert_eq!(killed.container_id.as_deref(), Some("killed2"));
    assert_eq!(killed.node.as_deref(), Some("n1"));
    assert_eq!(killed.timestamp.as_deref(), Some(OLD));
    assert_eq!(report.pending_affinities.len(), 1);
    assert_eq!(report.orphaned_affinities.len(), 1);
    assert_eq!(report.orphaned_affinities[0].block, ghost);

    // Dry run: reports, changes nothing.
    let alive = |c: &str| c == "has-netns";
    let opts = GcOptions {
        grace: Duration::from_mins(10),
        dry_run: true,
        this_node: Some("n1".into()),
        netns_alive: &alive,
        now: SystemTime::now(),
    };
    let dry = gc(&env.client, &env.keys, &opts).await.unwrap();
    assert_eq!(dry.released, vec![lost]);
    assert_eq!(env.check().await, report, "a dry run must not write");

    let done = gc(&env.client, &env.keys, &GcOptions { dry_run: false, ..opts }).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&done).unwrap());
    assert_eq!(done.released, vec![lost]);
    assert_eq!(done.handles_deleted, vec!["net.killed1.eth0".to_string()]);
    assert_eq!(done.affinities_deleted.len(), 1);
    assert_eq!(done.affinities_confirmed.len(), 1);
    let kept: Vec<_> = done.kept.iter().map(|k| (k.ip, k.reason.clone())).collect();
    assert!(kept.iter().any(|(i, r)| *i == young && r.contains("grace")), "{kept:?}");
    assert!(kept.iter().any(|(i, r)| *i == netns && r.contains("network namespace")), "{kept:?}");

    let after = env.check().await;
    let left: Vec<_> = after.leaked.iter().map(|l| l.ip).collect();
    assert_eq!(after.problems(), left.len(), "{after:#?}");
    assert!(left.contains(&young) && left.contains(&netns) && !left.contains(&lost));
    assert!(a.get_assignment(live_ip).await.unwrap().is_some());
    assert!(a.get_assignment(lost).await.unwrap().is_none());

    // Once the grace period has passed and the netns is gone, the rest goes too.
    let later = GcOptions {
        grace: Duration::from_mins(10),
        dry_run: false,
        this_node: Some("n1".into()),
        netns_alive: &no_netns,
        now: SystemTime::now() + Duration::from_hours(1),
    };
    let done = gc(&env.client, &env.keys, &later).await.unwrap();
    assert_eq!(done.released.len(), 2, "{done:#?}");
    let clean = env.check().await;
    assert!(clean.is_clean(), "{clean:#?}");
    assert_eq!(clean.counts.allocations, 1, "only the live allocation remains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_counts_and_block_overlaps_are_checked() {
    let env = Env::new().await;
    env.add_pool("p", "10.96.0.0/16", None).await;
    let a = env.allocator("n1");
    let r = a.assign(&request("net.two.eth0", 2, 0)).await.unwrap();
    // The handle record claims 5 addresses where the block holds 2.
    let cidr = a.get_assignment(r.v4[0].addr()).await.unwrap().unwrap().block;
    let wrong = IpamHandle {
        block: [(cidr.to_string(), 5)].into_iter().collect(),
        ..IpamHandle::default()
    };
    put_json(&env, &env.keys.handle("net.two.eth0"), &wrong).await;
    // A hand-made /25 block overlapping the /26 block and holding one of its addresses.
    let mut wide = Block::new(cidr.supernet().unwrap().trunc(), None, 1).unwrap();
    wide.assign_ip(r.v4[0].addr(), "net.dup.eth0", &Attrs::new()).unwrap();
    put_json(&env, &env.keys.block(wide.cidr()), wide.record()).await;

    let report = env.check().await;
    assert_eq!(report.handle_count_mismatches.len(), 1);
    assert_eq!(report.handle_count_mismatches[0].actual[&cidr.to_string()], 2);
    assert_eq!(report.overlapping_blocks.len(), 1);
    assert_eq!(report.duplicate_addresses.len(), 1);
    assert_eq!(report.duplicate_addresses[0].ip, r.v4[0].addr());
    assert!(report.blocks_outside_pools.is_empty());
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["handle_count_mismatches"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_of_gone_hosts_and_missing_affinities_are_repaired() {
    let env = Env::new().await;
    env.add_pool("p", "10.97.0.0/16", None).await;
    env.put_node("alive", &[]).await;
    let a = env.allocator("alive");
    a.assign(&request("net.a.eth0", 1, 0)).await.unwrap();
    let a_block = a.usage().await.unwrap().host_blocks("alive").next().unwrap().cidr;
    // The live host lost its affinity record (hand edit, old bug).
    env.client.delete(&env.keys.affinity("alive", a_block), None).await.unwrap();
    // A host that is gone (no Node, no affinities) left two blocks: one empty, one in use.
    let empty = Block::new("10.97.100.0/26".parse().unwrap(), Some("gone"), 1).unwrap();
    put_json(&env, &env.keys.block(empty.cidr()), empty.record()).await;
    let mut used = Block::new("10.97.101.0/26".parse().unwrap(), Some("gone"), 1).unwrap();
    used.assign(1, "net.gone.eth0", &attrs("gone", "gone-c", OLD));
    put_json(&env, &env.keys.block(used.cidr()), used.record()).await;
    let handle = IpamHandle {
        block: [(used.cidr().to_string(), 1)].into_iter().collect(),
        ..IpamHandle::default()
    };
    put_json(&env, &env.keys.handle("net.gone.eth0"), &handle).await;
    // The gone host's container still has its endpoint (the node record went first).
    let used_ip = used.allocations().next().unwrap().ip;
    put_wep(&env, "gone", "gone-c", &used_ip.to_string()).await;

    let report = env.check().await;
    assert_eq!(report.blocks_without_affinity.len(), 1, "{report:#?}");
    assert_eq!(report.blocks_without_affinity[0].block, a_block);
    let gone: Vec<_> = report.blocks_of_deleted_nodes.iter().map(|b| b.block).collect();
    assert_eq!(gone.len(), 2, "{report:#?}");

    let opts = GcOptions {
        grace: Duration::from_mins(10),
        dry_run: false,
        this_node: None,
        netns_alive: &no_netns,
        now: SystemTime::now(),
    };
    let done = gc(&env.client, &env.keys, &opts).await.unwrap();
    assert_eq!(done.affinities_restored.len(), 1);
    assert_eq!(done.blocks_deleted, vec![empty.cidr()]);
    assert_eq!(done.blocks_unaffined, vec![used.cidr()]);
    assert!(done.released.is_empty(), "an address with an endpoint is kept");
    let after = env.check().await;
    assert_eq!(after.problems(), after.leaked.len(), "{after:#?}");
    // The restored affinity makes the block usable by its host again.
    let r = a.assign(&request("net.b.eth0", 1, 0)).await.unwrap();
    assert!(a_block.contains(&r.v4[0].addr()));
}

/// Addresses `tabby-ipam` hands out under another plugin have no workload endpoint by design;
/// `check` must not call them leaked and `gc` must never release them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_plugin_addresses_are_never_collected() {
    let env = Env::new().await;
    env.add_pool("p", "10.96.0.0/16", None).await;
    env.put_node("n1", &[]).await;
    let a = env.allocator("n1");
    let mut plugin_attrs = attrs("n1", "chained", OLD);
    plugin_attrs.insert(ipam::attr::TYPE.into(), ipam::attr::TYPE_IPAM_PLUGIN.into());
    let chained = a
        .assign(&ipam::AssignRequest { attrs: plugin_attrs, ..request("net.chained.eth0", 1, 0) })
        .await
        .unwrap()
        .v4[0]
        .addr();
    // The same situation without the mark is a leak: the control that the test can fail.
    let stray = a
        .assign(&ipam::AssignRequest {
            attrs: attrs("n1", "stray", OLD),
            ..request("net.stray.eth0", 1, 0)
        })
        .await
        .unwrap()
        .v4[0]
        .addr();

    let report = env.check().await;
    let leaked: Vec<_> = report.leaked.iter().map(|l| l.ip).collect();
    assert_eq!(leaked, vec![stray], "{report:#?}");

    let opts = GcOptions {
        grace: Duration::ZERO,
        dry_run: false,
        this_node: Some("n1".into()),
        netns_alive: &no_netns,
        now: SystemTime::now() + Duration::from_hours(1),
    };
    let done = gc(&env.client, &env.keys, &opts).await.unwrap();
    assert_eq!(done.released, vec![stray]);
    assert!(a.get_assignment(chained).await.unwrap().is_some(), "gc released a live address");
}
