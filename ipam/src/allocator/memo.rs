//! The memo: what this node's last snapshot read found in etcd, brought up to date by the
//! allocator's own writes since, and kept on disk between processes (a CNI plugin is a new
//! process each time).
//!
//! An assign can then plan on the memo without reading and send one transaction whose
//! conditions say "etcd still holds exactly what I planned on": every remembered key with
//! the very bytes remembered (not only the revision, which a restored etcd can reuse), every
//! key remembered as absent still absent, nothing new under a listed prefix. When a
//! condition fails the same transaction reads the truth instead, so a stale, foreign or
//! corrupt memo costs nothing over having none, and can never produce a wrong allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use datastore::client::{Cmp, Kv, Listing, Op, Read};
use serde::{Deserialize, Serialize};

use super::snapshot::ReadSet;

/// Memo files larger than this are not read: a node's memo is a few blocks and pools.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Conditions one guessed transaction may carry besides the allocation's own (etcd refuses
/// more than 128 by default).
const MAX_CONDITIONS: usize = 96;

/// Remembered values up to this size are compared by value, larger ones (blocks) by
/// revision: a block is compared by value only when the plan writes it ([`Memo::value_guard`]),
/// which keeps a transaction from carrying every full block of the node.
const COMPARE_BY_VALUE: usize = 1024;

#[derive(Debug)]
pub(super) struct Memo {
    file: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    loaded: bool,
    known: Option<Known>,
}

/// What one node knows. Values are kept as text: every IPAM value is JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Known {
    node: String,
    kvs: BTreeMap<String, Entry>,
    /// Keys read and found absent.
    absent: BTreeSet<String>,
    /// Prefixes listed whole, with the store revision of the listing.
    prefixes: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    value: String,
    mod_revision: i64,
    create_revision: i64,
    version: i64,
}

impl Known {
    /// Whether a write to `key` must be reflected here.
    fn tracks(&self, key: &str) -> bool {
        self.kvs.contains_key(key)
            || self.absent.contains(key)
            || self.prefixes.keys().any(|p| key.starts_with(p.as_str()))
    }

    fn kv(key: &str, e: &Entry) -> Kv {
        Kv {
            key: key.to_string(),
            value: e.value.as_bytes().to_vec(),
            mod_revision: e.mod_revision,
            create_revision: e.create_revision,
            version: e.version,
        }
    }
}

impl Memo {
    /// A memo kept in `file`, or in memory only.
    pub(super) fn new(file: Option<PathBuf>) -> Self {
        Memo { file, state: Mutex::new(State::default()) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Option<Known>) -> T) -> Option<T> {
        let mut state = self.state.lock().ok()?;
        if !state.loaded {
            state.loaded = true;
            state.known = self.file.as_deref().and_then(load);
        }
        Some(f(&mut state.known))
    }

    /// The listings `r` would read, from memory, and the conditions under which they are
    /// still what etcd holds. `None` when the memo is another node's or misses a read. The
    /// request's handle is taken to be absent (a new attachment); the condition says so.
    pub(super) fn recall(&self, node: &str, r: &ReadSet) -> Option<(Vec<Listing>, Vec<Cmp>)> {
        self.with(|known| {
            let known = known.as_ref().filter(|k| k.node == node)?;
            let mut listings = Vec::with_capacity(r.reads.len());
            let mut cmps = Vec::new();
            for read in &r.reads {
                let kvs = match read {
                    Read::Key(key) if *key == r.handle_key || known.absent.contains(key) => {
                        cmps.push(Cmp::Absent(key.clone()));
                        Vec::new()
                    }
                    Read::Key(key) => {
                        let e = known.kvs.get(key)?;
                        cmps.push(guard(key, e));
                        vec![Known::kv(key, e)]
                    }
                    Read::Prefix(prefix) => {
                        let revision = *known.prefixes.get(prefix)?;
                        let mut kvs = Vec::new();
                        for (key, e) in known
                            .kvs
                            .range(prefix.clone()..)
                            .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                        {
                            cmps.push(guard(key, e));
                            kvs.push(Known::kv(key, e));
                        }
                        cmps.push(Cmp::NothingNewerUnder { prefix: prefix.clone(), revision });
                        kvs
                    }
                };
                listings.push(Listing { kvs, revision: 0 });
            }
            (cmps.len() <= MAX_CONDITIONS).then_some((listings, cmps))
        })
        .flatten()
    }

    /// The condition that `key` still holds the very bytes remembered, for a key the plan
    /// rewrites: its new value is derived from them.
    pub(super) fn value_guard(&self, node: &str, key: &str) -> Option<Cmp> {
        self.with(|known| {
            let e = known.as_ref().filter(|k| k.node == node)?.kvs.get(key)?;
            Some(Cmp::Value(key.to_string(), e.value.as_bytes().to_vec()))
        })
        .flatten()
    }

    /// Replaces the memo with what `r` read (`listings`, one per read), leaving out the
    /// request's own handle.
    pub(super) fn remember_reads(&self, node: &str, r: &ReadSet, listings: &[Listing]) {
        let mut fresh = Known { node: node.to_string(), ..Known::default() };
        for (read, listing) in r.reads.iter().zip(listings) {
            match read {
                Read::Key(key) if *key == r.handle_key => continue,
                Read::Key(key) if listing.kvs.is_empty() => {
                    fresh.absent.insert(key.clone());
                }
                Read::Key(_) => {}
                Read::Prefix(prefix) => {
                    fresh.prefixes.insert(prefix.clone(), listing.revision);
                }
            }
            for kv in &listing.kvs {
                let Ok(value) = String::from_utf8(kv.value.clone()) else {
                    // Not IPAM JSON: nothing to remember reliably.
                    self.replace(None);
                    return;
                };
                let e = Entry {
                    value,
                    mod_revision: kv.mod_revision,
                    create_revision: kv.create_revision,
                    version: kv.version,
                };
                fresh.kvs.insert(kv.key.clone(), e);
            }
        }
        self.replace(Some(fresh));
    }

    /// Applies writes this node committed at `revision` to the keys the memo tracks. A
    /// write under a listed prefix makes the next guess fail its "nothing newer" condition:
    /// rare (block claims), and what keeps others' writes under it from being missed.
    pub(super) fn remember_writes(&self, node: &str, ops: &[Op], revision: i64) {
        let changed = self.with(|known| {
            let Some(k) = known.as_mut().filter(|k| k.node == node) else { return false };
            let mut changed = false;
            for op in ops {
                let key = op.key();
                if !k.tracks(key) {
                    continue;
                }
                changed = true;
                match op {
                    Op::Put { value, .. } => {
                        let Ok(value) = String::from_utf8(value.clone()) else {
                            *known = None;
                            return true;
                        };
                        let version = k.kvs.get(key).map_or(1, |e| e.version + 1);
                        let create_revision =
                            k.kvs.get(key).map_or(revision, |e| e.create_revision);
                        k.absent.remove(key);
                        k.kvs.insert(
                            key.to_owned(),
                            Entry { value, mod_revision: revision, create_revision, version },
                        );
                    }
                    Op::Delete { .. } => {
                        k.kvs.remove(key);
                        k.absent.insert(key.to_owned());
                    }
                    // Whether it wrote is not known here: the memo no longer vouches for it.
                    Op::PutIfAbsent { .. } => {
                        *known = None;
                        return true;
                    }
                }
            }
            changed
        });
        if changed == Some(true) {
            self.save();
        }
    }

    fn replace(&self, known: Option<Known>) {
        if self.with(|k| *k = known).is_some() {
            self.save();
        }
    }

    fn save(&self) {
        let (Some(path), Ok(state)) = (&self.file, self.state.lock()) else { return };
        let result = match &state.known {
            Some(known) => store(path, known),
            None => std::fs::remove_file(path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        };
        if let Err(e) = result {
            tracing::debug!(path = %path.display(), error = %e, "IPAM memo not saved");
        }
    }
}

/// The condition that a remembered key is unchanged: by value when small (an etcd restored
/// from a backup can reuse revisions), by revision otherwise.
fn guard(key: &str, e: &Entry) -> Cmp {
    if e.value.len() <= COMPARE_BY_VALUE {
        Cmp::Value(key.to_string(), e.value.as_bytes().to_vec())
    } else {
        Cmp::ModRevision(key.to_string(), e.mod_revision)
    }
}

/// The memo in `path`; anything unreadable, oversized or malformed reads as none.
fn load(path: &Path) -> Option<Known> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Overwritten in place, then cut to length. Not a temporary file and a rename, and not a
/// truncation to zero: ext4 flushes a file replaced either way at once (`auto_da_alloc`),
/// which would put a disk write on every ADD. Readers hold the IPAM lock, and a write cut
/// short by a crash leaves text that does not parse (new JSON followed by old), which reads
/// as no memo.
fn store(path: &Path, known: &Known) -> std::io::Result<()> {
    use std::io::Write;
    let json = serde_json::to_vec(known).map_err(std::io::Error::other)?;
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    file.write_all(&json)?;
    file.set_len(json.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: i64) -> Kv {
        Kv {
            key: key.into(),
            value: value.into(),
            mod_revision: rev,
            create_revision: rev,
            version: 1,
        }
    }

    fn reads(handle: &str) -> ReadSet {
        ReadSet::for_test(
            vec![
                Read::Key("/cfg".into()),
                Read::Prefix("/pools/".into()),
                Read::Key(handle.into()),
                Read::Key("/block/a".into()),
            ],
            handle,
        )
    }

    fn listings() -> Vec<Listing> {
        vec![
            Listing { kvs: vec![], revision: 9 },
            Listing { kvs: vec![kv("/pools/p1", "{\"p\":1}", 3)], revision: 9 },
            Listing { kvs: vec![kv("/h/old", "{}", 8)], revision: 9 },
            Listing { kvs: vec![kv("/block/a", "{\"b\":1}", 7)], revision: 9 },
        ]
    }

    #[test]
    fn recalls_what_was_read_with_conditions_on_every_value_and_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("memo");
        let memo = Memo::new(Some(file.clone()));
        assert!(memo.recall("n1", &reads("/h/new")).is_none(), "nothing remembered yet");
        memo.remember_reads("n1", &reads("/h/old"), &listings());

        // A new process reads the file.
        let memo = Memo::new(Some(file));
        assert!(memo.recall("n2", &reads("/h/new")).is_none(), "another node's memo");
        let (got, cmps) = memo.recall("n1", &reads("/h/new")).expect("covered");
        assert!(got[0].kvs.is_empty() && got[2].kvs.is_empty());
        assert_eq!(got[1].kvs, vec![kv("/pools/p1", "{\"p\":1}", 3)]);
        assert_eq!(got[3].kvs, vec![kv("/block/a", "{\"b\":1}", 7)]);
        assert_eq!(
            cmps,
            vec![
                Cmp::Absent("/cfg".into()),
                Cmp::Value("/pools/p1".into(), b"{\"p\":1}".to_vec()),
                Cmp::NothingNewerUnder { prefix: "/pools/".into(), revision: 9 },
                Cmp::Absent("/h/new".into()),
                Cmp::Value("/block/a".into(), b"{\"b\":1}".to_vec()),
            ]
        );
        // The old handle was never remembered: a read of it is not covered.
        let mut other = reads("/h/new");
        other.reads.push(Read::Key("/h/old".into()));
        assert!(memo.recall("n1", &other).is_none());
    }

    #[test]
    fn own_writes_update_tracked_keys_only() {
        let memo = Memo::new(None);
        memo.remember_reads("n1", &reads("/h/1"), &listings());
        let ops = [
            Op::Put { key: "/block/a".into(), value: b"{\"b\":2}".to_vec(), lease: None },
            Op::Put { key: "/h/1".into(), value: b"{}".to_vec(), lease: None },
            Op::Put { key: "/cfg".into(), value: b"{\"c\":1}".to_vec(), lease: None },
        ];
        memo.remember_writes("n1", &ops, 12);
        let (got, cmps) = memo.recall("n1", &reads("/h/2")).expect("covered");
        assert_eq!(got[3].kvs[0].value, b"{\"b\":2}");
        assert_eq!((got[3].kvs[0].mod_revision, got[3].kvs[0].version), (12, 2));
        assert_eq!(got[0].kvs[0].value, b"{\"c\":1}", "a key known absent, now written");
        assert!(cmps.contains(&Cmp::Value("/cfg".into(), b"{\"c\":1}".to_vec())));
        let known = memo.with(|k| k.clone()).flatten().expect("known");
        assert!(!known.kvs.contains_key("/h/1"), "the handle is the request's own");

        memo.remember_writes("n1", &[Op::Delete { key: "/block/a".into() }], 13);
        let (got, cmps) = memo.recall("n1", &reads("/h/2")).expect("covered");
        assert!(got[3].kvs.is_empty());
        assert!(cmps.contains(&Cmp::Absent("/block/a".into())));
    }

    #[test]
    fn a_corrupt_or_foreign_file_reads_as_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("memo");
        for text in ["", "{", "null", "{\"node\":\"n1\",\"extra\":1}", "[1,2]"] {
            std::fs::write(&file, text).expect("write");
            let memo = Memo::new(Some(file.clone()));
            assert!(memo.recall("n1", &reads("/h")).is_none(), "{text:?}");
            // Still usable: a read replaces it.
            memo.remember_reads("n1", &reads("/h"), &listings());
            assert!(memo.recall("n1", &reads("/h")).is_some(), "{text:?}");
        }
    }

    #[test]
    fn a_shorter_memo_replaces_a_longer_one_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("memo");
        let memo = Memo::new(Some(file.clone()));
        let mut long = listings();
        long[1].kvs = (0..20).map(|i| kv(&format!("/pools/p{i:02}"), "{\"long\":1}", 3)).collect();
        memo.remember_reads("n1", &reads("/h"), &long);
        memo.remember_reads("n1", &reads("/h"), &listings());
        let (got, _) = Memo::new(Some(file)).recall("n1", &reads("/h")).expect("readable");
        assert_eq!(got[1].kvs, vec![kv("/pools/p1", "{\"p\":1}", 3)]);
    }

    #[test]
    fn too_many_conditions_are_not_guessed() {
        let memo = Memo::new(None);
        let pools: Vec<Kv> =
            (0..MAX_CONDITIONS).map(|i| kv(&format!("/pools/p{i:03}"), "{}", 3)).collect();
        let mut l = listings();
        l[1].kvs = pools;
        memo.remember_reads("n1", &reads("/h"), &l);
        assert!(memo.recall("n1", &reads("/h")).is_none());
    }
}
