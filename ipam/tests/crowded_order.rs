//! A host whose own candidate order is crowded: the prober leaps ahead instead of probing
//! every taken block, and falls back to a keys-only listing without losing a free block it
//! leapt over.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;

use common::{request, structural_problems, Env};
use datastore::client::Op;
use ipam::candidates::Candidates;
use ipam::{Allocator, AllocatorOptions, Block};
use ipnet::IpNet;

/// Writes `blocks` as claimed by another host (block records only; enough to be "taken").
async fn take(env: &Env, blocks: &[IpNet]) {
    for chunk in blocks.chunks(100) {
        let ops = chunk
            .iter()
            .map(|cidr| Op::Put {
                key: env.keys.block(*cidr),
                value: serde_json::to_vec(Block::new(*cidr, None, 1).unwrap().record()).unwrap(),
                lease: None,
            })
            .collect();
        assert!(env.client.txn(vec![], ops).await.unwrap().succeeded);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowded_prefix_of_the_order_costs_a_few_leaps() {
    let env = Env::new().await;
    env.add_pool("p", "10.50.0.0/16", None).await;
    let pool: IpNet = "10.50.0.0/16".parse().unwrap();
    let node = "crowded";
    let taken: Vec<IpNet> = Candidates::new(pool, 26, node).take(600).collect();
    take(&env, &taken).await;

    let client = env.fresh_client(testkit::Etcd::shared()).await;
    let a = env.allocator_with(client.clone(), node);
    let before = client.round_trips();
    let r = a.assign(&request("net.c.eth0", 1, 0)).await.unwrap();
    let trips = client.round_trips() - before;
    let got = a.get_assignment(r.v4[0].addr()).await.unwrap().unwrap();
    assert_eq!(got.block_host.as_deref(), Some(node));
    assert!(!taken.contains(&got.block), "claimed a taken block");
    // Read, batches at 0 and 64, leaps of 128 and 256 to batches at 256 and 576 (past the
    // 600 taken), claim, commit: 7. Probing batch after batch would take 10 batches.
    assert!(trips <= 7, "{trips} round trips");

    // Without leaps the prober lists the block keys after two fruitless batches.
    let node = "crowded-lister";
    let taken: Vec<IpNet> =
        Candidates::new(pool, 26, node).filter(|c| *c != got.block).take(600).collect();
    take(&env, &taken).await;
    let opts = AllocatorOptions { max_leaps: 0, ..env.options(node) };
    let a = Allocator::new(client.clone(), env.keys.clone(), node, opts).unwrap();
    let before = client.round_trips();
    let r = a.assign(&request("net.d.eth0", 1, 0)).await.unwrap();
    let trips = client.round_trips() - before;
    let got = a.get_assignment(r.v4[0].addr()).await.unwrap().unwrap();
    assert_eq!(got.block_host.as_deref(), Some(node));
    // Read, 2 batches, one page of keys, claim, commit.
    assert_eq!(trips, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_block_leapt_over_is_found_by_the_listing() {
    let env = Env::new().await;
    env.add_pool("p", "10.51.0.0/22", None).await; // 16 blocks
    let pool: IpNet = "10.51.0.0/22".parse().unwrap();
    let node = "leaper";
    let order: Vec<IpNet> = Candidates::new(pool, 26, node).collect();
    assert_eq!(order.len(), 16);
    // Only the 6th candidate is free. With batches of 2 and a leap after every fruitless
    // batch, the prober probes 0-1, leaps over 2-5, probes 6-7, leaps past the end: only the
    // listing can find candidate 5.
    let free = order[5];
    let taken: Vec<IpNet> = order.iter().copied().filter(|c| *c != free).collect();
    take(&env, &taken).await;
    let opts =
        AllocatorOptions { probe_batch: 2, probe_batches_before_list: 1, ..env.options(node) };
    let a = Allocator::new(env.client.clone(), env.keys.clone(), node, opts).unwrap();
    let r = a.assign(&request("net.l.eth0", 1, 0)).await.unwrap();
    let got = a.get_assignment(r.v4[0].addr()).await.unwrap().unwrap();
    assert_eq!(got.block, free);
    assert_eq!(got.block_host.as_deref(), Some(node));

    // The pool has no free block left: the next host borrows instead of claiming twice.
    let b = env.allocator("other");
    let r = b.assign(&request("net.o.eth0", 1, 0)).await.unwrap();
    let got = b.get_assignment(r.v4[0].addr()).await.unwrap().unwrap();
    assert_ne!(got.block_host.as_deref(), Some("other"));
    let report = env.check().await;
    assert_eq!(structural_problems(&report), 0, "{report:#?}");
    let claimed: BTreeSet<_> = report.duplicate_affinities.iter().map(|d| d.block).collect();
    assert!(claimed.is_empty());
}
