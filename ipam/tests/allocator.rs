//! The allocator against a real etcd: round trips of the fast path, specific addresses,
//! release guards, corrupt blocks, host removal, dual stack, selectors, limits, pool admin.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{ip, request, structural_problems, Env};
use datastore::keys::IpFamily;
use datastore::model::ipam::IpamConfig;
use datastore::model::{IpPoolSpec, Resource};
use ipam::{Attrs, IpamError, ReleaseOutcome, ReleaseRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_path_costs_at_most_three_round_trips() {
    let env = Env::new().await;
    env.add_pool("p", "10.70.0.0/16", None).await;
    let etcd = testkit::Etcd::shared();

    // First allocation ever: claims a block (probe + claim txn + commit on top).
    let a = env.allocator("host-a");
    let before = env.client.round_trips();
    let first = a.assign(&request("net.c0.eth0", 1, 0)).await.unwrap();
    let claim_rts = env.client.round_trips() - before;
    println!("round trips, first allocation with a block claim: {claim_rts}");
    assert_eq!(first.v4.len(), 1);
    assert_eq!(first.v4[0].prefix_len(), 32);

    // A fresh process (the CNI plugin): no hint, affine block has room.
    let client = env.fresh_client(etcd).await;
    let cold = env.allocator_with(client.clone(), "host-a");
    let before = client.round_trips();
    let r = cold.assign(&request("net.c1.eth0", 1, 0)).await.unwrap();
    let cold_rts = client.round_trips() - before;
    println!("round trips, fast path from a fresh allocator: {cold_rts}");
    assert!(cold_rts <= 3, "fast path took {cold_rts} round trips");
    assert_eq!(r.v4.len(), 1);

    // The same allocator again: it knows its blocks, so reads them in the first round trip.
    let before = client.round_trips();
    cold.assign(&request("net.c2.eth0", 1, 0)).await.unwrap();
    let warm_rts = client.round_trips() - before;
    println!("round trips, fast path from a warm allocator: {warm_rts}");
    assert!(warm_rts <= 2, "warm fast path took {warm_rts} round trips");

    let before = client.round_trips();
    let freed = cold.release_by_handle("net.c1.eth0").await.unwrap();
    let rel_rts = client.round_trips() - before;
    println!("round trips, release by handle: {rel_rts}");
    assert_eq!(freed, vec![r.v4[0].addr()]);
    assert!(rel_rts <= 3, "release took {rel_rts} round trips");

    // Releasing again is a no-op, not an error.
    assert!(cold.release_by_handle("net.c1.eth0").await.unwrap().is_empty());
    assert_eq!(structural_problems(&env.check().await), 0);
}

/// A CNI-like process: a fresh client, and the lock, hint and memo files every process of
/// `node` shares.
async fn process(env: &Env, node: &str) -> (datastore::client::Client, ipam::Allocator) {
    let client = env.fresh_client(testkit::Etcd::shared()).await;
    let lock = env.lock_path(node);
    let opts = ipam::AllocatorOptions {
        hint_file: Some(lock.with_extension("hint")),
        memo_file: Some(lock.with_extension("memo")),
        ..env.options(node)
    };
    let a = ipam::Allocator::new(client.clone(), env.keys.clone(), node, opts).unwrap();
    (client, a)
}

/// Round trips `a` spent (through `client`) on assigning one address to `handle`.
async fn assign_counting(
    client: &datastore::client::Client,
    a: &ipam::Allocator,
    handle: &str,
) -> Result<(std::net::IpAddr, u64), IpamError> {
    let before = client.round_trips();
    let got = a.assign(&request(handle, 1, 0)).await?;
    Ok((got.v4[0].addr(), client.round_trips() - before))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memo_saves_the_read_and_is_never_trusted_blindly() {
    let env = Env::new().await;
    let mut pool = env.add_pool("p", "10.69.0.0/16", None).await;
    let mut taken = std::collections::BTreeSet::new();
    let mut take = |ip: std::net::IpAddr| assert!(taken.insert(ip), "{ip} handed out twice");

    // The first process claims a block. A claim writes under the node's affinities, which a
    // memo cannot vouch for (someone else may have written there too), so the next process
    // reads once more (two round trips, as without a memo) and leaves a memo of what it read.
    let (c, a) = process(&env, "host-a").await;
    take(assign_counting(&c, &a, "net.c0.eth0").await.unwrap().0);
    let (c, a) = process(&env, "host-a").await;
    let (ip, rts) = assign_counting(&c, &a, "net.c0b.eth0").await.unwrap();
    take(ip);
    assert_eq!(rts, 2, "after a claim: read, then commit");
    // The next process plans on the memo: one transaction, no read.
    let (c, a) = process(&env, "host-a").await;
    let (ip, rts) = assign_counting(&c, &a, "net.c1.eth0").await.unwrap();
    take(ip);
    assert_eq!(rts, 1, "one round trip with a memo");

    // Someone without the memo (another tool) allocates from the same block: the next
    // guess is wrong, and the same transaction reads the truth, so it costs one more.
    let foreign = env.allocator_with(env.fresh_client(testkit::Etcd::shared()).await, "host-a");
    take(foreign.assign(&request("net.f1.eth0", 1, 0)).await.unwrap().v4[0].addr());
    let (c, a) = process(&env, "host-a").await;
    let (ip, rts) = assign_counting(&c, &a, "net.c2.eth0").await.unwrap();
    take(ip);
    assert_eq!(rts, 2, "a stale memo costs its commit and one more");

    // A release by a memo process keeps the memo true: the next ADD is one round trip again.
    let (c, a) = process(&env, "host-a").await;
    assert_eq!(a.release_by_handle("net.c1.eth0").await.unwrap().len(), 1);
    let (c2, a2) = process(&env, "host-a").await;
    let (_, rts) = assign_counting(&c2, &a2, "net.c3.eth0").await.unwrap();
    assert_eq!(rts, 1);
    drop((c, a));

    // The pool is disabled behind the memo's back: nothing may come from it any more.
    pool.spec.disabled = true;
    let key = env.keys.resource(datastore::keys::Kind::IpPool, None, "p");
    env.put_raw(&key, &serde_json::to_vec(&pool).unwrap()).await;
    let (c, a) = process(&env, "host-a").await;
    let refused = assign_counting(&c, &a, "net.c4.eth0").await;
    assert!(refused.is_err(), "allocated from a disabled pool: {refused:?}");
    pool.spec.disabled = false;
    env.put_raw(&key, &serde_json::to_vec(&pool).unwrap()).await;

    // A corrupt memo reads as none.
    std::fs::write(env.lock_path("host-a").with_extension("memo"), b"{\"node\":").unwrap();
    let (c, a) = process(&env, "host-a").await;
    let (ip, rts) = assign_counting(&c, &a, "net.c5.eth0").await.unwrap();
    take(ip);
    assert_eq!(rts, 2, "read, then commit");

    // Another node's memo is never used for this one.
    let other = env.lock_path("host-b").with_extension("memo");
    std::fs::copy(env.lock_path("host-a").with_extension("memo"), &other).unwrap();
    let (c, b) = process(&env, "host-b").await;
    let (ip, _) = assign_counting(&c, &b, "net.b1.eth0").await.unwrap();
    take(ip);
    let owner = b.get_assignment(ip).await.unwrap().expect("assigned");
    assert_eq!(owner.block_host.as_deref(), Some("host-b"), "from its own block");
    assert_eq!(structural_problems(&env.check().await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn companion_records_land_in_the_allocations_own_write() {
    let env = Env::new().await;
    env.add_pool("p", "10.71.0.0/16", None).await;
    let a = env.allocator("host-a");
    a.assign(&request("net.warm.eth0", 1, 0)).await.unwrap();
    let key = format!("{}/companion/c1", env.keys.prefix());
    let k = key.clone();
    let also = ipam::AlsoWrite::new(move |got| {
        let text: Vec<String> = got.all().map(|n| n.to_string()).collect();
        vec![(k.clone(), text.join(",").into_bytes())]
    });
    let writes = env.client.writes_attempted();
    let got = a
        .assign(&ipam::AssignRequest { also_write: Some(also), ..request("net.c1.eth0", 1, 0) })
        .await
        .unwrap();
    assert_eq!(env.client.writes_attempted() - writes, 1, "one write for both");
    let stored = env.client.get(&key).await.unwrap().expect("companion written");
    assert_eq!(stored.value, got.v4[0].to_string().into_bytes(), "made from the assigned address");
    assert_eq!(structural_problems(&env.check().await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specific_address_is_granted_only_when_free_and_inside_a_pool() {
    let env = Env::new().await;
    env.add_pool("p", "10.71.0.0/16", None).await;
    let mut off = Resource::new("off", IpPoolSpec::new("10.72.0.0/16".parse().unwrap()));
    off.spec.disabled = true;
    ipam::admin::create_pool(&env.client, &env.keys, &off).await.unwrap();
    let a = env.allocator("host-a");
    let b = env.allocator("host-b");

    // Free, and its block does not exist yet: the block is claimed for the requester.
    let got = a.assign_ip(ip("10.71.5.9"), "h1", &Attrs::new()).await.unwrap();
    assert_eq!(got.to_string(), "10.71.5.9/32");
    let asg = a.get_assignment(ip("10.71.5.9")).await.unwrap().unwrap();
    assert_eq!(asg.allocation.handle.as_deref(), Some("h1"));
    assert_eq!(asg.block.to_string(), "10.71.5.0/26");
    assert_eq!(asg.block_host.as_deref(), Some("host-a"));
    assert_eq!(asg.allocation.attrs.get("node").map(String::as_str), Some("host-a"));

    // Another free address of that block, asked by another host: granted (borrowed).
    b.assign_ip(ip("10.71.5.10"), "h2", &Attrs::new()).await.unwrap();

    let taken = b.assign_ip(ip("10.71.5.9"), "h3", &Attrs::new()).await.unwrap_err();
    assert!(
        matches!(&taken, IpamError::AddressInUse { handle: Some(h), .. } if h == "h1"),
        "{taken}"
    );
    assert!(!taken.is_retryable());
    let outside = a.assign_ip(ip("192.168.1.1"), "h4", &Attrs::new()).await.unwrap_err();
    assert!(matches!(outside, IpamError::NotInPool { .. }), "{outside}");
    let disabled = a.assign_ip(ip("10.72.0.1"), "h5", &Attrs::new()).await.unwrap_err();
    assert!(matches!(disabled, IpamError::NotInPool { .. }), "{disabled}");

    // Auto-assignment never hands out the taken addresses.
    let r = a.assign(&request("h6", 3, 0)).await.unwrap();
    for net in &r.v4 {
        assert_ne!(net.addr(), ip("10.71.5.9"));
        assert_ne!(net.addr(), ip("10.71.5.10"));
    }
    assert_eq!(structural_problems(&env.check().await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_release_is_refused_by_the_sequence_guard() {
    let env = Env::new().await;
    env.add_pool("p", "10.73.0.0/24", Some(30)).await;
    let a = env.allocator("host-a");
    let addr = ip("10.73.0.1");
    a.assign_ip(addr, "old", &Attrs::new()).await.unwrap();
    let old_seq = a.get_assignment(addr).await.unwrap().unwrap().allocation.sequence.unwrap();

    let out = a
        .release_ips(&[ReleaseRequest {
            ip: addr,
            handle: Some("old".into()),
            sequence: Some(old_seq),
        }])
        .await
        .unwrap();
    assert_eq!(out, vec![ReleaseOutcome::Released { handle: Some("old".into()) }]);
    a.assign_ip(addr, "new", &Attrs::new()).await.unwrap();

    // A release that saw the old allocation (a slow GC, say) must not free the new one.
    let out = a
        .release_ips(&[ReleaseRequest { ip: addr, handle: None, sequence: Some(old_seq) }])
        .await
        .unwrap();
    assert!(matches!(out[0], ReleaseOutcome::SequenceMismatch { .. }), "{out:?}");
    let out = a
        .release_ips(&[ReleaseRequest { ip: addr, handle: Some("old".into()), sequence: None }])
        .await
        .unwrap();
    assert!(matches!(out[0], ReleaseOutcome::HandleMismatch { .. }), "{out:?}");
    let now = a.get_assignment(addr).await.unwrap().unwrap();
    assert_eq!(now.allocation.handle.as_deref(), Some("new"));

    // Unguarded release and idempotence.
    let out = a.release_ips(&[ReleaseRequest::ip(addr), ReleaseRequest::ip(addr)]).await.unwrap();
    assert_eq!(out[0], ReleaseOutcome::Released { handle: Some("new".into()) });
    assert_eq!(out[1], ReleaseOutcome::NotAllocated);
    assert!(a.get_assignment(addr).await.unwrap().is_none());
    let report = env.check().await;
    assert!(report.is_clean(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_block_is_skipped_and_reported() {
    let env = Env::new().await;
    env.add_pool("p", "10.74.0.0/16", None).await;
    let a = env.allocator("host-a");
    let first = a.assign(&request("h1", 1, 0)).await.unwrap();
    let usage = a.usage().await.unwrap();
    let cidr = usage.host_blocks("host-a").next().unwrap().cidr;
    let key = env.keys.block(cidr);
    env.put_raw(&key, b"{\"cidr\": \"10.74.0.0/26\", \"allocations\": [tru").await;

    // The allocator cannot use its corrupt block: it claims another one.
    let r = a.assign(&request("h2", 1, 0)).await.unwrap();
    assert!(!cidr.contains(&r.v4[0].addr()), "allocated from the corrupt block");
    assert_ne!(r.v4[0], first.v4[0]);

    let report = env.check().await;
    assert!(report.corrupt_records.iter().any(|c| c.key == key), "{report:#?}");
    assert!(!report.is_clean());
    // Release of the handle in the corrupt block does not fail the caller.
    a.release_by_handle("h1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_is_unavailable_within_bounded_time() {
    let mut etcd = testkit::Etcd::start();
    let env = Env::with_etcd(&etcd).await;
    env.add_pool("p", "10.75.0.0/16", None).await;
    let mut opts = env.options("host-a");
    opts.timeout = Duration::from_secs(3);
    let a = ipam::Allocator::new(env.client.clone(), env.keys.clone(), "host-a", opts).unwrap();
    a.assign(&request("h0", 1, 0)).await.unwrap();

    // Hung etcd: requests time out.
    etcd.freeze();
    let start = Instant::now();
    let err = a.assign(&request("h1", 1, 0)).await.unwrap_err();
    let waited = start.elapsed();
    println!("hung etcd: {err} after {waited:?}");
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err, IpamError::Unavailable { .. } | IpamError::Timeout { .. }), "{err}");
    assert!(waited < Duration::from_secs(4), "took {waited:?}");
    etcd.thaw();

    // Dead etcd: refused connections.
    etcd.stop();
    let start = Instant::now();
    let err = a.assign(&request("h2", 1, 0)).await.unwrap_err();
    let waited = start.elapsed();
    println!("stopped etcd: {err} after {waited:?}");
    assert!(matches!(err, IpamError::Unavailable { .. } | IpamError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(waited < Duration::from_secs(4), "took {waited:?}");
    let err = a.release_by_handle("h0").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_release_deletes_empty_blocks_and_unaffines_the_rest() {
    let env = Env::new().await;
    env.add_pool("p", "10.76.0.0/16", None).await;
    let a = env.allocator("host-a");
    // Two blocks: 65 addresses, then all released, then one kept.
    a.assign(&request("big", 65, 0)).await.unwrap();
    a.release_by_handle("big").await.unwrap();
    let kept = a.assign(&request("kept", 1, 0)).await.unwrap();
    let before = a.usage().await.unwrap();
    assert_eq!(before.host_blocks("host-a").count(), 2);

    let done = a.release_host("host-a").await.unwrap();
    assert_eq!(done.affinities_deleted.len(), 2);
    assert_eq!(done.blocks_deleted.len(), 1);
    assert_eq!(done.blocks_unaffined.len(), 1);
    assert!(done.blocks_unaffined[0].contains(&kept.v4[0].addr()));

    let after = a.usage().await.unwrap();
    assert_eq!(after.blocks.len(), 1);
    assert_eq!(after.blocks[0].host, None);
    assert_eq!(after.blocks[0].in_use, 1);
    assert_eq!(structural_problems(&env.check().await), 0);
    // Releasing the last address deletes the unaffine block.
    a.release_by_handle("kept").await.unwrap();
    assert!(a.usage().await.unwrap().blocks.is_empty());
    assert!(env.check().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_is_all_or_nothing() {
    let env = Env::new().await;
    env.add_pool("v4", "10.77.0.0/16", None).await;
    env.add_pool("v6", "fd77::/120", Some(122)).await;
    let a = env.allocator("host-a");
    let r = a.assign(&request("ds", 1, 1)).await.unwrap();
    assert_eq!(r.v4.len(), 1);
    assert_eq!(r.v6.len(), 1);
    assert_eq!(r.v6[0].prefix_len(), 128);
    assert!(r.v6[0].addr().to_string().starts_with("fd77::"));

    // The v6 pool has 256 addresses: asking for 300 fails, and no v4 address is left behind.
    let err = a.assign(&request("too-many", 1, 300)).await.unwrap_err();
    assert!(matches!(&err, IpamError::PoolExhausted { family: IpFamily::V6, .. }), "{err}");
    let usage = a.usage().await.unwrap();
    let v4 = usage.pools.iter().find(|p| p.name == "v4").unwrap();
    assert_eq!(v4.in_use, 1);

    let freed = a.release_by_handle("ds").await.unwrap();
    assert_eq!(freed.len(), 2);
    let report = env.check().await;
    assert!(report.is_clean(), "{report:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_and_requested_pools() {
    let env = Env::new().await;
    let mut rack = Resource::new("rack1", IpPoolSpec::new("10.78.0.0/16".parse().unwrap()));
    rack.spec.node_selector = Some("rack == 'one'".into());
    ipam::admin::create_pool(&env.client, &env.keys, &rack).await.unwrap();
    let mut other = Resource::new("other", IpPoolSpec::new("10.79.0.0/16".parse().unwrap()));
    other.spec.node_selector = Some("rack != 'one'".into());
    ipam::admin::create_pool(&env.client, &env.keys, &other).await.unwrap();
    env.put_node("in-rack", &[("rack", "one")]).await;
    env.put_node("elsewhere", &[("rack", "two")]).await;

    let r = env.allocator("in-rack").assign(&request("h1", 1, 0)).await.unwrap();
    assert!(r.v4[0].addr().to_string().starts_with("10.78."), "{r:?}");
    let r = env.allocator("elsewhere").assign(&request("h2", 1, 0)).await.unwrap();
    assert!(r.v4[0].addr().to_string().starts_with("10.79."), "{r:?}");
    // Named pools override the selector, by name or CIDR.
    let mut req = request("h3", 1, 0);
    req.v4_pools = vec!["10.78.0.0/16".into()];
    let r = env.allocator("elsewhere").assign(&req).await.unwrap();
    assert!(r.v4[0].addr().to_string().starts_with("10.78."), "{r:?}");
    req.v4_pools = vec!["missing".into()];
    let err = env.allocator("elsewhere").assign(&req).await.unwrap_err();
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    let err = env.allocator("elsewhere").assign(&request("h4", 0, 1)).await.unwrap_err();
    assert!(matches!(err, IpamError::NoPool { family: IpFamily::V6, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_affinity_respects_the_block_limit() {
    let env = Env::new().await;
    env.add_pool("p", "10.80.0.0/24", None).await;
    let config =
        IpamConfig { strict_affinity: true, max_blocks_per_host: 1, ..IpamConfig::default() };
    ipam::admin::set_config(&env.client, &env.keys, &config).await.unwrap();
    let a = env.allocator("host-a");
    a.assign(&request("h1", 64, 0)).await.unwrap();
    let err = a.assign(&request("h2", 1, 0)).await.unwrap_err();
    assert!(matches!(err, IpamError::BlockLimit { limit: 1, .. }), "{err}");
    // Another host still gets its own block; strict affinity means no borrowing.
    let b = env.allocator("host-b");
    b.assign(&request("h3", 64, 0)).await.unwrap();
    let err = b.assign(&request("h4", 1, 0)).await.unwrap_err();
    assert!(matches!(err, IpamError::BlockLimit { .. }), "{err}");
    assert_eq!(structural_problems(&env.check().await), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_admin_validates_before_writing() {
    let env = Env::new().await;
    env.add_pool("base", "10.81.0.0/16", None).await;
    let create = |name: &str, cidr: &str, bs: Option<u8>| {
        let mut spec = IpPoolSpec::new(cidr.parse().unwrap());
        spec.block_size = bs;
        Resource::new(name, spec)
    };
    let err =
        ipam::admin::create_pool(&env.client, &env.keys, &create("o", "10.81.128.0/17", None))
            .await
            .unwrap_err();
    assert!(matches!(&err, IpamError::PoolOverlap { other, .. } if other == "base"), "{err}");
    let err =
        ipam::admin::create_pool(&env.client, &env.keys, &create("b", "10.82.0.0/16", Some(33)))
            .await
            .unwrap_err();
    assert!(
        matches!(&err, IpamError::InvalidPool { field, .. } if field == "spec.blockSize"),
        "{err}"
    );
    let err = ipam::admin::create_pool(&env.client, &env.keys, &create("c", "10.82.0.1/16", None))
        .await
        .unwrap_err();
    assert!(matches!(&err, IpamError::InvalidPool { field, .. } if field == "spec.cidr"), "{err}");
    let err =
        ipam::admin::create_pool(&env.client, &env.keys, &create("base", "10.83.0.0/16", None))
            .await
            .unwrap_err();
    assert!(matches!(err, IpamError::InvalidPool { .. }), "{err}");

    let a = env.allocator("host-a");
    a.assign(&request("h", 1, 0)).await.unwrap();
    let err = ipam::admin::delete_pool(&env.client, &env.keys, "base", false).await.unwrap_err();
    assert!(matches!(err, IpamError::PoolInUse { in_use: 1, .. }), "{err}");
    let p = ipam::admin::set_pool_disabled(&env.client, &env.keys, "base", true).await.unwrap();
    assert!(p.disabled);
    let err = a.assign(&request("h2", 1, 0)).await.unwrap_err();
    assert!(matches!(err, IpamError::NoPool { .. }), "{err}");
    a.release_by_handle("h").await.unwrap();
    let del = ipam::admin::delete_pool(&env.client, &env.keys, "base", false).await.unwrap();
    assert_eq!(del.blocks_deleted.len(), 1);
    let (pools, bad) = ipam::admin::list_pools(&env.client, &env.keys).await.unwrap();
    assert!(pools.is_empty() && bad.is_empty());
    assert!(env.check().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_specific_addresses_are_all_or_nothing() {
    let env = Env::new().await;
    env.add_pool("v4", "10.84.0.0/16", None).await;
    env.add_pool("v6", "fd84::/112", None).await;
    let a = env.allocator("host-a");
    a.assign_ip(ip("fd84::7"), "taken", &Attrs::new()).await.unwrap();

    let err =
        a.assign_ips(&[ip("10.84.0.7"), ip("fd84::7")], "pair", &Attrs::new()).await.unwrap_err();
    assert!(matches!(err, IpamError::AddressInUse { .. }), "{err}");
    assert!(
        a.get_assignment(ip("10.84.0.7")).await.unwrap().is_none(),
        "half of a failed pair kept"
    );

    let nets =
        a.assign_ips(&[ip("10.84.0.7"), ip("fd84::8")], "pair", &Attrs::new()).await.unwrap();
    assert_eq!(
        nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.84.0.7/32", "fd84::8/128"]
    );
    let err =
        a.assign_ips(&[ip("10.84.0.9"), ip("10.84.0.9")], "dup", &Attrs::new()).await.unwrap_err();
    assert!(matches!(err, IpamError::InvalidRequest { .. }), "{err}");
    assert_eq!(a.release_by_handle("pair").await.unwrap().len(), 2);
    assert_eq!(structural_problems(&env.check().await), 0);
}
