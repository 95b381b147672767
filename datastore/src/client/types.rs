//! The values the client hands out and takes in: stored keys, listings, reads, compares and
//! transaction operations.

use serde::de::DeserializeOwned;

use super::Error;

/// One key as stored in etcd, with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The full key.
    pub key: String,
    /// The raw value (JSON for every tabby and Calico resource).
    pub value: Vec<u8>,
    /// Revision of the last write to the key: the token for compare-and-swap.
    pub mod_revision: i64,
    /// Revision at which the key was created.
    pub create_revision: i64,
    /// Number of writes since creation (1 after create).
    pub version: i64,
}

impl Kv {
    /// Decodes the value as JSON; errors name the key.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.value)
            .map_err(|e| Error::Decode { key: self.key.clone(), reason: e.to_string() })
    }

    /// Converts etcd's key-value, refusing keys that are not UTF-8.
    pub(crate) fn from_etcd(kv: &etcd_client::KeyValue) -> Result<Kv, Error> {
        let key = std::str::from_utf8(kv.key()).map_err(|e| Error::Decode {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            reason: format!("key is not UTF-8: {e}"),
        })?;
        Ok(Kv {
            key: key.to_string(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            create_revision: kv.create_revision(),
            version: kv.version(),
        })
    }
}

/// Converts a batch of etcd key-values. Keys that are not UTF-8 cannot have been written by
/// tabby or Calico; they are skipped with a warning rather than failing a whole listing.
pub(crate) fn kvs_from_etcd(kvs: &[etcd_client::KeyValue]) -> Vec<Kv> {
    kvs.iter()
        .filter_map(|kv| match Kv::from_etcd(kv) {
            Ok(kv) => Some(kv),
            Err(e) => {
                tracing::warn!(error = %e, "skipping etcd key that is not UTF-8");
                None
            }
        })
        .collect()
}

/// The keys under a prefix (or one key) at one consistent revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The keys found, in key order.
    pub kvs: Vec<Kv>,
    /// The store revision the listing reflects; a watch from `revision + 1` misses nothing.
    pub revision: i64,
}

/// The keys under a prefix with their mod revisions, without values, at one revision
/// ([`super::Client::list_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyListing {
    /// `(key, mod revision)` in key order.
    pub keys: Vec<(String, i64)>,
    /// The store revision the listing reflects.
    pub revision: i64,
}

/// One read of a [`super::Client::get_many`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Exactly this key (the listing holds zero or one entry).
    Key(String),
    /// Every key starting with this prefix.
    Prefix(String),
}

impl Read {
    pub(crate) fn to_etcd(&self) -> etcd_client::TxnOp {
        use etcd_client::{GetOptions, TxnOp};
        match self {
            Read::Key(key) => TxnOp::get(key.as_str(), None),
            Read::Prefix(prefix) => {
                TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            }
        }
    }
}

/// A condition of a [`super::Client::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmp {
    /// The key does not exist.
    Absent(String),
    /// The key exists with exactly this mod revision (0 means absent).
    ModRevision(String, i64),
    /// The key exists, whatever its value.
    Exists(String),
    /// The key exists and holds exactly these bytes.
    Value(String, Vec<u8>),
    /// No key under the prefix was created or changed after `revision` (deletions aside).
    NothingNewerUnder { prefix: String, revision: i64 },
}

impl Cmp {
    /// The key the condition is about (the prefix, for a prefix condition).
    pub fn key(&self) -> &str {
        match self {
            Cmp::Absent(key) | Cmp::ModRevision(key, _) | Cmp::Exists(key) | Cmp::Value(key, _) => {
                key
            }
            Cmp::NothingNewerUnder { prefix, .. } => prefix,
        }
    }

    pub(crate) fn to_etcd(&self) -> etcd_client::Compare {
        use etcd_client::{Compare, CompareOp};
        match self {
            Cmp::Absent(key) => Compare::version(key.as_str(), CompareOp::Equal, 0),
            Cmp::Exists(key) => Compare::version(key.as_str(), CompareOp::Greater, 0),
            Cmp::ModRevision(key, rev) => {
                Compare::mod_revision(key.as_str(), CompareOp::Equal, *rev)
            }
            Cmp::Value(key, value) => {
                Compare::value(key.as_str(), CompareOp::Equal, value.as_slice())
            }
            // Over a range, etcd compares every key in it; an empty range compares as 0.
            Cmp::NothingNewerUnder { prefix, revision } => {
                Compare::mod_revision(prefix.as_str(), CompareOp::Less, revision.saturating_add(1))
                    .with_prefix()
            }
        }
    }
}

/// A write of a [`super::Client::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store `value` at `key`, attached to `lease` if given (the key goes when it expires).
    Put { key: String, value: Vec<u8>, lease: Option<i64> },
    /// Remove `key` (no error if absent).
    Delete { key: String },
    /// Store `value` at `key` only if nothing is stored there; a value already there is left
    /// as it is, and the transaction still succeeds. For defaults that an operator may have
    /// replaced (a network's profile). Sent as a nested transaction (etcd 3.3 and later).
    PutIfAbsent { key: String, value: Vec<u8> },
}

impl Op {
    /// The key this op writes (or may write).
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::PutIfAbsent { key, .. } => key,
        }
    }

    pub(crate) fn to_etcd(&self) -> etcd_client::TxnOp {
        use etcd_client::{PutOptions, TxnOp};
        match self {
            Op::Put { key, value, lease } => TxnOp::put(
                key.as_str(),
                value.clone(),
                lease.map(|lease| PutOptions::new().with_lease(lease)),
            ),
            Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            Op::PutIfAbsent { key, value } => TxnOp::txn(
                etcd_client::Txn::new()
                    .when(vec![etcd_client::Compare::create_revision(
                        key.as_str(),
                        etcd_client::CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(key.as_str(), value.clone(), None)]),
            ),
        }
    }
}

/// The result of a [`super::Client::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every condition held and the writes were applied.
    pub succeeded: bool,
    /// The store revision after the transaction (its writes carry this mod revision).
    pub revision: i64,
    /// When it failed: the compared keys that exist, as they are now (absent keys are
    /// missing from the list). Empty when it succeeded.
    pub current: Vec<Kv>,
}

/// The answer to [`super::Client::txn_or_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOrRead {
    /// Whether every condition held and the writes were applied.
    pub succeeded: bool,
    /// The store revision after the transaction (its writes carry this mod revision).
    pub revision: i64,
    /// When it failed: one listing per read asked for, in order, at `revision`.
    pub listings: Vec<Listing>,
}

/// A decoded JSON value with the mod revision to compare-and-swap against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<T> {
    /// The decoded value.
    pub value: T,
    /// The key's mod revision when it was read.
    pub mod_revision: i64,
}

/// What one etcd member reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The server version, e.g. `3.4.23`.
    pub version: String,
    /// The member that answered.
    pub member_id: u64,
    /// The current leader's member id (0: no leader).
    pub leader: u64,
    /// The raft term.
    pub raft_term: u64,
    /// The store revision.
    pub revision: i64,
    /// Size of the backend database in bytes.
    pub db_size: i64,
    /// Alarms and errors the member reports (e.g. `NOSPACE`).
    pub errors: Vec<String>,
}

/// The end of the key range holding every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Empty prefix (or all 0xff): "\0" means "to the end of the keyspace".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end("/calico/"), b"/calico0".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn json_errors_name_the_key() {
        let kv = Kv {
            key: "/calico/x".into(),
            value: b"{nope".to_vec(),
            mod_revision: 1,
            create_revision: 1,
            version: 1,
        };
        let err = kv.json::<serde_json::Value>().unwrap_err();
        assert!(matches!(&err, Error::Decode { key, .. } if key == "/calico/x"));
        assert!(err.to_string().contains("/calico/x"));
    }

    #[test]
    fn cmp_key() {
        assert_eq!(Cmp::ModRevision("k".into(), 3).key(), "k");
        assert_eq!(Cmp::Absent("a".into()).key(), "a");
    }
}
