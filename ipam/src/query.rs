//! Read-only questions about IPAM state: who holds an address, and how full each pool and
//! block is (what `ipamctl show` prints). No lock, no writes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use datastore::client::Client;
use datastore::keys::{IpFamily, KeyLayout, Kind};
use ipnet::IpNet;
use serde::Serialize;

use crate::allocator::attr;
use crate::allocator::Assignment;
use crate::error::{IpamError, Result};
use crate::pool::Pool;
use crate::store::{decode_block, StoredBlock};

/// Who holds `ip`, if anyone.
pub async fn get_assignment(
    client: &Client,
    keys: &KeyLayout,
    ip: IpAddr,
) -> Result<Option<Assignment>> {
    let blocks = crate::allocator::blocks_for_ips(client, keys, std::iter::once(ip)).await?;
    let Some(sb) = blocks.into_iter().find(|b| b.cidr.contains(&ip)) else {
        return Ok(None);
    };
    let block =
        sb.block.map_err(|reason| IpamError::CorruptBlock { key: sb.key.clone(), reason })?;
    Ok(block.allocation(ip).map(|allocation| Assignment {
        allocation,
        block: sb.cidr,
        block_host: block.affine_host().map(str::to_string),
    }))
}

/// Usage of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    pub block_size: u8,
    pub disabled: bool,
    pub total: u128,
    pub in_use: u64,
    pub free: u128,
    pub blocks: usize,
}

/// An address allocated by another node than the block's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Borrowed {
    pub ip: IpAddr,
    pub node: Option<String>,
    pub handle: Option<String>,
}

/// Usage of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockUsage {
    pub cidr: IpNet,
    /// The pool holding the block (`None`: no pool does any more).
    pub pool: Option<String>,
    /// Host the block is affine to.
    pub host: Option<String>,
    pub total: u64,
    pub in_use: u64,
    pub free: u64,
    pub borrowed: Vec<Borrowed>,
}

/// A block that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorruptBlock {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub pools: Vec<PoolUsage>,
    pub blocks: Vec<BlockUsage>,
    pub corrupt: Vec<CorruptBlock>,
}

impl Usage {
    /// The blocks affine to `host` (`ipamctl show --host`).
    pub fn host_blocks<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a BlockUsage> + 'a {
        self.blocks.iter().filter(move |b| b.host.as_deref() == Some(host))
    }
}

/// Per-pool and per-block totals, from one listing of pools and blocks.
pub async fn usage(client: &Client, keys: &KeyLayout) -> Result<Usage> {
    let pools = client
        .list(&keys.resources_prefix(Kind::IpPool))
        .await
        .map_err(|e| IpamError::store("list pools", e))?;
    let pools = crate::allocator::decode_pools(&pools.kvs);
    let mut blocks = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let listing = client
            .list(&keys.blocks_prefix(family))
            .await
            .map_err(|e| IpamError::store("list blocks", e))?;
        blocks.extend(listing.kvs.iter().filter_map(|kv| decode_block(keys, kv)));
    }
    Ok(summarise(&pools, &blocks))
}

/// The pure part of [`usage`].
pub fn summarise(pools: &[Pool], blocks: &[StoredBlock]) -> Usage {
    let mut usage = Usage::default();
    let mut per_pool: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for sb in blocks {
        let block = match &sb.block {
            Ok(b) => b,
            Err(reason) => {
                usage.corrupt.push(CorruptBlock { key: sb.key.clone(), reason: reason.clone() });
                continue;
            }
        };
        let pool = pools.iter().find(|p| p.cidr.contains(&sb.cidr));
        let in_use = block.used_count() as u64;
        if let Some(p) = pool {
            let e = per_pool.entry(p.name.as_str()).or_default();
            e.0 += in_use;
            e.1 += 1;
        }
        let host = block.affine_host().map(str::to_string);
        let borrowed = block
            .allocations()
            .filter_map(|a| {
                let node = a.attrs.get(attr::NODE).cloned();
                (node.is_some() && node != host).then_some(Borrowed {
                    ip: a.ip,
                    node,
                    handle: a.handle,
                })
            })
            .collect();
        usage.blocks.push(BlockUsage {
            cidr: sb.cidr,
            pool: pool.map(|p| p.name.clone()),
            host,
            total: block.span() as u64,
            in_use,
            free: block.free_count() as u64,
            borrowed,
        });
    }
    for p in pools {
        let (in_use, nblocks) = per_pool.get(p.name.as_str()).copied().unwrap_or_default();
        let total = p.total_addresses();
        usage.pools.push(PoolUsage {
            name: p.name.clone(),
            cidr: p.cidr,
            block_size: p.block_size,
            disabled: p.disabled,
            total,
            in_use,
            free: total.saturating_sub(u128::from(in_use)),
            blocks: nblocks,
        });
    }
    usage
}

/// Ids of every handle starting with `prefix` (e.g. `<network>.` for the CNI GC verb).
pub async fn handles_with_prefix(
    client: &Client,
    keys: &KeyLayout,
    prefix: &str,
) -> Result<Vec<String>> {
    let listing = client
        .list(&format!("{}{prefix}", keys.handles_prefix()))
        .await
        .map_err(|e| IpamError::store("list handles", e))?;
    Ok(listing
        .kvs
        .iter()
        .filter_map(|kv| match keys.parse(&kv.key) {
            Some(datastore::keys::ParsedKey::Handle { id }) => Some(id),
            _ => None,
        })
        .collect())
}
