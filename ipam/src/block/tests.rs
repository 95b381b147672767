//! Unit and property tests of the pure block logic.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn attrs(node: &str) -> Attrs {
    Attrs::from([("node".to_string(), node.to_string())])
}

fn block(cidr: &str) -> Block {
    Block::new(cidr.parse().unwrap(), Some("node1"), 1000).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn new_block_is_all_free_and_affine() {
    let b = block("10.0.0.64/26");
    assert_eq!(b.span(), 64);
    assert_eq!(b.free_count(), 64);
    assert!(b.is_empty());
    assert!(b.is_affine_to("node1"));
    assert_eq!(b.record().affinity.as_deref(), Some("host:node1"));
    assert_eq!(b.record().unallocated[..3], [0, 1, 2]);
    assert_eq!(b.sequence_number(), 1000);
    assert!(Block::from_record(b.clone().into_record()).is_ok());
}

#[test]
fn new_block_refuses_unmasked_or_huge_cidrs() {
    assert!(Block::new("10.0.0.1/26".parse().unwrap(), None, 0).is_err());
    assert!(Block::new("10.0.0.0/16".parse().unwrap(), None, 0).is_err());
}

#[test]
fn ordinal_arithmetic_v4_and_v6() {
    let b = block("10.0.0.64/26");
    assert_eq!(b.ordinal_of(ip("10.0.0.64")), Some(0));
    assert_eq!(b.ordinal_of(ip("10.0.0.127")), Some(63));
    assert_eq!(b.ordinal_of(ip("10.0.0.128")), None);
    assert_eq!(b.ordinal_of(ip("fd00::1")), None);
    assert_eq!(b.ip_of(5), Some(ip("10.0.0.69")));
    assert_eq!(b.ip_of(64), None);

    let b6 = block("fd00:1:2:3::40/122");
    assert_eq!(b6.span(), 64);
    assert_eq!(b6.ordinal_of(ip("fd00:1:2:3::7f")), Some(63));
    assert_eq!(b6.ip_of(1), Some(ip("fd00:1:2:3::41")));
    assert_eq!(b6.ordinal_of(ip("10.0.0.64")), None);
    assert_eq!(block_cidr_for(ip("10.1.2.200"), 26), Some("10.1.2.192/26".parse().unwrap()));
    assert_eq!(host_net(ip("fd00::1")).to_string(), "fd00::1/128");
}

#[test]
fn assign_takes_from_head_and_shares_attributes() {
    let mut b = block("10.0.0.0/26");
    let got = b.assign(2, "net.c1.eth0", &attrs("node1"));
    assert_eq!(got, vec![ip("10.0.0.0"), ip("10.0.0.1")]);
    let got2 = b.assign(1, "net.c1.eth0", &attrs("node1"));
    assert_eq!(got2, vec![ip("10.0.0.2")]);
    assert_eq!(b.record().attributes.len(), 1, "identical holders share one entry");
    b.assign(1, "net.c2.eth0", &attrs("node1"));
    assert_eq!(b.record().attributes.len(), 2);
    assert_eq!(b.used_count(), 4);
    assert_eq!(b.free_count(), 60);
    assert_eq!(b.handle_counts()["net.c1.eth0"], 3);
    assert_eq!(b.record().sequence_number_for_allocation.len(), 4);
    assert_eq!(b.record().sequence_number_for_allocation["0"], 1000);
    assert_eq!(b.record().sequence_number_for_allocation["2"], 1001);
    assert_eq!(b.sequence_number(), 1003);
}

#[test]
fn assign_stops_when_full() {
    let mut b = block("10.0.0.0/30");
    assert_eq!(b.assign(10, "h", &attrs("n")).len(), 4);
    assert!(b.assign(1, "h", &attrs("n")).is_empty());
    let seq = b.sequence_number();
    assert!(b.assign(0, "h", &attrs("n")).is_empty());
    assert_eq!(b.sequence_number(), seq, "a no-op is not a mutation");
}

#[test]
fn assign_specific_ip() {
    let mut b = block("10.0.0.0/26");
    b.assign_ip(ip("10.0.0.10"), "h1", &attrs("n")).unwrap();
    assert!(!b.record().unallocated.contains(&10));
    let err = b.assign_ip(ip("10.0.0.10"), "h2", &attrs("n")).unwrap_err();
    assert_eq!(err, BlockError::AddressInUse { ip: ip("10.0.0.10"), handle: Some("h1".into()) });
    assert!(matches!(
        b.assign_ip(ip("10.0.1.10"), "h2", &attrs("n")),
        Err(BlockError::NotInBlock { .. })
    ));
    let a = b.allocation(ip("10.0.0.10")).unwrap();
    assert_eq!(a.handle.as_deref(), Some("h1"));
    assert_eq!(a.attrs, attrs("n"));
}

#[test]
fn release_frees_to_tail_and_compacts() {
    let mut b = block("10.0.0.0/26");
    b.assign(1, "h1", &attrs("n"));
    b.assign(1, "h2", &attrs("n"));
    let out = b.release(ip("10.0.0.0"), None, None).unwrap();
    assert_eq!(out, ReleaseOutcome::Released { handle: Some("h1".into()) });
    assert_eq!(b.record().unallocated.last(), Some(&0));
    assert_eq!(b.record().attributes.len(), 1);
    assert_eq!(b.allocation(ip("10.0.0.1")).unwrap().handle.as_deref(), Some("h2"));
    assert!(!b.record().sequence_number_for_allocation.contains_key("0"));
    assert_eq!(b.release(ip("10.0.0.0"), None, None).unwrap(), ReleaseOutcome::NotAllocated);
    assert!(b.release(ip("10.9.0.0"), None, None).is_err());
    Block::from_record(b.into_record()).unwrap();
}

#[test]
fn release_guards_handle_and_sequence() {
    let mut b = block("10.0.0.0/26");
    b.assign_ip(ip("10.0.0.5"), "old", &attrs("n")).unwrap();
    let old_seq = b.allocation(ip("10.0.0.5")).unwrap().sequence.unwrap();
    b.release(ip("10.0.0.5"), None, Some(old_seq)).unwrap();
    b.assign_ip(ip("10.0.0.5"), "new", &attrs("n")).unwrap();
    let new_seq = b.allocation(ip("10.0.0.5")).unwrap().sequence.unwrap();
    assert_ne!(old_seq, new_seq);

    // A stale release (ABA) is refused and the new holder keeps the address.
    let out = b.release(ip("10.0.0.5"), None, Some(old_seq)).unwrap();
    assert_eq!(out, ReleaseOutcome::SequenceMismatch { actual: new_seq });
    let out = b.release(ip("10.0.0.5"), Some("old"), None).unwrap();
    assert_eq!(out, ReleaseOutcome::HandleMismatch { actual: Some("new".into()) });
    assert_eq!(b.allocation(ip("10.0.0.5")).unwrap().handle.as_deref(), Some("new"));

    let out = b.release(ip("10.0.0.5"), Some("new"), Some(new_seq)).unwrap();
    assert_eq!(out, ReleaseOutcome::Released { handle: Some("new".into()) });
}

#[test]
fn release_by_handle_frees_all_of_it() {
    let mut b = block("10.0.0.0/26");
    b.assign(3, "h1", &attrs("n"));
    b.assign(2, "h2", &attrs("n"));
    b.assign(1, "h1", &attrs("other"));
    let freed = b.release_by_handle("h1");
    assert_eq!(freed.len(), 4);
    assert_eq!(b.used_count(), 2);
    assert_eq!(b.record().attributes.len(), 1);
    assert!(b.release_by_handle("h1").is_empty());
    assert_eq!(b.release_by_handle("h2").len(), 2);
    assert!(b.is_empty());
    assert!(b.record().attributes.is_empty());
    assert!(b.record().sequence_number_for_allocation.is_empty());
}

#[test]
fn sequence_bumps_on_every_mutation() {
    let mut b = block("10.0.0.0/26");
    let mut last = b.sequence_number();
    let mut check = |b: &Block| {
        assert!(b.sequence_number() > last);
        last = b.sequence_number();
    };
    b.assign(1, "h", &attrs("n"));
    check(&b);
    b.assign_ip(ip("10.0.0.9"), "h", &attrs("n")).unwrap();
    check(&b);
    b.release(ip("10.0.0.9"), None, None).unwrap();
    check(&b);
    b.release_by_handle("h");
    check(&b);
    b.set_affinity(None);
    check(&b);
    assert_eq!(b.affine_host(), None);
}

#[test]
fn corrupt_records_are_refused() {
    let mut rec = block("10.0.0.0/26").into_record();
    rec.unallocated.push(1);
    assert!(matches!(Block::from_record(rec), Err(BlockError::Corrupt { .. })));
}

#[derive(Debug, Clone)]
enum Op {
    Assign(usize, u8),
    AssignIp(u8, u8),
    Release(u8, Option<u8>),
    ReleaseHandle(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..6, 0u8..4).prop_map(|(n, h)| Op::Assign(n, h)),
        (0u8..16, 0u8..4).prop_map(|(o, h)| Op::AssignIp(o, h)),
        (0u8..16, proptest::option::of(0u8..4)).prop_map(|(o, h)| Op::Release(o, h)),
        (0u8..4).prop_map(Op::ReleaseHandle),
    ]
}

proptest! {
    #[test]
    fn no_sequence_of_operations_duplicates_or_loses_addresses(
        ops in proptest::collection::vec(op(), 1..80)
    ) {
        let mut b = Block::new("10.9.0.16/28".parse().unwrap(), Some("n"), 7).unwrap();
        // Model: which handle holds each ordinal.
        let mut model: BTreeMap<u32, String> = BTreeMap::new();
        for op in ops {
            let seq_before = b.sequence_number();
            match op {
                Op::Assign(n, h) => {
                    let handle = format!("h{h}");
                    let got = b.assign(n, &handle, &attrs("n"));
                    prop_assert_eq!(got.len(), n.min(16 - model.len()));
                    for ip in got {
                        let o = b.ordinal_of(ip).unwrap();
                        prop_assert!(model.insert(o, handle.clone()).is_none(), "duplicate {}", ip);
                    }
                }
                Op::AssignIp(o, h) => {
                    let handle = format!("h{h}");
                    let ip = b.ip_of(u32::from(o)).unwrap();
                    let r = b.assign_ip(ip, &handle, &attrs("n"));
                    prop_assert_eq!(r.is_ok(), !model.contains_key(&u32::from(o)));
                    if r.is_ok() { model.insert(u32::from(o), handle); }
                }
                Op::Release(o, h) => {
                    let ip = b.ip_of(u32::from(o)).unwrap();
                    let want = h.map(|h| format!("h{h}"));
                    let out = b.release(ip, want.as_deref(), None).unwrap();
                    match model.get(&u32::from(o)).cloned() {
                        None => prop_assert_eq!(out, ReleaseOutcome::NotAllocated),
                        Some(holder) if want.as_ref().is_none_or(|w| *w == holder) => {
                            prop_assert_eq!(out, ReleaseOutcome::Released { handle: Some(holder) });
                            model.remove(&u32::from(o));
                        }
                        Some(holder) => {
                            prop_assert_eq!(out, ReleaseOutcome::HandleMismatch { actual: Some(holder) });
                        }
                    }
                }
                Op::ReleaseHandle(h) => {
                    let handle = format!("h{h}");
                    let freed = b.release_by_handle(&handle);
                    let expect: Vec<u32> =
                        model.iter().filter(|(_, v)| **v == handle).map(|(k, _)| *k).collect();
                    prop_assert_eq!(freed.len(), expect.len());
                    for o in expect { model.remove(&o); }
                }
            }
            prop_assert!(b.sequence_number() >= seq_before);
            // Conservation: every ordinal is free or used, never both, never lost.
            prop_assert_eq!(b.free_count() + b.used_count(), b.span());
            let free: BTreeSet<u32> = b.record().unallocated.iter().copied().collect();
            prop_assert_eq!(free.len(), b.free_count(), "free list has duplicates");
            prop_assert_eq!(b.used_count(), model.len());
            for (o, h) in &model {
                let a = b.allocation(b.ip_of(*o).unwrap()).unwrap();
                prop_assert_eq!(a.handle.as_ref(), Some(h));
                prop_assert!(!free.contains(o));
            }
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            for h in model.values() { *counts.entry(h.clone()).or_insert(0) += 1; }
            prop_assert_eq!(b.handle_counts(), counts);
            prop_assert_eq!(b.record().sequence_number_for_allocation.len(), model.len());
            prop_assert!(b.record().attributes.len() <= 4, "attributes grow without bound");
            prop_assert!(Block::from_record(b.record().clone()).is_ok());
        }
    }
}
