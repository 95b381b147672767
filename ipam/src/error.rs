//! Errors of the IPAM layer: what went wrong, on which pool, address, key or field, and
//! whether trying again can help (`is_retryable`, which the CNI plugin maps to code 11).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use datastore::keys::IpFamily;
use ipnet::IpNet;

use crate::block::BlockError;
use crate::lock::LockError;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every usable pool is full (including borrowing, unless strict affinity forbids it).
    #[error("pool exhausted: no free {family} address in {}", fmt_pools(pools))]
    PoolExhausted { family: IpFamily, pools: Vec<IpNet> },

    /// No enabled pool of this family selects the node (or the named pools do not exist).
    #[error("no usable {family} pool for node {node}: {reason}")]
    NoPool { family: IpFamily, node: String, reason: String },

    #[error("{ip} is already assigned (handle {})", handle.as_deref().unwrap_or("<none>"))]
    AddressInUse { ip: IpAddr, handle: Option<String> },

    #[error("{ip} is not inside any enabled IP pool")]
    NotInPool { ip: IpAddr },

    /// etcd could not be reached or did not answer in time; a retry may succeed.
    #[error("datastore unavailable during {op}: {source}")]
    Unavailable {
        op: &'static str,
        #[source]
        source: datastore::client::Error,
    },

    /// etcd answered but the request failed for a reason a retry will not fix.
    #[error("datastore error during {op}: {source}")]
    Datastore {
        op: &'static str,
        #[source]
        source: datastore::client::Error,
    },

    /// Every compare-and-swap attempt lost to concurrent writers.
    #[error("{op}: gave up after {attempts} conflicting concurrent updates")]
    Conflict { op: &'static str, attempts: u32 },

    /// The whole operation ran past its deadline (measured after the host lock was taken).
    /// Past the lock only datastore requests remain, so the message names etcd: this
    /// deadline and the per-request one are equal, and either may fire first.
    #[error("{op} did not finish within {timeout:?}: etcd at {endpoints} did not answer in time")]
    Timeout { op: &'static str, timeout: Duration, endpoints: String },

    #[error("block {key} is corrupt: {reason}")]
    CorruptBlock { key: String, reason: String },

    /// A record other than a block (handle, affinity, pool, config) does not decode.
    #[error("record {key} is invalid: {reason}")]
    CorruptRecord { key: String, reason: String },

    #[error("timed out after {waited:?} waiting for the IPAM lock {path}")]
    LockTimeout { path: PathBuf, waited: Duration },

    #[error("IPAM lock: {0}")]
    Lock(LockError),

    /// The node holds `limit` blocks and strict affinity forbids borrowing.
    #[error("node {node} already holds {limit} {family} blocks (maxBlocksPerHost) and strict affinity forbids borrowing")]
    BlockLimit { node: String, family: IpFamily, limit: u32 },

    #[error("invalid IP pool {name}: {field}: {reason}")]
    InvalidPool { name: String, field: String, reason: String },

    #[error("IP pool {name} ({cidr}) overlaps pool {other} ({other_cidr})")]
    PoolOverlap { name: String, cidr: IpNet, other: String, other_cidr: IpNet },

    #[error("IP pool {name} not found")]
    PoolNotFound { name: String },

    #[error("IP pool {name} still has {in_use} addresses allocated")]
    PoolInUse { name: String, in_use: u64 },

    #[error("invalid request: {field}: {reason}")]
    InvalidRequest { field: String, reason: String },
}

fn fmt_pools(pools: &[IpNet]) -> String {
    if pools.is_empty() {
        return "no pools".into();
    }
    pools.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl IpamError {
    /// True when the same request may succeed later without anyone changing the input.
    pub fn is_retryable(&self) -> bool {
        match self {
            IpamError::Unavailable { .. }
            | IpamError::Conflict { .. }
            | IpamError::Timeout { .. }
            | IpamError::LockTimeout { .. } => true,
            IpamError::Lock(e) => e.is_retryable(),
            IpamError::Datastore { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// Classifies a datastore error by whether a retry can help.
    pub(crate) fn store(op: &'static str, source: datastore::client::Error) -> Self {
        use datastore::client::Error as E;
        match source {
            E::Unavailable { .. } | E::Timeout { .. } => IpamError::Unavailable { op, source },
            other => IpamError::Datastore { op, source: other },
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        IpamError::InvalidRequest { field: field.into(), reason: reason.into() }
    }
}

impl From<LockError> for IpamError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Timeout { path, waited } => IpamError::LockTimeout { path, waited },
            other => IpamError::Lock(other),
        }
    }
}

impl From<BlockError> for IpamError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::AddressInUse { ip, handle } => IpamError::AddressInUse { ip, handle },
            BlockError::NotInBlock { ip, .. } => IpamError::NotInPool { ip },
            BlockError::Corrupt { cidr, reason } => {
                IpamError::CorruptBlock { key: cidr.to_string(), reason }
            }
            BlockError::BadCidr { cidr, reason } => {
                IpamError::invalid("cidr", format!("{cidr}: {reason}"))
            }
        }
    }
}

pub type Result<T, E = IpamError> = std::result::Result<T, E>;
