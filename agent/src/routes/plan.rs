//! The route planner: a pure function of the cluster model and this host to the routes the
//! host needs. Local blocks become blackholes, remote blocks `via` their node (or through
//! `tunl0` for IPIP pools), addresses a node borrowed from another node's block become /32
//! (/128) routes via the borrower. With BGP on, BIRD routes the remote blocks of pools
//! without IPIP, so those are left out (as Calico leaves IPIP routes to Felix). Each local
//! workload's own addresses go out of its host veth ([`super::device`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datastore::model::{AffinityState, AllocationBlock, EncapMode};
use ipnet::IpNet;

use super::device::plan_device_routes;
use super::{DesiredRoute, DeviceRoute, RouteTarget};
use crate::host::HostInfo;
use crate::model::ClusterModel;

/// The attribute key holding the node an allocation belongs to (Calico's `node`).
const NODE_ATTRIBUTE: &str = "node";

/// The planned routes, and why some wanted routes could not be planned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub routes: BTreeSet<DesiredRoute>,
    /// This host's workloads' device routes: the CNI plugin's, repaired by the agent.
    pub device_routes: BTreeSet<DeviceRoute>,
    /// Destinations left without a route, with the reason (logged by the caller).
    pub notes: Vec<PlanNote>,
}

/// A destination the planner could not route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlanNote {
    pub dst: IpNet,
    pub reason: String,
}

/// The routes this host needs; see [`plan_routes_explained`].
pub fn plan_routes(model: &ClusterModel, host: &HostInfo) -> BTreeSet<DesiredRoute> {
    plan_routes_explained(model, host).routes
}

/// The routes this host needs, with a note for each destination left unrouted.
///
/// - A block affine to this host: `blackhole <block>` (its unassigned addresses go nowhere;
///   each local workload has a more specific device route from the CNI plugin).
/// - A block affine to another node: `<block> via <node ip>`.
/// - An address held by node B inside a block affine to A (B borrowed it): `<ip>/32 via B`
///   everywhere but on B itself, including on A, where it beats A's blackhole.
/// - An address of a workload endpoint of this host: `<ip>/32 dev <interfaceName>`, in
///   [`RoutePlan::device_routes`] (see [`plan_device_routes`]).
///
/// A block's host is its `affinity` field (what allocation uses); a confirmed affinity record
/// whose block does not exist (yet) counts too. A node's address is its BGP address, else its
/// first listed address. Remote routes go direct only to nodes inside this host's subnet:
/// the kernel refuses a gateway that is not on a connected network. Blocks of an
/// `ipipMode: Always` pool go through `tunl0` to every node; of a `CrossSubnet` pool, to
/// nodes outside this host's subnet. With `host.bgp`, remote blocks of pools without IPIP
/// are BIRD's and not planned here (borrowed addresses still are: BIRD exports only whole
/// blocks).
pub fn plan_routes_explained(model: &ClusterModel, host: &HostInfo) -> RoutePlan {
    let mut planner = Planner { model, host, routes: BTreeMap::new(), notes: Vec::new() };
    for (cidr, owner) in block_owners(model) {
        match owner {
            Some(owner) if owner == host.nodename => {
                planner.insert(DesiredRoute::blackhole(cidr));
            }
            Some(owner) => planner.remote(cidr, owner, true),
            None => {}
        }
    }
    for block in model.blocks().values() {
        planner.borrowed(block);
    }
    let (device_routes, device_notes) = plan_device_routes(model, host);
    let mut notes = planner.notes;
    notes.extend(device_notes);
    notes.sort();
    notes.dedup();
    RoutePlan { routes: planner.routes.into_values().collect(), device_routes, notes }
}

/// Every block and the host it is affine to (`None`: unaffine), by CIDR.
pub fn block_owners(model: &ClusterModel) -> BTreeMap<IpNet, Option<&str>> {
    let mut owners: BTreeMap<IpNet, Option<&str>> =
        model.blocks().values().map(|b| (b.cidr, b.affine_host())).collect();
    for record in model.affinities().values() {
        let confirmed =
            record.affinity.state == AffinityState::Confirmed && !record.affinity.deleted;
        if confirmed {
            owners.entry(record.cidr).or_insert(Some(record.host.as_str()));
        }
    }
    owners
}

struct Planner<'a> {
    model: &'a ClusterModel,
    host: &'a HostInfo,
    /// One route per destination.
    routes: BTreeMap<IpNet, DesiredRoute>,
    notes: Vec<PlanNote>,
}

impl Planner<'_> {
    fn insert(&mut self, route: DesiredRoute) {
        self.routes.entry(route.dst).or_insert(route);
    }

    fn note(&mut self, dst: IpNet, reason: String) {
        self.notes.push(PlanNote { dst, reason });
    }

    /// Routes `dst` (a whole block when `block`) to node `node`.
    fn remote(&mut self, dst: IpNet, node: &str, block: bool) {
        let v4 = matches!(dst, IpNet::V4(_));
        let Some(gateway) = self.model.node_address(node, v4) else {
            let family = if v4 { "IPv4" } else { "IPv6" };
            self.note(dst, format!("node {node} has no known {family} address"));
            return;
        };
        if self.host.is_own_address(gateway) {
            self.note(dst, format!("node {node} claims this host's address {gateway}"));
            return;
        }
        let encap = self.encap_of(dst);
        if block && self.host.bgp && encap == EncapMode::Never {
            return;
        }
        match self.target(encap, node, gateway) {
            Ok(target) => self.insert(DesiredRoute { dst, target }),
            Err(reason) => self.note(dst, reason),
        }
    }

    /// The IPIP mode of the pool holding `dst` (`Never` outside every pool). IPIP is IPv4
    /// only, whatever a pool says.
    fn encap_of(&self, dst: IpNet) -> EncapMode {
        if !matches!(dst, IpNet::V4(_)) {
            return EncapMode::Never;
        }
        self.model
            .pools()
            .values()
            .find(|p| p.spec.cidr.contains(&dst))
            .map_or(EncapMode::Never, |p| p.spec.effective_ipip_mode())
    }

    /// How to reach `gateway` (node `node`) for a destination of a pool with `encap`.
    fn target(&self, encap: EncapMode, node: &str, gateway: IpAddr) -> Result<RouteTarget, String> {
        // A host prefix (/32) says nothing about the subnet: treat it as unknown.
        let subnet =
            self.host.subnet_for(gateway).filter(|net| net.prefix_len() < net.max_prefix_len());
        let same_subnet = subnet.is_none_or(|net| net.contains(&gateway));
        match encap {
            EncapMode::Always => Ok(RouteTarget::Tunnel(gateway)),
            EncapMode::CrossSubnet if !same_subnet => Ok(RouteTarget::Tunnel(gateway)),
            EncapMode::Never | EncapMode::CrossSubnet if same_subnet => {
                Ok(RouteTarget::Via(gateway))
            }
            EncapMode::Never | EncapMode::CrossSubnet => {
                let subnet = subnet.map_or_else(String::new, |s| s.trunc().to_string());
                Err(format!(
                    "node {node} ({gateway}) is outside this host's subnet {subnet}; \
                     direct routing needs the hosts on one subnet (use IPIP or BGP)"
                ))
            }
        }
    }

    /// Routes the addresses of `block` held by a node other than the block's host.
    fn borrowed(&mut self, block: &AllocationBlock) {
        let owner = block.affine_host();
        for (ordinal, slot) in block.allocations.iter().enumerate() {
            let Some(index) = slot else { continue };
            let Some(holder) = block
                .attributes
                .get(*index as usize)
                .and_then(|a| a.secondary.as_ref())
                .and_then(|attrs| attrs.get(NODE_ATTRIBUTE))
            else {
                continue;
            };
            if Some(holder.as_str()) == owner {
                continue;
            }
            // On the holder itself the CNI plugin's device route does the job.
            if *holder == self.host.nodename {
                continue;
            }
            if let Some(dst) = address_of(block.cidr, ordinal) {
                self.remote(dst, holder, false);
            }
        }
    }
}

/// The host prefix (/32 or /128) of ordinal `ordinal` of `cidr`.
fn address_of(cidr: IpNet, ordinal: usize) -> Option<IpNet> {
    match cidr {
        IpNet::V4(net) => {
            let base = u32::from(net.network());
            let addr = base.checked_add(u32::try_from(ordinal).ok()?)?;
            Some(IpNet::from(IpAddr::V4(Ipv4Addr::from(addr))))
        }
        IpNet::V6(net) => {
            let base = u128::from(net.network());
            let addr = base.checked_add(u128::try_from(ordinal).ok()?)?;
            Some(IpNet::from(IpAddr::V6(Ipv6Addr::from(addr))))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ordinals_map_to_host_prefixes() {
        assert_eq!(
            address_of("10.65.0.64/26".parse().unwrap(), 5),
            Some("10.65.0.69/32".parse().unwrap())
        );
        assert_eq!(
            address_of("fd00::40/122".parse().unwrap(), 1),
            Some("fd00::41/128".parse().unwrap())
        );
    }
}
