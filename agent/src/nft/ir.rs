//! Typed model (IR) of the nftables table the agent wants: base and regular chains, rules made
//! of typed matches and statements, named sets and verdict maps. Deterministic (chains, sets
//! and elements are kept sorted; rules keep their order) and comparable, so the applier can
//! diff two rulesets chain by chain.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use super::names::{Comment, IfName, IfPrefix, LogPrefix, MacAddr, Name};

/// Most matches one rule may hold: keeps every rule message far below the 64 KiB netlink
/// limit and catches planner bugs that would build absurd rules.
pub const MAX_MATCHES_PER_RULE: usize = 32;

/// Why a value or a ruleset is not acceptable. Never retryable: the input must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IrError {
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid { what: &'static str, value: String, reason: &'static str },
    #[error("{kind} {name:?} is defined twice")]
    Duplicate { kind: &'static str, name: String },
    #[error("{place}: {reason}")]
    Inconsistent { place: String, reason: String },
}

fn inconsistent(place: impl Into<String>, reason: impl Into<String>) -> IrError {
    IrError::Inconsistent { place: place.into(), reason: reason.into() }
}

pub use super::matches::{
    proto, AddrTarget, CtStates, Dir, Family, IfaceMatch, Match, PortRange, Ports, Protos,
};

/// Which interface name a verdict map is looked up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmapKey {
    Iifname,
    Oifname,
}

/// What a rule does when all its matches hold (after its counter and log statements).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Drop,
    Return,
    Continue,
    Jump(Name),
    Goto(Name),
    /// `iifname vmap @map`: the verdict stored for the interface name, if any.
    Vmap {
        key: VmapKey,
        map: Name,
    },
    Masquerade {
        fully_random: bool,
    },
}

/// One rule: matches, then optional counter and log, then an optional action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub counter: bool,
    pub log: Option<LogPrefix>,
    pub action: Option<Action>,
    pub comment: Option<Comment>,
}

impl Rule {
    pub fn new() -> Self {
        Self::default()
    }

    /// A rule with no match that just does `action`.
    pub fn action(action: Action) -> Self {
        Self::new().then(action)
    }

    #[must_use]
    pub fn with(mut self, m: Match) -> Self {
        self.matches.push(m);
        self
    }

    #[must_use]
    pub fn counter(mut self) -> Self {
        self.counter = true;
        self
    }

    #[must_use]
    pub fn log(mut self, prefix: LogPrefix) -> Self {
        self.log = Some(prefix);
        self
    }

    #[must_use]
    pub fn then(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    #[must_use]
    pub fn comment(mut self, comment: Comment) -> Self {
        self.comment = Some(comment);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainKind {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    Accept,
    Drop,
}

/// What makes a chain a base chain: netfilter hook, type, priority and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BaseChain {
    pub kind: ChainKind,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
}

impl BaseChain {
    /// `type filter hook <hook> priority filter; policy accept;`
    pub fn filter(hook: Hook) -> Self {
        Self { kind: ChainKind::Filter, hook, priority: 0, policy: Policy::Accept }
    }

    /// `type nat hook <hook> priority srcnat|dstnat; policy accept;`
    pub fn nat(hook: Hook) -> Self {
        let priority = match hook {
            Hook::Prerouting | Hook::Output => -100,
            Hook::Input | Hook::Forward | Hook::Postrouting => 100,
        };
        Self { kind: ChainKind::Nat, hook, priority, policy: Policy::Accept }
    }
}

/// A chain and its rules, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    name: Name,
    base: Option<BaseChain>,
    rules: Vec<Rule>,
}

impl Chain {
    pub fn regular(name: Name) -> Self {
        Self { name, base: None, rules: Vec::new() }
    }

    pub fn base(name: Name, base: BaseChain) -> Self {
        Self { name, base: Some(base), rules: Vec::new() }
    }

    #[must_use]
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    pub fn name(&self) -> &Name {
        &self.name
    }

    pub fn base_chain(&self) -> Option<&BaseChain> {
        self.base.as_ref()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rules_mut(&mut self) -> &mut Vec<Rule> {
        &mut self.rules
    }
}

pub use super::set::{Elem, KeyType, MapVerdict, Set, VerdictMap};

/// The whole desired table: its name, chains, named sets and verdict maps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ruleset {
    table: Name,
    chains: BTreeMap<Name, Chain>,
    sets: BTreeMap<Name, Set>,
    maps: BTreeMap<Name, VerdictMap>,
}

impl Ruleset {
    /// An empty `inet` table called `table` (the agent uses `tabby`).
    pub fn new(table: Name) -> Self {
        Self { table, chains: BTreeMap::new(), sets: BTreeMap::new(), maps: BTreeMap::new() }
    }

    pub fn table(&self) -> &Name {
        &self.table
    }

    pub fn add_chain(&mut self, chain: Chain) -> Result<(), IrError> {
        if self.chains.contains_key(chain.name.as_str()) {
            return Err(IrError::Duplicate { kind: "chain", name: chain.name.to_string() });
        }
        self.chains.insert(chain.name.clone(), chain);
        Ok(())
    }

    /// Sets and maps share one namespace in nftables.
    fn check_set_name_free(&self, name: &Name) -> Result<(), IrError> {
        if self.sets.contains_key(name.as_str()) || self.maps.contains_key(name.as_str()) {
            return Err(IrError::Duplicate { kind: "set or map", name: name.to_string() });
        }
        Ok(())
    }

    pub fn add_set(&mut self, set: Set) -> Result<(), IrError> {
        self.check_set_name_free(set.name())?;
        self.sets.insert(set.name().clone(), set);
        Ok(())
    }

    pub fn add_map(&mut self, map: VerdictMap) -> Result<(), IrError> {
        self.check_set_name_free(map.name())?;
        self.maps.insert(map.name().clone(), map);
        Ok(())
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.get(name)
    }

    pub fn chain_mut(&mut self, name: &str) -> Option<&mut Chain> {
        self.chains.get_mut(name)
    }

    pub fn remove_chain(&mut self, name: &str) -> Option<Chain> {
        self.chains.remove(name)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.get(name)
    }

    pub fn set_mut(&mut self, name: &str) -> Option<&mut Set> {
        self.sets.get_mut(name)
    }

    pub fn remove_set(&mut self, name: &str) -> Option<Set> {
        self.sets.remove(name)
    }

    pub fn map(&self, name: &str) -> Option<&VerdictMap> {
        self.maps.get(name)
    }

    pub fn map_mut(&mut self, name: &str) -> Option<&mut VerdictMap> {
        self.maps.get_mut(name)
    }

    pub fn remove_map(&mut self, name: &str) -> Option<VerdictMap> {
        self.maps.remove(name)
    }

    /// Chains in name order.
    pub fn chains(&self) -> impl ExactSizeIterator<Item = &Chain> {
        self.chains.values()
    }

    /// Sets in name order.
    pub fn sets(&self) -> impl ExactSizeIterator<Item = &Set> {
        self.sets.values()
    }

    /// Verdict maps in name order.
    pub fn maps(&self) -> impl ExactSizeIterator<Item = &VerdictMap> {
        self.maps.values()
    }

    /// Total number of rules in all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    /// Checks everything the kernel would otherwise reject halfway: every jump, goto, map
    /// and set named by a rule or map element exists and has the right type, no rule mixes
    /// IPv4 and IPv6 or contradicts its own protocol, and base chains are well formed.
    pub fn validate(&self) -> Result<(), IrError> {
        for chain in self.chains.values() {
            if let Some(base) = &chain.base {
                let nat_hook_ok = matches!(
                    base.hook,
                    Hook::Prerouting | Hook::Input | Hook::Output | Hook::Postrouting
                );
                if base.kind == ChainKind::Nat && !nat_hook_ok {
                    return Err(inconsistent(
                        format!("chain {}", chain.name),
                        "a nat chain cannot hook forward",
                    ));
                }
            }
            for (i, rule) in chain.rules.iter().enumerate() {
                let place = format!("chain {} rule {}", chain.name, i + 1);
                self.validate_rule(&place, rule)?;
            }
        }
        for map in self.maps.values() {
            for (elem, verdict) in map.elems() {
                if let MapVerdict::Jump(target) | MapVerdict::Goto(target) = verdict {
                    let place = format!("map {} element {elem:?}", map.name());
                    self.check_chain_target(&place, target)?;
                }
            }
        }
        Ok(())
    }

    fn check_chain_target(&self, place: &str, target: &Name) -> Result<(), IrError> {
        match self.chains.get(target.as_str()) {
            None => Err(inconsistent(place, format!("chain {target} does not exist"))),
            Some(c) if c.base.is_some() => {
                Err(inconsistent(place, format!("cannot jump to base chain {target}")))
            }
            Some(_) => Ok(()),
        }
    }

    fn validate_rule(&self, place: &str, rule: &Rule) -> Result<(), IrError> {
        if rule.matches.is_empty() && !rule.counter && rule.log.is_none() && rule.action.is_none() {
            return Err(inconsistent(place, "rule is empty"));
        }
        if rule.matches.len() > MAX_MATCHES_PER_RULE {
            return Err(inconsistent(place, "rule has more than 32 matches"));
        }
        let mut family: Option<Family> = None;
        let mut l4: Option<u8> = None;
        let mut need_family = |f: Family| -> Result<(), IrError> {
            match family.replace(f) {
                Some(old) if old != f => {
                    Err(inconsistent(place, "rule mixes IPv4 and IPv6 matches"))
                }
                _ => Ok(()),
            }
        };
        for m in &rule.matches {
            match m {
                Match::NfProto(f) => need_family(*f)?,
                Match::L4Proto { neg: false, protos } => {
                    if let Some(p) = protos.single() {
                        l4 = Some(p);
                    }
                }
                Match::Addr { family: f, target, .. } => {
                    need_family(*f)?;
                    self.check_addr_target(place, *f, target)?;
                }
                Match::IcmpType { family: f, .. } | Match::IcmpCode { family: f, .. } => {
                    let want = if *f == Family::V4 { proto::ICMP } else { proto::ICMPV6 };
                    match l4 {
                        Some(p) if p != want => {
                            return Err(inconsistent(
                                place,
                                "ICMP match after a different meta l4proto",
                            ));
                        }
                        // An explicit `meta l4proto icmp` satisfies the dependency alone.
                        Some(_) => {}
                        None => need_family(*f)?,
                    }
                    l4 = Some(want);
                }
                _ => {}
            }
        }
        match &rule.action {
            Some(Action::Jump(target) | Action::Goto(target)) => {
                self.check_chain_target(place, target)?;
            }
            Some(Action::Vmap { map, .. }) => match self.maps.get(map.as_str()) {
                None => return Err(inconsistent(place, format!("map {map} does not exist"))),
                Some(m) if m.key() != KeyType::Ifname => {
                    return Err(inconsistent(
                        place,
                        format!("map {map} is not keyed by interface name"),
                    ));
                }
                Some(_) => {}
            },
            _ => {}
        }
        Ok(())
    }

    fn check_addr_target(
        &self,
        place: &str,
        family: Family,
        target: &AddrTarget,
    ) -> Result<(), IrError> {
        match target {
            AddrTarget::Net(net) => {
                if Family::of(net) != family {
                    return Err(inconsistent(place, format!("{net} is not {family:?}")));
                }
                if *net != net.trunc() {
                    return Err(inconsistent(place, format!("{net} has host bits set")));
                }
            }
            AddrTarget::Set(name) => {
                let want = match family {
                    Family::V4 => KeyType::Ipv4Addr,
                    Family::V6 => KeyType::Ipv6Addr,
                };
                match self.sets.get(name.as_str()) {
                    None => {
                        return Err(inconsistent(place, format!("set {name} does not exist")));
                    }
                    Some(s) if s.key() != want => {
                        return Err(inconsistent(
                            place,
                            format!("set {name} holds {:?}, not {want:?}", s.key()),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// A host network for `ip`: `/32` or `/128`.
pub fn host_net(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::from(a)),
        IpAddr::V6(a) => IpNet::V6(Ipv6Net::from(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid name")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid net")
    }

    fn with_chain(rule: Rule) -> Ruleset {
        let mut rs = Ruleset::new(name("tabby"));
        rs.add_chain(Chain::base(name("forward"), BaseChain::filter(Hook::Forward)))
            .expect("chain");
        rs.add_chain(Chain::regular(name("c-1")).rule(rule)).expect("chain");
        rs.add_set(Set::new(name("s4-x"), KeyType::Ipv4Addr)).expect("set");
        rs.add_map(VerdictMap::new(name("m-ports"), KeyType::InetService)).expect("map");
        rs
    }

    fn reason(rs: &Ruleset) -> String {
        rs.validate().expect_err("must be rejected").to_string()
    }

    #[test]
    fn references_must_resolve_to_the_right_kind() {
        assert!(with_chain(Rule::action(Action::Jump(name("c-1")))).validate().is_ok());
        let msg = reason(&with_chain(Rule::action(Action::Jump(name("no-such")))));
        assert!(msg.contains("chain c-1 rule 1") && msg.contains("no-such"), "{msg}");
        assert!(reason(&with_chain(Rule::action(Action::Goto(name("forward"))))).contains("base"));
        let v6_in_v4_set = Rule::new()
            .with(Match::addr_in(Family::V6, Dir::Src, name("s4-x")))
            .then(Action::Accept);
        assert!(reason(&with_chain(v6_in_v4_set)).contains("s4-x"));
        let missing_set = Rule::new()
            .with(Match::addr_in(Family::V4, Dir::Src, name("nope_x")))
            .then(Action::Drop);
        assert!(reason(&with_chain(missing_set)).contains("does not exist"));
        let vmap = Rule::action(Action::Vmap { key: VmapKey::Iifname, map: name("m-ports") });
        assert!(reason(&with_chain(vmap)).contains("interface name"));
    }

    #[test]
    fn rules_must_be_self_consistent() {
        let mixed = Rule::new()
            .with(Match::saddr(net("10.0.0.0/8")))
            .with(Match::daddr(net("fd00::/8")))
            .then(Action::Accept);
        assert!(reason(&with_chain(mixed)).contains("mixes IPv4 and IPv6"));
        let icmp_after_tcp = Rule::new()
            .with(Match::l4proto(proto::TCP))
            .with(Match::IcmpType { family: Family::V4, neg: false, value: 8 })
            .then(Action::Accept);
        assert!(reason(&with_chain(icmp_after_tcp)).contains("ICMP"));
        assert!(reason(&with_chain(Rule::new())).contains("empty"));
        let mut big = Rule::new();
        for _ in 0..=MAX_MATCHES_PER_RULE {
            big = big.with(Match::l4proto(proto::TCP));
        }
        assert!(reason(&with_chain(big.then(Action::Accept))).contains("32"));
        let host_bits = Rule::new()
            .with(Match::Addr {
                family: Family::V4,
                dir: Dir::Src,
                neg: false,
                target: AddrTarget::Net(net("10.1.2.3/8")),
            })
            .then(Action::Accept);
        assert!(reason(&with_chain(host_bits)).contains("host bits"));
        // The helper constructor clears host bits instead.
        let cleared = Rule::new().with(Match::saddr(net("10.1.2.3/8"))).then(Action::Accept);
        assert!(with_chain(cleared).validate().is_ok());
    }

    #[test]
    fn names_are_unique_per_kind_and_sets_share_with_maps() {
        let mut rs = with_chain(Rule::action(Action::Accept));
        assert!(rs.add_chain(Chain::regular(name("c-1"))).is_err());
        assert!(rs.add_set(Set::new(name("m-ports"), KeyType::Ipv4Addr)).is_err());
        assert!(rs.add_map(VerdictMap::new(name("s4-x"), KeyType::Ifname)).is_err());
    }

    #[test]
    fn only_some_matches_negate() {
        assert!(Match::l4proto(proto::UDP).negated().is_ok());
        assert!(Match::CtState(CtStates::NEW).negated().is_err());
        assert!(Match::FibSaddrIifMissing.negated().is_err());
        let twice = Match::l4proto(proto::UDP).negated().and_then(Match::negated);
        assert_eq!(twice, Ok(Match::l4proto(proto::UDP)));
    }

    #[test]
    fn nat_chains_cannot_hook_forward() {
        let mut rs = Ruleset::new(name("tabby"));
        rs.add_chain(Chain::base(name("forward"), BaseChain::nat(Hook::Forward))).expect("chain");
        assert!(reason(&rs).contains("nat"));
    }
}
