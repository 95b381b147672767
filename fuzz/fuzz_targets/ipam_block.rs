//! Fuzzes IPAM records as read from etcd: block JSON into a validated `Block`, then a run of
//! allocator operations on it, checked against a model after every step (no address lost or
//! handed out twice, the record stays valid). Affinity and handle records must round-trip.
//!
//! Input: a record's JSON, optionally followed by a NUL and bytes that pick the operations.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use datastore::model::ipam::{AllocationBlock, BlockAffinity, IpamHandle};
use ipam::{Attrs, Block, ReleaseOutcome};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Assign { n: u8, handle: u8 },
    AssignIp { ordinal: u16, handle: u8 },
    Release { ordinal: u16, handle: Option<u8>, guard: SeqGuard },
    ReleaseHandle { handle: u8 },
    SetAffinity { host: Option<u8> },
    Compact,
}

#[derive(Arbitrary, Debug)]
enum SeqGuard {
    None,
    /// The allocation's own sequence number, as a caller that read it would pass.
    Current,
    Value(u64),
}

fuzz_target!(|data: &[u8]| {
    let (json, ops) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    round_trips::<BlockAffinity>(json);
    round_trips::<IpamHandle>(json);
    let Ok(rec) = serde_json::from_slice::<AllocationBlock>(json) else { return };
    let reencoded = serde_json::to_vec(&rec).expect("block record encodes");
    let again: AllocationBlock = serde_json::from_slice(&reencoded).expect("encoded block decodes");
    assert_eq!(again, rec, "block record does not round-trip");
    let Ok(mut block) = Block::from_record(rec) else { return };
    run_ops(&mut block, ops);
    let rec = block.into_record();
    let back: AllocationBlock =
        serde_json::from_slice(&serde_json::to_vec(&rec).expect("encodes")).expect("decodes");
    Block::from_record(back).expect("a block the allocator wrote is valid");
});

fn round_trips<T>(json: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(json) {
        let again: T = serde_json::from_slice(&serde_json::to_vec(&v).expect("encodes"))
            .expect("an encoded record decodes");
        assert_eq!(again, v);
    }
}

/// Who holds each allocated ordinal (`None`: an allocation without a handle).
type Model = BTreeMap<u32, Option<String>>;

fn model_of(block: &Block) -> Model {
    block.allocations().map(|a| (a.ordinal, a.handle)).collect()
}

fn run_ops(block: &mut Block, ops: &[u8]) {
    let attrs = Attrs::from([("node".to_owned(), "fuzz".to_owned())]);
    // Handles already in the record, then a few new ones.
    let mut handles: Vec<String> = block.handle_counts().into_keys().collect();
    handles.extend((0..4).map(|i| format!("h{i}")));
    let pick = |i: u8| handles[usize::from(i) % handles.len()].clone();
    let span = block.span() as u32;
    // Ordinals neither free nor allocated may exist in a record written by another tool;
    // operations must not change how many there are.
    let accounted = block.free_count() + block.used_count();
    let mut model = model_of(block);

    let mut u = Unstructured::new(ops);
    for _ in 0..64 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        let seq_before = block.sequence_number();
        let free_before = block.free_count();
        let mutated = match op {
            Op::Assign { n, handle } => {
                let handle = pick(handle);
                let got = block.assign(usize::from(n), &handle, &attrs);
                assert_eq!(got.len(), usize::from(n).min(free_before));
                for ip in &got {
                    let o = block.ordinal_of(*ip).expect("assigned address is in the block");
                    assert!(
                        model.insert(o, Some(handle.clone())).is_none(),
                        "{ip} handed out twice"
                    );
                }
                !got.is_empty()
            }
            Op::AssignIp { ordinal, handle } => {
                let handle = pick(handle);
                let o = u32::from(ordinal) % span;
                let ip = block.ip_of(o).expect("ordinal inside the block");
                let was_free = block.record().unallocated.contains(&o);
                let r = block.assign_ip(ip, &handle, &attrs);
                assert_eq!(r.is_ok(), was_free, "assign_ip {ip}: {r:?}");
                if r.is_ok() {
                    assert!(model.insert(o, Some(handle)).is_none(), "{ip} handed out twice");
                }
                r.is_ok()
            }
            Op::Release { ordinal, handle, guard } => {
                let o = u32::from(ordinal) % span;
                let ip = block.ip_of(o).expect("ordinal inside the block");
                let want = handle.map(pick);
                let current = block.allocation(ip).and_then(|a| a.sequence).unwrap_or(0);
                let seq = match guard {
                    SeqGuard::None => None,
                    SeqGuard::Current => Some(current),
                    SeqGuard::Value(v) => Some(v),
                };
                let out = block.release(ip, want.as_deref(), seq).expect("ip is in the block");
                match model.get(&o).cloned() {
                    None => assert_eq!(out, ReleaseOutcome::NotAllocated),
                    Some(holder) => {
                        let handle_ok = want.is_none() || want == holder;
                        let seq_ok = seq.is_none_or(|s| s == current);
                        if handle_ok && seq_ok {
                            assert_eq!(out, ReleaseOutcome::Released { handle: holder });
                            model.remove(&o);
                        } else {
                            assert!(
                                !matches!(out, ReleaseOutcome::Released { .. }),
                                "guarded release freed {ip}: {out:?}"
                            );
                        }
                    }
                }
                matches!(out, ReleaseOutcome::Released { .. })
            }
            Op::ReleaseHandle { handle } => {
                let handle = pick(handle);
                let freed = block.release_by_handle(&handle);
                let expect: BTreeSet<u32> = model
                    .iter()
                    .filter(|(_, h)| h.as_deref() == Some(handle.as_str()))
                    .map(|(o, _)| *o)
                    .collect();
                let got: BTreeSet<u32> =
                    freed.iter().map(|ip| block.ordinal_of(*ip).expect("in block")).collect();
                assert_eq!(got, expect, "release_by_handle({handle})");
                assert_eq!(freed.len(), expect.len());
                model.retain(|o, _| !expect.contains(o));
                !freed.is_empty()
            }
            Op::SetAffinity { host } => {
                let host = host.map(|h| format!("host-{h}"));
                block.set_affinity(host.as_deref());
                assert_eq!(block.affine_host(), host.as_deref());
                true
            }
            Op::Compact => {
                block.compact_attributes();
                false
            }
        };
        if mutated {
            assert_eq!(block.sequence_number(), seq_before.wrapping_add(1), "one bump per write");
        } else {
            assert_eq!(block.sequence_number(), seq_before, "a no-op bumped the sequence");
        }
        check(block, &model, accounted);
    }
}

fn check(block: &Block, model: &Model, accounted: usize) {
    assert_eq!(model_of(block), *model, "allocations differ from the model");
    assert_eq!(block.used_count(), model.len());
    assert_eq!(block.free_count() + block.used_count(), accounted, "an ordinal was lost");
    let free: BTreeSet<u32> = block.record().unallocated.iter().copied().collect();
    assert_eq!(free.len(), block.free_count(), "free list holds an ordinal twice");
    assert!(model.keys().all(|o| !free.contains(o)), "an ordinal is both free and allocated");
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for h in model.values().flatten() {
        *counts.entry(h.clone()).or_insert(0) += 1;
    }
    assert_eq!(block.handle_counts(), counts);
    Block::from_record(block.record().clone()).expect("block stays valid");
}
