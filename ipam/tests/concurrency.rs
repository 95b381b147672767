//! Several simulated hosts allocating at once against one etcd: uniqueness, affinity,
//! borrowing and exhaustion.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use common::{request, structural_problems, Env};
use ipam::{Allocator, IpamError};

/// Runs `per_host` concurrent assigns on each allocator; returns (host, handle, address).
async fn allocate_all(
    allocs: &[Arc<Allocator>],
    per_host: usize,
    tag: &str,
) -> Vec<(String, String, IpAddr)> {
    let mut tasks = Vec::new();
    for a in allocs {
        for i in 0..per_host {
            let a = a.clone();
            let handle = format!("{tag}.{}.{i}.eth0", a.node());
            tasks.push(tokio::spawn(async move {
                let r = a.assign(&request(&handle, 1, 0)).await;
                (a.node().to_string(), handle, r)
            }));
        }
    }
    let mut out = Vec::new();
    for t in tasks {
        let (node, handle, r) = t.await.expect("task");
        let r = r.unwrap_or_else(|e| panic!("{node} {handle}: {e}"));
        assert_eq!(r.v4.len(), 1);
        out.push((node, handle, r.v4[0].addr()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_hosts_hundred_allocations_each() {
    let env = Env::new().await;
    env.add_pool("p", "10.90.0.0/16", None).await;
    let hosts = ["host-1", "host-2", "host-3", "host-4"];
    let allocs: Vec<Arc<Allocator>> = hosts.iter().map(|h| Arc::new(env.allocator(h))).collect();

    let start = Instant::now();
    let got = allocate_all(&allocs, 100, "net").await;
    let took = start.elapsed();
    println!(
        "4 hosts x 100 concurrent allocations: {took:?} ({:.0} allocations/s), {} round trips",
        400.0 / took.as_secs_f64(),
        env.client.round_trips()
    );

    let unique: BTreeSet<IpAddr> = got.iter().map(|(_, _, ip)| *ip).collect();
    assert_eq!(unique.len(), 400, "duplicate addresses handed out");

    // The pool has plenty of free blocks, so nobody borrows: every address sits in a block
    // affine to the host that asked for it.
    let usage = env.allocator("reader").usage().await.unwrap();
    for (node, handle, ip) in &got {
        let block = usage.blocks.iter().find(|b| b.cidr.contains(ip)).expect("block of address");
        assert_eq!(
            block.host.as_deref(),
            Some(node.as_str()),
            "{handle} got {ip} from {}",
            block.cidr
        );
    }
    let per_host: BTreeMap<&str, usize> =
        hosts.iter().map(|h| (*h, usage.host_blocks(h).count())).collect();
    println!("blocks per host: {per_host:?}");
    assert!(
        per_host.values().all(|&n| n == 2),
        "100 addresses need exactly two /26 blocks: {per_host:?}"
    );

    let report = env.check().await;
    assert!(report.duplicate_affinities.is_empty(), "{:?}", report.duplicate_affinities);
    assert_eq!(structural_problems(&report), 0, "{report:#?}");
    assert_eq!(report.leaked.len(), 400, "no endpoints were written, so all 400 are unaccounted");

    // Release everything, concurrently.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (node, handle, ip) in got {
        let a = allocs.iter().find(|a| a.node() == node).expect("allocator").clone();
        tasks.push(tokio::spawn(async move {
            let freed = a.release_by_handle(&handle).await.expect("release");
            assert_eq!(freed, vec![ip]);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    println!("400 concurrent releases: {:?}", start.elapsed());
    let report = env.check().await;
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.counts.allocations, 0);
    assert_eq!(report.counts.handles, 0);
    let usage = env.allocator("reader").usage().await.unwrap();
    assert_eq!(usage.pools[0].in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhaustion_borrows_every_address_then_fails_clearly() {
    let env = Env::new().await;
    env.add_pool("small", "10.91.0.0/24", Some(26)).await;
    let hosts = ["h1", "h2", "h3", "h4", "h5"];
    let allocs: Vec<Arc<Allocator>> = hosts.iter().map(|h| Arc::new(env.allocator(h))).collect();

    // 5 hosts, 4 blocks: 256 addresses in total, asked for concurrently (52 per host, 256 in
    // all after trimming the last host).
    let mut tasks = Vec::new();
    for i in 0..256usize {
        let a = allocs[i % hosts.len()].clone();
        tasks.push(tokio::spawn(async move {
            let handle = format!("net.c{i}.eth0");
            a.assign(&request(&handle, 1, 0)).await.map(|r| r.v4[0].addr())
        }));
    }
    let mut ips = BTreeSet::new();
    for t in tasks {
        let ip = t
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("allocation failed before the pool was full: {e}"));
        assert!(ips.insert(ip), "duplicate {ip}");
    }
    assert_eq!(ips.len(), 256);

    for a in &allocs {
        let err = a.assign(&request("net.one-too-many.eth0", 1, 0)).await.unwrap_err();
        assert!(
            matches!(&err, IpamError::PoolExhausted { pools, .. } if pools.len() == 1),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("pool exhausted"), "{err}");
    }

    let report = env.check().await;
    assert_eq!(structural_problems(&report), 0, "{report:#?}");
    assert_eq!(report.counts.allocations, 256);
    assert!(report.duplicate_affinities.is_empty());
    let usage = env.allocator("reader").usage().await.unwrap();
    assert_eq!((usage.pools[0].in_use, usage.pools[0].free), (256, 0));
    let borrowed: usize = usage.blocks.iter().map(|b| b.borrowed.len()).sum();
    println!("borrowed addresses: {borrowed}");
    // Which host lost the race for a block is up to the race; whoever it was borrowed every
    // address it asked for (52 for h1, 51 for the others). Block owners may borrow too, once
    // borrowers have filled their blocks, so this is a lower bound.
    let blockless: Vec<usize> =
        (0..hosts.len()).filter(|&h| usage.host_blocks(hosts[h]).next().is_none()).collect();
    assert!(!blockless.is_empty(), "5 hosts cannot all hold one of 4 blocks");
    let asked: usize =
        blockless.iter().map(|&h| (0..256).filter(|i| i % hosts.len() == h).count()).sum();
    assert!(borrowed >= asked, "hosts without a block asked for {asked}, only {borrowed} borrowed");
}
