//! Every endpoint of the cluster with the labels selectors see (its own labels layered over
//! the `labelsToApply` of its profiles, as Felix's inheritance index does) and the answer to
//! "which addresses does this selector pick", computed once per selector and scope.
//!
//! Endpoints with the same namespace, own labels and profile list are one label group: a
//! selector is evaluated once per group, not once per endpoint, which is what keeps 10,000
//! endpoints cheap (most endpoints of a service look alike to selectors).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::rc::Rc;

use datastore::model::WorkloadEndpoint;
use datastore::selector::{Labels, Layered, Selector};
use ipnet::IpNet;

use super::names::FastHash;
use crate::model::ClusterModel;

/// Labels an endpoint inherits from its profiles: the first profile naming a key wins.
#[derive(Debug, Default)]
pub struct Inherited<'m>(BTreeMap<&'m str, &'m str>);

impl Labels for Inherited<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).copied()
    }
}

/// One workload endpoint of the cluster.
#[derive(Debug)]
pub struct Endpoint<'m> {
    /// The etcd key: unique, and the order endpoints are planned in.
    pub key: &'m str,
    pub wep: &'m WorkloadEndpoint,
    /// `metadata.namespace`, or `""` for none.
    pub namespace: &'m str,
}

/// Namespace, own labels and profiles: what makes endpoints alike to selectors.
type GroupKey<'m> = (&'m str, &'m BTreeMap<String, String>, &'m [String]);

/// Endpoints that look alike to every selector.
#[derive(Debug)]
struct LabelGroup<'m> {
    namespace: &'m str,
    own: &'m BTreeMap<String, String>,
    inherited: Rc<Inherited<'m>>,
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

/// Where a selector looks: the whole cluster (profiles, global policies) or one namespace
/// (rules of a namespaced policy, as in Calico).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope<'m> {
    Cluster,
    Namespace(&'m str),
}

impl Scope<'_> {
    /// A stable text form, part of set names.
    pub fn tag(self) -> String {
        match self {
            Scope::Cluster => String::new(),
            Scope::Namespace(ns) => format!("ns={ns};"),
        }
    }
}

/// The addresses a selector picks, per family, sorted and without duplicates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// Label key → value → the groups that see that label.
type KeyIndex<'m> = HashMap<&'m str, HashMap<&'m str, Vec<usize>, FastHash>, FastHash>;

/// A selector that one label answers: most selectors in practice (Calico v1 tags become
/// `has(tag)`), looked up in the key index instead of evaluated per group.
enum Simple<'t> {
    Has(&'t str),
    Eq(&'t str, &'t str),
}

impl<'t> Simple<'t> {
    /// Recognises `selector` (whose canonical text is `text`) as a single `has` or `==`:
    /// the parts are read off the text (a key is one selector word, a value has no quote),
    /// then confirmed by comparing the selector with one built from them.
    fn of(selector: &Selector, text: &'t str) -> Option<Self> {
        let is_key = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        };
        if let Some(key) = text.strip_prefix("has(").and_then(|r| r.strip_suffix(')')) {
            let rebuilt = Selector::has_label(key).ok().filter(|_| is_key(key))?;
            return (rebuilt == *selector).then_some(Simple::Has(key));
        }
        let (key, quoted) = text.split_once(" == ")?;
        let value = quoted.strip_prefix('"')?.strip_suffix('"')?;
        if !is_key(key) || value.contains('"') {
            return None;
        }
        let rebuilt = Selector::parse(&format!("{key} == \"{value}\"")).ok()?;
        (rebuilt == *selector).then_some(Simple::Eq(key, value))
    }
}

/// See the module documentation.
///
/// Only the endpoint list is made up front. Label groups cost a hash of every endpoint's
/// labels, so they are made on the first selector the caller has no answer for: a plan whose
/// selector sets all come from the last run never makes them.
#[derive(Debug)]
pub struct Index<'m> {
    model: &'m ClusterModel,
    pub endpoints: Vec<Endpoint<'m>>,
    /// Inherited labels per profile list, made on first use.
    inherited: RefCell<HashMap<&'m [String], Rc<Inherited<'m>>, FastHash>>,
    /// Made on the first [`Index::members`].
    groups: Option<Vec<LabelGroup<'m>>>,
    members: HashMap<(Scope<'m>, String), Rc<Members>, FastHash>,
    /// Made on first use.
    by_key: Option<KeyIndex<'m>>,
}

impl<'m> Index<'m> {
    pub fn new(model: &'m ClusterModel) -> Self {
        let endpoints = model
            .endpoints()
            .iter()
            .map(|(key, wep)| Endpoint {
                key,
                wep,
                namespace: wep.metadata.namespace.as_deref().unwrap_or(""),
            })
            .collect();
        Index {
            model,
            endpoints,
            inherited: RefCell::default(),
            groups: None,
            members: HashMap::default(),
            by_key: None,
        }
    }

    fn inherited(&self, profiles: &'m [String]) -> Rc<Inherited<'m>> {
        self.inherited
            .borrow_mut()
            .entry(profiles)
            .or_insert_with(|| Rc::new(inherited_labels(self.model, profiles)))
            .clone()
    }

    /// Whether `selector` picks endpoint `ep` (namespace scoping is the caller's business).
    pub fn selects(&self, selector: &Selector, ep: &Endpoint<'m>) -> bool {
        let inherited = self.inherited(&ep.wep.spec.profiles);
        selector.matches(&Layered(&ep.wep.metadata.labels, inherited.as_ref()))
    }

    /// Every endpoint in its label group.
    fn make_groups(&self) -> Vec<LabelGroup<'m>> {
        let mut group_of: HashMap<GroupKey<'m>, usize, FastHash> = HashMap::default();
        let mut groups: Vec<LabelGroup<'m>> = Vec::new();
        for ep in &self.endpoints {
            let own = &ep.wep.metadata.labels;
            let profiles = ep.wep.spec.profiles.as_slice();
            let group = *group_of.entry((ep.namespace, own, profiles)).or_insert_with(|| {
                groups.push(LabelGroup {
                    namespace: ep.namespace,
                    own,
                    inherited: self.inherited(profiles),
                    v4: Vec::new(),
                    v6: Vec::new(),
                });
                groups.len() - 1
            });
            for net in &ep.wep.spec.ip_networks {
                match net {
                    IpNet::V4(n) => groups[group].v4.push(n.addr()),
                    IpNet::V6(n) => groups[group].v6.push(n.addr()),
                }
            }
        }
        groups
    }

    /// The addresses of every endpoint in `scope` that `selector` picks; `text` is the
    /// selector's canonical form, the cache key.
    pub fn members(&mut self, scope: Scope<'m>, selector: &Selector, text: &str) -> Rc<Members> {
        if let Some(found) = self.members.get(&(scope, text.to_string())) {
            return found.clone();
        }
        let in_scope = |group: &LabelGroup<'_>| match scope {
            Scope::Cluster => true,
            Scope::Namespace(ns) => group.namespace == ns,
        };
        let mut members = Members::default();
        let mut add = |group: &LabelGroup<'_>| {
            members.v4.extend_from_slice(&group.v4);
            members.v6.extend_from_slice(&group.v6);
        };
        if self.groups.is_none() {
            self.groups = Some(self.make_groups());
        }
        let groups = self.groups.as_deref().unwrap_or_default();
        if let Some(simple) = Simple::of(selector, text) {
            let (key, want) = match simple {
                Simple::Has(key) => (key, None),
                Simple::Eq(key, value) => (key, Some(value)),
            };
            let by_key = self.by_key.get_or_insert_with(|| key_index(groups));
            let values = by_key.get(key);
            let picked: Vec<&Vec<usize>> = match want {
                None => values.map(|v| v.values().collect()).unwrap_or_default(),
                Some(w) => values.and_then(|v| v.get(w)).into_iter().collect(),
            };
            for g in picked.into_iter().flatten() {
                let group = &groups[*g];
                if in_scope(group) {
                    add(group);
                }
            }
        } else {
            for group in groups {
                if in_scope(group)
                    && selector.matches(&Layered(group.own, group.inherited.as_ref()))
                {
                    add(group);
                }
            }
        }
        members.v4.sort_unstable();
        members.v4.dedup();
        members.v6.sort_unstable();
        members.v6.dedup();
        let members = Rc::new(members);
        self.members.insert((scope, text.to_string()), members.clone());
        members
    }
}

/// The `labelsToApply` of `profiles` merged in list order, the first profile naming a key
/// winning (missing profiles contribute nothing).
fn inherited_labels<'m>(model: &'m ClusterModel, profiles: &[String]) -> Inherited<'m> {
    let mut merged = BTreeMap::new();
    for name in profiles {
        if let Some(profile) = model.profile(name) {
            for (k, v) in &profile.spec.labels_to_apply {
                merged.entry(k.as_str()).or_insert(v.as_str());
            }
        }
    }
    Inherited(merged)
}

/// Every label each group sees (own labels over inherited ones), by key.
fn key_index<'m>(groups: &[LabelGroup<'m>]) -> KeyIndex<'m> {
    let mut index: KeyIndex<'m> = HashMap::default();
    for (g, group) in groups.iter().enumerate() {
        for (k, v) in group.own {
            index.entry(k.as_str()).or_default().entry(v.as_str()).or_default().push(g);
        }
        for (k, v) in &group.inherited.0 {
            if !group.own.contains_key(*k) {
                index.entry(k).or_default().entry(v).or_default().push(g);
            }
        }
    }
    index
}
