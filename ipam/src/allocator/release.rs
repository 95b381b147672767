//! Release: by handle (the CNI DEL path, three round trips), by address with optional
//! handle and sequence guards, and of a whole host's affinities. Every write compares the
//! revisions it read, so a release never undoes an allocation it did not see.

use std::collections::BTreeMap;
use std::net::IpAddr;

use datastore::client::{Client, Op, Read};
use datastore::keys::{IpFamily, KeyLayout, Kind};
use datastore::model::ipam::IpamHandle;
use ipnet::IpNet;
use serde::Serialize;

use super::snapshot::decode_pools;
use super::{Allocator, AllocatorOptions, ReleaseRequest};
use crate::block::{Block, ReleaseOutcome};
use crate::error::{IpamError, Result};
use crate::pool;
use crate::store::{
    adjust_handle, backoff, decode_block, decode_handle, delete, handle_total, put_block, put_json,
    unchanged, StoredBlock, StoredHandle,
};

/// What [`Allocator::release_host`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostRelease {
    pub affinities_deleted: Vec<IpNet>,
    pub blocks_deleted: Vec<IpNet>,
    /// Blocks that still hold addresses: kept, with their affinity cleared.
    pub blocks_unaffined: Vec<IpNet>,
}

/// The write for a block after a release: an empty block nobody is affine to goes away
/// (nothing would ever allocate from it again); otherwise the block is updated.
fn block_write(key: &str, block: &Block) -> Result<Op> {
    if block.is_empty() && block.affine_host().is_none() {
        Ok(delete(key))
    } else {
        put_block(key, block)
    }
}

impl Allocator {
    pub(super) async fn release_by_handle_inner(&self, handle: &str) -> Result<Vec<IpAddr>> {
        let handle_key = self.keys.handle(handle);
        for attempt in 0..self.opts.max_attempts {
            if attempt > 0 {
                backoff(attempt - 1).await;
            }
            let kv = self
                .client
                .get(&handle_key)
                .await
                .map_err(|e| IpamError::store("read handle", e))?;
            let Some(kv) = kv else {
                tracing::debug!(handle, "release of an unknown handle: nothing to do");
                return Ok(Vec::new());
            };
            let record = match decode_handle(&self.keys, &kv) {
                Some(Ok(h)) => h.handle,
                other => {
                    // Its blocks are unknown; drop the record and leave any allocations to
                    // `check`/`gc` rather than failing every DEL of this container forever.
                    let reason = match other {
                        Some(Err(r)) => r,
                        _ => "unparsable key".to_string(),
                    };
                    tracing::error!(key = %kv.key, %reason, "corrupt handle record; deleting it");
                    IpamHandle::default()
                }
            };
            let cidrs: Vec<IpNet> = record
                .block
                .keys()
                .filter_map(|c| match c.parse::<IpNet>() {
                    Ok(net) => Some(net),
                    Err(e) => {
                        tracing::warn!(handle, block = %c, error = %e, "handle names an invalid block CIDR");
                        None
                    }
                })
                .collect();
            let reads: Vec<Read> = cidrs.iter().map(|c| Read::Key(self.keys.block(*c))).collect();
            let listings = self
                .client
                .get_many(&reads)
                .await
                .map_err(|e| IpamError::store("read handle's blocks", e))?;
            let mut cmps = vec![unchanged(&handle_key, kv.mod_revision)];
            let mut ops = vec![delete(&handle_key)];
            let mut freed = Vec::new();
            for kv in listings.iter().flat_map(|l| &l.kvs) {
                let Some(sb) = decode_block(&self.keys, kv) else { continue };
                let Ok(mut block) = sb.block else { continue }; // logged by decode_block
                let ips = block.release_by_handle(handle);
                if ips.is_empty() {
                    continue;
                }
                freed.extend(ips);
                cmps.push(unchanged(&sb.key, sb.mod_revision));
                ops.push(block_write(&sb.key, &block)?);
            }
            let written = ops.clone();
            let out = self
                .client
                .txn(cmps, ops)
                .await
                .map_err(|e| IpamError::store("write release", e))?;
            if out.succeeded {
                // The next assign on this host plans on the block as it is now.
                self.memo.remember_writes(&self.node, &written, out.revision);
                tracing::debug!(handle, ?freed, "released handle");
                return Ok(freed);
            }
        }
        Err(IpamError::Conflict { op: "release_by_handle", attempts: self.opts.max_attempts })
    }
}

/// Requests released per transaction: each may touch a block and a handle, and etcd refuses
/// transactions of more than 128 operations by default.
const RELEASE_CHUNK: usize = 60;

/// Releases single addresses (see [`Allocator::release_ips`]); also used by `gc`. Large
/// batches are split into transactions of [`RELEASE_CHUNK`] addresses.
pub(crate) async fn release_ips(
    client: &Client,
    keys: &KeyLayout,
    reqs: &[ReleaseRequest],
    opts: &AllocatorOptions,
) -> Result<Vec<ReleaseOutcome>> {
    let mut outcomes = Vec::with_capacity(reqs.len());
    for chunk in reqs.chunks(RELEASE_CHUNK) {
        outcomes.extend(release_chunk(client, keys, chunk, opts).await?);
    }
    Ok(outcomes)
}

async fn release_chunk(
    client: &Client,
    keys: &KeyLayout,
    reqs: &[ReleaseRequest],
    opts: &AllocatorOptions,
) -> Result<Vec<ReleaseOutcome>> {
    for attempt in 0..opts.max_attempts {
        if attempt > 0 {
            backoff(attempt - 1).await;
        }
        if let Some(outcomes) = try_release_ips(client, keys, reqs).await? {
            return Ok(outcomes);
        }
    }
    Err(IpamError::Conflict { op: "release_ips", attempts: opts.max_attempts })
}

async fn try_release_ips(
    client: &Client,
    keys: &KeyLayout,
    reqs: &[ReleaseRequest],
) -> Result<Option<Vec<ReleaseOutcome>>> {
    let blocks = blocks_for_ips(client, keys, reqs.iter().map(|r| r.ip)).await?;
    let mut changed: BTreeMap<IpNet, (StoredBlock, Block)> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(reqs.len());
    let mut deltas: BTreeMap<String, BTreeMap<IpNet, i64>> = BTreeMap::new();
    for req in reqs {
        let Some(sb) = blocks.iter().find(|b| b.cidr.contains(&req.ip)) else {
            outcomes.push(ReleaseOutcome::NotAllocated);
            continue;
        };
        let entry = match changed.entry(sb.cidr) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let block = sb
                    .block
                    .clone()
                    .map_err(|reason| IpamError::CorruptBlock { key: sb.key.clone(), reason })?;
                e.insert((sb.clone(), block))
            }
        };
        let outcome = entry.1.release(req.ip, req.handle.as_deref(), req.sequence)?;
        if let ReleaseOutcome::Released { handle: Some(h) } = &outcome {
            *deltas.entry(h.clone()).or_default().entry(sb.cidr).or_insert(0) -= 1;
        }
        outcomes.push(outcome);
    }
    let changed: Vec<(StoredBlock, Block)> = changed
        .into_values()
        .filter(|(sb, b)| sb.block.as_ref().is_ok_and(|orig| orig != b))
        .collect();
    if changed.is_empty() {
        return Ok(Some(outcomes));
    }
    let reads: Vec<Read> = deltas.keys().map(|h| Read::Key(keys.handle(h))).collect();
    let handles: Vec<StoredHandle> = client
        .get_many(&reads)
        .await
        .map_err(|e| IpamError::store("read handles", e))?
        .iter()
        .flat_map(|l| &l.kvs)
        .filter_map(|kv| decode_handle(keys, kv).and_then(std::result::Result::ok))
        .collect();
    let mut cmps = Vec::new();
    let mut ops = Vec::new();
    for (sb, block) in &changed {
        cmps.push(unchanged(&sb.key, sb.mod_revision));
        ops.push(block_write(&sb.key, block)?);
    }
    for mut h in handles {
        let Some(delta) = deltas.get(&h.id) else { continue };
        for (cidr, d) in delta {
            adjust_handle(&mut h.handle, *cidr, *d);
        }
        cmps.push(unchanged(&h.key, h.mod_revision));
        ops.push(if handle_total(&h.handle) == 0 {
            delete(&h.key)
        } else {
            put_json(&h.key, &h.handle)?
        });
    }
    let out = client.txn(cmps, ops).await.map_err(|e| IpamError::store("write release", e))?;
    Ok(out.succeeded.then_some(outcomes))
}

/// Reads the blocks holding `ips`: located through the pools' block sizes, or by listing the
/// family's blocks for addresses outside every pool (a pool deleted with allocations left).
pub(crate) async fn blocks_for_ips(
    client: &Client,
    keys: &KeyLayout,
    ips: impl Iterator<Item = IpAddr>,
) -> Result<Vec<StoredBlock>> {
    let ips: Vec<IpAddr> = ips.collect();
    let listing = client
        .list(&keys.resources_prefix(Kind::IpPool))
        .await
        .map_err(|e| IpamError::store("read pools", e))?;
    let pools = decode_pools(&listing.kvs);
    let mut wanted: Vec<IpNet> = Vec::new();
    let mut unplaced: Vec<IpFamily> = Vec::new();
    for ip in &ips {
        match pool::containing(&pools, *ip).and_then(|p| p.block_for(*ip)) {
            Some(c) if !wanted.contains(&c) => wanted.push(c),
            Some(_) => {}
            None => {
                let f = IpFamily::of_addr(ip);
                if !unplaced.contains(&f) {
                    unplaced.push(f);
                }
            }
        }
    }
    let mut reads: Vec<Read> = wanted.iter().map(|c| Read::Key(keys.block(*c))).collect();
    reads.extend(unplaced.iter().map(|f| Read::Prefix(keys.blocks_prefix(*f))));
    let listings = client.get_many(&reads).await.map_err(|e| IpamError::store("read blocks", e))?;
    let mut blocks: BTreeMap<IpNet, StoredBlock> = BTreeMap::new();
    for kv in listings.iter().flat_map(|l| &l.kvs) {
        if let Some(sb) = decode_block(keys, kv) {
            blocks.insert(sb.cidr, sb);
        }
    }
    Ok(blocks.into_values().collect())
}

/// Forgets `node`'s affinities (see [`Allocator::release_host`]).
pub(crate) async fn release_host(
    client: &Client,
    keys: &KeyLayout,
    node: &str,
    opts: &AllocatorOptions,
) -> Result<HostRelease> {
    let reads =
        [IpFamily::V4, IpFamily::V6].map(|f| Read::Prefix(keys.host_affinities_prefix(node, f)));
    let listings =
        client.get_many(&reads).await.map_err(|e| IpamError::store("read affinities", e))?;
    let cidrs: Vec<IpNet> = listings
        .iter()
        .flat_map(|l| &l.kvs)
        .filter_map(|kv| match keys.parse(&kv.key) {
            Some(datastore::keys::ParsedKey::Affinity { cidr, .. }) => Some(cidr),
            _ => None,
        })
        .collect();
    let mut report = HostRelease::default();
    for cidr in cidrs {
        release_affinity(client, keys, node, cidr, opts, &mut report).await?;
    }
    tracing::info!(node, ?report, "released host affinities");
    Ok(report)
}

async fn release_affinity(
    client: &Client,
    keys: &KeyLayout,
    node: &str,
    cidr: IpNet,
    opts: &AllocatorOptions,
    report: &mut HostRelease,
) -> Result<()> {
    let aff_key = keys.affinity(node, cidr);
    let block_key = keys.block(cidr);
    for attempt in 0..opts.max_attempts {
        if attempt > 0 {
            backoff(attempt - 1).await;
        }
        let reads = [Read::Key(aff_key.clone()), Read::Key(block_key.clone())];
        let listings =
            client.get_many(&reads).await.map_err(|e| IpamError::store("read affinity", e))?;
        let Some(aff_kv) = listings.first().and_then(|l| l.kvs.first()) else {
            return Ok(()); // gone already
        };
        let mut cmps = vec![unchanged(&aff_key, aff_kv.mod_revision)];
        let mut ops = vec![delete(&aff_key)];
        let mut effect = None;
        if let Some(sb) =
            listings.get(1).and_then(|l| l.kvs.first()).and_then(|kv| decode_block(keys, kv))
        {
            if let Ok(mut block) = sb.block {
                if block.is_affine_to(node) {
                    cmps.push(unchanged(&sb.key, sb.mod_revision));
                    if block.is_empty() {
                        ops.push(delete(&sb.key));
                        effect = Some(true);
                    } else {
                        block.set_affinity(None);
                        ops.push(put_block(&sb.key, &block)?);
                        effect = Some(false);
                    }
                }
            }
        }
        let out =
            client.txn(cmps, ops).await.map_err(|e| IpamError::store("release affinity", e))?;
        if out.succeeded {
            report.affinities_deleted.push(cidr);
            match effect {
                Some(true) => report.blocks_deleted.push(cidr),
                Some(false) => report.blocks_unaffined.push(cidr),
                None => {}
            }
            return Ok(());
        }
    }
    Err(IpamError::Conflict { op: "release_host", attempts: opts.max_attempts })
}
