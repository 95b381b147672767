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

/// Reads what an assign needs. `hint` names blocks expected to be affine, read in the first
/// round trip; affine blocks outside the hint cost one more.
pub(super) async fn read(
    client: &Client,
    keys: &KeyLayout,
    node: &str,
    families: &[IpFamily],
    handle: &str,
    hint: &[IpNet],
) -> Result<Snapshot> {
    let mut reads = vec![
        Read::Key(keys.ipam_config()),
        Read::Prefix(keys.resources_prefix(Kind::IpPool)),
        Read::Key(keys.resource(Kind::Node, None, node)),
        Read::Key(keys.handle(handle)),
    ];
    let fixed = reads.len() + families.len();
    reads.extend(families.iter().map(|f| Read::Prefix(keys.host_affinities_prefix(node, *f))));
    let hinted: Vec<IpNet> =
        hint.iter().copied().filter(|c| families.contains(&IpFamily::of_net(c))).collect();
    reads.extend(hinted.iter().map(|c| Read::Key(keys.block(*c))));
    let listings =
        client.get_many(&reads).await.map_err(|e| IpamError::store("read IPAM state", e))?;

    let config = decode_config(keys, first(&listings, 0))?;
    let pools = decode_pools(listings.get(1).map_or(&[][..], |l| &l.kvs));
    let node_labels = first(&listings, 2).map(node_labels).unwrap_or_default();
    let handle = match first(&listings, 3).map(|kv| (kv, decode_handle(keys, kv))) {
        Some((_, Some(Ok(h)))) => Some(h),
        Some((kv, Some(Err(reason)))) => {
            return Err(IpamError::CorruptRecord { key: kv.key.clone(), reason });
        }
        _ => None,
    };

    let mut blocks: BTreeMap<IpNet, StoredBlock> = BTreeMap::new();
    for listing in listings.iter().skip(fixed) {
        for kv in &listing.kvs {
            if let Some(sb) = decode_block(keys, kv) {
                blocks.insert(sb.cidr, sb);
            }
        }
    }
    let hinted: BTreeSet<IpNet> = hinted.into_iter().collect();
    let mut affine: BTreeMap<IpFamily, Vec<StoredAffinity>> = BTreeMap::new();
    for (i, family) in families.iter().enumerate() {
        let listing = listings.get(4 + i).map_or(&[][..], |l| &l.kvs[..]);
        let affs = affine.entry(*family).or_default();
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
    // Second round trip only for affine blocks the hint did not cover.
    let missing: Vec<IpNet> =
        affine.values().flatten().map(|a| a.cidr).filter(|c| !hinted.contains(c)).collect();
    if !missing.is_empty() {
        let reads: Vec<Read> = missing.iter().map(|c| Read::Key(keys.block(*c))).collect();
        let listings =
            client.get_many(&reads).await.map_err(|e| IpamError::store("read affine blocks", e))?;
        for kv in listings.iter().flat_map(|l| &l.kvs) {
            if let Some(sb) = decode_block(keys, kv) {
                blocks.insert(sb.cidr, sb);
            }
        }
    }
    let affine = affine
        .into_iter()
        .map(|(family, affs)| {
            let list = affs
                .into_iter()
                .map(|aff| Affine { block: blocks.get(&aff.cidr).cloned(), aff })
                .collect();
            (family, list)
        })
        .collect();
    Ok(Snapshot { config, pools, node_labels, handle, affine })
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
