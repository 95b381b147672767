//! Decoding and encoding of IPAM records as they sit in etcd, shared by the allocator, the
//! checker and the collector: every record read keeps its key and mod revision, so the write
//! that follows can compare-and-swap on exactly what was read.

use std::time::Duration;

use datastore::client::{Cmp, Kv, Op};
use datastore::keys::{KeyLayout, ParsedKey};
use datastore::model::ipam::{AffinityState, AllocationBlock, BlockAffinity, IpamHandle};
use ipnet::IpNet;
use rand::Rng;
use serde::Serialize;

use crate::block::Block;
use crate::error::IpamError;

/// A block read from etcd: decoded and validated, or the reason it could not be.
#[derive(Debug, Clone)]
pub struct StoredBlock {
    pub key: String,
    pub cidr: IpNet,
    pub mod_revision: i64,
    pub block: Result<Block, String>,
}

/// A host's affinity to a block, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAffinity {
    pub key: String,
    pub host: String,
    pub cidr: IpNet,
    pub state: AffinityState,
    pub mod_revision: i64,
}

/// A handle record, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHandle {
    pub key: String,
    pub id: String,
    pub handle: IpamHandle,
    pub mod_revision: i64,
}

/// Decodes a block key-value. A value that does not decode or validate is kept with its
/// reason, so callers can skip it (allocator) or report it (check) instead of failing.
pub fn decode_block(keys: &KeyLayout, kv: &Kv) -> Option<StoredBlock> {
    let Some(ParsedKey::Block { cidr }) = keys.parse(&kv.key) else {
        tracing::warn!(key = %kv.key, "ignoring a key under the block prefix that is not a block key");
        return None;
    };
    let block = serde_json::from_slice::<AllocationBlock>(&kv.value)
        .map_err(|e| format!("not a block record: {e}"))
        .and_then(|rec| {
            if rec.cidr != cidr {
                return Err(format!("record says cidr {} but the key says {cidr}", rec.cidr));
            }
            Block::from_record(rec).map_err(|e| e.to_string())
        });
    if let Err(reason) = &block {
        tracing::error!(key = %kv.key, %reason, "corrupt IPAM block; skipping it");
    }
    Some(StoredBlock { key: kv.key.clone(), cidr, mod_revision: kv.mod_revision, block })
}

/// Decodes an affinity key-value; `Err` carries the reason for a value that does not decode.
pub fn decode_affinity(keys: &KeyLayout, kv: &Kv) -> Option<Result<StoredAffinity, String>> {
    let Some(ParsedKey::Affinity { host, cidr }) = keys.parse(&kv.key) else {
        return None;
    };
    // Calico wrote empty values in old versions: they mean a confirmed affinity.
    let value: Result<BlockAffinity, String> = if kv.value.is_empty() {
        Ok(BlockAffinity::default())
    } else {
        serde_json::from_slice(&kv.value).map_err(|e| format!("not an affinity record: {e}"))
    };
    Some(value.map(|v| StoredAffinity {
        key: kv.key.clone(),
        host,
        cidr,
        state: v.state,
        mod_revision: kv.mod_revision,
    }))
}

pub fn decode_handle(keys: &KeyLayout, kv: &Kv) -> Option<Result<StoredHandle, String>> {
    let Some(ParsedKey::Handle { id }) = keys.parse(&kv.key) else {
        return None;
    };
    Some(
        serde_json::from_slice::<IpamHandle>(&kv.value)
            .map(|handle| StoredHandle {
                key: kv.key.clone(),
                id,
                handle,
                mod_revision: kv.mod_revision,
            })
            .map_err(|e| format!("not a handle record: {e}")),
    )
}

/// A put of `value` as JSON.
pub fn put_json<T: Serialize>(key: &str, value: &T) -> Result<Op, IpamError> {
    let value = serde_json::to_vec(value)
        .map_err(|e| IpamError::CorruptRecord { key: key.to_string(), reason: e.to_string() })?;
    Ok(Op::Put { key: key.to_string(), value, lease: None })
}

pub fn put_block(key: &str, block: &Block) -> Result<Op, IpamError> {
    put_json(key, block.record())
}

pub fn put_affinity(key: &str, state: AffinityState) -> Result<Op, IpamError> {
    put_json(key, &BlockAffinity { state, deleted: false, extra: serde_json::Map::new() })
}

pub fn delete(key: &str) -> Op {
    Op::Delete { key: key.to_string() }
}

/// The compare that guards a write of a key read at `mod_revision` (0: read as absent).
pub fn unchanged(key: &str, mod_revision: i64) -> Cmp {
    if mod_revision == 0 {
        Cmp::Absent(key.to_string())
    } else {
        Cmp::ModRevision(key.to_string(), mod_revision)
    }
}

/// Adds `delta` addresses of `block` to a handle record (removing the entry at zero).
pub fn adjust_handle(handle: &mut IpamHandle, block: IpNet, delta: i64) {
    let key = block.to_string();
    let now = i64::from(handle.block.get(&key).copied().unwrap_or(0));
    let next = (now + delta).max(0);
    if next == 0 {
        handle.block.remove(&key);
    } else {
        handle.block.insert(key, u32::try_from(next).unwrap_or(u32::MAX));
    }
}

/// Total addresses a handle record says it holds.
pub fn handle_total(handle: &IpamHandle) -> u64 {
    handle.block.values().map(|&n| u64::from(n)).sum()
}

/// Sleep before CAS attempt `attempt` (0-based): exponential from 1 ms, capped at 100 ms, with
/// full jitter so contending hosts spread out instead of colliding again.
pub async fn backoff(attempt: u32) {
    let cap_ms = 1u64.checked_shl(attempt.min(7)).unwrap_or(128).min(100);
    let ms = rand::rng().random_range(0..=cap_ms);
    tokio::time::sleep(Duration::from_millis(ms) + Duration::from_micros(200)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_counts_adjust_and_vanish_at_zero() {
        let mut h = IpamHandle::default();
        let b: IpNet = "10.0.0.0/26".parse().unwrap();
        adjust_handle(&mut h, b, 2);
        assert_eq!(h.block["10.0.0.0/26"], 2);
        assert_eq!(handle_total(&h), 2);
        adjust_handle(&mut h, b, -1);
        assert_eq!(h.block["10.0.0.0/26"], 1);
        adjust_handle(&mut h, b, -5);
        assert!(h.block.is_empty());
    }

    #[test]
    fn corrupt_and_mismatched_blocks_are_kept_with_a_reason() {
        let keys = KeyLayout::new("/t");
        let kv = |key: &str, value: &[u8]| Kv {
            key: key.into(),
            value: value.to_vec(),
            mod_revision: 5,
            create_revision: 1,
            version: 1,
        };
        let sb = decode_block(&keys, &kv("/t/ipam/v2/assignment/ipv4/block/10.0.0.0-26", b"{oops"))
            .unwrap();
        assert!(sb.block.unwrap_err().contains("not a block record"));
        let good = Block::new("10.0.0.64/26".parse().unwrap(), None, 1).unwrap();
        let json = serde_json::to_vec(good.record()).unwrap();
        let sb = decode_block(&keys, &kv("/t/ipam/v2/assignment/ipv4/block/10.0.0.0-26", &json))
            .unwrap();
        assert!(sb.block.unwrap_err().contains("key says"));
        let sb = decode_block(&keys, &kv("/t/ipam/v2/assignment/ipv4/block/10.0.0.64-26", &json))
            .unwrap();
        assert_eq!(sb.block.unwrap(), good);
        assert!(decode_block(&keys, &kv("/t/other", &json)).is_none());
    }

    #[test]
    fn legacy_empty_affinity_is_confirmed() {
        let keys = KeyLayout::new("/t");
        let kv = Kv {
            key: "/t/ipam/v2/host/n1/ipv4/block/10.0.0.0-26".into(),
            value: Vec::new(),
            mod_revision: 3,
            create_revision: 3,
            version: 1,
        };
        let a = decode_affinity(&keys, &kv).unwrap().unwrap();
        assert_eq!((a.host.as_str(), a.state), ("n1", AffinityState::Confirmed));
    }
}
