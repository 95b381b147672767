//! The planner: a pure function from the cluster model and this host to the desired
//! nftables table (Felix's rule layout, on nftables' terms).
//!
//! Layout of table `inet <name>`:
//!
//! - `forward` (filter, priority 0): `iifname vmap @from-wl` → `fw-<iface>`, the sender's
//!   egress; unknown `cali*` dropped. `forward-to` (filter, priority 1): `oifname vmap
//!   @to-wl` → `tw-<iface>`, the receiver's ingress; unknown `cali*` dropped. Traffic
//!   between two local workloads runs both; everything else is untouched.
//! - `input` → `wl-to-host`: workload → host; established accepted, IPv6 link chatter
//!   accepted, then `DefaultEndpointToHostAction` (Drop, or the sender's egress chain).
//!   `output` → `host-to-wl`: host → workload through the receiver's ingress chain.
//! - `fw-`/`tw-`: established accepted, invalid dropped, (egress) anti-spoofing of source
//!   address and MAC, then the policies selecting the endpoint in order (`jump pi-/po-…`,
//!   drop if none accepted), or, with no policy, its profiles (`jump pri-/pro-…`), then drop.
//!   A policy's Pass continues at `fwp-`/`twp-` (the profiles) through a pass map.
//! - `pri-`/`pro-<profile>`, `pi-`/`po-<ns>.<policy>`: one nft rule per Calico rule (see
//!   [`rules`]); Allow is `accept`, which ends the current base chain only.
//! - Selectors are sets `s4-<hash>`/`s6-<hash>` of endpoint addresses, network lists sets
//!   `n4-`/`n6-<hash>`; `postrouting` masquerades `natOutgoing` pools.
//!
//! Only endpoints of this host get chains, and only the profiles and policies they use
//! (Felix's active rules); every endpoint of the cluster feeds the selector sets.
//!
//! Felix marks packets (accept and pass bits) because iptables jumps cannot return a
//! verdict to a caller in another table; nftables base chains can each decide, so the
//! planner needs no mark bits and leaves the mark alone for other software.

mod active;
mod chains;
mod index;
pub mod names;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::rc::Rc;

use crate::config::AgentConfig;
use crate::host::HostInfo;
use crate::model::ClusterModel;
use crate::nft::ir::{Family, IfPrefix, IrError, LogPrefix, Name, Ruleset, Set};

pub use active::policy_order;
pub use rules::Direction;

/// What the planner needs besides the model and the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    /// The table (`inet <table>`).
    pub table: Name,
    /// Interfaces of workloads, dispatched or dropped (`cali`).
    pub iface_prefix: IfPrefix,
    /// Prefix of the kernel log lines of Log rules.
    pub log_prefix: LogPrefix,
}

impl PlanConfig {
    pub const DEFAULT_TABLE: &'static str = "tabby";
    pub const DEFAULT_IFACE_PREFIX: &'static str = "cali";
    pub const DEFAULT_LOG_PREFIX: &'static str = "tabby-packet: ";

    /// Defaults, with table `table`.
    pub fn new(table: &str) -> Result<Self, IrError> {
        Ok(PlanConfig {
            table: Name::new(table)?,
            iface_prefix: IfPrefix::new(Self::DEFAULT_IFACE_PREFIX)?,
            log_prefix: LogPrefix::new(Self::DEFAULT_LOG_PREFIX)?,
        })
    }

    /// From the agent configuration (its table name).
    pub fn from_agent(config: &AgentConfig) -> Result<Self, IrError> {
        Self::new(&config.nft_table)
    }
}

/// Something the planner left out or could not do as asked, about one resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlanWarning {
    /// The resource: an etcd key, `profile <name> ingress[i]`, a policy id.
    pub subject: String,
    pub message: String,
}

impl PlanWarning {
    pub fn new(subject: impl Into<String>, message: impl Into<String>) -> Self {
        PlanWarning { subject: subject.into(), message: message.into() }
    }
}

impl fmt::Display for PlanWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// The planner's output.
#[derive(Debug, Clone)]
pub struct Plan {
    pub ruleset: Ruleset,
    /// Sorted, without duplicates. The planner does not log: the caller decides what is new.
    pub warnings: Vec<PlanWarning>,
    /// Local endpoints that got chains.
    pub local_endpoints: usize,
}

/// The desired table for `host`. Pure and deterministic.
pub fn plan_ruleset(model: &ClusterModel, host: &HostInfo, config: &PlanConfig) -> Ruleset {
    plan(model, host, config).ruleset
}

/// What one plan leaves for the next: its named sets by content, so that the next plan
/// neither recomputes selector membership over every endpoint of the cluster nor rebuilds
/// the elements, while nothing selectors see has changed (the model's labels stamp). A rule
/// change at 10,000 endpoints then costs the chains it touches, not the cluster.
///
/// Results are the same with or without it: a set is kept only under the content key that
/// made it, and selector sets only while the stamp is unchanged.
#[derive(Debug, Default)]
pub struct PlanCache {
    /// The model's labels stamp the selector sets below were computed under.
    labels_stamp: Option<u64>,
    /// The last plan's sets by content key (`s4-` + scope + selector, `n4-` + networks).
    sets: HashMap<String, Set>,
    /// Content keys of selector sets that came out empty (and so were not made).
    empty: HashSet<String>,
}

impl PlanCache {
    /// Drops what `model` may see differently.
    fn valid_for(mut self, model: &ClusterModel) -> Self {
        if self.labels_stamp != Some(model.labels_stamp()) {
            self.sets.retain(|key, _| !rules::is_selector_set_key(key));
            self.empty.clear();
        }
        self
    }
}

/// The desired table for `host`, with what was left out and why.
pub fn plan(model: &ClusterModel, host: &HostInfo, config: &PlanConfig) -> Plan {
    plan_with_cache(model, host, config, &mut PlanCache::default())
}

/// [`plan`], reusing what the last plan through `cache` computed and leaving this one's.
pub fn plan_with_cache(
    model: &ClusterModel,
    host: &HostInfo,
    config: &PlanConfig,
    cache: &mut PlanCache,
) -> Plan {
    let mut planner = Planner {
        model,
        host,
        cfg: config,
        index: index::Index::new(model),
        sets: HashMap::new(),
        set_names: BTreeSet::new(),
        selectors: HashMap::default(),
        selector_sets: HashMap::default(),
        prior: std::mem::take(cache).valid_for(model),
        empty: HashSet::new(),
        warnings: Vec::new(),
    };
    let (ruleset, local_endpoints) = match planner.build() {
        Ok((ruleset, local_endpoints, next)) => {
            *cache = next;
            (ruleset, local_endpoints)
        }
        Err(e) => {
            // A planner bug, not bad input (input errors are per rule or resource). Fail
            // closed: workloads pass nothing rather than everything.
            planner.warn("planner", format!("internal error, workload traffic blocked: {e}"));
            (fail_closed(config), 0)
        }
    };
    let mut warnings = planner.warnings;
    warnings.sort();
    warnings.dedup();
    Plan { ruleset, warnings, local_endpoints }
}

/// A table that drops all traffic of workload interfaces (and nothing else).
fn fail_closed(config: &PlanConfig) -> Ruleset {
    use crate::nft::ir::{Action, BaseChain, Chain, Hook, Match, Rule};
    let mut rs = Ruleset::new(config.table.clone());
    let chains = [
        (names::FORWARD, Hook::Forward),
        (names::INPUT, Hook::Input),
        (names::OUTPUT, Hook::Output),
    ];
    for (name, hook) in chains {
        let Ok(name) = Name::new(name) else { continue };
        let prefix = config.iface_prefix.clone();
        let mut chain = Chain::base(name, BaseChain::filter(hook))
            .rule(Rule::new().with(Match::iifname_prefix(prefix.clone())).then(Action::Drop));
        if hook != Hook::Input {
            chain.push(Rule::new().with(Match::oifname_prefix(prefix)).then(Action::Drop));
        }
        // Each name is added once; a duplicate cannot happen.
        let _ = rs.add_chain(chain);
    }
    rs
}

/// Working state of one planning run.
struct Planner<'m> {
    model: &'m ClusterModel,
    host: &'m HostInfo,
    cfg: &'m PlanConfig,
    index: index::Index<'m>,
    /// Sets made so far, by content key (`s4-` + scope + selector, `n4-` + networks).
    sets: HashMap<String, Set>,
    set_names: BTreeSet<Name>,
    /// Rule selectors parsed so far, by their text in the model.
    selectors: HashMap<String, Option<Rc<rules::ParsedSelector>>, names::FastHash>,
    /// Set (or none: it would be empty) per scope, selector and family.
    selector_sets: HashMap<(index::Scope<'m>, usize, Family), Option<Name>, names::FastHash>,
    /// What the last plan left, still valid for this model; sets are taken out as used.
    prior: PlanCache,
    /// Content keys of selector sets found empty in this run.
    empty: HashSet<String>,
    warnings: Vec<PlanWarning>,
}

impl Planner<'_> {
    fn warn(&mut self, subject: &str, message: String) {
        self.warnings.push(PlanWarning::new(subject, message));
    }

    fn build(&mut self) -> Result<(Ruleset, usize, PlanCache), IrError> {
        let mut rs = Ruleset::new(self.cfg.table.clone());
        let policies = self.policy_views();
        let locals = self.local_endpoints(&policies);
        let policy_names = self.policy_chains(&mut rs, &policies, &locals)?;
        let profiles = self.active_profiles(&locals);
        self.profile_chains(&mut rs, &profiles)?;
        self.endpoint_chains(&mut rs, &locals, &policy_names)?;
        self.base_chains(&mut rs)?;
        self.nat_chain(&mut rs)?;
        // Sets share their elements with their clones: keeping them costs no copy.
        let next = PlanCache {
            labels_stamp: Some(self.model.labels_stamp()),
            sets: self.sets.clone(),
            empty: std::mem::take(&mut self.empty),
        };
        for (_, set) in self.sets.drain() {
            rs.add_set(set)?;
        }
        Ok((rs, locals.len(), next))
    }

    /// Whether the set for `content` under `prefix` exists in this run or the last one.
    fn knows_set(&self, prefix: &str, content: &str) -> bool {
        let key = format!("{prefix}{content}");
        self.sets.contains_key(&key) || self.prior.sets.contains_key(&key)
    }

    /// The set for `content` (a key naming exactly what it holds), made by `make` the first
    /// time under `<prefix><hash of content>`, unless the last plan made it.
    fn named_set(
        &mut self,
        prefix: &str,
        content: &str,
        make: impl FnOnce(Name) -> Result<Set, IrError>,
    ) -> Result<Name, IrError> {
        // The prefix says the family: part of the identity, not of the hash.
        let key = format!("{prefix}{content}");
        if let Some(set) = self.sets.get(&key) {
            return Ok(set.name().clone());
        }
        let mut name = Name::new(format!("{prefix}{}", names::short_hash(content)))?;
        let mut salt = 0u32;
        while self.set_names.contains(&name) {
            // Two contents with one short hash: astronomically rare, but names must differ.
            salt += 1;
            name =
                Name::new(format!("{prefix}{}", names::short_hash(&format!("{content}#{salt}"))))?;
        }
        self.set_names.insert(name.clone());
        let set = match self.prior.sets.remove(&key) {
            Some(kept) if *kept.name() == name => kept,
            // The same content under another name (a hash collision resolved differently).
            Some(kept) => kept.renamed(name.clone()),
            None => make(name.clone())?,
        };
        self.sets.insert(key, set);
        Ok(name)
    }
}
