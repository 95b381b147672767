//! The IPAM records Calico keeps under `/calico/ipam/v2/`: allocation blocks, block affinities,
//! handles and the IPAM config, with Calico's exact JSON so both tools read one datastore.
//!
//! These are plain data; the allocation logic that changes them lives in the `ipam` crate.
//! `validate` exists because blocks are written by other processes (and other tools): a block
//! that does not add up must be refused before any logic trusts its ordinals.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ModelError;

/// The largest block tabby handles: a /20 (v4) or /116 (v6) holds 4096 addresses.
pub const MAX_BLOCK_ADDRESSES: usize = 4096;

/// Prefix used in a block's `affinity` field for host affinities (`host:<node>`).
pub const HOST_AFFINITY_PREFIX: &str = "host:";

/// One allocation block: a CIDR carved out of a pool, and who holds each of its addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationBlock {
    pub cidr: IpNet,
    /// `host:<node>` when affine to a node; `None` when unaffine (released host, borrowed).
    #[serde(default)]
    pub affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_claim_time: Option<String>,
    /// One entry per ordinal: index into `attributes`, or `None` when free.
    pub allocations: Vec<Option<u32>>,
    /// Free ordinals in the order they will be handed out (pop front, push back).
    pub unallocated: Vec<u32>,
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    /// Bumped on every write; new blocks seed it with the creation time in nanoseconds.
    #[serde(rename = "sequenceNumber", default)]
    pub sequence_number: u64,
    /// Ordinal (as a decimal string, as Calico writes it) → block sequence number when the
    /// ordinal was assigned. Guards release against an address re-assigned since.
    #[serde(rename = "sequenceNumberForAllocation", default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(rename = "hostAffinity", default, skip_serializing_if = "Option::is_none")]
    pub host_affinity: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Who holds an allocation: the handle and free-form attributes (node, container, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    #[serde(default)]
    pub handle_id: Option<String>,
    /// Calico's `ActiveOwnerAttrs`, still stored under the historical `secondary` tag.
    #[serde(default)]
    pub secondary: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// State of a host's claim on a block (two-phase claim: pending → confirmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AffinityState {
    Pending,
    /// Also what a missing or empty `state` means, as in Calico's legacy records.
    #[default]
    Confirmed,
    PendingDeletion,
}

impl AffinityState {
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityState::Pending => "pending",
            AffinityState::Confirmed => "confirmed",
            AffinityState::PendingDeletion => "pendingDeletion",
        }
    }
}

impl Serialize for AffinityState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AffinityState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        match raw.as_deref() {
            None | Some("" | "confirmed") => Ok(AffinityState::Confirmed),
            Some("pending") => Ok(AffinityState::Pending),
            Some("pendingDeletion") => Ok(AffinityState::PendingDeletion),
            Some(other) => Err(serde::de::Error::custom(format!(
                "unknown affinity state {other:?} (expected pending, confirmed or pendingDeletion)"
            ))),
        }
    }
}

/// Value stored at `/calico/ipam/v2/host/<node>/ipv4/block/<cidr>`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlockAffinity {
    #[serde(default)]
    pub state: AffinityState,
    #[serde(default)]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Value stored at `/calico/ipam/v2/handle/<id>`: how many addresses the handle holds per block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpamHandle {
    /// Block CIDR (`10.65.79.0/26`) → number of addresses this handle holds there.
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The singleton at `/calico/ipam/v2/config`. Absent means the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    #[serde(default)]
    pub strict_affinity: bool,
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
    /// 0 means Calico's effective default of 20 blocks per host.
    #[serde(rename = "maxBlocksPerHost", default)]
    pub max_blocks_per_host: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Calico's effective cap when `maxBlocksPerHost` is 0.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;

fn default_true() -> bool {
    true
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
            extra: Map::new(),
        }
    }
}

impl IpamConfig {
    /// The block cap in force (0 in the record means the default).
    pub fn effective_max_blocks_per_host(&self) -> u32 {
        if self.max_blocks_per_host == 0 {
            DEFAULT_MAX_BLOCKS_PER_HOST
        } else {
            self.max_blocks_per_host
        }
    }

    /// Calico's rules: auto allocation may only be off with strict affinity, and a block cap
    /// needs strict affinity to mean anything.
    pub fn validate(&self) -> Result<(), ModelError> {
        if !self.strict_affinity && !self.auto_allocate_blocks {
            return Err(invalid(
                "auto_allocate_blocks",
                "may only be false when strict_affinity is true",
            ));
        }
        if self.max_blocks_per_host > 0 && !self.strict_affinity {
            return Err(invalid("maxBlocksPerHost", "requires strict_affinity to be true"));
        }
        Ok(())
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid { field: field.to_string(), reason: reason.into() }
}

impl AllocationBlock {
    /// Number of addresses (ordinals) the block's CIDR spans, or `None` for a CIDR larger than
    /// tabby handles.
    pub fn span(cidr: IpNet) -> Option<usize> {
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        if host_bits > MAX_BLOCK_ADDRESSES.trailing_zeros() {
            return None;
        }
        Some(1usize << host_bits)
    }

    /// The node this block is affine to, if it is a host affinity.
    pub fn affine_host(&self) -> Option<&str> {
        self.affinity.as_deref().and_then(|a| a.strip_prefix(HOST_AFFINITY_PREFIX))
    }

    /// Checks that a block read from etcd is internally consistent, so the allocator can trust
    /// every ordinal and index in it. Errors name the field that does not add up.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.cidr.trunc() != self.cidr {
            return Err(invalid("cidr", format!("{} is not a network address", self.cidr)));
        }
        let span = Self::span(self.cidr).ok_or_else(|| {
            invalid("cidr", format!("{} is larger than the largest block tabby handles", self.cidr))
        })?;
        if self.allocations.len() != span {
            return Err(invalid(
                "allocations",
                format!("has {} entries but {} spans {span}", self.allocations.len(), self.cidr),
            ));
        }
        for (ordinal, slot) in self.allocations.iter().enumerate() {
            if let Some(idx) = slot {
                if *idx as usize >= self.attributes.len() {
                    return Err(invalid(
                        &format!("allocations[{ordinal}]"),
                        format!(
                            "points at attribute {idx} but only {} exist",
                            self.attributes.len()
                        ),
                    ));
                }
            }
        }
        let mut seen = vec![false; span];
        for (pos, &ordinal) in self.unallocated.iter().enumerate() {
            let field = || format!("unallocated[{pos}]");
            let o = ordinal as usize;
            if o >= span {
                return Err(invalid(&field(), format!("ordinal {ordinal} is outside the block")));
            }
            if seen[o] {
                return Err(invalid(&field(), format!("ordinal {ordinal} is listed twice")));
            }
            seen[o] = true;
            if self.allocations[o].is_some() {
                return Err(invalid(&field(), format!("ordinal {ordinal} is also allocated")));
            }
        }
        for key in self.sequence_number_for_allocation.keys() {
            let ok = key.parse::<usize>().is_ok_and(|o| o < span);
            if !ok {
                return Err(invalid(
                    &format!("sequenceNumberForAllocation.{key}"),
                    "is not an ordinal of this block",
                ));
            }
        }
        if let Some(aff) = &self.affinity {
            if !aff.contains(':') {
                return Err(invalid("affinity", format!("{aff:?} has no type prefix like host:")));
            }
        }
        Ok(())
    }

    /// Whether `ip` falls inside this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALICO_BLOCK: &str = r#"{
        "cidr": "10.65.79.0/30",
        "affinity": "host:node1",
        "strictAffinity": false,
        "allocations": [0, null, 1, null],
        "unallocated": [3, 1],
        "attributes": [
            {"handle_id": "k8s-pod-network.abc", "secondary": {"node": "node1", "timestamp": "2025-01-01 00:00:00.1 +0000 UTC"}},
            {"handle_id": "ipip-tunnel-addr-node1", "secondary": {"node": "node1", "type": "ipipTunnelAddress"}}
        ],
        "sequenceNumber": 1700000000000000002,
        "sequenceNumberForAllocation": {"0": 1700000000000000000, "2": 1700000000000000001},
        "deleted": false
    }"#;

    /// Found by fuzzing (fuzz/fuzz_targets/ipam_block.rs): a float in a field tabby does not
    /// know came back one unit in the last place off after a read and a write, so "unknown
    /// fields are kept" did not quite hold. serde_json's `float_roundtrip` makes it exact.
    #[test]
    fn unknown_float_fields_survive_a_rewrite_exactly() {
        // An integer too big for u64 is read as the nearest f64.
        let json = r#"{"state":"confirmed","deleted":false,"x":1700000000000510060001}"#;
        let read: BlockAffinity = serde_json::from_str(json).unwrap();
        let again: BlockAffinity =
            serde_json::from_str(&serde_json::to_string(&read).unwrap()).unwrap();
        assert_eq!(again, read);
        assert_eq!(read.extra["x"].as_f64(), Some(1_700_000_000_000_510_060_001_f64));
    }

    #[test]
    fn calico_block_round_trips_with_unknown_fields() {
        let raw: Value = serde_json::from_str(CALICO_BLOCK).unwrap();
        let block: AllocationBlock = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(block.affine_host(), Some("node1"));
        assert_eq!(block.extra.get("strictAffinity"), Some(&Value::Bool(false)));
        block.validate().unwrap();
        assert_eq!(serde_json::to_value(&block).unwrap(), raw);
    }

    #[test]
    fn block_with_out_of_range_attribute_index_is_refused() {
        let mut block: AllocationBlock = serde_json::from_str(CALICO_BLOCK).unwrap();
        block.allocations[1] = Some(7);
        block.unallocated.retain(|&o| o != 1);
        let err = block.validate().unwrap_err().to_string();
        assert!(err.contains("allocations[1]"), "{err}");
    }

    #[test]
    fn block_with_duplicate_or_allocated_free_ordinal_is_refused() {
        let mut block: AllocationBlock = serde_json::from_str(CALICO_BLOCK).unwrap();
        block.unallocated.push(3);
        assert!(block.validate().unwrap_err().to_string().contains("listed twice"));
        let mut block: AllocationBlock = serde_json::from_str(CALICO_BLOCK).unwrap();
        block.unallocated.push(0);
        assert!(block.validate().unwrap_err().to_string().contains("also allocated"));
    }

    #[test]
    fn block_with_wrong_length_is_refused() {
        let mut block: AllocationBlock = serde_json::from_str(CALICO_BLOCK).unwrap();
        block.allocations.pop();
        assert!(block.validate().unwrap_err().to_string().contains("allocations"));
    }

    #[test]
    fn affinity_state_reads_legacy_empty_values_as_confirmed() {
        let a: BlockAffinity = serde_json::from_str("{}").unwrap();
        assert_eq!(a.state, AffinityState::Confirmed);
        let a: BlockAffinity = serde_json::from_str(r#"{"state":""}"#).unwrap();
        assert_eq!(a.state, AffinityState::Confirmed);
        let a: BlockAffinity =
            serde_json::from_str(r#"{"state":"pending","deleted":false}"#).unwrap();
        assert_eq!(a.state, AffinityState::Pending);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"state":"pending","deleted":false}"#);
        assert!(serde_json::from_str::<BlockAffinity>(r#"{"state":"maybe"}"#).is_err());
    }

    #[test]
    fn handle_and_config_keep_calico_shapes() {
        let raw = r#"{"block":{"10.65.79.0/26":2},"deleted":false,"future":1}"#;
        let h: IpamHandle = serde_json::from_str(raw).unwrap();
        assert_eq!(h.block["10.65.79.0/26"], 2);
        assert_eq!(serde_json::to_string(&h).unwrap(), raw);

        let c: IpamConfig = serde_json::from_str(r#"{"strict_affinity":true}"#).unwrap();
        assert!(c.auto_allocate_blocks);
        assert_eq!(c.effective_max_blocks_per_host(), DEFAULT_MAX_BLOCKS_PER_HOST);
        c.validate().unwrap();
        let bad = IpamConfig { strict_affinity: false, auto_allocate_blocks: false, ..c.clone() };
        assert!(bad.validate().unwrap_err().to_string().contains("auto_allocate_blocks"));
    }

    #[test]
    fn span_covers_supported_sizes_only() {
        assert_eq!(AllocationBlock::span("10.0.0.0/26".parse().unwrap()), Some(64));
        assert_eq!(AllocationBlock::span("10.0.0.0/20".parse().unwrap()), Some(4096));
        assert_eq!(AllocationBlock::span("10.0.0.0/19".parse().unwrap()), None);
        assert_eq!(AllocationBlock::span("fd00::/122".parse().unwrap()), Some(64));
        assert_eq!(AllocationBlock::span("10.0.0.1/32".parse().unwrap()), Some(1));
    }
}
