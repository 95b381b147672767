//! `ipamctl check`: cross-checks blocks, handles, affinities and workload endpoints read at
//! one revision, and lists every inconsistency with enough detail to act on it (and for `gc`
//! to repair what is provably leaked).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datastore::client::Client;
use datastore::keys::KeyLayout;
use datastore::model::ipam::AffinityState;
use ipnet::IpNet;
use serde::Serialize;

use crate::allocator::attr;
use crate::block::{ip_to_u128, Allocation};
use crate::error::Result;
use crate::inventory::{CorruptRecord, Inventory};

/// An allocation no workload endpoint accounts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leak {
    pub ip: IpAddr,
    pub block: IpNet,
    pub handle: Option<String>,
    pub node: Option<String>,
    pub container_id: Option<String>,
    pub timestamp: Option<String>,
    /// The allocation's sequence number: a release guarded by it cannot free a re-assignment.
    pub sequence: Option<u64>,
}

/// An allocation named without its handle record (or without any handle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllocationRef {
    pub ip: IpAddr,
    pub block: IpNet,
    pub handle: Option<String>,
}

/// A handle record whose counts disagree with the blocks (empty `actual`: it holds nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandleIssue {
    pub handle: String,
    pub recorded: BTreeMap<String, u32>,
    pub actual: BTreeMap<String, u32>,
    pub mod_revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffinityIssue {
    pub host: String,
    pub block: IpNet,
    pub state: &'static str,
    pub reason: String,
    pub key: String,
    pub mod_revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateAffinity {
    pub block: IpNet,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockIssue {
    pub block: IpNet,
    pub key: String,
    pub mod_revision: i64,
    pub host: Option<String>,
    pub in_use: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateAddress {
    pub ip: IpAddr,
    pub blocks: Vec<IpNet>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pools: usize,
    pub blocks: usize,
    pub affinities: usize,
    pub handles: usize,
    pub allocations: usize,
    pub workload_endpoints: usize,
    pub nodes: usize,
}

/// The result of [`check`]. Every list is a kind of problem; empty lists mean clean.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub revision: i64,
    pub counts: Counts,
    pub corrupt_records: Vec<CorruptRecord>,
    pub leaked: Vec<Leak>,
    pub handles_without_allocations: Vec<HandleIssue>,
    pub allocations_without_handles: Vec<AllocationRef>,
    pub handle_count_mismatches: Vec<HandleIssue>,
    pub duplicate_affinities: Vec<DuplicateAffinity>,
    pub orphaned_affinities: Vec<AffinityIssue>,
    pub pending_affinities: Vec<AffinityIssue>,
    pub blocks_without_affinity: Vec<BlockIssue>,
    pub blocks_of_deleted_nodes: Vec<BlockIssue>,
    pub blocks_outside_pools: Vec<BlockIssue>,
    pub overlapping_blocks: Vec<[IpNet; 2]>,
    pub duplicate_addresses: Vec<DuplicateAddress>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.corrupt_records.len()
            + self.leaked.len()
            + self.handles_without_allocations.len()
            + self.allocations_without_handles.len()
            + self.handle_count_mismatches.len()
            + self.duplicate_affinities.len()
            + self.orphaned_affinities.len()
            + self.pending_affinities.len()
            + self.blocks_without_affinity.len()
            + self.blocks_of_deleted_nodes.len()
            + self.blocks_outside_pools.len()
            + self.overlapping_blocks.len()
            + self.duplicate_addresses.len()
    }

    pub fn is_clean(&self) -> bool {
        self.problems() == 0
    }
}

/// Reads the datastore at one revision and checks it.
pub async fn check(client: &Client, keys: &KeyLayout) -> Result<Report> {
    let inv = Inventory::load(client, keys).await?;
    Ok(analyse(&inv))
}

/// Whether an allocation is a tunnel address (backed by its node, not by an endpoint).
fn is_tunnel(a: &Allocation) -> bool {
    a.attrs.get(attr::TYPE).is_some_and(|t| t.ends_with("TunnelAddress"))
}

/// The pure part of [`check`].
pub fn analyse(inv: &Inventory) -> Report {
    let mut r = Report {
        revision: inv.revision,
        corrupt_records: inv.corrupt.clone(),
        ..Report::default()
    };
    r.counts = Counts {
        pools: inv.pools.len(),
        blocks: inv.blocks.len(),
        affinities: inv.affinities.len(),
        handles: inv.handles.len(),
        allocations: 0,
        workload_endpoints: inv.endpoints.len(),
        nodes: inv.nodes.len(),
    };
    let endpoint_ips: BTreeSet<IpAddr> =
        inv.endpoints.iter().flat_map(|e| e.ips.iter().copied()).collect();
    let endpoint_containers: BTreeSet<&str> =
        inv.endpoints.iter().filter_map(|e| e.container_id.as_deref()).collect();
    let affinity_of: BTreeMap<(&str, IpNet), _> =
        inv.affinities.iter().map(|a| ((a.host.as_str(), a.cidr), a)).collect();
    let hosts_with_affinities: BTreeSet<&str> =
        inv.affinities.iter().map(|a| a.host.as_str()).collect();

    let mut actual: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    let mut corrupt_blocks: BTreeSet<String> = BTreeSet::new();
    let mut by_ip: BTreeMap<IpAddr, Vec<IpNet>> = BTreeMap::new();
    for sb in &inv.blocks {
        let block = match &sb.block {
            Ok(b) => b,
            Err(reason) => {
                r.corrupt_records
                    .push(CorruptRecord { key: sb.key.clone(), reason: reason.clone() });
                corrupt_blocks.insert(sb.cidr.to_string());
                continue;
            }
        };
        let in_use = block.used_count();
        let host = block.affine_host().map(str::to_string);
        if !inv.pools.iter().any(|p| p.cidr.contains(&sb.cidr)) {
            r.blocks_outside_pools.push(BlockIssue {
                block: sb.cidr,
                key: sb.key.clone(),
                mod_revision: sb.mod_revision,
                host: host.clone(),
                in_use,
            });
        }
        if let Some(h) = host.as_deref() {
            if !affinity_of.contains_key(&(h, sb.cidr)) {
                let issue = BlockIssue {
                    block: sb.cidr,
                    key: sb.key.clone(),
                    mod_revision: sb.mod_revision,
                    host: host.clone(),
                    in_use,
                };
                if !inv.nodes.contains(h) && !hosts_with_affinities.contains(h) {
                    r.blocks_of_deleted_nodes.push(issue);
                } else {
                    r.blocks_without_affinity.push(issue);
                }
            }
        }
        for a in block.allocations() {
            r.counts.allocations += 1;
            by_ip.entry(a.ip).or_default().push(sb.cidr);
            match a.handle.as_deref() {
                Some(h) if inv.handles.contains_key(h) => {
                    *actual
                        .entry(h.to_string())
                        .or_default()
                        .entry(sb.cidr.to_string())
                        .or_insert(0) += 1;
                }
                _ => r.allocations_without_handles.push(AllocationRef {
                    ip: a.ip,
                    block: sb.cidr,
                    handle: a.handle.clone(),
                }),
            }
            let container = a.attrs.get(attr::CONTAINER_ID);
            let backed = endpoint_ips.contains(&a.ip)
                || container.is_some_and(|c| endpoint_containers.contains(c.as_str()))
                || (is_tunnel(&a)
                    && a.attrs.get(attr::NODE).is_some_and(|n| inv.nodes.contains(n)))
                || a.attrs.get(attr::TYPE).is_some_and(|t| t == attr::TYPE_IPAM_PLUGIN);
            if !backed {
                r.leaked.push(Leak {
                    ip: a.ip,
                    block: sb.cidr,
                    handle: a.handle.clone(),
                    node: a.attrs.get(attr::NODE).cloned(),
                    container_id: container.cloned(),
                    timestamp: a.attrs.get(attr::TIMESTAMP).cloned(),
                    sequence: a.sequence,
                });
            }
        }
    }
    for (ip, blocks) in by_ip {
        if blocks.len() > 1 {
            r.duplicate_addresses.push(DuplicateAddress { ip, blocks });
        }
    }
    r.overlapping_blocks = overlapping(inv.blocks.iter().map(|b| b.cidr));

    for (id, h) in &inv.handles {
        let have = actual.remove(id).unwrap_or_default();
        if h.handle.block.keys().any(|c| corrupt_blocks.contains(c)) {
            continue; // cannot count what a corrupt block holds; the block is reported
        }
        let issue = HandleIssue {
            handle: id.clone(),
            recorded: h.handle.block.clone(),
            actual: have.clone(),
            mod_revision: h.mod_revision,
        };
        if have.is_empty() {
            r.handles_without_allocations.push(issue);
        } else if h.handle.block.iter().any(|(_, n)| *n == 0) || h.handle.block != have {
            r.handle_count_mismatches.push(issue);
        }
    }

    let mut hosts_per_block: BTreeMap<IpNet, Vec<String>> = BTreeMap::new();
    for a in &inv.affinities {
        hosts_per_block.entry(a.cidr).or_default().push(a.host.clone());
        let issue = |reason: String| AffinityIssue {
            host: a.host.clone(),
            block: a.cidr,
            state: a.state.as_str(),
            reason,
            key: a.key.clone(),
            mod_revision: a.mod_revision,
        };
        match inv.block(a.cidr).map(|b| &b.block) {
            None => r.orphaned_affinities.push(issue("block does not exist".into())),
            Some(Ok(b)) if !b.is_affine_to(&a.host) => r.orphaned_affinities.push(issue(format!(
                "block is affine to {}",
                b.affine_host().unwrap_or("no host")
            ))),
            Some(Ok(_)) if a.state != AffinityState::Confirmed => {
                r.pending_affinities.push(issue(format!("state is {}", a.state.as_str())));
            }
            // Confirmed and consistent, or its block is corrupt (reported as such).
            Some(_) => {}
        }
    }
    for (block, hosts) in hosts_per_block {
        if hosts.len() > 1 {
            r.duplicate_affinities.push(DuplicateAffinity { block, hosts });
        }
    }
    r
}

/// Pairs of blocks that share addresses (never made by tabby; possible after pool edits or
/// hand-written records).
fn overlapping(cidrs: impl Iterator<Item = IpNet>) -> Vec<[IpNet; 2]> {
    let mut sorted: Vec<IpNet> = cidrs.collect();
    sorted.sort_by_key(|c| (c.addr().is_ipv6(), ip_to_u128(c.network()), c.prefix_len()));
    let mut out = Vec::new();
    // Each block is compared with the widest earlier block still open, which catches every
    // overlap of aligned CIDRs (they nest or are disjoint).
    let mut open: Option<IpNet> = None;
    for c in sorted {
        if let Some(o) = open {
            if o.contains(&c.network()) {
                out.push([o, c]);
                continue;
            }
        }
        open = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_detection_finds_nested_blocks_only() {
        let nets = ["10.0.0.0/26", "10.0.0.64/26", "10.0.0.0/25", "10.0.1.0/26", "fd00::/122"]
            .map(|s| s.parse::<IpNet>().unwrap());
        let found = overlapping(nets.into_iter());
        let want: Vec<[IpNet; 2]> = vec![
            ["10.0.0.0/25".parse().unwrap(), "10.0.0.0/26".parse().unwrap()],
            ["10.0.0.0/25".parse().unwrap(), "10.0.0.64/26".parse().unwrap()],
        ];
        assert_eq!(found, want);
        assert!(overlapping(
            ["10.0.0.0/26", "10.0.0.64/26"].map(|s| s.parse().unwrap()).into_iter()
        )
        .is_empty());
    }
}
