//! Assignment: plan every address of a request in memory against one snapshot (affine blocks,
//! then newly claimed blocks, then borrowed ones), then write all changed blocks, affinity
//! confirmations and the handle in one transaction. A lost race re-reads and re-plans.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datastore::client::{Cmp, Listing, Op, Read};
use datastore::keys::{IpFamily, ParsedKey};
use datastore::model::ipam::{AffinityState, IpamHandle};
use ipnet::IpNet;

use super::claim::{self, Claimed, Prober};
use super::snapshot::{self, Snapshot};
use super::{Allocator, AssignRequest, AssignResult};
use crate::block::{host_net, Attrs, Block};
use crate::candidates::fnv1a64;
use crate::error::{IpamError, Result};
use crate::pool::{self, Pool};
use crate::store::{
    adjust_handle, backoff, decode_affinity, decode_block, delete, put_affinity, put_block,
    put_json, unchanged, StoredAffinity, StoredBlock,
};

/// A block changed by the plan, with the revision it was read at.
#[derive(Debug)]
struct Planned {
    key: String,
    mod_revision: i64,
    block: Block,
    /// Addresses this request took from it (for the handle record).
    taken: usize,
}

impl Planned {
    fn take(&mut self, need: usize, handle: &str, attrs: &Attrs) -> Vec<IpAddr> {
        let got = self.block.assign(need, handle, attrs);
        self.taken += got.len();
        got
    }
}

/// What one family of a request asks of the planner.
#[derive(Debug, Clone, Copy)]
struct Want<'p> {
    family: IpFamily,
    n: usize,
    pools: &'p [&'p Pool],
    /// Whether planning may read or write etcd (claim blocks, borrow).
    may_fetch: bool,
}

/// Everything one attempt will write, built up in memory.
#[derive(Debug, Default)]
pub(super) struct Plan {
    blocks: BTreeMap<IpNet, Planned>,
    cmps: Vec<Cmp>,
    ops: Vec<Op>,
    /// Affinity keys already given an op (etcd refuses two ops on one key in a transaction).
    touched: BTreeSet<String>,
    /// Blocks affine to this node after the plan commits (the next request's hint).
    affine: BTreeSet<IpNet>,
}

impl Plan {
    fn block_mut(&mut self, key: &str, cidr: IpNet, rev: i64, block: &Block) -> &mut Planned {
        self.blocks.entry(cidr).or_insert_with(|| Planned {
            key: key.to_string(),
            mod_revision: rev,
            block: block.clone(),
            taken: 0,
        })
    }

    /// Sets an affinity to confirmed, guarded by the revision it was read at (0: absent).
    fn confirm(&mut self, aff_key: &str, aff_revision: i64) -> Result<()> {
        if self.touched.insert(aff_key.to_string()) {
            self.cmps.push(unchanged(aff_key, aff_revision));
            self.ops.push(put_affinity(aff_key, AffinityState::Confirmed)?);
        }
        Ok(())
    }

    /// Deletes an affinity whose block belongs to another host.
    fn drop_stale(&mut self, aff: &StoredAffinity) {
        if self.touched.insert(aff.key.clone()) {
            tracing::warn!(key = %aff.key, "affinity points at a block owned by another host; deleting it");
            self.cmps.push(unchanged(&aff.key, aff.mod_revision));
            self.ops.push(delete(&aff.key));
        }
    }

    fn add_claimed(&mut self, c: &Claimed) -> Result<()> {
        self.affine.insert(c.block.cidr());
        self.block_mut(&c.key, c.block.cidr(), c.mod_revision, &c.block);
        self.confirm(&c.aff_key, c.aff_revision)
    }
}

/// How a commit ended.
#[derive(Debug)]
pub(super) enum Committed {
    Done,
    /// A compared key changed meanwhile.
    Lost,
    /// A guessed snapshot was not true; here is what the same transaction read instead.
    LostWith(Vec<Listing>),
}

impl Allocator {
    pub(super) async fn assign_inner(
        &self,
        req: &AssignRequest,
        attrs: &Attrs,
    ) -> Result<AssignResult> {
        let mut families = Vec::new();
        if req.num_v4 > 0 {
            families.push(IpFamily::V4);
        }
        if req.num_v6 > 0 {
            families.push(IpFamily::V6);
        }
        // What a failed guess read instead (and the reads it answers): the next attempt plans
        // on it at once.
        let mut fresh: Option<(snapshot::ReadSet, Vec<Listing>)> = None;
        for attempt in 0..self.opts.max_attempts {
            if attempt > 0 && fresh.is_none() {
                backoff(attempt - 1).await;
            }
            let hint = self.hinted_blocks();
            let (r, fresh_listings) = match fresh.take() {
                Some((r, listings)) => (r, Some(listings)),
                None => {
                    (snapshot::reads(&self.keys, &self.node, &families, &req.handle, &hint), None)
                }
            };
            let guessed = match (attempt, &fresh_listings) {
                (0, None) => self.plan_on_memo(req, attrs, &families, &r).await,
                _ => None,
            };
            let (snap, plan, result, guess) = if let Some((snap, plan, result, cmps)) = guessed {
                (snap, plan, result, Some(cmps))
            } else {
                let listings = match fresh_listings {
                    Some(listings) => listings,
                    None => r.fetch(&self.client).await?,
                };
                self.memo.remember_reads(&self.node, &r, &listings);
                let snap = snapshot::decode(&self.keys, &r, &listings)?
                    .complete(&self.client, &self.keys)
                    .await?;
                let (plan, result) = self.plan_request(req, attrs, &snap, &families, true).await?;
                (snap, plan, result, None)
            };
            let affine = plan.affine.clone();
            let also = req.also_write.as_ref().map(|w| w.ops(&result)).unwrap_or_default();
            let guess = guess.map(|cmps| (cmps, r.reads.as_slice()));
            match self.commit(&snap, &req.handle, plan, also, guess).await? {
                Committed::Done => {
                    let mut hint: BTreeSet<IpNet> = hint
                        .into_iter()
                        .filter(|c| !families.contains(&IpFamily::of_net(c)))
                        .collect();
                    hint.extend(affine);
                    self.set_hint(hint);
                    tracing::debug!(handle = %req.handle, ?result, attempt, "assigned");
                    return Ok(result);
                }
                Committed::Lost => {}
                Committed::LostWith(listings) => fresh = Some((r, listings)),
            }
        }
        Err(IpamError::Conflict { op: "assign", attempts: self.opts.max_attempts })
    }

    /// A plan made on the memo alone, with the conditions under which the memo is true; `None`
    /// when the memo does not cover the reads or the request needs more than its affine
    /// blocks hold (claiming and borrowing read etcd, so those go the usual way).
    async fn plan_on_memo(
        &self,
        req: &AssignRequest,
        attrs: &Attrs,
        families: &[IpFamily],
        r: &snapshot::ReadSet,
    ) -> Option<(Snapshot, Plan, AssignResult, Vec<Cmp>)> {
        let (listings, cmps) = self.memo.recall(&self.node, r)?;
        let partial = snapshot::decode(&self.keys, r, &listings).ok()?;
        if !partial.missing.is_empty() {
            return None;
        }
        let snap = partial.finish();
        let (plan, result) = self.plan_request(req, attrs, &snap, families, false).await.ok()?;
        let mut cmps = cmps;
        for p in plan.blocks.values() {
            cmps.push(self.memo.value_guard(&self.node, &p.key)?);
        }
        Some((snap, plan, result, cmps))
    }

    /// Plans every family of `req` against `snap`. With `may_fetch` false nothing is read
    /// or written (no claims, no borrowing): a shortfall is an error.
    async fn plan_request(
        &self,
        req: &AssignRequest,
        attrs: &Attrs,
        snap: &Snapshot,
        families: &[IpFamily],
        may_fetch: bool,
    ) -> Result<(Plan, AssignResult)> {
        let mut plan = Plan::default();
        let mut result = AssignResult::default();
        let wanted =
            [(IpFamily::V4, req.num_v4, &req.v4_pools), (IpFamily::V6, req.num_v6, &req.v6_pools)];
        for (family, n, requested) in wanted {
            if n == 0 || !families.contains(&family) {
                continue;
            }
            let planned =
                match pool::choose(&snap.pools, family, &self.node, &snap.node_labels, requested) {
                    Ok(pools) => {
                        let want = Want { family, n, pools: &pools, may_fetch };
                        self.plan_family(snap, &want, &req.handle, attrs, &mut plan).await
                    }
                    Err(e) => Err(e),
                };
            match planned {
                Ok(ips) => {
                    for ip in &ips {
                        let from = pool::containing(&snap.pools, *ip);
                        if let Some(p) = from.filter(|p| !result.pools.contains(p)) {
                            result.pools.push(p.clone());
                        }
                    }
                    let nets = ips.into_iter().map(host_net);
                    match family {
                        IpFamily::V4 => result.v4.extend(nets),
                        IpFamily::V6 => result.v6.extend(nets),
                    }
                }
                Err(e) => {
                    if may_fetch {
                        self.confirm_claims_only(plan).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok((plan, result))
    }

    /// Plans `n` addresses of `family`: affine blocks, then new blocks, then borrowing.
    async fn plan_family(
        &self,
        snap: &Snapshot,
        want: &Want<'_>,
        handle: &str,
        attrs: &Attrs,
        plan: &mut Plan,
    ) -> Result<Vec<IpAddr>> {
        let Want { family, n, pools, may_fetch } = *want;
        let node = self.node.as_str();
        let in_pools = |cidr: IpNet| pools.iter().any(|p| p.owns_block(cidr));
        let mut out = Vec::with_capacity(n);
        let mut owned: u32 = 0;
        let mut blockless: Vec<&StoredAffinity> = Vec::new();
        let mut skip: BTreeSet<IpNet> = BTreeSet::new();
        let affine = snap.affine.get(&family).map_or(&[][..], Vec::as_slice);
        for a in affine {
            skip.insert(a.aff.cidr);
            if a.aff.state == AffinityState::PendingDeletion {
                continue;
            }
            let Some(sb) = &a.block else {
                owned += 1;
                if in_pools(a.aff.cidr) {
                    blockless.push(&a.aff);
                }
                continue;
            };
            let Ok(block) = &sb.block else {
                owned += 1; // corrupt (logged when read): still counts against the cap
                continue;
            };
            if !block.is_affine_to(node) {
                plan.drop_stale(&a.aff);
                continue;
            }
            owned += 1;
            plan.affine.insert(sb.cidr);
            if a.aff.state == AffinityState::Pending {
                // Claimed by an attempt that did not get to confirm: ours, so confirm now.
                plan.confirm(&a.aff.key, a.aff.mod_revision)?;
            }
            if out.len() < n && in_pools(sb.cidr) && block.free_count() > 0 {
                let got = plan.block_mut(&sb.key, sb.cidr, sb.mod_revision, block).take(
                    n - out.len(),
                    handle,
                    attrs,
                );
                out.extend(got);
            }
        }

        let limit = snap.config.effective_max_blocks_per_host();
        let mut limit_hit = false;
        if out.len() < n && snap.config.auto_allocate_blocks && may_fetch {
            for aff in blockless {
                if out.len() >= n {
                    break;
                }
                if let Some(c) =
                    claim::try_claim(&self.client, &self.keys, node, aff.cidr, Some(aff)).await?
                {
                    plan.add_claimed(&c)?;
                    out.extend(
                        plan.block_mut(&c.key, c.block.cidr(), c.mod_revision, &c.block).take(
                            n - out.len(),
                            handle,
                            attrs,
                        ),
                    );
                }
            }
            let mut prober = Prober::new(
                node,
                family,
                pools,
                skip,
                self.opts.probe_batch,
                self.opts.probe_batches_before_list,
                self.opts.max_leaps,
            );
            while out.len() < n {
                if owned >= limit {
                    limit_hit = true;
                    tracing::info!(node, limit, %family, "block limit reached; not claiming more");
                    break;
                }
                let Some(c) = prober.claim_next(&self.client, &self.keys).await? else { break };
                owned += 1;
                plan.add_claimed(&c)?;
                out.extend(plan.block_mut(&c.key, c.block.cidr(), c.mod_revision, &c.block).take(
                    n - out.len(),
                    handle,
                    attrs,
                ));
            }
        }

        if out.len() < n && !snap.config.strict_affinity && may_fetch {
            let got = self.borrow(family, n - out.len(), pools, handle, attrs, plan).await?;
            out.extend(got);
        }
        if out.len() < n {
            if limit_hit && snap.config.strict_affinity {
                return Err(IpamError::BlockLimit { node: node.to_string(), family, limit });
            }
            return Err(IpamError::PoolExhausted {
                family,
                pools: pools.iter().map(|p| p.cidr).collect(),
            });
        }
        Ok(out)
    }

    /// Takes addresses from blocks affine to other hosts (or to none). Each host walks the
    /// blocks in its own order so borrowers spread out instead of fighting over one block.
    #[allow(clippy::too_many_arguments)]
    async fn borrow(
        &self,
        family: IpFamily,
        need: usize,
        pools: &[&Pool],
        handle: &str,
        attrs: &Attrs,
        plan: &mut Plan,
    ) -> Result<Vec<IpAddr>> {
        let kvs = self
            .client
            .list(&self.keys.blocks_prefix(family))
            .await
            .map_err(|e| IpamError::store("list blocks to borrow from", e))?
            .kvs;
        let mut usable: Vec<(u64, StoredBlock)> = kvs
            .iter()
            .filter(|kv| match self.keys.parse(&kv.key) {
                Some(ParsedKey::Block { cidr }) => {
                    pools.iter().any(|p| p.owns_block(cidr)) && !plan.blocks.contains_key(&cidr)
                }
                _ => false,
            })
            .filter_map(|kv| decode_block(&self.keys, kv))
            .filter(|sb| sb.block.as_ref().is_ok_and(|b| b.free_count() > 0))
            .map(|sb| (fnv1a64(format!("{}/{}", self.node, sb.cidr).as_bytes()), sb))
            .collect();
        usable.sort_by_key(|(order, _)| *order);
        let mut out = Vec::with_capacity(need);
        for (_, sb) in usable {
            if out.len() >= need {
                break;
            }
            if let Ok(block) = &sb.block {
                tracing::debug!(cidr = %sb.cidr, owner = ?block.affine_host(), "borrowing");
                out.extend(plan.block_mut(&sb.key, sb.cidr, sb.mod_revision, block).take(
                    need - out.len(),
                    handle,
                    attrs,
                ));
            }
        }
        Ok(out)
    }

    /// Writes the plan in one transaction. With a `guess` (conditions saying the snapshot is
    /// still true, and the reads that made it), the transaction reads afresh when it is not.
    pub(super) async fn commit(
        &self,
        snap: &Snapshot,
        handle: &str,
        plan: Plan,
        also: Vec<Op>,
        guess: Option<(Vec<Cmp>, &[Read])>,
    ) -> Result<Committed> {
        let handle_key = self.keys.handle(handle);
        let (mut record, handle_rev) = match &snap.handle {
            Some(h) => (h.handle.clone(), h.mod_revision),
            None => (IpamHandle::default(), 0),
        };
        let mut cmps = plan.cmps;
        let mut ops = plan.ops;
        for (cidr, p) in &plan.blocks {
            cmps.push(unchanged(&p.key, p.mod_revision));
            ops.push(put_block(&p.key, &p.block)?);
            if p.taken > 0 {
                adjust_handle(&mut record, *cidr, p.taken as i64);
            }
        }
        record.deleted = false;
        cmps.push(unchanged(&handle_key, handle_rev));
        ops.push(put_json(&handle_key, &record)?);
        // The memo follows the IPAM writes (not the caller's records).
        let ipam_ops = ops.clone();
        ops.extend(also);
        let (succeeded, revision, read) = if let Some((guards, reads)) = guess {
            cmps.extend(guards);
            let out = self
                .client
                .txn_or_read(cmps, ops, reads)
                .await
                .map_err(|e| IpamError::store("write allocation", e))?;
            (out.succeeded, out.revision, Some(out.listings))
        } else {
            let out = self
                .client
                .txn(cmps, ops)
                .await
                .map_err(|e| IpamError::store("write allocation", e))?;
            if !out.succeeded {
                let changed: Vec<&str> = out.current.iter().map(|kv| kv.key.as_str()).collect();
                tracing::debug!(?changed, "allocation lost a race; retrying");
            }
            (out.succeeded, out.revision, None)
        };
        if succeeded {
            self.memo.remember_writes(&self.node, &ipam_ops, revision);
            return Ok(Committed::Done);
        }
        Ok(match read {
            Some(listings) => {
                tracing::debug!("the IPAM memo was stale; planning on what etcd holds");
                Committed::LostWith(listings)
            }
            None => Committed::Lost,
        })
    }

    /// After a failed request, still confirm the blocks it claimed (best effort): they are
    /// ours, and a pending affinity would only be confirmed by the next allocation.
    async fn confirm_claims_only(&self, plan: Plan) {
        if plan.cmps.is_empty() {
            return;
        }
        if let Err(e) = self.client.txn(plan.cmps, plan.ops).await {
            tracing::debug!(error = %e, "could not confirm claimed blocks; the next allocation will");
        }
    }

    /// Assigns the given addresses, all or none: each into its existing block, or into a
    /// block claimed for this node when the block does not exist yet.
    pub(super) async fn assign_ips_inner(
        &self,
        ips: &[IpAddr],
        handle: &str,
        attrs: &Attrs,
    ) -> Result<Vec<IpNet>> {
        for attempt in 0..self.opts.max_attempts {
            if attempt > 0 {
                backoff(attempt - 1).await;
            }
            let r = snapshot::reads(&self.keys, &self.node, &[], handle, &[]);
            let snap = snapshot::read(&self.client, &self.keys, &r).await?;
            let mut cidrs = Vec::with_capacity(ips.len());
            for ip in ips {
                let pool = pool::containing(&snap.pools, *ip)
                    .filter(|p| !p.disabled)
                    .ok_or(IpamError::NotInPool { ip: *ip })?;
                cidrs.push(pool.block_for(*ip).ok_or(IpamError::NotInPool { ip: *ip })?);
            }
            let mut reads = Vec::with_capacity(2 * ips.len());
            for cidr in &cidrs {
                reads.push(Read::Key(self.keys.block(*cidr)));
                reads.push(Read::Key(self.keys.affinity(&self.node, *cidr)));
            }
            let listings = self
                .client
                .get_many(&reads)
                .await
                .map_err(|e| IpamError::store("read blocks", e))?;
            let mut plan = Plan::default();
            let mut lost_claim = false;
            for (i, (ip, cidr)) in ips.iter().zip(&cidrs).enumerate() {
                if !plan.blocks.contains_key(cidr) {
                    let block_kv = listings.get(2 * i).and_then(|l| l.kvs.first());
                    let aff = listings
                        .get(2 * i + 1)
                        .and_then(|l| l.kvs.first())
                        .and_then(|kv| decode_affinity(&self.keys, kv))
                        .and_then(std::result::Result::ok);
                    if let Some(sb) = block_kv.and_then(|kv| decode_block(&self.keys, kv)) {
                        let block = sb.block.map_err(|reason| IpamError::CorruptBlock {
                            key: sb.key.clone(),
                            reason,
                        })?;
                        plan.block_mut(&sb.key, *cidr, sb.mod_revision, &block);
                    } else {
                        let claimed = claim::try_claim(
                            &self.client,
                            &self.keys,
                            &self.node,
                            *cidr,
                            aff.as_ref(),
                        )
                        .await?;
                        let Some(c) = claimed else {
                            lost_claim = true;
                            break;
                        };
                        plan.add_claimed(&c)?;
                        plan.block_mut(&c.key, *cidr, c.mod_revision, &c.block);
                    }
                }
                let Some(planned) = plan.blocks.get_mut(cidr) else { continue };
                if let Err(e) = planned.block.assign_ip(*ip, handle, attrs) {
                    self.confirm_claims_only(plan).await;
                    return Err(e.into());
                }
                planned.taken += 1;
            }
            if lost_claim {
                self.confirm_claims_only(plan).await;
                continue;
            }
            if matches!(self.commit(&snap, handle, plan, Vec::new(), None).await?, Committed::Done)
            {
                tracing::debug!(?ips, handle, "assigned requested addresses");
                return Ok(ips.iter().copied().map(host_net).collect());
            }
        }
        Err(IpamError::Conflict { op: "assign_ips", attempts: self.opts.max_attempts })
    }
}
