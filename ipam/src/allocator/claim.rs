//! Finding and claiming a new block: walk the pools' candidate blocks in this node's order,
//! probe them by the batch in one round trip each, and claim a free one with a single
//! transaction that creates the pending affinity and the block together.
//!
//! Creating both at once (each guarded by "absent") means two hosts can never both believe
//! they own a block, and a crash leaves either nothing or a pending affinity whose block is
//! ours, which the next allocation confirms.
//!
//! A crowded order costs a few round trips, not thousands of probes: after a few batches
//! that find only taken blocks the prober leaps ahead in its order, doubling the leap each
//! time, so a run of N taken candidates costs about log2(N / batch) probes; when the leaps
//! run out (or the order does), it lists the keys (not the values) of the family's blocks
//! once and walks every candidate it has not tried against that list.

use std::collections::BTreeSet;

use datastore::client::{Client, Cmp, Kv, Read};
use datastore::keys::{IpFamily, KeyLayout, ParsedKey};
use datastore::model::ipam::AffinityState;
use ipnet::IpNet;

use crate::block::Block;
use crate::candidates::Candidates;
use crate::error::{IpamError, Result};
use crate::pool::Pool;
use crate::store::{decode_block, put_affinity, put_block, StoredAffinity};

/// A block this node now owns (or found it owns), ready to allocate from.
#[derive(Debug, Clone)]
pub(super) struct Claimed {
    pub block: Block,
    pub key: String,
    pub mod_revision: i64,
    pub aff_key: String,
    /// The affinity's mod revision (0: absent, to be created on commit).
    pub aff_revision: i64,
}

/// Claims `cidr` for `node` unless it exists. `aff` is this node's existing affinity to it
/// (recovering an affinity whose block was never created); `None` requires no affinity.
pub(super) async fn try_claim(
    client: &Client,
    keys: &KeyLayout,
    node: &str,
    cidr: IpNet,
    aff: Option<&StoredAffinity>,
) -> Result<Option<Claimed>> {
    let key = keys.block(cidr);
    let aff_key = keys.affinity(node, cidr);
    let block = Block::new(cidr, Some(node), crate::time::now_nanos())?;
    let aff_cmp = match aff {
        Some(a) => Cmp::ModRevision(aff_key.clone(), a.mod_revision),
        None => Cmp::Absent(aff_key.clone()),
    };
    let cmps = vec![aff_cmp, Cmp::Absent(key.clone())];
    let ops = vec![put_affinity(&aff_key, AffinityState::Pending)?, put_block(&key, &block)?];
    let out = client.txn(cmps, ops).await.map_err(|e| IpamError::store("claim block", e))?;
    if !out.succeeded {
        tracing::debug!(%cidr, node, "block claimed by someone else first");
        return Ok(None);
    }
    tracing::info!(%cidr, node, "claimed block");
    Ok(Some(Claimed {
        block,
        key,
        mod_revision: out.revision,
        aff_key,
        aff_revision: out.revision,
    }))
}

/// Walks candidate blocks of several pools, in order, for one node.
pub(super) struct Prober<'a> {
    node: &'a str,
    family: IpFamily,
    /// Every pool, in request order (list mode walks them again from the start).
    all_pools: Vec<&'a Pool>,
    /// Pools not walked yet, last one first.
    pools: Vec<&'a Pool>,
    current: Option<Candidates>,
    /// Blocks not to claim: this node's own, and those already tried.
    skip: BTreeSet<IpNet>,
    batch: usize,
    batches_before_list: usize,
    fruitless_batches: usize,
    /// Leaps before listing (with 10, the last one jumps about 65,000 candidates).
    max_leaps: u32,
    /// Candidates to jump over before the next batch (0: walk the order one by one).
    leap: usize,
    leaps: u32,
    /// A leap jumped over candidates that were never probed.
    leapt: bool,
    /// After switching to list mode: every block of the family that exists.
    existing: Option<BTreeSet<IpNet>>,
}

impl<'a> Prober<'a> {
    pub fn new(
        node: &'a str,
        family: IpFamily,
        pools: &[&'a Pool],
        skip: BTreeSet<IpNet>,
        batch: usize,
        batches_before_list: usize,
        max_leaps: u32,
    ) -> Self {
        Prober {
            node,
            family,
            all_pools: pools.to_vec(),
            pools: pools.iter().rev().copied().collect(),
            current: None,
            skip,
            batch,
            batches_before_list,
            fruitless_batches: 0,
            max_leaps,
            leap: 0,
            leaps: 0,
            leapt: false,
            existing: None,
        }
    }

    /// Claims the next free candidate block, or finds a block affine to this node that lacks
    /// its affinity record. `None` when every pool is full.
    pub async fn claim_next(
        &mut self,
        client: &Client,
        keys: &KeyLayout,
    ) -> Result<Option<Claimed>> {
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                if self.leapt && self.existing.is_none() {
                    // The orders ran out while leaping: walk what was jumped over.
                    self.switch_to_list(client, keys).await?;
                    continue;
                }
                return Ok(None);
            }
            if self.existing.is_some() {
                for cidr in batch {
                    if let Some(c) = try_claim(client, keys, self.node, cidr, None).await? {
                        return Ok(Some(c));
                    }
                }
                continue;
            }
            let reads: Vec<Read> = batch.iter().map(|c| Read::Key(keys.block(*c))).collect();
            let listings =
                client.get_many(&reads).await.map_err(|e| IpamError::store("probe blocks", e))?;
            let mut any_free = false;
            for (cidr, listing) in batch.iter().zip(&listings) {
                match listing.kvs.first() {
                    None => {
                        any_free = true;
                        if let Some(c) = try_claim(client, keys, self.node, *cidr, None).await? {
                            return Ok(Some(c));
                        }
                    }
                    Some(kv) => {
                        if let Some(c) = self.adoptable(keys, kv) {
                            return Ok(Some(c));
                        }
                    }
                }
            }
            if any_free {
                self.fruitless_batches = 0;
            } else {
                self.fruitless_batches += 1;
                if self.fruitless_batches >= self.batches_before_list {
                    if self.leaps < self.max_leaps {
                        self.leaps += 1;
                        self.leap = 2 * self.leap.max(self.batch);
                    } else {
                        self.switch_to_list(client, keys).await?;
                    }
                }
            }
        }
    }

    /// A block that says it is ours although we hold no affinity for it (a crash after an
    /// older tool created it): take it back rather than leave it stranded.
    fn adoptable(&self, keys: &KeyLayout, kv: &Kv) -> Option<Claimed> {
        let sb = decode_block(keys, kv)?;
        let block = sb.block.ok()?;
        if !block.is_affine_to(self.node) || block.free_count() == 0 {
            return None;
        }
        tracing::warn!(cidr = %sb.cidr, node = self.node, "block affine to this node had no affinity; adopting it");
        Some(Claimed {
            block,
            key: sb.key,
            mod_revision: sb.mod_revision,
            aff_key: keys.affinity(self.node, sb.cidr),
            aff_revision: 0,
        })
    }

    async fn switch_to_list(&mut self, client: &Client, keys: &KeyLayout) -> Result<()> {
        // Only the keys matter here: whether a block exists, not what it holds.
        let listing = client
            .list_keys(&keys.blocks_prefix(self.family))
            .await
            .map_err(|e| IpamError::store("list block keys", e))?;
        let existing: BTreeSet<IpNet> = listing
            .keys
            .iter()
            .filter_map(|(key, _)| match keys.parse(key) {
                Some(ParsedKey::Block { cidr }) => Some(cidr),
                _ => None,
            })
            .collect();
        tracing::debug!(
            blocks = existing.len(),
            leaps = self.leaps,
            "candidate probing crowded; walking against a listing of block keys"
        );
        self.existing = Some(existing);
        self.leap = 0;
        if self.leapt {
            // Candidates jumped over were never probed: walk every order from the start
            // (those tried are in `skip`).
            self.pools = self.all_pools.iter().rev().copied().collect();
            self.current = None;
        }
        Ok(())
    }

    /// Up to `batch` untried candidates, moving on to the next pool when one runs out.
    fn next_batch(&mut self) -> Vec<IpNet> {
        let mut out = Vec::with_capacity(self.batch);
        if self.leap > 0 && self.existing.is_none() {
            if let Some(cands) = self.current.as_mut() {
                self.leapt = true;
                // A leap stays inside the current pool's order; running past its end moves
                // on to the next pool.
                if cands.nth(self.leap - 1).is_none() {
                    self.current = None;
                }
            }
        }
        while out.len() < self.batch {
            if self.current.is_none() {
                let Some(pool) = self.pools.pop() else { break };
                self.current = Some(Candidates::new(pool.cidr, pool.block_size, self.node));
            }
            let Some(cands) = self.current.as_mut() else { break };
            match cands.next() {
                None => self.current = None,
                Some(cidr) => {
                    if !self.skip.insert(cidr) {
                        continue;
                    }
                    if self.existing.as_ref().is_some_and(|e| e.contains(&cidr)) {
                        continue;
                    }
                    out.push(cidr);
                    // In list mode each candidate is believed free: hand them out one by one.
                    if self.existing.is_some() {
                        break;
                    }
                }
            }
        }
        out
    }
}
