//! The applier: brings table `inet <name>` of the current network namespace to a desired
//! [`Ruleset`] with one atomic netlink transaction per call — a full replace the first time,
//! after drift or on resync, otherwise only the chains and set elements that changed.

use std::time::{Duration, Instant};

use nftnl::MsgType;
use nix::errno::Errno;

use super::diff::{self, Delta, ElemDelta};
use super::encode::{self, EncodeError, Encoded, Writer};
use super::ir::{IrError, Ruleset};
use super::netlink::{NfSocket, SendError};

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Chains whose rules were (re)written.
    pub chains_written: usize,
    /// Set elements, interval-set ranges and map entries added.
    pub set_elements_added: usize,
    /// Set elements, interval-set ranges and map entries removed.
    pub set_elements_removed: usize,
    /// The table was replaced whole.
    pub full_replace: bool,
    /// Netlink messages in the transaction (0: nothing to do, nothing sent).
    pub messages: usize,
    /// Size of the transaction.
    pub bytes: usize,
    pub duration: Duration,
}

/// Why an apply failed. After any error the applier forgets what it believes the kernel
/// holds, so the next apply is a full replace.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid ruleset: {0}")]
    Invalid(#[from] IrError),
    #[error("netlink {op} failed: {source}")]
    Socket {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kernel rejected {kind} {object} ({}): {errno}{}",
        if *.full_replace { "full replace" } else { "incremental update" },
        .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Rejected {
        kind: &'static str,
        object: String,
        errno: Errno,
        message: Option<String>,
        full_replace: bool,
    },
    #[error("transaction outcome unknown: {0}")]
    Unknown(String),
    #[error("cannot encode the ruleset: {0}")]
    Encode(String),
}

impl ApplyError {
    /// Whether calling `apply` again (which then does a full replace) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApplyError::Invalid(_) | ApplyError::Encode(_) => false,
            ApplyError::Socket { .. } | ApplyError::Unknown(_) => true,
            // An incremental batch fails when the table drifted; the full replace that
            // follows repairs it. A full replace fails for good unless the kernel was short
            // of resources or busy.
            ApplyError::Rejected { full_replace, errno, .. } => {
                !full_replace
                    || matches!(
                        errno,
                        Errno::EAGAIN
                            | Errno::EBUSY
                            | Errno::ENOMEM
                            | Errno::ENOBUFS
                            | Errno::EINTR
                    )
            }
        }
    }
}

impl From<EncodeError> for ApplyError {
    fn from(e: EncodeError) -> Self {
        ApplyError::Encode(e.to_string())
    }
}

/// Owner of one table in the namespace the applier was created in.
pub struct Applier {
    sock: NfSocket,
    /// What the kernel holds, as far as we know; `None` forces a full replace.
    last: Option<Ruleset>,
    /// The ruleset generation right after our last commit, when nobody else committed
    /// around it; anything else means "someone else may have written".
    last_gen: Option<u32>,
}

impl Applier {
    /// Opens a netfilter netlink socket in the calling thread's network namespace; every
    /// later call acts in that namespace, whichever thread makes it.
    pub fn new() -> Result<Self, ApplyError> {
        let sock =
            NfSocket::open().map_err(|source| ApplyError::Socket { op: "open socket", source })?;
        Ok(Self { sock, last: None, last_gen: None })
    }

    /// The ruleset last committed, if the applier still trusts that the kernel holds it.
    pub fn last_applied(&self) -> Option<&Ruleset> {
        self.last.as_ref()
    }

    /// Makes the next apply a full replace.
    pub fn forget(&mut self) {
        self.last = None;
        self.last_gen = None;
    }

    /// Whether some transaction other than ours committed since our last one (cheap: one
    /// netlink round trip). True as well when nothing was committed yet.
    pub fn drift_suspected(&mut self) -> Result<bool, ApplyError> {
        let now = self.generation()?;
        Ok(self.last.is_none() || self.last_gen != Some(now))
    }

    /// Brings the table to `desired` in one transaction: incremental when the applier
    /// knows the table's content and nobody else wrote nftables since, else a full replace.
    /// Sends nothing when nothing changed.
    pub fn apply(&mut self, desired: &Ruleset) -> Result<ApplyStats, ApplyError> {
        self.run(desired, false)
    }

    /// Replaces the table whole, repairing any change made by someone else (periodic
    /// resync).
    pub fn resync(&mut self, desired: &Ruleset) -> Result<ApplyStats, ApplyError> {
        self.run(desired, true)
    }

    fn generation(&mut self) -> Result<u32, ApplyError> {
        self.sock
            .generation()
            .map_err(|source| ApplyError::Socket { op: "read ruleset generation", source })
    }

    fn run(&mut self, desired: &Ruleset, force_full: bool) -> Result<ApplyStats, ApplyError> {
        let started = Instant::now();
        desired.validate()?;
        let gen_before = self.generation()?;
        let trusted = match &self.last {
            Some(last) if !force_full && self.last_gen == Some(gen_before) => Some(last),
            _ => None,
        };
        if trusted.is_none() && self.last.is_some() && !force_full {
            tracing::info!(table = %desired.table(), "nftables changed under us; replacing the table");
        }
        let delta = trusted.and_then(|last| diff::delta(last, desired));
        let mut stats = ApplyStats::default();
        let encoded = match &delta {
            Some(d) if d.is_empty() => {
                stats.duration = started.elapsed();
                return Ok(stats);
            }
            Some(d) => encode_delta(desired, d, &mut stats)?,
            None => {
                let previous =
                    self.last.as_ref().map(Ruleset::table).filter(|t| *t != desired.table());
                encode_full(desired, previous, &mut stats)?
            }
        };
        stats.messages = encoded.messages();
        stats.bytes = encoded.bytes.len();
        let full = stats.full_replace;

        if let Err(e) = self.sock.send_batch(&encoded.bytes, &encoded.layout) {
            self.forget();
            return Err(send_error(e, &encoded, full));
        }
        // Exactly one commit since `gen_before` means it was ours and nobody else's.
        let gen_after = self.generation();
        self.last_gen = match gen_after {
            Ok(g) if g == gen_before.wrapping_add(1) => Some(g),
            _ => None,
        };
        self.last = Some(desired.clone());
        stats.duration = started.elapsed();
        tracing::debug!(
            table = %desired.table(),
            full_replace = full,
            chains = stats.chains_written,
            added = stats.set_elements_added,
            removed = stats.set_elements_removed,
            bytes = stats.bytes,
            ?stats.duration,
            "nftables transaction committed"
        );
        Ok(stats)
    }
}

fn send_error(e: SendError, encoded: &Encoded, full_replace: bool) -> ApplyError {
    match e {
        SendError::Io(op, source) => ApplyError::Socket { op, source },
        SendError::Unknown(why) => ApplyError::Unknown(why),
        SendError::Rejected(errors) => {
            // The first error is the cause; later ones are often its consequences.
            let Some(first) = errors.into_iter().next() else {
                return ApplyError::Unknown("rejected without an error".into());
            };
            let (kind, object) = encoded.describe(first.seq);
            ApplyError::Rejected {
                kind: kind.describe(),
                object,
                errno: first.errno,
                message: first.message,
                full_replace,
            }
        }
    }
}

/// `add table; delete table; add table` and everything in it, in dependency order: sets
/// with their elements, maps, all chains, map elements (they name chains), then rules.
fn encode_full(
    rs: &Ruleset,
    previous_table: Option<&super::ir::Name>,
    stats: &mut ApplyStats,
) -> Result<Encoded, ApplyError> {
    let mut w = Writer::new(rs.table())?;
    if let Some(old) = previous_table {
        w.drop_other_table(old)?;
    }
    w.add_table();
    w.delete_table();
    w.add_table();
    for set in rs.sets() {
        w.add_set(set)?;
        stats.set_elements_added +=
            if set.is_interval() { set.intervals().len() } else { set.elems().len() };
    }
    for map in rs.maps() {
        w.add_map(map)?;
    }
    for chain in rs.chains() {
        w.add_chain(chain)?;
    }
    for map in rs.maps() {
        let elems = encode::map_elems(map.elems())?;
        w.elements(map.name(), None, &elems, MsgType::Add)?;
        stats.set_elements_added += map.elems().len();
    }
    for chain in rs.chains() {
        w.add_rules(chain)?;
    }
    stats.chains_written = rs.chains().len();
    stats.full_replace = true;
    w.finish().map_err(ApplyError::Encode)
}

/// Only what changed. Order: new sets and maps, new chains, element removals then additions,
/// rewritten chains (flush + rules) and new chains' rules; then every reference to what goes
/// away is gone, so removed chains are flushed, removed sets and maps deleted, and removed
/// chains deleted.
fn encode_delta(
    rs: &Ruleset,
    d: &Delta<'_>,
    stats: &mut ApplyStats,
) -> Result<Encoded, ApplyError> {
    let mut w = Writer::new(rs.table())?;
    for set in &d.new_sets {
        w.add_set(set)?;
        stats.set_elements_added +=
            if set.is_interval() { set.intervals().len() } else { set.elems().len() };
    }
    for map in &d.new_maps {
        w.add_map(map)?;
    }
    for chain in &d.new_chains {
        w.add_chain(chain)?;
    }
    for change in &d.set_changes {
        let set = change.set;
        let (added, removed) = change.delta.counts();
        stats.set_elements_added += added;
        stats.set_elements_removed += removed;
        let (del, add) = match &change.delta {
            ElemDelta::Plain { added, removed } => (
                encode::plain_elems(removed.iter().copied()),
                encode::plain_elems(added.iter().copied()),
            ),
            ElemDelta::Interval { added, removed, was_empty } => {
                let bits = set.key().bits();
                (
                    encode::interval_elems(removed, bits, false),
                    encode::interval_elems(added, bits, *was_empty),
                )
            }
        };
        w.elements(set.name(), None, &del, MsgType::Del)?;
        w.elements(set.name(), None, &add, MsgType::Add)?;
    }
    for change in &d.map_changes {
        stats.set_elements_removed += change.removed.len();
        stats.set_elements_added += change.added.len();
        let del = encode::plain_elems(change.removed.iter().copied());
        w.elements(change.map.name(), None, &del, MsgType::Del)?;
        let add = encode::map_elems(change.added.iter().copied())?;
        w.elements(change.map.name(), None, &add, MsgType::Add)?;
    }
    for map in &d.new_maps {
        let elems = encode::map_elems(map.elems())?;
        w.elements(map.name(), None, &elems, MsgType::Add)?;
        stats.set_elements_added += map.elems().len();
    }
    for chain in &d.changed_chains {
        w.flush_chain(chain.name())?;
        w.add_rules(chain)?;
    }
    for chain in &d.new_chains {
        w.add_rules(chain)?;
    }
    for name in &d.removed_chains {
        w.flush_chain(name)?;
    }
    for name in &d.removed_sets {
        w.delete_set(name)?;
    }
    for name in &d.removed_chains {
        w.delete_chain(name)?;
    }
    stats.chains_written = d.changed_chains.len() + d.new_chains.len();
    w.finish().map_err(ApplyError::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_advice_depends_on_mode_and_errno() {
        let rejected = |full_replace, errno| ApplyError::Rejected {
            kind: "add rule",
            object: "1 of chain x".into(),
            errno,
            message: None,
            full_replace,
        };
        assert!(rejected(false, Errno::ENOENT).is_retryable());
        assert!(!rejected(true, Errno::EINVAL).is_retryable());
        assert!(rejected(true, Errno::ENOMEM).is_retryable());
        let invalid = ApplyError::Invalid(IrError::Duplicate { kind: "chain", name: "x".into() });
        assert!(!invalid.is_retryable());
        let msg = rejected(true, Errno::EINVAL).to_string();
        assert!(msg.contains("add rule 1 of chain x"), "{msg}");
        assert!(msg.contains("full replace"), "{msg}");
    }
}
