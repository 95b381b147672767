//! What one assign attempt reads before it decides: the IPAM config, the pools, this node's
//! labels and affinities, the handle, and the affine blocks, in one or two round trips.

use std::collections::{BTreeMap, BTreeSet};

use datastore::client::{Client, Kv, Listing, Read};
use datastore::keys::{IpFamily, KeyLayout, Kind};
use datastore::model::ipam::IpamConfig;
use datastore::model::IpPoolSpec;
use datastore::model::Resource;
use ipnet::IpNet;

use crate::error::{IpamError, Result};
use crate::pool::Pool;
use crate::store::{
    decode_affinity, decode_block, decode_handle, StoredAffinity, StoredBlock, StoredHandle,
};

/// One of this node's affinities and its block (`None`: the block does not exist).
#[derive(Debug, Clone)]
pub(super) struct Affine {
    pub aff: StoredAffinity,
    pub block: Option<StoredBlock>,
}

#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub config: IpamConfig,
    pub pools: Vec<Pool>,
    pub node_labels: BTreeMap<String, String>,
    /// The handle record, if it exists.
    pub handle: Option<StoredHandle>,
    pub affine: BTreeMap<IpFamily, Vec<Affine>>,
}

/// The reads of one snapshot, in the order [`decode`] expects their listings.
#[derive(Debug, Clone)]
pub(super) struct ReadSet {
    pub reads: Vec<Read>,
    /// The handle's key: the request's own, never worth remembering.
    pub handle_key: String,
    families: Vec<IpFamily>,
    hinted: Vec<IpNet>,
}

#[cfg(test)]
impl ReadSet {
    pub(super) fn for_test(reads: Vec<Read>, handle_key: &str) -> Self {
        ReadSet {
            reads,
            handle_key: handle_key.to_string(),
            families: Vec::new(),
            hinted: Vec::new(),
        }
    }
}

/// What an assign reads first. `hint` names blocks expected to be affine, read in the same
/// round trip; affine blocks outside the hint cost one more.
pub(super) fn reads(
    keys: &KeyLayout,
    node: &str,
    families: &[IpFamily],
    handle: &str,
    hint: &[IpNet],
) -> ReadSet {
    let handle_key = keys.handle(handle);
    let mut reads = vec![
        Read::Key(keys.ipam_config()),
        Read::Prefix(keys.resources_prefix(Kind::IpPool)),
        Read::Key(keys.resource(Kind::Node, None, node)),
        Read::Key(handle_key.clone()),
    ];
    reads.extend(families.iter().map(|f| Read::Prefix(keys.host_affinities_prefix(node, *f))));
    let hinted: Vec<IpNet> =
        hint.iter().copied().filter(|c| families.contains(&IpFamily::of_net(c))).collect();
    reads.extend(hinted.iter().map(|c| Read::Key(keys.block(*c))));
    ReadSet { reads, handle_key, families: families.to_vec(), hinted }
}

/// A snapshot whose affine blocks outside the hint are still to be read.
#[derive(Debug)]
pub(super) struct Partial {
    snap: Snapshot,
    affinities: BTreeMap<IpFamily, Vec<StoredAffinity>>,
    blocks: BTreeMap<IpNet, StoredBlock>,
    /// Affine blocks the first reads did not cover.
    pub missing: Vec<IpNet>,
}

/// Decodes the listings of `r` (one per read, in order).
pub(super) fn decode(keys: &KeyLayout, r: &ReadSet, listings: &[Listing]) -> Result<Partial> {
    let config = decode_config(keys, first(listings, 0))?;
    let pools = decode_pools(listings.get(1).map_or(&[][..], |l| &l.kvs));
    let node_labels = first(listings, 2).map(node_labels).unwrap_or_default();
    let handle = match first(listings, 3).map(|kv| (kv, decode_handle(keys, kv))) {
        Some((_, Some(Ok(h)))) => Some(h),
        Some((kv, Some(Err(reason)))) => {
            return Err(IpamError::CorruptRecord { key: kv.key.clone(), reason });
        }
        _ => None,
    };
    let fixed = 4 + r.families.len();
    let mut blocks: BTreeMap<IpNet, StoredBlock> = BTreeMap::new();
    for listing in listings.iter().skip(fixed) {
        for kv in &listing.kvs {
            if let Some(sb) = decode_block(keys, kv) {
                blocks.insert(sb.cidr, sb);
            }
        }
    }
    let hinted: BTreeSet<IpNet> = r.hinted.iter().copied().collect();
    let mut affinities: BTreeMap<IpFamily, Vec<StoredAffinity>> = BTreeMap::new();
    for (i, family) in r.families.iter().enumerate() {
        let listing = listings.get(4 + i).map_or(&[][..], |l| &l.kvs[..]);
        let affs = affinities.entry(*family).or_default();
        for kv in listing {
            match decode_affinity(keys, kv) {
                Some(Ok(a)) => affs.push(a),
                Some(Err(reason)) => {
                    tracing::error!(key = %kv.key, %reason, "corrupt block affinity; ignoring it");
                }
                None => {}
            }
        }
    }
    let missing: Vec<IpNet> =
        affinities.values().flatten().map(|a| a.cidr).filter(|c| !hinted.contains(c)).collect();
    let snap = Snapshot { config, pools, node_labels, handle, affine: BTreeMap::new() };
    Ok(Partial { snap, affinities, blocks, missing })
}

impl Partial {
    /// The snapshot, once every affine block is known (`missing` read or empty).
    pub(super) fn finish(mut self) -> Snapshot {
        let blocks = self.blocks;
        self.snap.affine = self
            .affinities
            .into_iter()
            .map(|(family, affs)| {
                let list = affs
                    .into_iter()
                    .map(|aff| Affine { block: blocks.get(&aff.cidr).cloned(), aff })
                    .collect();
                (family, list)
            })
            .collect();
        self.snap
    }

    /// Reads the affine blocks the first reads missed (a second round trip, when any).
    pub(super) async fn complete(mut self, client: &Client, keys: &KeyLayout) -> Result<Snapshot> {
        if !self.missing.is_empty() {
            let reads: Vec<Read> = self.missing.iter().map(|c| Read::Key(keys.block(*c))).collect();
            let listings = client
                .get_many(&reads)
                .await
                .map_err(|e| IpamError::store("read affine blocks", e))?;
            for kv in listings.iter().flat_map(|l| &l.kvs) {
                if let Some(sb) = decode_block(keys, kv) {
                    self.blocks.insert(sb.cidr, sb);
                }
            }
        }
        Ok(self.finish())
    }
}

impl ReadSet {
    /// Performs the reads: one round trip, one listing per read.
    pub(super) async fn fetch(&self, client: &Client) -> Result<Vec<Listing>> {
        client.get_many(&self.reads).await.map_err(|e| IpamError::store("read IPAM state", e))
    }
}

/// Reads what an assign needs (see [`reads`]).
pub(super) async fn read(client: &Client, keys: &KeyLayout, r: &ReadSet) -> Result<Snapshot> {
    let listings = r.fetch(client).await?;
    decode(keys, r, &listings)?.complete(client, keys).await
}

fn first(listings: &[Listing], i: usize) -> Option<&Kv> {
    listings.get(i).and_then(|l| l.kvs.first())
}

/// The stored IPAM config, or Calico's defaults when there is none.
pub(crate) fn decode_config(keys: &KeyLayout, kv: Option<&Kv>) -> Result<IpamConfig> {
    let Some(kv) = kv else {
        return Ok(IpamConfig::default());
    };
    let config: IpamConfig = serde_json::from_slice(&kv.value)
        .map_err(|e| IpamError::CorruptRecord { key: keys.ipam_config(), reason: e.to_string() })?;
    config
        .validate()
        .map_err(|e| IpamError::CorruptRecord { key: keys.ipam_config(), reason: e.to_string() })?;
    Ok(config)
}

/// Valid pools in key order; invalid ones are logged and left out (one bad pool must not stop
/// allocation from the others).
pub(crate) fn decode_pools(kvs: &[Kv]) -> Vec<Pool> {
    kvs.iter()
        .filter_map(|kv| {
            let parsed = Resource::<IpPoolSpec>::from_json(&kv.value)
                .map_err(|e| e.to_string())
                .and_then(|r| Pool::from_resource(&r).map_err(|e| e.to_string()));
            match parsed {
                Ok(p) => Some(p),
                Err(reason) => {
                    tracing::error!(key = %kv.key, %reason, "invalid IP pool; ignoring it");
                    None
                }
            }
        })
        .collect()
}

/// A node resource's labels; read loosely so a node written by a newer tool still selects.
pub(crate) fn node_labels(kv: &Kv) -> BTreeMap<String, String> {
    let value: serde_json::Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    value
        .pointer("/metadata/labels")
        .and_then(|l| l.as_object())
        .map(|m| {
            m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect()
        })
        .unwrap_or_default()
}
