//! Workload device routes (`<ip>/32 dev cali… scope link proto 112`): which this host's
//! endpoints need ([`plan_device_routes`], pure) and which missing ones the agent may put
//! back ([`repair_device_routes`], pure). The CNI plugin makes and removes them; the agent
//! only restores one someone deleted, as Felix does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use cni_plugin::dataplane::HOST_VETH_PREFIX;
use ipnet::IpNet;

use super::{KernelRoute, KernelRouteKind, PlanNote};
use crate::host::HostInfo;
use crate::model::ClusterModel;

/// The link kind of a workload's host end.
pub const VETH_KIND: &str = "veth";

/// A local workload's address routed out of its host veth.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceRoute {
    /// A host prefix (/32 or /128).
    pub dst: IpNet,
    /// The host end of the workload's veth (`cali…`).
    pub interface: String,
}

/// `ip route` style: `10.65.0.1/32 dev cali0123456789a`.
impl fmt::Display for DeviceRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.dst, self.interface)
    }
}

/// A network interface of the host's namespace, as far as device routes care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// The rtnetlink link kind (`veth`, `dummy`…); `None` for physical devices.
    pub kind: Option<String>,
}

/// A missing device route to add, out of interface `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRouteAdd {
    pub route: DeviceRoute,
    pub index: u32,
}

/// `add 10.65.0.1/32 dev cali0123456789a scope link`.
impl fmt::Display for DeviceRouteAdd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "add {} scope link", self.route)
    }
}

/// What [`repair_device_routes`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRepair {
    /// Missing routes whose interface is an up veth: put them back.
    pub adds: Vec<DeviceRouteAdd>,
    /// Wanted routes whose destination another route holds: left alone.
    pub conflicts: Vec<(DeviceRoute, KernelRoute)>,
}

/// The device routes this host's workload endpoints need: every address of every endpoint
/// of `host` out of its `interfaceName`, with a note for each one that cannot be planned (no
/// interface, an interface that is not a tabby host veth, an address two endpoints claim).
pub fn plan_device_routes(
    model: &ClusterModel,
    host: &HostInfo,
) -> (BTreeSet<DeviceRoute>, Vec<PlanNote>) {
    let mut notes = Vec::new();
    let mut claims: BTreeMap<IpNet, Vec<(&str, &str)>> = BTreeMap::new();
    for (key, wep) in model.local_endpoints(&host.nodename) {
        let spec = &wep.spec;
        let Some(interface) = spec.interface_name.as_deref() else {
            for net in &spec.ip_networks {
                notes.push(note(*net, format!("endpoint {key} has no interfaceName")));
            }
            continue;
        };
        // Only the CNI plugin's own veths: an endpoint naming `eth0` must not pull a
        // workload address onto the uplink.
        if !interface.starts_with(HOST_VETH_PREFIX) {
            for net in &spec.ip_networks {
                notes.push(note(
                    *net,
                    format!(
                        "endpoint {key}: interface {interface:?} is not a tabby host veth \
                         ({HOST_VETH_PREFIX}…)"
                    ),
                ));
            }
            continue;
        }
        for net in &spec.ip_networks {
            // The model only admits host prefixes; the address alone is what gets routed.
            let dst = IpNet::from(net.addr());
            claims.entry(dst).or_default().push((key.as_str(), interface));
        }
    }
    let mut routes = BTreeSet::new();
    for (dst, holders) in claims {
        let interfaces: BTreeSet<&str> = holders.iter().map(|(_, i)| *i).collect();
        if let [(_, interface)] = holders.as_slice() {
            routes.insert(DeviceRoute { dst, interface: (*interface).to_owned() });
        } else if interfaces.len() == 1 {
            // One endpoint listing an address twice (or two keys for one veth): one route.
            let interface = holders[0].1.to_owned();
            routes.insert(DeviceRoute { dst, interface });
        } else {
            let keys: Vec<&str> = holders.iter().map(|(k, _)| *k).collect();
            notes.push(note(
                dst,
                format!("claimed by more than one local endpoint: {}", keys.join(", ")),
            ));
        }
    }
    (routes, notes)
}

fn note(dst: IpNet, reason: String) -> PlanNote {
    PlanNote { dst, reason }
}

/// Whether some wanted device route has no route at all to its destination: only then does
/// the caller need the links for [`repair_device_routes`].
pub fn any_unrouted(desired: &BTreeSet<DeviceRoute>, observed: &[KernelRoute]) -> bool {
    let routed: BTreeSet<IpNet> = observed.iter().map(|r| r.dst).collect();
    desired.iter().any(|d| !routed.contains(&d.dst))
}

/// The device routes to put back, and the conflicts to report.
///
/// A wanted route is added only when nothing in the main table routes its destination and
/// its interface exists, is a veth and is up: the CNI plugin's DEL sets the host end down
/// before it removes the routes, and a down veth must never get its route back. Existing
/// routes are never touched: a device route out of the wanted interface (whatever its
/// protocol) is in step, and any other route to the destination is a conflict, left alone.
pub fn repair_device_routes(
    desired: &BTreeSet<DeviceRoute>,
    observed: &[KernelRoute],
    links: &[Link],
) -> DeviceRepair {
    let mut by_dst: BTreeMap<IpNet, Vec<&KernelRoute>> = BTreeMap::new();
    for route in observed {
        by_dst.entry(route.dst).or_default().push(route);
    }
    let links: BTreeMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut repair = DeviceRepair::default();
    for want in desired {
        let link = links.get(want.interface.as_str()).copied();
        if let Some(existing) = by_dst.get(&want.dst) {
            let in_step = existing.iter().any(|k| {
                k.kind == KernelRouteKind::Unicast
                    && k.gateway.is_none()
                    && link.is_some_and(|l| k.oif == Some(l.index))
            });
            if !in_step {
                repair.conflicts.push((want.clone(), (*existing[0]).clone()));
            }
            continue;
        }
        if let Some(link) = link.filter(|l| l.up && l.kind.as_deref() == Some(VETH_KIND)) {
            repair.adds.push(DeviceRouteAdd { route: want.clone(), index: link.index });
        }
    }
    repair
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn want(dst: &str, interface: &str) -> DeviceRoute {
        DeviceRoute { dst: dst.parse().unwrap(), interface: interface.into() }
    }

    fn link(name: &str, index: u32, up: bool, kind: Option<&str>) -> Link {
        Link { name: name.into(), index, up, kind: kind.map(Into::into) }
    }

    fn device_route(dst: &str, oif: u32, protocol: u8) -> KernelRoute {
        KernelRoute {
            dst: dst.parse().unwrap(),
            protocol,
            kind: KernelRouteKind::Unicast,
            gateway: None,
            oif: Some(oif),
            metric: 0,
            onlink: false,
        }
    }

    fn adds(repair: &DeviceRepair) -> Vec<String> {
        repair.adds.iter().map(|a| format!("{a} ({})", a.index)).collect()
    }

    #[test]
    fn only_missing_routes_of_up_veths_are_added() {
        let desired: BTreeSet<DeviceRoute> = [
            want("10.65.0.1/32", "caliup"),
            want("fd00::1/128", "caliup"),
            want("10.65.0.2/32", "calidown"),
            want("10.65.0.3/32", "caligone"),
            want("10.65.0.4/32", "calidummy"),
            want("10.65.0.5/32", "calihere"),
        ]
        .into();
        let links = [
            link("caliup", 5, true, Some("veth")),
            link("calidown", 6, false, Some("veth")),
            link("calidummy", 7, true, Some("dummy")),
            link("calihere", 8, true, Some("veth")),
        ];
        let observed = [device_route("10.65.0.5/32", 8, 112)];
        let repair = repair_device_routes(&desired, &observed, &links);
        assert_eq!(
            adds(&repair),
            [
                "add 10.65.0.1/32 dev caliup scope link (5)",
                "add fd00::1/128 dev caliup scope link (5)"
            ]
        );
        assert!(repair.conflicts.is_empty());
        assert!(any_unrouted(&desired, &observed));
    }

    #[test]
    fn a_route_elsewhere_is_a_conflict_and_kept() {
        let desired: BTreeSet<DeviceRoute> =
            [want("10.65.0.1/32", "caliup"), want("10.65.0.2/32", "caliup")].into();
        let links = [link("caliup", 5, true, Some("veth")), link("caliold", 9, true, Some("veth"))];
        // One on another veth; one on the right veth though not tabby's protocol (in step).
        let observed = [device_route("10.65.0.1/32", 9, 112), device_route("10.65.0.2/32", 5, 3)];
        let repair = repair_device_routes(&desired, &observed, &links);
        assert!(repair.adds.is_empty(), "{:?}", repair.adds);
        assert_eq!(repair.conflicts.len(), 1);
        assert_eq!(repair.conflicts[0].0.to_string(), "10.65.0.1/32 dev caliup");
        assert_eq!(repair.conflicts[0].1.oif, Some(9));
        assert!(!any_unrouted(&desired, &observed));
    }
}
