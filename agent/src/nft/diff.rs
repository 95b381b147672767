//! Pure comparison of the last applied ruleset with the desired one: which chains to create,
//! rewrite or delete, which sets and maps to create or delete, and which elements to add or
//! remove — or that only a full replace of the table will do.

use super::interval::Interval;
use super::ir::{Chain, Name, Ruleset};
use super::set::{Elem, MapVerdict, Set, VerdictMap};

/// Element changes of a set that exists in both rulesets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ElemDelta<'a> {
    Plain {
        added: Vec<&'a Elem>,
        removed: Vec<&'a Elem>,
    },
    /// Interval sets change range by range, in their canonical form.
    Interval {
        added: Vec<Interval>,
        removed: Vec<Interval>,
        /// The set held nothing before, so `nft`'s leading zero element may be missing.
        was_empty: bool,
    },
}

impl ElemDelta<'_> {
    fn is_empty(&self) -> bool {
        match self {
            ElemDelta::Plain { added, removed } => added.is_empty() && removed.is_empty(),
            ElemDelta::Interval { added, removed, .. } => added.is_empty() && removed.is_empty(),
        }
    }

    pub fn counts(&self) -> (usize, usize) {
        match self {
            ElemDelta::Plain { added, removed } => (added.len(), removed.len()),
            ElemDelta::Interval { added, removed, .. } => (added.len(), removed.len()),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SetChange<'a> {
    pub set: &'a Set,
    pub delta: ElemDelta<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MapChange<'a> {
    pub map: &'a VerdictMap,
    /// Entries to delete: gone, or whose verdict changes (re-added below).
    pub removed: Vec<&'a Elem>,
    pub added: Vec<(&'a Elem, &'a MapVerdict)>,
}

/// What an incremental transaction must do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta<'a> {
    pub new_sets: Vec<&'a Set>,
    pub new_maps: Vec<&'a VerdictMap>,
    pub removed_sets: Vec<&'a Name>,
    pub new_chains: Vec<&'a Chain>,
    pub changed_chains: Vec<&'a Chain>,
    pub removed_chains: Vec<&'a Name>,
    pub set_changes: Vec<SetChange<'a>>,
    pub map_changes: Vec<MapChange<'a>>,
}

impl Delta<'_> {
    pub fn is_empty(&self) -> bool {
        self.new_sets.is_empty()
            && self.new_maps.is_empty()
            && self.removed_sets.is_empty()
            && self.new_chains.is_empty()
            && self.changed_chains.is_empty()
            && self.removed_chains.is_empty()
            && self.set_changes.is_empty()
            && self.map_changes.is_empty()
    }
}

/// Incremental changes, or `None` when the table must be replaced whole: another table name,
/// a base chain whose hook, type, priority or policy changed (or a chain turning base or
/// regular), a set whose key type or flags changed, or a name moving between set and map.
pub(crate) fn delta<'a>(old: &'a Ruleset, new: &'a Ruleset) -> Option<Delta<'a>> {
    if old.table() != new.table() {
        return None;
    }
    let mut d = Delta::default();

    for chain in new.chains() {
        match old.chain(chain.name().as_str()) {
            None => d.new_chains.push(chain),
            Some(o) if o == chain => {}
            Some(o) if o.base_chain() != chain.base_chain() => return None,
            Some(_) => d.changed_chains.push(chain),
        }
    }
    d.removed_chains =
        old.chains().filter(|c| new.chain(c.name().as_str()).is_none()).map(Chain::name).collect();

    for set in new.sets() {
        if old.map(set.name().as_str()).is_some() {
            return None;
        }
        match old.set(set.name().as_str()) {
            None => d.new_sets.push(set),
            Some(o) if !o.same_definition(set) => return None,
            Some(o) => {
                let delta = set_delta(o, set);
                if !delta.is_empty() {
                    d.set_changes.push(SetChange { set, delta });
                }
            }
        }
    }
    for map in new.maps() {
        if old.set(map.name().as_str()).is_some() {
            return None;
        }
        match old.map(map.name().as_str()) {
            None => d.new_maps.push(map),
            Some(o) if o.key() != map.key() => return None,
            Some(o) => {
                let change = map_delta(o, map);
                if !change.removed.is_empty() || !change.added.is_empty() {
                    d.map_changes.push(change);
                }
            }
        }
    }
    d.removed_sets = old
        .sets()
        .map(Set::name)
        .chain(old.maps().map(VerdictMap::name))
        .filter(|n| new.set(n.as_str()).is_none() && new.map(n.as_str()).is_none())
        .collect();
    Some(d)
}

/// Sorted-list difference: items of `a` not in `b` (both sorted).
fn sorted_minus<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

fn set_delta<'a>(old: &'a Set, new: &'a Set) -> ElemDelta<'a> {
    if old.shares_elems(new) {
        // A set the planner kept from the last run: nothing to compare.
        return ElemDelta::Plain { added: Vec::new(), removed: Vec::new() };
    }
    if new.is_interval() {
        let (o, n) = (old.intervals(), new.intervals());
        ElemDelta::Interval {
            added: sorted_minus(&n, &o),
            removed: sorted_minus(&o, &n),
            was_empty: o.is_empty(),
        }
    } else {
        ElemDelta::Plain {
            added: new.elems().difference(old.elems()).collect(),
            removed: old.elems().difference(new.elems()).collect(),
        }
    }
}

fn map_delta<'a>(old: &'a VerdictMap, new: &'a VerdictMap) -> MapChange<'a> {
    let removed = old
        .elems()
        .iter()
        .filter(|(k, v)| new.elems().get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    let added = new.elems().iter().filter(|(k, v)| old.elems().get(*k) != Some(*v)).collect();
    MapChange { map: new, removed, added }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::ir::{Action, BaseChain, Hook, KeyType, Policy, Rule};

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid name")
    }

    fn base() -> Ruleset {
        let mut rs = Ruleset::new(name("tabby"));
        let fwd = Chain::base(name("forward"), BaseChain::filter(Hook::Forward))
            .rule(Rule::action(Action::Jump(name("fw-a"))));
        rs.add_chain(fwd).expect("new chain");
        rs.add_chain(Chain::regular(name("fw-a")).rule(Rule::action(Action::Accept)))
            .expect("new chain");
        rs.add_chain(Chain::regular(name("fw-b")).rule(Rule::action(Action::Drop)))
            .expect("new chain");
        let set = Set::new(name("ep-a"), KeyType::Ipv4Addr)
            .with([Elem::addr("10.0.0.1".parse().expect("ip"))])
            .expect("valid set");
        rs.add_set(set).expect("new set");
        let pools = Set::new_interval(name("all-pools"), KeyType::Ipv4Addr).expect("interval set");
        rs.add_set(pools).expect("new set");
        let map = VerdictMap::new(name("to_wl"), KeyType::Ifname)
            .with([(
                Elem::Ifname(crate::nft::ir::IfName::new("cali1").expect("ifname")),
                MapVerdict::Goto(name("fw-a")),
            )])
            .expect("valid map");
        rs.add_map(map).expect("new map");
        rs
    }

    #[test]
    fn identical_rulesets_need_nothing() {
        let a = base();
        let b = base();
        assert!(delta(&a, &b).is_some_and(|d| d.is_empty()));
    }

    #[test]
    fn one_changed_chain_is_all_that_is_sent() {
        let a = base();
        let mut b = base();
        b.chain_mut("fw-b").expect("chain").push(Rule::action(Action::Accept));
        let d = delta(&a, &b).expect("incremental");
        let changed: Vec<&str> = d.changed_chains.iter().map(|c| c.name().as_str()).collect();
        assert_eq!(changed, vec!["fw-b"]);
        assert!(d.new_chains.is_empty() && d.removed_chains.is_empty());
        assert!(d.set_changes.is_empty() && d.map_changes.is_empty());
    }

    #[test]
    fn elements_and_chains_are_added_and_removed() {
        let a = base();
        let mut b = base();
        b.remove_chain("fw-b");
        b.add_chain(Chain::regular(name("fw-c")).rule(Rule::action(Action::Return)))
            .expect("new chain");
        let s = b.set_mut("ep-a").expect("set");
        s.remove(&Elem::addr("10.0.0.1".parse().expect("ip")));
        s.insert(Elem::addr("10.0.0.2".parse().expect("ip"))).expect("insert");
        let pools = b.set_mut("all-pools").expect("set");
        pools.insert(Elem::net("10.0.0.0/16".parse().expect("net"))).expect("insert");
        let key = Elem::Ifname(crate::nft::ir::IfName::new("cali1").expect("ifname"));
        b.map_mut("to_wl")
            .expect("map")
            .insert(key.clone(), MapVerdict::Goto(name("fw-c")))
            .expect("insert");
        let d = delta(&a, &b).expect("incremental");
        assert_eq!(d.removed_chains, vec![&name("fw-b")]);
        assert_eq!(d.new_chains.len(), 1);
        assert_eq!(d.set_changes.len(), 2);
        // Changes come in set-name order.
        assert_eq!(d.set_changes[1].set.name().as_str(), "ep-a");
        assert_eq!(d.set_changes[1].delta.counts(), (1, 1));
        match &d.set_changes[0].delta {
            ElemDelta::Interval { added, was_empty, .. } => assert!(added.len() == 1 && *was_empty),
            other @ ElemDelta::Plain { .. } => panic!("expected interval delta, got {other:?}"),
        }
        // A changed verdict is a delete and an add of the same key.
        assert_eq!(d.map_changes[0].removed, vec![&key]);
        assert_eq!(d.map_changes[0].added.len(), 1);
    }

    #[test]
    fn definition_changes_force_a_full_replace() {
        let a = base();
        let mut b = base();
        let mut fwd = b.remove_chain("forward").expect("chain");
        let mut hook = BaseChain::filter(Hook::Forward);
        hook.policy = Policy::Drop;
        let mut replaced = Chain::base(name("forward"), hook);
        for r in fwd.rules_mut().drain(..) {
            replaced.push(r);
        }
        b.add_chain(replaced).expect("chain");
        assert!(delta(&a, &b).is_none());

        let mut c = base();
        c.remove_set("ep-a");
        c.add_set(Set::new(name("ep-a"), KeyType::Ipv6Addr)).expect("set");
        assert!(delta(&a, &c).is_none());

        let d = Ruleset::new(name("other_table"));
        assert!(delta(&a, &d).is_none());
    }
}
