//! The cluster as the agent knows it: every pool, profile, policy, endpoint, node, block and
//! affinity read from etcd, typed and validated, keyed by etcd key.
//!
//! Built from the watchers' events: a snapshot replaces everything under its prefix at once
//! (the planners never see half a re-list), puts and deletes patch. Invalid values are
//! logged once per key and revision and treated as absent, so one bad document cannot stop
//! the rest from being programmed. `generation` moves on every change; the reconcile loop
//! uses it to tell whether there is anything new to plan. `labels_stamp` moves only when
//! what selectors see changes (endpoints, profiles' `labelsToApply`), so a planner may keep
//! its selector sets across the far more frequent rule changes.

mod decode;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use datastore::client::Kv;
use datastore::keys::{KeyLayout, Kind};
use datastore::model::{
    AllocationBlock, BgpConfiguration, BgpPeer, GlobalNetworkPolicy, IpPool, NetworkPolicy, Node,
    Profile, WorkloadEndpoint,
};
use datastore::watch::WatchEvent;

pub use decode::AffinityRecord;
use decode::{Decoded, Record, Slot};

/// The etcd prefixes the agent watches, each with its own watcher and snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WatchSource {
    /// `<prefix>/resources/v3/projectcalico.org/`: pools, profiles, policies, endpoints, nodes,
    /// BGP peers and configurations.
    Resources,
    /// `<prefix>/ipam/v2/`: blocks and affinities (handles and config are ignored).
    Ipam,
}

impl WatchSource {
    pub const ALL: [WatchSource; 2] = [WatchSource::Resources, WatchSource::Ipam];

    /// The watched prefix (ends in `/`).
    pub fn prefix(self, layout: &KeyLayout) -> String {
        match self {
            WatchSource::Resources => layout.all_resources_prefix(),
            WatchSource::Ipam => format!("{}/ipam/v2/", layout.prefix()),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            WatchSource::Resources => "resources",
            WatchSource::Ipam => "ipam",
        }
    }

    const fn index(self) -> usize {
        match self {
            WatchSource::Resources => 0,
            WatchSource::Ipam => 1,
        }
    }
}

/// A key whose value was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRecord {
    pub mod_revision: i64,
    pub reason: String,
}

/// The typed maps, keyed by etcd key.
#[derive(Debug, Clone, Default, PartialEq)]
struct Store {
    pools: BTreeMap<String, IpPool>,
    profiles: BTreeMap<String, Profile>,
    policies: BTreeMap<String, NetworkPolicy>,
    global_policies: BTreeMap<String, GlobalNetworkPolicy>,
    endpoints: BTreeMap<String, WorkloadEndpoint>,
    nodes: BTreeMap<String, Node>,
    bgp_peers: BTreeMap<String, BgpPeer>,
    bgp_configs: BTreeMap<String, BgpConfiguration>,
    blocks: BTreeMap<String, AllocationBlock>,
    affinities: BTreeMap<String, AffinityRecord>,
}

impl Store {
    /// Inserts `record` at `key`; returns whether the map changed.
    fn insert(&mut self, key: String, record: Record) -> bool {
        fn put<T: PartialEq>(map: &mut BTreeMap<String, T>, key: String, value: T) -> bool {
            if map.get(&key) == Some(&value) {
                return false;
            }
            map.insert(key, value);
            true
        }
        match record {
            Record::Pool(r) => put(&mut self.pools, key, r),
            Record::Profile(r) => put(&mut self.profiles, key, r),
            Record::Policy(r) => put(&mut self.policies, key, r),
            Record::GlobalPolicy(r) => put(&mut self.global_policies, key, r),
            Record::Endpoint(r) => put(&mut self.endpoints, key, r),
            Record::Node(r) => put(&mut self.nodes, key, r),
            Record::BgpPeer(r) => put(&mut self.bgp_peers, key, r),
            Record::BgpConfig(r) => put(&mut self.bgp_configs, key, r),
            Record::Block(r) => put(&mut self.blocks, key, r),
            Record::Affinity(r) => put(&mut self.affinities, key, r),
        }
    }

    /// Removes `key` from the map of `slot`; returns whether it was there.
    fn remove(&mut self, slot: Slot, key: &str) -> bool {
        match slot {
            Slot::Pool => self.pools.remove(key).is_some(),
            Slot::Profile => self.profiles.remove(key).is_some(),
            Slot::Policy => self.policies.remove(key).is_some(),
            Slot::GlobalPolicy => self.global_policies.remove(key).is_some(),
            Slot::Endpoint => self.endpoints.remove(key).is_some(),
            Slot::Node => self.nodes.remove(key).is_some(),
            Slot::BgpPeer => self.bgp_peers.remove(key).is_some(),
            Slot::BgpConfig => self.bgp_configs.remove(key).is_some(),
            Slot::Block => self.blocks.remove(key).is_some(),
            Slot::Affinity => self.affinities.remove(key).is_some(),
        }
    }

    /// Moves the maps fed by `source` from `fresh` into `self`; returns whether they differed.
    fn replace_source(&mut self, source: WatchSource, fresh: Store) -> bool {
        fn swap<T: PartialEq>(old: &mut BTreeMap<String, T>, new: BTreeMap<String, T>) -> bool {
            if *old == new {
                return false;
            }
            *old = new;
            true
        }
        match source {
            WatchSource::Resources => {
                // `|` rather than `||`: every map must be swapped.
                swap(&mut self.pools, fresh.pools)
                    | swap(&mut self.profiles, fresh.profiles)
                    | swap(&mut self.policies, fresh.policies)
                    | swap(&mut self.global_policies, fresh.global_policies)
                    | swap(&mut self.endpoints, fresh.endpoints)
                    | swap(&mut self.nodes, fresh.nodes)
                    | swap(&mut self.bgp_peers, fresh.bgp_peers)
                    | swap(&mut self.bgp_configs, fresh.bgp_configs)
            }
            WatchSource::Ipam => {
                swap(&mut self.blocks, fresh.blocks) | swap(&mut self.affinities, fresh.affinities)
            }
        }
    }
}

/// The cluster snapshot the planners read. See the module documentation.
#[derive(Debug, Clone)]
pub struct ClusterModel {
    layout: KeyLayout,
    store: Store,
    invalid: BTreeMap<String, InvalidRecord>,
    /// How many invalid values were reported (logged), for tests and metrics.
    invalid_reports: u64,
    generation: u64,
    /// See [`ClusterModel::labels_stamp`].
    labels_stamp: u64,
    /// Per source: the revision the model is complete up to (0 before its first snapshot).
    revisions: [i64; 2],
    synced: [bool; 2],
}

/// A stamp no model has had: stamps are unique across every model of the process, so two
/// models (or a model and its changed clone) never share one unless they see the same labels.
fn fresh_stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl ClusterModel {
    /// An empty model for the keys under `layout`, not in sync.
    pub fn new(layout: KeyLayout) -> Self {
        ClusterModel {
            layout,
            store: Store::default(),
            invalid: BTreeMap::new(),
            invalid_reports: 0,
            generation: 0,
            labels_stamp: fresh_stamp(),
            revisions: [0; 2],
            synced: [false; 2],
        }
    }

    /// A model holding exactly `kvs`, in sync: for tests and golden files. Every key is
    /// routed to its source by prefix.
    pub fn from_kvs(layout: KeyLayout, kvs: &[Kv], revision: i64) -> Self {
        let mut model = ClusterModel::new(layout);
        for source in WatchSource::ALL {
            let prefix = source.prefix(&model.layout);
            let mine: Vec<Kv> =
                kvs.iter().filter(|kv| kv.key.starts_with(&prefix)).cloned().collect();
            model.apply(source, WatchEvent::Snapshot { kvs: mine, revision });
        }
        model
    }

    /// Applies one watcher event from `source`; returns whether the model changed.
    pub fn apply(&mut self, source: WatchSource, event: WatchEvent) -> bool {
        let revision = event.revision();
        let changed = match event {
            WatchEvent::Snapshot { kvs, .. } => self.apply_snapshot(source, &kvs),
            WatchEvent::Put(kv) => self.apply_put(&kv),
            WatchEvent::Delete { key, .. } => self.apply_delete(&key),
        };
        let slot = &mut self.revisions[source.index()];
        *slot = (*slot).max(revision);
        if changed {
            self.generation += 1;
        }
        changed
    }

    fn apply_snapshot(&mut self, source: WatchSource, kvs: &[Kv]) -> bool {
        let prefix = source.prefix(&self.layout);
        let mut fresh = Store::default();
        let mut seen_invalid = Vec::new();
        for kv in kvs.iter().filter(|kv| kv.key.starts_with(&prefix)) {
            match decode::decode(&self.layout, kv) {
                Decoded::Record(record) => {
                    fresh.insert(kv.key.clone(), *record);
                }
                Decoded::Ignored => {}
                Decoded::Invalid(reason) => {
                    self.note_invalid(kv, reason);
                    seen_invalid.push(kv.key.clone());
                }
            }
        }
        seen_invalid.sort_unstable();
        // Keys gone from the listing, or valid now, are no longer invalid.
        self.invalid
            .retain(|key, _| !key.starts_with(&prefix) || seen_invalid.binary_search(key).is_ok());
        self.synced[source.index()] = true;
        let changed = self.store.replace_source(source, fresh);
        if changed && source == WatchSource::Resources {
            self.labels_stamp = fresh_stamp();
        }
        changed
    }

    fn apply_put(&mut self, kv: &Kv) -> bool {
        let Some(slot) = self.layout.parse(&kv.key).as_ref().and_then(decode::slot_of) else {
            return false;
        };
        let labels_before = self.selector_labels(slot, &kv.key);
        let changed = match decode::decode(&self.layout, kv) {
            Decoded::Record(record) => {
                self.invalid.remove(&kv.key);
                self.store.insert(kv.key.clone(), *record)
            }
            Decoded::Ignored => false,
            Decoded::Invalid(reason) => {
                self.note_invalid(kv, reason);
                // The previous good value is gone too: the model follows etcd, not history.
                self.store.remove(slot, &kv.key)
            }
        };
        self.restamp_labels(changed, slot, &kv.key, labels_before.as_ref());
        changed
    }

    fn apply_delete(&mut self, key: &str) -> bool {
        self.invalid.remove(key);
        let Some(slot) = self.layout.parse(key).as_ref().and_then(decode::slot_of) else {
            return false;
        };
        let labels_before = self.selector_labels(slot, key);
        let changed = self.store.remove(slot, key);
        self.restamp_labels(changed, slot, key, labels_before.as_ref());
        changed
    }

    /// The labels a profile at `key` gives its endpoints (`None` for other slots).
    fn selector_labels(&self, slot: Slot, key: &str) -> Option<BTreeMap<String, String>> {
        match slot {
            Slot::Profile => Some(
                self.store
                    .profiles
                    .get(key)
                    .map(|p| p.spec.labels_to_apply.clone())
                    .unwrap_or_default(),
            ),
            _ => None,
        }
    }

    /// Moves `labels_stamp` after a change at `key` that selectors can see: any endpoint, or
    /// a profile whose `labelsToApply` (`before` the change) differ now.
    fn restamp_labels(
        &mut self,
        changed: bool,
        slot: Slot,
        key: &str,
        before: Option<&BTreeMap<String, String>>,
    ) {
        let seen = match slot {
            Slot::Endpoint => changed,
            Slot::Profile => changed && before != self.selector_labels(slot, key).as_ref(),
            _ => false,
        };
        if seen {
            self.labels_stamp = fresh_stamp();
        }
    }

    /// Records an invalid value, logging it only the first time this key and revision are
    /// seen (a re-list after compaction brings the same bad value back).
    fn note_invalid(&mut self, kv: &Kv, reason: String) {
        let seen = self.invalid.get(&kv.key).is_some_and(|i| i.mod_revision == kv.mod_revision);
        if !seen {
            self.invalid_reports += 1;
            tracing::warn!(
                key = %kv.key,
                revision = kv.mod_revision,
                reason = %reason,
                "ignoring invalid value in etcd; the rest is programmed without it"
            );
        }
        self.invalid
            .insert(kv.key.clone(), InvalidRecord { mod_revision: kv.mod_revision, reason });
    }

    /// Whether every source has delivered its first snapshot: only then may the dataplane be
    /// touched.
    pub fn in_sync(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    /// Whether `source` has delivered its first snapshot.
    pub fn source_in_sync(&self, source: WatchSource) -> bool {
        self.synced[source.index()]
    }

    /// Bumped on every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Changes whenever what selectors see may have changed: an endpoint, or the
    /// `labelsToApply` of a profile. Unique across models, so equal stamps mean equal labels
    /// (a clone keeps the stamp until either copy changes).
    pub fn labels_stamp(&self) -> u64 {
        self.labels_stamp
    }

    /// The newest etcd revision the model reflects, over all sources.
    pub fn revision(&self) -> i64 {
        self.revisions.iter().copied().max().unwrap_or(0)
    }

    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    pub fn pools(&self) -> &BTreeMap<String, IpPool> {
        &self.store.pools
    }

    pub fn profiles(&self) -> &BTreeMap<String, Profile> {
        &self.store.profiles
    }

    pub fn policies(&self) -> &BTreeMap<String, NetworkPolicy> {
        &self.store.policies
    }

    pub fn global_policies(&self) -> &BTreeMap<String, GlobalNetworkPolicy> {
        &self.store.global_policies
    }

    pub fn endpoints(&self) -> &BTreeMap<String, WorkloadEndpoint> {
        &self.store.endpoints
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.store.nodes
    }

    pub fn bgp_peers(&self) -> &BTreeMap<String, BgpPeer> {
        &self.store.bgp_peers
    }

    pub fn bgp_configs(&self) -> &BTreeMap<String, BgpConfiguration> {
        &self.store.bgp_configs
    }

    /// The cluster-wide BGP configuration: the one named `default`, as in Calico.
    pub fn bgp_config(&self) -> Option<&BgpConfiguration> {
        self.store.bgp_configs.get(&self.layout.resource(Kind::BgpConfiguration, None, "default"))
    }

    pub fn blocks(&self) -> &BTreeMap<String, AllocationBlock> {
        &self.store.blocks
    }

    pub fn affinities(&self) -> &BTreeMap<String, AffinityRecord> {
        &self.store.affinities
    }

    /// How many times an invalid value was reported in the log: once per key and revision.
    pub fn invalid_reports(&self) -> u64 {
        self.invalid_reports
    }

    /// Keys whose values were refused, with the reason.
    pub fn invalid(&self) -> &BTreeMap<String, InvalidRecord> {
        &self.invalid
    }

    /// The profile named `name`.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.store.profiles.get(&self.layout.resource(Kind::Profile, None, name))
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.store.nodes.get(&self.layout.resource(Kind::Node, None, name))
    }

    /// The address other hosts reach node `name` at, for one family (BGP address first,
    /// then the listed addresses).
    pub fn node_address(&self, name: &str, v4: bool) -> Option<IpAddr> {
        self.node(name).and_then(|n| n.spec.host_address(v4))
    }

    /// The workload endpoints on node `nodename`.
    pub fn local_endpoints<'a>(
        &'a self,
        nodename: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a WorkloadEndpoint)> + 'a {
        self.store
            .endpoints
            .iter()
            .filter(move |(_, wep)| wep.spec.node.as_deref() == Some(nodename))
    }
}

#[cfg(test)]
mod tests;
