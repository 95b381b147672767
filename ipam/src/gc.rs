//! `ipamctl gc`: repairs what `check` proves wrong. An allocation is released only when no
//! workload endpoint accounts for any address of its handle, it is older than the grace
//! period, and (on this node) its container's network namespace is gone; the release is
//! guarded by the sequence number `check` saw, so an address re-assigned meanwhile stays.
//! Handle records are made to match the blocks, affinities pointing nowhere are deleted,
//! missing affinities of live hosts are restored, and blocks of deleted nodes are deleted
//! (empty) or left unaffine (still holding addresses).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use datastore::client::{Client, Cmp, Op};
use datastore::keys::KeyLayout;
use datastore::model::ipam::{AffinityState, IpamHandle};
use ipnet::IpNet;
use serde::Serialize;

use crate::allocator::{release_ips, AllocatorOptions, ReleaseRequest};
use crate::block::ReleaseOutcome;
use crate::check::{analyse, Leak, Report};
use crate::error::{IpamError, Result};
use crate::inventory::Inventory;
use crate::store::{delete, put_affinity, put_block, put_json, unchanged};
use crate::time::parse_timestamp;

pub struct GcOptions<'a> {
    /// Allocations younger than this are never released (an ADD may not have written its
    /// endpoint yet).
    pub grace: Duration,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
    /// The node gc runs on: its allocations are also checked against live netns.
    pub this_node: Option<String>,
    /// Whether the container with this id still has a network namespace on this node.
    pub netns_alive: &'a dyn Fn(&str) -> bool,
    /// "Now", injectable for tests.
    pub now: SystemTime,
}

impl std::fmt::Debug for GcOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcOptions")
            .field("grace", &self.grace)
            .field("dry_run", &self.dry_run)
            .field("this_node", &self.this_node)
            .finish_non_exhaustive()
    }
}

/// An allocation `gc` left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub ip: IpAddr,
    pub handle: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// What `check` found before anything was done.
    pub before: Report,
    pub released: Vec<IpAddr>,
    pub kept: Vec<Kept>,
    pub handles_deleted: Vec<String>,
    /// Handle records rewritten (or re-created) to match the blocks.
    pub handles_fixed: Vec<String>,
    pub affinities_deleted: Vec<String>,
    pub affinities_confirmed: Vec<String>,
    /// Affinities re-created for blocks that name a live host which lacked one.
    pub affinities_restored: Vec<String>,
    /// Empty blocks of deleted nodes, deleted.
    pub blocks_deleted: Vec<IpNet>,
    /// Blocks of deleted nodes that still hold addresses: their affinity is cleared.
    pub blocks_unaffined: Vec<IpNet>,
    /// Writes that lost a race with a concurrent change (left for the next run).
    pub skipped_conflicts: usize,
}

/// Runs the repairs (or, with `dry_run`, reports them).
pub async fn gc(client: &Client, keys: &KeyLayout, opts: &GcOptions<'_>) -> Result<GcReport> {
    let inv = Inventory::load(client, keys).await?;
    let before = analyse(&inv);
    let mut out = GcReport { dry_run: opts.dry_run, ..GcReport::default() };

    let (release, kept) = decide_leaks(&inv, &before, opts);
    out.kept = kept;
    if opts.dry_run {
        out.released = release.iter().map(|r| r.ip).collect();
        plan_fixes(keys, &before, &inv, &mut out);
        out.before = before;
        return Ok(out);
    }
    if !release.is_empty() {
        let outcomes = release_ips(client, keys, &release, &AllocatorOptions::default()).await?;
        for (req, outcome) in release.iter().zip(outcomes) {
            match outcome {
                ReleaseOutcome::Released { .. } => out.released.push(req.ip),
                other => out.kept.push(Kept {
                    ip: req.ip,
                    handle: req.handle.clone(),
                    reason: format!("changed since check: {other:?}"),
                }),
            }
        }
        tracing::info!(released = ?out.released, "gc released leaked addresses");
    }
    // Fix records against the state after the releases.
    let (after, inv) = if out.released.is_empty() {
        (before.clone(), inv)
    } else {
        let inv = Inventory::load(client, keys).await?;
        (analyse(&inv), inv)
    };
    apply_fixes(client, keys, &after, &inv, &mut out).await?;
    out.before = before;
    Ok(out)
}

/// Which leaked allocations may go: all or none per handle, old enough, netns gone.
fn decide_leaks(
    inv: &Inventory,
    report: &Report,
    opts: &GcOptions<'_>,
) -> (Vec<ReleaseRequest>, Vec<Kept>) {
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    for b in inv.blocks.iter().filter_map(|b| b.block.as_ref().ok()) {
        for (h, n) in b.handle_counts() {
            *held.entry(h).or_insert(0) += n as usize;
        }
    }
    let mut groups: BTreeMap<Option<String>, Vec<&Leak>> = BTreeMap::new();
    for l in &report.leaked {
        groups.entry(l.handle.clone()).or_default().push(l);
    }
    let mut release = Vec::new();
    let mut kept = Vec::new();
    for (handle, leaks) in groups {
        // Handle-less allocations are judged one by one; a handle's allocations together.
        let units: Vec<Vec<&Leak>> = match &handle {
            None => leaks.into_iter().map(|l| vec![l]).collect(),
            Some(_) => vec![leaks],
        };
        for unit in units {
            let verdict = judge(&unit, &held, opts);
            for l in unit {
                match &verdict {
                    Ok(()) => release.push(ReleaseRequest {
                        ip: l.ip,
                        handle: l.handle.clone(),
                        sequence: l.sequence,
                    }),
                    Err(reason) => {
                        kept.push(Kept {
                            ip: l.ip,
                            handle: l.handle.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
    }
    (release, kept)
}

fn judge(
    unit: &[&Leak],
    held: &BTreeMap<String, usize>,
    opts: &GcOptions<'_>,
) -> std::result::Result<(), String> {
    let Some(first) = unit.first() else { return Err("nothing to judge".into()) };
    if let Some(h) = &first.handle {
        // Any address of the handle that an endpoint accounts for protects them all.
        if held.get(h).copied().unwrap_or(0) > unit.len() {
            return Err("another address of this handle is in use".into());
        }
    }
    for l in unit {
        let Some(ts) = l.timestamp.as_deref() else {
            return Err("no timestamp: cannot prove it is older than the grace period".into());
        };
        let Some(when) = parse_timestamp(ts) else {
            return Err(format!("unreadable timestamp {ts:?}"));
        };
        let age = opts.now.duration_since(when).unwrap_or_default();
        if age < opts.grace {
            return Err(format!("younger than the grace period ({age:?} < {:?})", opts.grace));
        }
        if let (Some(me), Some(node)) = (&opts.this_node, &l.node) {
            if me == node {
                if let Some(cid) = &l.container_id {
                    if (opts.netns_alive)(cid) {
                        return Err(format!("container {cid} still has a network namespace"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Record repairs derived from a report, as (description, compares, writes).
/// One repair: what it is, and the guarded transaction that makes it.
type Repair = (Fix, Vec<Cmp>, Vec<Op>);

fn fixes(keys: &KeyLayout, report: &Report, inv: &Inventory) -> Result<Vec<Repair>> {
    let mut out = Vec::new();
    for h in &report.handles_without_allocations {
        let key = keys.handle(&h.handle);
        out.push((
            Fix::HandleDeleted(h.handle.clone()),
            vec![unchanged(&key, h.mod_revision)],
            vec![delete(&key)],
        ));
    }
    for h in &report.handle_count_mismatches {
        let key = keys.handle(&h.handle);
        let record = IpamHandle { block: h.actual.clone(), ..IpamHandle::default() };
        out.push((
            Fix::HandleFixed(h.handle.clone()),
            vec![unchanged(&key, h.mod_revision)],
            vec![put_json(&key, &record)?],
        ));
    }
    // Allocations whose handle record is missing but which are in use: re-create the record.
    let leaked: std::collections::BTreeSet<IpAddr> = report.leaked.iter().map(|l| l.ip).collect();
    let mut recreate: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for a in &report.allocations_without_handles {
        if let (Some(h), false) = (&a.handle, leaked.contains(&a.ip)) {
            *recreate.entry(h.clone()).or_default().entry(a.block.to_string()).or_insert(0) += 1;
        }
    }
    for (h, counts) in recreate {
        let key = keys.handle(&h);
        let record = IpamHandle { block: counts, ..IpamHandle::default() };
        out.push((
            Fix::HandleFixed(h),
            vec![Cmp::Absent(key.clone())],
            vec![put_json(&key, &record)?],
        ));
    }
    for a in &report.orphaned_affinities {
        out.push((
            Fix::AffinityDeleted(a.key.clone()),
            vec![unchanged(&a.key, a.mod_revision)],
            vec![delete(&a.key)],
        ));
    }
    for b in &report.blocks_without_affinity {
        if let Some(host) = &b.host {
            let aff = keys.affinity(host, b.block);
            out.push((
                Fix::AffinityRestored(aff.clone()),
                vec![Cmp::Absent(aff.clone()), unchanged(&b.key, b.mod_revision)],
                vec![put_affinity(&aff, AffinityState::Confirmed)?],
            ));
        }
    }
    for b in &report.blocks_of_deleted_nodes {
        let Some(Ok(block)) = inv.block(b.block).map(|sb| &sb.block) else { continue };
        let cmps = vec![unchanged(&b.key, b.mod_revision)];
        if block.is_empty() {
            out.push((Fix::BlockDeleted(b.block), cmps, vec![delete(&b.key)]));
        } else {
            let mut block = block.clone();
            block.set_affinity(None);
            out.push((Fix::BlockUnaffined(b.block), cmps, vec![put_block(&b.key, &block)?]));
        }
    }
    for a in &report.pending_affinities {
        if a.state == AffinityState::Pending.as_str() {
            out.push((
                Fix::AffinityConfirmed(a.key.clone()),
                vec![unchanged(&a.key, a.mod_revision)],
                vec![put_affinity(&a.key, AffinityState::Confirmed)?],
            ));
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Fix {
    HandleDeleted(String),
    HandleFixed(String),
    AffinityDeleted(String),
    AffinityConfirmed(String),
    AffinityRestored(String),
    BlockDeleted(IpNet),
    BlockUnaffined(IpNet),
}

fn record(out: &mut GcReport, fix: Fix) {
    match fix {
        Fix::HandleDeleted(h) => out.handles_deleted.push(h),
        Fix::HandleFixed(h) => out.handles_fixed.push(h),
        Fix::AffinityDeleted(k) => out.affinities_deleted.push(k),
        Fix::AffinityConfirmed(k) => out.affinities_confirmed.push(k),
        Fix::AffinityRestored(k) => out.affinities_restored.push(k),
        Fix::BlockDeleted(c) => out.blocks_deleted.push(c),
        Fix::BlockUnaffined(c) => out.blocks_unaffined.push(c),
    }
}

fn plan_fixes(keys: &KeyLayout, report: &Report, inv: &Inventory, out: &mut GcReport) {
    match fixes(keys, report, inv) {
        Ok(list) => list.into_iter().for_each(|(f, _, _)| record(out, f)),
        Err(e) => tracing::warn!(error = %e, "cannot plan record fixes"),
    }
}

async fn apply_fixes(
    client: &Client,
    keys: &KeyLayout,
    report: &Report,
    inv: &Inventory,
    out: &mut GcReport,
) -> Result<()> {
    for (fix, cmps, ops) in fixes(keys, report, inv)? {
        let done = client.txn(cmps, ops).await.map_err(|e| IpamError::store("gc repair", e))?;
        if done.succeeded {
            tracing::info!(?fix, "gc repaired");
            record(out, fix);
        } else {
            out.skipped_conflicts += 1;
        }
    }
    Ok(())
}
