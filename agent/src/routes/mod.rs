//! Routes to workloads: which the cluster needs on this host ([`plan_routes`], pure), what to
//! change in the kernel to get there ([`diff`] and [`repair_device_routes`], pure), and the
//! netlink side that reads and writes them ([`NetlinkRoutes`]).
//!
//! Ownership is by route protocol: tabby's routes carry protocol 112 and the agent never
//! changes or removes a route without it. Among those, the agent owns blackhole and gateway
//! routes. The `<ip>/32 dev cali… scope link` device routes, which carry the same protocol,
//! belong to the CNI plugin (it makes them at ADD and removes them at DEL): the agent never
//! deletes or rewrites one, but, as Felix does, it puts back a missing one for a workload
//! endpoint of this host whose veth is up ([`device`]), so a route deleted by hand does not
//! leave the workload unreachable. A down veth is one the CNI plugin is tearing down: its
//! route stays gone.
//!
//! IPIP routes go `via <node ip> dev tunl0 onlink`; [`tunnel`] brings `tunl0` up for them.

pub mod device;
mod diff;
mod kernel;
mod plan;
pub mod tunnel;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use device::{
    any_unrouted, plan_device_routes, repair_device_routes, DeviceRepair, DeviceRoute,
    DeviceRouteAdd, Link,
};
pub use diff::{conflicts, diff};
pub use kernel::{NetlinkRoutes, RouteError, RouteTable};
pub use plan::{block_owners, plan_routes, plan_routes_explained, PlanNote, RoutePlan};

/// tabby's route protocol number (`proto 112` in `ip route`), shared with the CNI plugin.
pub const ROUTE_PROTOCOL: u8 = cni_plugin::dataplane::ROUTE_PROTOCOL;

/// Where a desired route sends its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// Dropped: an address of a local block that no local workload holds.
    Blackhole,
    /// Forwarded to another host (a remote block, or an address borrowed by that host).
    Via(IpAddr),
    /// Encapsulated to another host: `via <node ip> dev tunl0 onlink` (IPIP pools).
    Tunnel(IpAddr),
}

/// The metric the kernel gives a route added without one: 0 for IPv4, 1024 for IPv6
/// (`IP6_RT_PRIO_USER`). The agent adds every route without one, so this is its slot.
pub fn default_metric(dst: &IpNet) -> u32 {
    match dst {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => 1024,
    }
}

/// A route the agent wants in the main table, with protocol 112 and the default metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DesiredRoute {
    pub dst: IpNet,
    pub target: RouteTarget,
}

impl DesiredRoute {
    pub fn blackhole(dst: IpNet) -> Self {
        DesiredRoute { dst, target: RouteTarget::Blackhole }
    }

    pub fn via(dst: IpNet, gateway: IpAddr) -> Self {
        DesiredRoute { dst, target: RouteTarget::Via(gateway) }
    }

    pub fn tunnel(dst: IpNet, node: IpAddr) -> Self {
        DesiredRoute { dst, target: RouteTarget::Tunnel(node) }
    }
}

/// `ip route` style: `blackhole 10.65.0.0/26`, `10.65.0.64/26 via 192.0.2.2`,
/// `10.65.0.128/26 via 198.51.100.2 dev tunl0 onlink`.
impl fmt::Display for DesiredRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            RouteTarget::Blackhole => write!(f, "blackhole {}", self.dst),
            RouteTarget::Via(gw) => write!(f, "{} via {gw}", self.dst),
            RouteTarget::Tunnel(gw) => {
                write!(f, "{} via {gw} dev {} onlink", self.dst, tunnel::TUNNEL_DEVICE)
            }
        }
    }
}

impl FromStr for DesiredRoute {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let net = |w: &str| w.parse::<IpNet>().map_err(|_| format!("{w:?} is not a CIDR in {s:?}"));
        let addr = |w: &str| w.parse().map_err(|_| format!("{w:?} is not an address in {s:?}"));
        match words.as_slice() {
            ["blackhole", dst] => Ok(DesiredRoute::blackhole(net(dst)?)),
            [dst, "via", gw] => Ok(DesiredRoute::via(net(dst)?, addr(gw)?)),
            [dst, "via", gw, "dev", tunnel::TUNNEL_DEVICE, "onlink"] => {
                Ok(DesiredRoute::tunnel(net(dst)?, addr(gw)?))
            }
            _ => Err(format!(
                "{s:?} is not `blackhole <cidr>`, `<cidr> via <ip>` or `<cidr> via <ip> dev {} onlink`",
                tunnel::TUNNEL_DEVICE
            )),
        }
    }
}

impl Serialize for DesiredRoute {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DesiredRoute {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The kind of a kernel route, as far as the agent cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelRouteKind {
    Unicast,
    Blackhole,
    /// Anything else (local, broadcast, unreachable, prohibit…): never the agent's.
    Other,
}

/// A route read from the kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KernelRoute {
    pub dst: IpNet,
    pub protocol: u8,
    pub kind: KernelRouteKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oif: Option<u32>,
    #[serde(default)]
    pub metric: u32,
    /// The gateway is taken as on-link (`onlink`): the agent writes this only for tunnel
    /// routes, so one of ours with it is a tunnel route.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub onlink: bool,
}

impl KernelRoute {
    /// Whether the agent may change or remove this route: tabby's protocol, and a blackhole
    /// or gateway route (device routes are the CNI plugin's).
    pub fn is_ours(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
            && match self.kind {
                KernelRouteKind::Blackhole => true,
                KernelRouteKind::Unicast => self.gateway.is_some(),
                KernelRouteKind::Other => false,
            }
    }

    /// The route the kernel holds after the agent added `route` (no output interface known):
    /// for in-memory route tables and tests.
    pub fn written(route: &DesiredRoute) -> KernelRoute {
        let (kind, gateway, onlink) = match route.target {
            RouteTarget::Blackhole => (KernelRouteKind::Blackhole, None, false),
            RouteTarget::Via(gw) => (KernelRouteKind::Unicast, Some(gw), false),
            RouteTarget::Tunnel(gw) => (KernelRouteKind::Unicast, Some(gw), true),
        };
        KernelRoute {
            dst: route.dst,
            protocol: ROUTE_PROTOCOL,
            kind,
            gateway,
            oif: None,
            metric: default_metric(&route.dst),
            onlink,
        }
    }

    /// Whether the route has the family's default metric, the one slot the agent writes.
    pub fn in_default_slot(&self) -> bool {
        self.metric == default_metric(&self.dst)
    }

    /// The desired route this kernel route is exactly, if any (default metric only: the
    /// agent never writes others).
    pub fn as_desired(&self) -> Option<DesiredRoute> {
        if !self.in_default_slot() {
            return None;
        }
        match (self.kind, self.gateway) {
            (KernelRouteKind::Blackhole, _) => Some(DesiredRoute::blackhole(self.dst)),
            (KernelRouteKind::Unicast, Some(gw)) if self.onlink => {
                Some(DesiredRoute::tunnel(self.dst, gw))
            }
            (KernelRouteKind::Unicast, Some(gw)) => Some(DesiredRoute::via(self.dst, gw)),
            _ => None,
        }
    }
}

impl fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            KernelRouteKind::Blackhole => write!(f, "blackhole {}", self.dst)?,
            KernelRouteKind::Unicast => write!(f, "{}", self.dst)?,
            KernelRouteKind::Other => write!(f, "(other) {}", self.dst)?,
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " oif {oif}")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        write!(f, " proto {}", self.protocol)?;
        if !self.in_default_slot() {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

/// One change to the kernel's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// Add a route where none of ours exists.
    Add(DesiredRoute),
    /// Replace our route to the same destination (a block that moved to another host).
    Replace { old: KernelRoute, new: DesiredRoute },
    /// Remove a route of ours that is no longer wanted.
    Delete(KernelRoute),
}

impl RouteOp {
    pub fn dst(&self) -> IpNet {
        match self {
            RouteOp::Add(r) | RouteOp::Replace { new: r, .. } => r.dst,
            RouteOp::Delete(r) => r.dst,
        }
    }
}

/// `add 10.65.0.0/26 via 192.0.2.2`, `replace … (was …)`, `delete …`.
impl fmt::Display for RouteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteOp::Add(r) => write!(f, "add {r}"),
            RouteOp::Replace { old, new } => write!(f, "replace {new} (was {old})"),
            RouteOp::Delete(r) => write!(f, "delete {r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn desired_route_text_round_trips() {
        for text in [
            "blackhole 10.65.0.0/26",
            "10.65.0.64/26 via 192.0.2.2",
            "fd00::/122 via fd01::2",
            "10.65.0.128/26 via 198.51.100.2 dev tunl0 onlink",
        ] {
            let route: DesiredRoute = text.parse().unwrap();
            assert_eq!(route.to_string(), text);
        }
        assert!("10.65.0.0/26 dev cali0".parse::<DesiredRoute>().is_err());
        assert!("blackhole 10.65.0.0".parse::<DesiredRoute>().is_err());
    }

    #[test]
    fn ownership_is_protocol_and_kind() {
        let route = |protocol, kind, gateway: Option<&str>| KernelRoute {
            dst: "10.65.0.0/26".parse().unwrap(),
            protocol,
            kind,
            gateway: gateway.map(|g| g.parse().unwrap()),
            oif: Some(2),
            metric: 0,
            onlink: false,
        };
        assert!(route(112, KernelRouteKind::Blackhole, None).is_ours());
        assert!(route(112, KernelRouteKind::Unicast, Some("192.0.2.2")).is_ours());
        // The CNI plugin's device route.
        assert!(!route(112, KernelRouteKind::Unicast, None).is_ours());
        // Someone else's.
        assert!(!route(4, KernelRouteKind::Blackhole, None).is_ours());
        assert!(!route(112, KernelRouteKind::Other, None).is_ours());
    }
}
