//! Everything IPAM-related in the datastore, read in one transaction (one revision), decoded
//! leniently: records that do not decode are kept as "corrupt" for the report rather than
//! aborting the read. The input of `check` and `gc`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datastore::client::{Client, Kv, Read};
use datastore::keys::{split_workload_endpoint_name, IpFamily, KeyLayout, Kind, ParsedKey};
use ipnet::IpNet;
use serde::Serialize;

use crate::allocator::decode_pools;
use crate::error::{IpamError, Result};
use crate::pool::Pool;
use crate::store::{
    decode_affinity, decode_block, decode_handle, StoredAffinity, StoredBlock, StoredHandle,
};

/// A record that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorruptRecord {
    pub key: String,
    pub reason: String,
}

/// What a workload endpoint tells about the addresses it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRef {
    pub key: String,
    pub node: Option<String>,
    pub container_id: Option<String>,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The revision every record was read at.
    pub revision: i64,
    pub pools: Vec<Pool>,
    pub blocks: Vec<StoredBlock>,
    pub affinities: Vec<StoredAffinity>,
    pub handles: BTreeMap<String, StoredHandle>,
    pub endpoints: Vec<EndpointRef>,
    pub nodes: BTreeSet<String>,
    /// Handles, affinities and endpoints that do not decode (corrupt blocks stay in `blocks`).
    pub corrupt: Vec<CorruptRecord>,
}

impl Inventory {
    /// Reads the whole IPAM state and the endpoints and nodes it is checked against.
    pub async fn load(client: &Client, keys: &KeyLayout) -> Result<Inventory> {
        let reads = [
            Read::Prefix(keys.resources_prefix(Kind::IpPool)),
            Read::Prefix(keys.blocks_prefix(IpFamily::V4)),
            Read::Prefix(keys.blocks_prefix(IpFamily::V6)),
            Read::Prefix(keys.all_hosts_prefix()),
            Read::Prefix(keys.handles_prefix()),
            Read::Prefix(keys.resources_prefix(Kind::WorkloadEndpoint)),
            Read::Prefix(keys.resources_prefix(Kind::Node)),
        ];
        let listings = client
            .get_many(&reads)
            .await
            .map_err(|e| IpamError::store("read IPAM inventory", e))?;
        let empty = Vec::new();
        let kvs = |i: usize| listings.get(i).map_or(&empty, |l| &l.kvs);
        let mut inv = Inventory {
            revision: listings.first().map_or(0, |l| l.revision),
            pools: decode_pools(kvs(0)),
            ..Inventory::default()
        };
        for kv in kvs(1).iter().chain(kvs(2)) {
            inv.blocks.extend(decode_block(keys, kv));
        }
        for kv in kvs(3) {
            match decode_affinity(keys, kv) {
                Some(Ok(a)) => inv.affinities.push(a),
                Some(Err(reason)) => {
                    inv.corrupt.push(CorruptRecord { key: kv.key.clone(), reason });
                }
                None => {} // Calico's per-host marker keys and other records live here too
            }
        }
        for kv in kvs(4) {
            match decode_handle(keys, kv) {
                Some(Ok(h)) => {
                    inv.handles.insert(h.id.clone(), h);
                }
                Some(Err(reason)) => {
                    inv.corrupt.push(CorruptRecord { key: kv.key.clone(), reason });
                }
                None => {}
            }
        }
        for kv in kvs(5) {
            inv.endpoints.push(endpoint_ref(keys, kv, &mut inv.corrupt));
        }
        for kv in kvs(6) {
            if let Some(ParsedKey::Resource { name, .. }) = keys.parse(&kv.key) {
                inv.nodes.insert(name);
            }
        }
        Ok(inv)
    }

    /// Blocks by CIDR (corrupt ones included).
    pub fn block(&self, cidr: IpNet) -> Option<&StoredBlock> {
        self.blocks.iter().find(|b| b.cidr == cidr)
    }
}

/// Reads an endpoint loosely: any endpoint that names an address or container protects it,
/// even if other fields would fail strict validation. An endpoint that is not JSON at all
/// still protects the container named in its key.
fn endpoint_ref(keys: &KeyLayout, kv: &Kv, corrupt: &mut Vec<CorruptRecord>) -> EndpointRef {
    let from_key = match keys.parse(&kv.key) {
        Some(ParsedKey::Resource { name, .. }) => split_workload_endpoint_name(&name),
        _ => None,
    };
    let (key_node, key_container) = match &from_key {
        Some([node, _, workload, _]) => (Some(node.clone()), Some(workload.clone())),
        None => (None, None),
    };
    let value: serde_json::Value = match serde_json::from_slice(&kv.value) {
        Ok(v) => v,
        Err(e) => {
            corrupt.push(CorruptRecord { key: kv.key.clone(), reason: format!("not JSON: {e}") });
            serde_json::Value::Null
        }
    };
    let text = |p: &str| value.pointer(p).and_then(|v| v.as_str()).map(str::to_string);
    let ips = value
        .pointer("/spec/ipNetworks")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .filter_map(|s| {
                    s.parse::<IpNet>().map(|n| n.addr()).or_else(|_| s.parse::<IpAddr>()).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    EndpointRef {
        key: kv.key.clone(),
        node: text("/spec/node").or(key_node),
        container_id: text("/spec/containerID").or(key_container),
        ips,
    }
}
