//! The chains of the table: base chains and dispatch, one pair per local endpoint, one per
//! active profile or policy and direction, and outgoing NAT.
//!
//! How verdicts flow (no mark bits needed): each direction is decided in its own base chain.
//! `forward` dispatches on the input interface to the sender's `fw-` chain, `forward-to` on
//! the output interface to the receiver's `tw-` chain. A chain that allows ends with
//! `accept`, which ends only that base chain, so a packet between two local workloads is
//! accepted by the sender's egress policy *and then* judged by the receiver's ingress policy;
//! a drop anywhere is final. Interfaces `cali*` missing from a map fall through to a drop.

use std::collections::BTreeSet;

use datastore::model::WorkloadEndpointSpec;
use ipnet::IpNet;

use super::active::{LocalEndpoint, PolicyView};
use super::index::Scope;
use super::names;
use super::rules::{host_nets, Direction};
use super::Planner;
use crate::host::EndpointToHostAction;
use crate::nft::ir::{
    Action, BaseChain, Chain, ChainKind, Comment, CtStates, Dir, Elem, Family, Hook, IrError,
    KeyType, MacAddr, MapVerdict, Match, Name, Policy, Rule, Ruleset, Set, VerdictMap, VmapKey,
};

/// ICMPv6 that must flow between a workload and its host whatever the policy: multicast
/// listener query/report/done (and MLDv2 report), router solicitation and neighbour
/// solicitation and advertisement, without which IPv6 never comes up on the veth (Felix's
/// `ICMPv6Filter` list, plus MLDv2 reports, which hosts send on every new interface).
const ICMPV6_LINK_TYPES: [u8; 7] = [130, 131, 132, 133, 135, 136, 143];

/// Priority of the `forward-to` base chain: after `forward`, which is at `filter` (0). The
/// order does not change verdicts (each base chain must accept on its own), it only makes
/// listings and traces read sender first.
const FORWARD_TO_PRIORITY: i32 = 1;

fn comment(text: &str) -> Result<Comment, IrError> {
    Comment::new(text)
}

fn ct_prelude() -> [Rule; 2] {
    [
        Rule::new()
            .with(Match::CtState(CtStates::ESTABLISHED | CtStates::RELATED))
            .then(Action::Accept),
        Rule::new().with(Match::CtState(CtStates::INVALID)).then(Action::Drop),
    ]
}

fn endpoint_chain_prefix(direction: Direction, profiles_part: bool) -> &'static str {
    match (direction, profiles_part) {
        (Direction::Egress, false) => "fw-",
        (Direction::Ingress, false) => "tw-",
        (Direction::Egress, true) => "fwp-",
        (Direction::Ingress, true) => "twp-",
    }
}

/// Names of the active policy and profile chains.
#[derive(Debug, Default)]
pub struct ChainNames {
    /// Per policy index, per direction (ingress, egress): chain name and whether it passes.
    pub policies: Vec<[Option<(Name, bool)>; 2]>,
}

fn dir_slot(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl<'m> Planner<'m> {
    /// `pi-`/`po-` chains of the policies some local endpoint uses.
    pub(super) fn policy_chains(
        &mut self,
        rs: &mut Ruleset,
        policies: &[PolicyView<'m>],
        locals: &[LocalEndpoint],
    ) -> Result<ChainNames, IrError> {
        let mut used = vec![[false; 2]; policies.len()];
        for local in locals {
            for direction in Direction::BOTH {
                for pi in local.policies(direction) {
                    used[*pi][dir_slot(direction)] = true;
                }
            }
        }
        let mut taken: BTreeSet<Name> = BTreeSet::new();
        let mut names = ChainNames { policies: vec![[None, None]; policies.len()] };
        for (pi, policy) in policies.iter().enumerate() {
            for direction in Direction::BOTH {
                if !used[pi][dir_slot(direction)] {
                    continue;
                }
                let prefix = if direction == Direction::Ingress { "pi-" } else { "po-" };
                let mut name = names::limited(prefix, &policy.chain_body)?;
                if taken.contains(&name) {
                    // A global policy `a.b` and policy `b` of namespace `a`: hash the id.
                    name = names::limited(prefix, &format!("{}#", policy.id))?;
                }
                taken.insert(name.clone());
                let mut chain = Chain::regular(name.clone());
                let mut passes = false;
                for (i, rule) in policy.rules(direction).iter().enumerate() {
                    let place = format!("policy {} {}[{i}]", policy.id, direction.as_str());
                    let t = self.translate(rule, direction, policy.scope(), &place);
                    passes |= t.passes;
                    for r in t.rules {
                        chain.push(r);
                    }
                }
                rs.add_chain(chain)?;
                names.policies[pi][dir_slot(direction)] = Some((name, passes));
            }
        }
        Ok(names)
    }

    /// `pri-`/`pro-` chains of the profiles local endpoints name; a missing profile's chains
    /// drop everything (Felix's dummy drop rules), since an endpoint naming it is not ready.
    pub(super) fn profile_chains(
        &mut self,
        rs: &mut Ruleset,
        profiles: &BTreeSet<&'m str>,
    ) -> Result<(), IrError> {
        for name in profiles {
            let profile = self.model.profile(name);
            for direction in Direction::BOTH {
                let mut chain = Chain::regular(profile_chain(name, direction)?);
                match profile {
                    None => chain.push(
                        Rule::action(Action::Drop)
                            .counter()
                            .comment(comment(&format!("profile {name} not found"))?),
                    ),
                    Some(p) => {
                        let rules = match direction {
                            Direction::Ingress => &p.spec.ingress,
                            Direction::Egress => &p.spec.egress,
                        };
                        for (i, rule) in rules.iter().enumerate() {
                            let place = format!("profile {name} {}[{i}]", direction.as_str());
                            let t = self.translate(rule, direction, Scope::Cluster, &place);
                            for mut r in t.rules {
                                if t.passes {
                                    // In a profile, Pass ends this profile and the next one
                                    // decides (Felix returns from the profile chain).
                                    r.action = Some(Action::Return);
                                }
                                chain.push(r);
                            }
                        }
                    }
                }
                rs.add_chain(chain)?;
            }
        }
        Ok(())
    }

    /// `fw-`/`tw-` (and, when a policy passes, `fwp-`/`twp-`) chains of every local endpoint,
    /// with their dispatch and pass map entries.
    pub(super) fn endpoint_chains(
        &mut self,
        rs: &mut Ruleset,
        locals: &[LocalEndpoint],
        policy_names: &ChainNames,
    ) -> Result<(), IrError> {
        let mut from_wl = VerdictMap::new(names::fixed(names::FROM_WL_MAP)?, KeyType::Ifname);
        let mut to_wl = VerdictMap::new(names::fixed(names::TO_WL_MAP)?, KeyType::Ifname);
        let mut pass_maps = [
            VerdictMap::new(names::fixed(Direction::Ingress.pass_map())?, KeyType::Ifname),
            VerdictMap::new(names::fixed(Direction::Egress.pass_map())?, KeyType::Ifname),
        ];
        let mut pass_map_needed = [false; 2];
        for names in &policy_names.policies {
            for (slot, entry) in names.iter().enumerate() {
                pass_map_needed[slot] |= entry.as_ref().is_some_and(|(_, passes)| *passes);
            }
        }
        for local in locals {
            for direction in Direction::BOTH {
                let chain_name =
                    names::limited(endpoint_chain_prefix(direction, false), local.iface.as_str())?;
                let mut chain = Chain::regular(chain_name.clone());
                for r in ct_prelude() {
                    chain.push(r);
                }
                if direction == Direction::Egress {
                    for r in self.anti_spoofing(local)? {
                        chain.push(r);
                    }
                }
                let policies = local.policies(direction);
                let profiles = self.profile_rules(local, direction)?;
                if policies.is_empty() {
                    for r in profiles {
                        chain.push(r);
                    }
                } else {
                    let mut passes = false;
                    for pi in policies {
                        if let Some((name, p)) = &policy_names.policies[*pi][dir_slot(direction)] {
                            chain.push(Rule::action(Action::Jump(name.clone())));
                            passes |= *p;
                        }
                    }
                    chain.push(
                        Rule::action(Action::Drop)
                            .counter()
                            .comment(comment("no policy accepted the packet")?),
                    );
                    if passes {
                        let pname = names::limited(
                            endpoint_chain_prefix(direction, true),
                            local.iface.as_str(),
                        )?;
                        let mut pchain = Chain::regular(pname.clone());
                        for r in profiles {
                            pchain.push(r);
                        }
                        rs.add_chain(pchain)?;
                        pass_maps[dir_slot(direction)]
                            .insert(Elem::Ifname(local.iface.clone()), MapVerdict::Goto(pname))?;
                    }
                }
                rs.add_chain(chain)?;
                let map = if direction == Direction::Egress { &mut from_wl } else { &mut to_wl };
                map.insert(Elem::Ifname(local.iface.clone()), MapVerdict::Goto(chain_name))?;
            }
        }
        rs.add_map(from_wl)?;
        rs.add_map(to_wl)?;
        for (map, needed) in pass_maps.into_iter().zip(pass_map_needed) {
            if needed {
                rs.add_map(map)?;
            }
        }
        Ok(())
    }

    /// Jumps to the endpoint's profiles in order, then the final drop.
    fn profile_rules(
        &self,
        local: &LocalEndpoint,
        direction: Direction,
    ) -> Result<Vec<Rule>, IrError> {
        let wep = self.index.endpoints[local.ep].wep;
        let mut out = Vec::with_capacity(wep.spec.profiles.len() + 1);
        for profile in &wep.spec.profiles {
            out.push(Rule::action(Action::Jump(profile_chain(profile, direction)?)));
        }
        out.push(
            Rule::action(Action::Drop)
                .counter()
                .comment(comment("no profile accepted the packet")?),
        );
        Ok(out)
    }

    /// Drops what a workload sends with a source address or MAC that is not its own.
    fn anti_spoofing(&mut self, local: &LocalEndpoint) -> Result<Vec<Rule>, IrError> {
        let ep = &self.index.endpoints[local.ep];
        let (spec, key): (&'m WorkloadEndpointSpec, &'m str) = (&ep.wep.spec, ep.key);
        let mut out = Vec::new();
        if let Some(mac) = spec.mac.as_deref() {
            match mac.parse::<MacAddr>() {
                Ok(mac) => out.push(
                    Rule::new().with(Match::EtherSaddr { neg: true, mac }).then(Action::Drop),
                ),
                Err(e) => self.warn(key, format!("spec.mac: {e}; source MAC not checked")),
            }
        }
        let mut sources = host_nets(spec.ip_networks.iter().map(IpNet::addr));
        for prefix in &spec.allow_spoofed_source_prefixes {
            match datastore::model::parse_cidr_or_ip(prefix) {
                Some((_, net)) => sources.push(net),
                None => {
                    self.warn(key, format!("allowSpoofedSourcePrefixes: {prefix:?} is not a CIDR"));
                }
            }
        }
        for family in [Family::V4, Family::V6] {
            let mine: Vec<IpNet> =
                sources.iter().filter(|n| Family::of(n) == family).copied().collect();
            let rule = match self.nets_match(&mine, Dir::Src, true)? {
                Some(m) => Rule::new().with(m).then(Action::Drop),
                // No address of this family: anything the workload sends in it is spoofed.
                None => Rule::new().with(Match::NfProto(family)).then(Action::Drop),
            };
            out.push(rule);
        }
        Ok(out)
    }

    /// Base chains: dispatch for forwarded traffic, workload→host and host→workload.
    pub(super) fn base_chains(&self, rs: &mut Ruleset) -> Result<(), IrError> {
        let prefix = self.cfg.iface_prefix.clone();
        let from_wl = names::fixed(names::FROM_WL_MAP)?;
        let to_wl = names::fixed(names::TO_WL_MAP)?;
        let unknown = || -> Result<Rule, IrError> {
            Ok(Rule::action(Action::Drop).counter().comment(comment("unknown interface")?))
        };
        let from_dispatch =
            Rule::action(Action::Vmap { key: VmapKey::Iifname, map: from_wl.clone() });
        let to_dispatch = Rule::action(Action::Vmap { key: VmapKey::Oifname, map: to_wl });

        rs.add_chain(
            Chain::base(names::fixed(names::FORWARD)?, BaseChain::filter(Hook::Forward))
                .rule(from_dispatch.clone())
                .rule(unknown()?.with(Match::iifname_prefix(prefix.clone()))),
        )?;
        let forward_to = BaseChain {
            kind: ChainKind::Filter,
            hook: Hook::Forward,
            priority: FORWARD_TO_PRIORITY,
            policy: Policy::Accept,
        };
        rs.add_chain(
            Chain::base(names::fixed(names::FORWARD_TO)?, forward_to)
                .rule(to_dispatch.clone())
                .rule(unknown()?.with(Match::oifname_prefix(prefix.clone()))),
        )?;

        let wl_to_host = names::fixed(names::WL_TO_HOST)?;
        rs.add_chain(
            Chain::base(names::fixed(names::INPUT)?, BaseChain::filter(Hook::Input)).rule(
                Rule::new()
                    .with(Match::iifname_prefix(prefix.clone()))
                    .then(Action::Goto(wl_to_host.clone())),
            ),
        )?;
        let mut chain = Chain::regular(wl_to_host);
        chain.push(ct_prelude()[0].clone());
        for ty in ICMPV6_LINK_TYPES {
            chain.push(
                Rule::new()
                    .with(Match::IcmpType { family: Family::V6, neg: false, value: ty })
                    .then(Action::Accept),
            );
        }
        match self.host.endpoint_to_host_action {
            EndpointToHostAction::Drop => {
                chain.push(
                    Rule::action(Action::Drop)
                        .counter()
                        .comment(comment("DefaultEndpointToHostAction Drop")?),
                );
            }
            // In nftables both hand the packet on: an accept in this table never overrides
            // another table's drop, which is what Felix's RETURN (to the host's own INPUT
            // rules) is for.
            action @ (EndpointToHostAction::Accept | EndpointToHostAction::Return) => {
                let note = format!("DefaultEndpointToHostAction {action}: egress policy decides");
                chain.push(from_dispatch.comment(comment(&note)?));
                chain.push(unknown()?);
            }
        }
        rs.add_chain(chain)?;

        let host_to_wl = names::fixed("host-to-wl")?;
        rs.add_chain(
            Chain::base(names::fixed(names::OUTPUT)?, BaseChain::filter(Hook::Output)).rule(
                Rule::new()
                    .with(Match::oifname_prefix(prefix))
                    .then(Action::Goto(host_to_wl.clone())),
            ),
        )?;
        let mut chain = Chain::regular(host_to_wl);
        for ty in ICMPV6_LINK_TYPES {
            chain.push(
                Rule::new()
                    .with(Match::IcmpType { family: Family::V6, neg: false, value: ty })
                    .then(Action::Accept),
            );
        }
        chain.push(to_dispatch);
        chain.push(unknown()?);
        rs.add_chain(chain)
    }

    /// Masquerade for traffic from `natOutgoing` pools to anywhere outside every pool.
    pub(super) fn nat_chain(&self, rs: &mut Ruleset) -> Result<(), IrError> {
        let mut chain =
            Chain::base(names::fixed(names::POSTROUTING)?, BaseChain::nat(Hook::Postrouting));
        let families = [
            (Family::V4, KeyType::Ipv4Addr, names::NAT_POOLS_V4, names::ALL_POOLS_V4),
            (Family::V6, KeyType::Ipv6Addr, names::NAT_POOLS_V6, names::ALL_POOLS_V6),
        ];
        for (family, key, nat_name, all_name) in families {
            let pools: Vec<(IpNet, bool)> = self
                .model
                .pools()
                .values()
                .filter(|p| Family::of(&p.spec.cidr) == family)
                .map(|p| (p.spec.cidr, p.spec.nat_outgoing))
                .collect();
            if !pools.iter().any(|(_, nat)| *nat) {
                continue;
            }
            let mut nat = Set::new_interval(names::fixed(nat_name)?, key)?;
            let mut all = Set::new_interval(names::fixed(all_name)?, key)?;
            for (cidr, nat_outgoing) in pools {
                if nat_outgoing {
                    nat.insert(Elem::net(cidr))?;
                }
                all.insert(Elem::net(cidr))?;
            }
            chain.push(
                Rule::new()
                    .with(Match::addr_in(family, Dir::Src, nat.name().clone()))
                    .with(Match::Addr {
                        family,
                        dir: Dir::Dst,
                        neg: true,
                        target: crate::nft::ir::AddrTarget::Set(all.name().clone()),
                    })
                    .then(Action::Masquerade { fully_random: false }),
            );
            rs.add_set(nat)?;
            rs.add_set(all)?;
        }
        if !chain.rules().is_empty() {
            rs.add_chain(chain)?;
        }
        Ok(())
    }
}

/// `pri-<profile>` or `pro-<profile>`.
pub fn profile_chain(profile: &str, direction: Direction) -> Result<Name, IrError> {
    let prefix = if direction == Direction::Ingress { "pri-" } else { "pro-" };
    names::limited(prefix, profile)
}
