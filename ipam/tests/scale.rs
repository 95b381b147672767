//! First allocation on a big pool that other hosts already crowd: the allocator must find a
//! free block without reading all 10,000 claimed ones (Calico's linear scan took 74 s for
//! 1,284 blocks, libcalico #72).
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::time::Instant;

use common::{request, structural_problems, Env};
use datastore::client::Op;
use datastore::model::ipam::{AffinityState, BlockAffinity};
use ipam::candidates::Candidates;
use ipam::Block;
use ipnet::IpNet;

const CLAIMED: usize = 10_000;

/// Writes `blocks` as claimed by hosts `other-0..99`, 64 blocks (128 keys) per transaction.
async fn preclaim(env: &Env, blocks: &[IpNet]) {
    let start = Instant::now();
    let affinity = serde_json::to_vec(&BlockAffinity {
        state: AffinityState::Confirmed,
        ..BlockAffinity::default()
    })
    .unwrap();
    for (n, chunk) in blocks.chunks(64).enumerate() {
        let mut ops = Vec::with_capacity(chunk.len() * 2);
        for (i, cidr) in chunk.iter().enumerate() {
            let host = format!("other-{}", (n * 64 + i) % 100);
            let block = Block::new(*cidr, Some(&host), 1).unwrap();
            ops.push(Op::Put {
                key: env.keys.block(*cidr),
                value: serde_json::to_vec(block.record()).unwrap(),
                lease: None,
            });
            ops.push(Op::Put {
                key: env.keys.affinity(&host, *cidr),
                value: affinity.clone(),
                lease: None,
            });
        }
        assert!(env.client.txn(vec![], ops).await.unwrap().succeeded);
    }
    println!("pre-claimed {} blocks in {:?}", blocks.len(), start.elapsed());
}

async fn first_allocation(env: &Env, node: &str) {
    let client = env.fresh_client(testkit::Etcd::shared()).await;
    let a = env.allocator_with(client.clone(), node);
    let start = Instant::now();
    let r = a.assign(&request("net.first.eth0", 1, 0)).await.unwrap();
    let took = start.elapsed();
    println!(
        "first allocation for {node} with {CLAIMED} blocks claimed: {took:?}, {} round trips",
        client.round_trips() - 1
    );
    let got = a.get_assignment(r.v4[0].addr()).await.unwrap().unwrap();
    assert_eq!(got.block_host.as_deref(), Some(node), "the new host must get its own block");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_allocation_on_a_crowded_slash_8() {
    let env = Env::new().await;
    env.add_pool("big", "10.0.0.0/8", None).await;
    let pool: IpNet = "10.0.0.0/8".parse().unwrap();

    // Realistic: the other hosts claimed blocks in their own probe orders.
    let mut blocks: Vec<IpNet> = Vec::with_capacity(CLAIMED);
    let mut seen = std::collections::BTreeSet::new();
    let mut orders: Vec<Candidates> =
        (0..100).map(|h| Candidates::new(pool, 26, &format!("other-{h}"))).collect();
    'fill: loop {
        for order in &mut orders {
            let cidr = order.next().unwrap();
            if seen.insert(cidr) {
                blocks.push(cidr);
                if blocks.len() == CLAIMED {
                    break 'fill;
                }
            }
        }
    }
    preclaim(&env, &blocks).await;
    first_allocation(&env, "newcomer").await;

    // Adversarial: the first 10,000 blocks of this host's own order are all taken, so
    // probing by batches gives up and the allocator walks its order against one listing.
    let unlucky = "unlucky";
    let own: Vec<IpNet> =
        Candidates::new(pool, 26, unlucky).filter(|c| !seen.contains(c)).take(CLAIMED).collect();
    preclaim(&env, &own).await;
    first_allocation(&env, unlucky).await;

    let report = env.check().await;
    assert_eq!(structural_problems(&report), 0, "{:?}", report.corrupt_records);
    assert_eq!(report.counts.blocks, 2 * CLAIMED + 2);
}
