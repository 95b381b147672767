//! Model-based property test of the allocator against a real etcd: random sequences of
//! assign, assign-a-given-address, release by handle, guarded release, host removal and two
//! hosts assigning at once, on a pool so small that hosts claim every block and then borrow.
//! After every step the addresses held in etcd are exactly the model's, no address is in two
//! handles or blocks, and `ipamctl check` finds nothing but the expected "leaks" (the test
//! writes no workload endpoints).
//!
//! The block-level property test (no etcd) is in `src/block/tests.rs`; this one covers what
//! only the allocator does: claims, borrowing, handle records, affinities, hints.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use common::{request, structural_problems, Env};
use ipam::inventory::Inventory;
use ipam::{Allocator, Attrs, IpamError, ReleaseOutcome, ReleaseRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// 16 addresses in four /30 blocks, shared by three hosts: the fourth block claim and every
/// allocation after the pool's blocks are taken exercise borrowing.
const POOL: &str = "10.93.0.0/28";
const POOL_SIZE: u8 = 16;
const BLOCK_SIZE: u8 = 30;
const HOSTS: usize = 3;
const HANDLES: u8 = 6;

#[derive(Debug, Clone)]
enum Op {
    Assign {
        host: usize,
        handle: u8,
        n: usize,
    },
    /// `offset` past the pool's end asks for an address outside every pool.
    AssignIp {
        host: usize,
        handle: u8,
        offset: u8,
    },
    ReleaseHandle {
        host: usize,
        handle: u8,
    },
    /// Release one address, guarded by a handle and/or the sequence number it was read with.
    ReleaseIp {
        host: usize,
        offset: u8,
        guard: Option<u8>,
        seq_guard: bool,
    },
    /// Host `gone` is removed (its affinities deleted, its blocks emptied or unaffined).
    ReleaseHost {
        by: usize,
        gone: usize,
    },
    /// Two hosts assign at once, each with its own handle.
    Concurrent {
        a: usize,
        b: usize,
        handle_a: u8,
        handle_b: u8,
    },
    /// The host's allocator is replaced by a new one (a new CNI process: no hint).
    Restart {
        host: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let host = 0..HOSTS;
    let handle = 0..HANDLES;
    prop_oneof![
        4 => (host.clone(), handle.clone(), 1usize..4)
            .prop_map(|(host, handle, n)| Op::Assign { host, handle, n }),
        2 => (host.clone(), handle.clone(), 0..POOL_SIZE + 2)
            .prop_map(|(host, handle, offset)| Op::AssignIp { host, handle, offset }),
        2 => (host.clone(), handle.clone())
            .prop_map(|(host, handle)| Op::ReleaseHandle { host, handle }),
        2 => (host.clone(), 0..POOL_SIZE, proptest::option::of(handle.clone()), any::<bool>())
            .prop_map(|(host, offset, guard, seq_guard)| Op::ReleaseIp { host, offset, guard, seq_guard }),
        1 => (host.clone(), host.clone()).prop_map(|(by, gone)| Op::ReleaseHost { by, gone }),
        2 => (host.clone(), 1..HOSTS, handle.clone(), handle.clone()).prop_map(
            |(a, d, handle_a, handle_b)| Op::Concurrent { a, b: (a + d) % HOSTS, handle_a, handle_b }
        ),
        1 => host.prop_map(|host| Op::Restart { host }),
    ]
}

fn host_name(i: usize) -> String {
    format!("host-{i}")
}

fn handle_name(h: u8) -> String {
    format!("net.c{h}.eth0")
}

fn pool_ip(offset: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 93, 0, offset))
}

/// The model: which handle holds each address.
type Model = BTreeMap<IpAddr, String>;

fn free_in(model: &Model) -> usize {
    usize::from(POOL_SIZE) - model.len()
}

/// Checks a refused assign: only for want of room, and changing nothing.
fn expect_exhausted(r: &Result<ipam::AssignResult, IpamError>, model: &Model, n: usize) {
    match r {
        Ok(got) => assert_eq!(got.v4.len(), n, "assign returned the wrong count: {got:?}"),
        Err(IpamError::PoolExhausted { .. }) => {
            assert!(free_in(model) < n, "pool exhausted with {} free for {n}", free_in(model));
        }
        Err(e) => panic!("assign failed: {e}"),
    }
}

struct World {
    env: Env,
    allocs: Vec<Allocator>,
    model: Model,
    seen: Seen,
}

/// What the cases exercised, so a generator that stopped reaching borrowing or exhaustion
/// fails the test instead of passing vacuously.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// Allocations made by a host other than the block's.
    borrowed: usize,
    /// Assigns refused because the pool was full.
    exhausted: usize,
    /// Non-empty blocks left without a host by a host removal.
    unaffine_blocks: usize,
}

impl Seen {
    fn add(&mut self, other: Seen) {
        self.borrowed += other.borrowed;
        self.exhausted += other.exhausted;
        self.unaffine_blocks += other.unaffine_blocks;
    }
}

impl World {
    async fn new() -> World {
        let env = Env::new().await;
        env.add_pool("p", POOL, Some(BLOCK_SIZE)).await;
        let allocs = (0..HOSTS).map(|i| env.allocator(&host_name(i))).collect();
        World { env, allocs, model: Model::new(), seen: Seen::default() }
    }

    /// Records a successful assign of `n` addresses to `handle` in the model.
    fn granted(&mut self, handle: &str, got: &ipam::AssignResult, n: usize) {
        assert_eq!(got.v4.len(), n, "{handle}: {got:?}");
        assert!(got.v6.is_empty());
        for net in &got.v4 {
            assert_eq!(net.prefix_len(), 32);
            let pool: ipnet::IpNet = POOL.parse().unwrap();
            assert!(pool.contains(&net.addr()), "{net} is outside the pool");
            let prev = self.model.insert(net.addr(), handle.to_owned());
            assert!(prev.is_none(), "{} handed to {handle} while {prev:?} holds it", net.addr());
        }
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Assign { host, handle, n } => {
                let h = handle_name(handle);
                let r = self.allocs[host].assign(&request(&h, n, 0)).await;
                expect_exhausted(&r, &self.model, n);
                self.seen.exhausted += usize::from(r.is_err());
                if let Ok(got) = r {
                    assert!(free_in(&self.model) >= n);
                    self.granted(&h, &got, n);
                }
            }
            Op::AssignIp { host, handle, offset } => {
                let (h, ip) = (handle_name(handle), pool_ip(offset));
                let r = self.allocs[host].assign_ip(ip, &h, &Attrs::new()).await;
                match (&r, offset < POOL_SIZE, self.model.get(&ip)) {
                    (Ok(net), true, None) => {
                        assert_eq!(net.addr(), ip);
                        self.model.insert(ip, h);
                    }
                    (Err(IpamError::AddressInUse { handle, .. }), true, Some(holder)) => {
                        assert_eq!(handle.as_ref(), Some(holder));
                    }
                    (Err(IpamError::NotInPool { .. }), false, _) => {}
                    _ => panic!("assign_ip {ip} (holder {:?}): {r:?}", self.model.get(&ip)),
                }
            }
            Op::ReleaseHandle { host, handle } => {
                let h = handle_name(handle);
                let freed: BTreeSet<IpAddr> =
                    self.allocs[host].release_by_handle(&h).await.unwrap().into_iter().collect();
                let held: BTreeSet<IpAddr> =
                    self.model.iter().filter(|(_, v)| **v == h).map(|(ip, _)| *ip).collect();
                assert_eq!(freed, held, "release_by_handle({h})");
                self.model.retain(|_, v| *v != h);
            }
            Op::ReleaseIp { host, offset, guard, seq_guard } => {
                let ip = pool_ip(offset);
                let a = &self.allocs[host];
                let sequence = if seq_guard {
                    a.get_assignment(ip).await.unwrap().and_then(|asg| asg.allocation.sequence)
                } else {
                    None
                };
                let want = guard.map(handle_name);
                let req = ReleaseRequest { ip, handle: want.clone(), sequence };
                let out = a.release_ips(&[req]).await.unwrap();
                assert_eq!(out.len(), 1);
                let holder = self.model.get(&ip).cloned();
                match (&out[0], holder) {
                    (ReleaseOutcome::NotAllocated, None) => {}
                    (ReleaseOutcome::Released { handle }, Some(holder))
                        if want.as_ref().is_none_or(|w| *w == holder) =>
                    {
                        assert_eq!(handle.as_ref(), Some(&holder));
                        self.model.remove(&ip);
                    }
                    (ReleaseOutcome::HandleMismatch { actual }, Some(holder))
                        if want.as_ref().is_some_and(|w| *w != holder) =>
                    {
                        assert_eq!(actual.as_ref(), Some(&holder));
                    }
                    (other, holder) => {
                        panic!("release {ip} guarded by {want:?}: {other:?}, holder {holder:?}")
                    }
                }
            }
            Op::ReleaseHost { by, gone } => {
                self.allocs[by].release_host(&host_name(gone)).await.unwrap();
            }
            Op::Concurrent { a, b, handle_a, handle_b } => {
                let (ha, hb) = (handle_name(handle_a), handle_name(handle_b));
                let (req_a, req_b) = (request(&ha, 1, 0), request(&hb, 1, 0));
                let (ra, rb) =
                    tokio::join!(self.allocs[a].assign(&req_a), self.allocs[b].assign(&req_b));
                let free = free_in(&self.model);
                for (h, r) in [(&ha, ra), (&hb, rb)] {
                    match r {
                        Ok(got) => self.granted(h, &got, 1),
                        Err(IpamError::PoolExhausted { .. }) => {
                            assert!(free < 2, "{h}: exhausted with {free} free for two");
                            self.seen.exhausted += 1;
                        }
                        Err(e) => panic!("concurrent assign {h}: {e}"),
                    }
                }
            }
            Op::Restart { host } => {
                self.allocs[host] = self.env.allocator(&host_name(host));
            }
        }
    }

    /// What etcd holds must be the model, and consistent.
    async fn check(&mut self, step: usize, op: &Op) {
        let inv = Inventory::load(&self.env.client, &self.env.keys).await.unwrap();
        let mut held = Model::new();
        for sb in &inv.blocks {
            let block = sb.block.as_ref().unwrap_or_else(|e| panic!("step {step} {op:?}: {e}"));
            if block.affine_host().is_none() && !block.is_empty() {
                self.seen.unaffine_blocks += 1;
            }
            for a in block.allocations() {
                if a.attrs.get(ipam::attr::NODE).map(String::as_str) != block.affine_host() {
                    self.seen.borrowed += 1;
                }
                let handle = a.handle.clone().expect("every allocation has a handle");
                let prev = held.insert(a.ip, handle);
                assert!(prev.is_none(), "step {step} {op:?}: {} is in two blocks", a.ip);
            }
        }
        assert_eq!(held, self.model, "step {step} {op:?}: etcd differs from the model");
        let report = ipam::check::analyse(&inv);
        assert_eq!(structural_problems(&report), 0, "step {step} {op:?}: {report:#?}");
        assert_eq!(
            report.leaked.len(),
            self.model.len(),
            "no endpoints: every allocation is unbacked"
        );
    }
}

#[test]
fn no_sequence_of_operations_duplicates_or_loses_addresses() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Few cases: each one runs dozens of etcd round trips. Shrinking replays cases, so it is
    // bounded too.
    let cases = std::env::var("TABBY_IPAM_MODEL_CASES").ok().and_then(|v| v.parse().ok());
    let config = Config {
        cases: cases.unwrap_or(32),
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let started = std::time::Instant::now();
    let total = std::cell::Cell::new(Seen::default());
    let result = runner.run(&proptest::collection::vec(op(), 10..50), |ops| {
        let seen = rt.block_on(async {
            let mut world = World::new().await;
            for (step, op) in ops.iter().enumerate() {
                world.apply(op).await;
                world.check(step, op).await;
            }
            world.seen
        });
        let mut sum = total.get();
        sum.add(seen);
        total.set(sum);
        Ok::<(), TestCaseError>(())
    });
    let total = total.get();
    println!("allocator model test: {:?}, {total:?}", started.elapsed());
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(total.borrowed > 0, "no case borrowed an address: {total:?}");
    assert!(total.exhausted > 0, "no case filled the pool: {total:?}");
    assert!(total.unaffine_blocks > 0, "no case removed a host holding addresses: {total:?}");
}
