//! One Calico rule (of a profile or policy) to the nftables rules that implement it.
//!
//! A rule's criteria all hold at once, so they become the matches of one nft rule; a rule
//! becomes several only where one nft rule cannot say it: selectors name one set per IP
//! family (a rule not pinned to a family becomes one rule per family), and `notICMP` with a
//! type and a code means "not both", which is `type != t` or `type t, code != c`.
//!
//! Verdicts: Allow accepts (ending this base chain; the other direction's chain still runs
//! in its own base chain), Deny drops, Log logs and goes on, Pass looks the endpoint up in
//! the pass map, which continues with that endpoint's profiles.
//!
//! What tabby cannot evaluate (HTTP matches, service accounts, namespace selectors, named
//! ports) is never guessed at: the rule, or the named part of a port list, is left out with
//! a warning. Leaving out an Allow fails closed.

use std::net::IpAddr;
use std::rc::Rc;

use datastore::model::Rule as CalicoRule;
use datastore::model::{
    parse_cidr_or_ip, Action as CalicoAction, EntityRule, IcmpFields, Port, Protocol,
};
use datastore::selector::Selector;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::index::Scope;
use super::names;
use super::Planner;
use crate::nft::ir::{
    Action, AddrTarget, Dir, Elem, Family, IrError, KeyType, Match, Name, PortRange, Ports, Protos,
    Rule, Set, VmapKey,
};

/// Which way a rule list looks at traffic, seen from the endpoint it protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// To the workload: `tw-`, `pi-`, `pri-` chains, keyed by output interface.
    Ingress,
    /// From the workload: `fw-`, `po-`, `pro-` chains, keyed by input interface.
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The interface that names the endpoint in this direction.
    pub fn vmap_key(self) -> VmapKey {
        match self {
            Direction::Ingress => VmapKey::Oifname,
            Direction::Egress => VmapKey::Iifname,
        }
    }

    pub fn pass_map(self) -> &'static str {
        match self {
            Direction::Ingress => names::TO_WL_PASS_MAP,
            Direction::Egress => names::FROM_WL_PASS_MAP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// A rule selector, parsed once per plan, with its canonical text (set names hash it).
#[derive(Debug)]
pub struct ParsedSelector {
    pub selector: Selector,
    pub text: String,
    /// Unique within one plan: a cheap cache key.
    pub id: usize,
}

/// The nft rules of one Calico rule.
#[derive(Debug, Default)]
pub struct Translated {
    pub rules: Vec<Rule>,
    /// Whether a rule passes (needs the pass map).
    pub passes: bool,
}

/// A family-independent part of a rule, fixed before families are split.
struct Common {
    l4: Vec<Match>,
    ports: Vec<Match>,
    icmp_variants: Vec<Vec<Match>>,
}

impl<'m> Planner<'m> {
    /// Translates `rule` of a chain in `direction`; `place` names it in warnings
    /// (`profile web ingress[0]`), `scope` is where its selectors look.
    pub(super) fn translate(
        &mut self,
        rule: &CalicoRule,
        direction: Direction,
        scope: Scope<'m>,
        place: &str,
    ) -> Translated {
        match self.try_translate(rule, direction, scope, place) {
            Ok(Some(t)) => t,
            Ok(None) => Translated::default(),
            Err(e) => {
                self.warn(place, format!("rule left out: {e}"));
                Translated::default()
            }
        }
    }

    fn try_translate(
        &mut self,
        rule: &CalicoRule,
        direction: Direction,
        scope: Scope<'m>,
        place: &str,
    ) -> Result<Option<Translated>, IrError> {
        if let Some(why) = unsupported(rule) {
            self.warn(place, format!("rule left out: {why} cannot be enforced by tabby"));
            return Ok(None);
        }
        let Some(common) = self.common_matches(rule, place)? else { return Ok(None) };
        let families: Vec<Option<Family>> = match fixed_family(rule) {
            Some(f) => vec![Some(f)],
            None if has_selector(rule) => vec![Some(Family::V4), Some(Family::V6)],
            None => vec![None],
        };
        let mut out = Translated::default();
        for family in families {
            let Some(mut addr) = self.addr_matches(rule, family, scope, place)? else { continue };
            let mut base = Vec::new();
            if let Some(f) = family {
                // A rule of one family must say so, unless an address or ICMP protocol match
                // does already (a family-split rule whose negated set is empty has none).
                let implied =
                    !addr.is_empty() || rule.protocol.is_some_and(|p| p.is_icmp() || p.is_icmpv6());
                if !implied {
                    base.push(Match::NfProto(f));
                }
            }
            base.extend(common.l4.iter().cloned());
            base.append(&mut addr);
            base.extend(common.ports.iter().cloned());
            for icmp in &common.icmp_variants {
                let mut matches = base.clone();
                matches.extend(icmp.iter().cloned());
                let mut nft = Rule::new();
                nft.matches = matches;
                match rule.action {
                    CalicoAction::Allow => nft.action = Some(Action::Accept),
                    CalicoAction::Deny => nft.action = Some(Action::Drop),
                    CalicoAction::Log => nft.log = Some(self.cfg.log_prefix.clone()),
                    CalicoAction::Pass => {
                        nft.action = Some(Action::Vmap {
                            key: direction.vmap_key(),
                            map: names::fixed(direction.pass_map())?,
                        });
                        out.passes = true;
                    }
                }
                out.rules.push(nft);
            }
        }
        Ok(Some(out))
    }

    /// Protocol, port and ICMP matches. `None`: the rule can match nothing.
    fn common_matches(
        &mut self,
        rule: &CalicoRule,
        place: &str,
    ) -> Result<Option<Common>, IrError> {
        let mut l4 = Vec::new();
        if let Some(p) = rule.protocol {
            l4.push(Match::L4Proto { neg: false, protos: Protos::one(p.number()) });
        }
        if let Some(p) = rule.not_protocol {
            l4.push(Match::L4Proto { neg: true, protos: Protos::one(p.number()) });
        }
        let mut ports = Vec::new();
        for (dir, entity) in [(Dir::Src, &rule.source), (Dir::Dst, &rule.destination)] {
            let (numeric, named) = split_ports(&entity.ports)?;
            if named > 0 {
                self.warn(place, "named ports are not supported; those ports are left out".into());
                if numeric.is_empty() {
                    return Ok(None);
                }
            }
            if !numeric.is_empty() {
                ports.push(Match::Port { dir, neg: false, ports: Ports::new(numeric)? });
            }
            let (not_numeric, not_named) = split_ports(&entity.not_ports)?;
            if not_named > 0 {
                self.warn(place, "named ports are not supported; those ports are left out".into());
            }
            if !not_numeric.is_empty() {
                ports.push(Match::Port { dir, neg: true, ports: Ports::new(not_numeric)? });
            }
        }
        let icmp_family = match rule.protocol.map(Protocol::number) {
            Some(58) => Family::V6,
            _ => Family::V4,
        };
        let mut positive = Vec::new();
        if let Some(icmp) = &rule.icmp {
            if let Some(t) = icmp.icmp_type {
                positive.push(Match::IcmpType { family: icmp_family, neg: false, value: t });
            }
            if let Some(c) = icmp.code {
                positive.push(Match::IcmpCode { family: icmp_family, neg: false, value: c });
            }
        }
        let icmp_variants = not_icmp_variants(rule.not_icmp.as_ref(), icmp_family)
            .into_iter()
            .map(|mut v| {
                let mut all = positive.clone();
                all.append(&mut v);
                all
            })
            .collect();
        Ok(Some(Common { l4, ports, icmp_variants }))
    }

    /// Source then destination address matches for `family` (`None`: the rule is not pinned
    /// to a family and has no selector). `None` back: in this family the rule matches nothing
    /// (its selector picks no address of it).
    fn addr_matches(
        &mut self,
        rule: &CalicoRule,
        family: Option<Family>,
        scope: Scope<'m>,
        place: &str,
    ) -> Result<Option<Vec<Match>>, IrError> {
        let mut out = Vec::new();
        for (dir, entity) in [(Dir::Src, &rule.source), (Dir::Dst, &rule.destination)] {
            if !self.entity_matches(entity, dir, family, scope, place, &mut out)? {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    /// Appends the matches of one side; false when the side can match nothing.
    fn entity_matches(
        &mut self,
        entity: &EntityRule,
        dir: Dir,
        family: Option<Family>,
        scope: Scope<'m>,
        place: &str,
        out: &mut Vec<Match>,
    ) -> Result<bool, IrError> {
        for (nets, neg) in [(&entity.nets, false), (&entity.not_nets, true)] {
            let parsed = parse_nets(nets, place)?;
            if let Some(m) = self.nets_match(&parsed, dir, neg)? {
                out.push(m);
            }
        }
        let Some(family) = family else { return Ok(true) };
        for (selector, neg) in [(&entity.selector, false), (&entity.not_selector, true)] {
            let Some(text) = selector.as_deref() else { continue };
            let Some(selector) = self.parse_selector(text, place) else {
                // Unparseable (the model should have refused it): a positive selector picks
                // nothing, a negative one excludes nothing.
                if neg {
                    continue;
                }
                return Ok(false);
            };
            match self.selector_set(scope, &selector, family)? {
                Some(set) => {
                    out.push(Match::Addr { family, dir, neg, target: AddrTarget::Set(set) });
                }
                None if neg => {}
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// One network as a direct match, several as a named interval set.
    pub(super) fn nets_match(
        &mut self,
        nets: &[IpNet],
        dir: Dir,
        neg: bool,
    ) -> Result<Option<Match>, IrError> {
        match nets {
            [] => Ok(None),
            [one] => Ok(Some(Match::Addr {
                family: Family::of(one),
                dir,
                neg,
                target: AddrTarget::Net(one.trunc()),
            })),
            [first, ..] => {
                let family = Family::of(first);
                let set = self.nets_set(family, nets)?;
                Ok(Some(Match::Addr { family, dir, neg, target: AddrTarget::Set(set) }))
            }
        }
    }

    /// The named interval set holding `nets` (all of `family`), shared by every rule that
    /// lists the same networks.
    pub(super) fn nets_set(&mut self, family: Family, nets: &[IpNet]) -> Result<Name, IrError> {
        let mut sorted: Vec<IpNet> = nets.iter().map(IpNet::trunc).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let text: Vec<String> = sorted.iter().map(ToString::to_string).collect();
        let (prefix, key) = match family {
            Family::V4 => ("n4-", KeyType::Ipv4Addr),
            Family::V6 => ("n6-", KeyType::Ipv6Addr),
        };
        let content = text.join(",");
        self.named_set(prefix, &content, |name| {
            let mut set = Set::new_interval(name, key)?;
            for net in &sorted {
                set.insert(Elem::net(*net))?;
            }
            Ok(set)
        })
    }

    /// The set of addresses of `family` that `selector` picks in `scope`, or `None` when it
    /// picks none.
    fn selector_set(
        &mut self,
        scope: Scope<'m>,
        parsed: &ParsedSelector,
        family: Family,
    ) -> Result<Option<Name>, IrError> {
        if let Some(known) = self.selector_sets.get(&(scope, parsed.id, family)) {
            return Ok(known.clone());
        }
        let name = self.new_selector_set(scope, parsed, family)?;
        self.selector_sets.insert((scope, parsed.id, family), name.clone());
        Ok(name)
    }

    fn new_selector_set(
        &mut self,
        scope: Scope<'m>,
        parsed: &ParsedSelector,
        family: Family,
    ) -> Result<Option<Name>, IrError> {
        let text = &parsed.text;
        let (prefix, key) = match family {
            Family::V4 => (SELECTOR_V4, KeyType::Ipv4Addr),
            Family::V6 => (SELECTOR_V6, KeyType::Ipv6Addr),
        };
        let content = format!("{}{text}", scope.tag());
        if self.knows_set(prefix, &content) {
            // `named_set` takes the set made earlier; this maker is not called.
            return self.named_set(prefix, &content, |name| Ok(Set::new(name, key))).map(Some);
        }
        let empty_key = format!("{prefix}{content}");
        if self.prior.empty.contains(&empty_key) {
            self.empty.insert(empty_key);
            return Ok(None);
        }
        let members = self.index.members(scope, &parsed.selector, text);
        let elems: Vec<Elem> = match family {
            Family::V4 => members.v4.iter().map(|a| Elem::addr(IpAddr::V4(*a))).collect(),
            Family::V6 => members.v6.iter().map(|a| Elem::addr(IpAddr::V6(*a))).collect(),
        };
        if elems.is_empty() {
            self.empty.insert(empty_key);
            return Ok(None);
        }
        self.named_set(prefix, &content, |name| Set::new(name, key).with(elems)).map(Some)
    }

    /// Parses (once per text) a selector from the model.
    fn parse_selector(&mut self, text: &str, place: &str) -> Option<Rc<ParsedSelector>> {
        if let Some(found) = self.selectors.get(text) {
            return found.clone();
        }
        let parsed = match Selector::parse(text) {
            Ok(selector) => Some(Rc::new(ParsedSelector {
                text: selector.to_string(),
                selector,
                id: self.selectors.len(),
            })),
            Err(e) => {
                self.warn(place, format!("selector {text:?}: {e}"));
                None
            }
        };
        self.selectors.insert(text.to_string(), parsed.clone());
        parsed
    }
}

/// Name prefixes (and content-key prefixes) of selector sets: their contents follow the
/// endpoints' labels, unlike network-list sets.
const SELECTOR_V4: &str = "s4-";
const SELECTOR_V6: &str = "s6-";

/// Whether a set content key (see [`super::Planner::named_set`]) is a selector set's.
pub(super) fn is_selector_set_key(key: &str) -> bool {
    key.starts_with(SELECTOR_V4) || key.starts_with(SELECTOR_V6)
}

/// Why a rule cannot be enforced, if it cannot.
fn unsupported(rule: &CalicoRule) -> Option<&'static str> {
    if rule.http.is_some() {
        return Some("an HTTP match");
    }
    for entity in [&rule.source, &rule.destination] {
        if entity
            .service_accounts
            .as_ref()
            .is_some_and(|sa| !sa.names.is_empty() || sa.selector.is_some())
        {
            return Some("a service account match");
        }
        if entity.namespace_selector.as_deref().is_some_and(|s| !s.trim().is_empty()) {
            return Some("a namespace selector");
        }
    }
    None
}

/// The family a rule is pinned to by `ipVersion`, its networks or its ICMP protocol.
fn fixed_family(rule: &CalicoRule) -> Option<Family> {
    if let Some(v) = rule.ip_version {
        return Some(if v == 6 { Family::V6 } else { Family::V4 });
    }
    let entities = [&rule.source, &rule.destination];
    let first_net = entities
        .iter()
        .flat_map(|e| e.nets.iter().chain(e.not_nets.iter()))
        .find_map(|n| parse_cidr_or_ip(n));
    if let Some((addr, _)) = first_net {
        return Some(if addr.is_ipv4() { Family::V4 } else { Family::V6 });
    }
    match rule.protocol.map(Protocol::number) {
        Some(1) => Some(Family::V4),
        Some(58) => Some(Family::V6),
        _ => None,
    }
}

fn has_selector(rule: &CalicoRule) -> bool {
    [&rule.source, &rule.destination]
        .iter()
        .any(|e| e.selector.is_some() || e.not_selector.is_some())
}

/// Numeric ports as ranges, and how many named ports there were.
fn split_ports(ports: &[Port]) -> Result<(Vec<PortRange>, usize), IrError> {
    let mut numeric = Vec::new();
    let mut named = 0;
    for port in ports {
        match port {
            Port::Single(p) => numeric.push(PortRange::single(*p)),
            Port::Range { first, last } => numeric.push(PortRange::new(*first, *last)?),
            Port::Named(_) => named += 1,
        }
    }
    Ok((numeric, named))
}

/// `notICMP` as alternatives: not (type t and code c) is `type != t`, or `type t, code != c`.
fn not_icmp_variants(not_icmp: Option<&IcmpFields>, family: Family) -> Vec<Vec<Match>> {
    let Some(icmp) = not_icmp else { return vec![Vec::new()] };
    let ty = |neg, value| Match::IcmpType { family, neg, value };
    let code = |neg, value| Match::IcmpCode { family, neg, value };
    match (icmp.icmp_type, icmp.code) {
        (Some(t), Some(c)) => vec![vec![ty(true, t)], vec![ty(false, t), code(true, c)]],
        (Some(t), None) => vec![vec![ty(true, t)]],
        (None, Some(c)) => vec![vec![code(true, c)]],
        (None, None) => vec![Vec::new()],
    }
}

/// Parses a rule's network list (validated by the model, so failures are only warned about
/// by the caller's error).
fn parse_nets(nets: &[String], place: &str) -> Result<Vec<IpNet>, IrError> {
    nets.iter()
        .map(|n| {
            parse_cidr_or_ip(n).map(|(_, net)| net).ok_or_else(|| IrError::Invalid {
                what: "network",
                value: format!("{n} ({place})"),
                reason: "is not a CIDR or IP address",
            })
        })
        .collect()
}

/// Host networks of one address each.
pub(super) fn host_nets(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpNet> {
    addrs
        .into_iter()
        .map(|a| match a {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::from(a)),
            IpAddr::V6(a) => IpNet::V6(Ipv6Net::from(a)),
        })
        .collect()
}
