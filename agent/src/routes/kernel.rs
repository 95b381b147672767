//! The kernel side of routes: read the main table and the links, apply [`RouteOp`]s and put
//! back missing workload device routes over rtnetlink, in the network namespace the process
//! runs in.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use super::device::{DeviceRouteAdd, Link};
use super::{DesiredRoute, KernelRoute, KernelRouteKind, RouteOp, RouteTarget, ROUTE_PROTOCOL};

/// A failed route read or write.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("cannot open a netlink route socket: {0}")]
    Open(#[source] std::io::Error),
    #[error("netlink {op} failed: {reason}")]
    Netlink {
        op: String,
        /// The kernel's errno, when it sent one.
        errno: Option<i32>,
        reason: String,
    },
}

impl RouteError {
    /// Transient failures (socket trouble, busy kernel) may pass on retry; a refused route
    /// (unreachable gateway, invalid message) fails the same way until something changes.
    pub fn is_retryable(&self) -> bool {
        match self {
            RouteError::Open(_) | RouteError::Netlink { errno: None, .. } => true,
            RouteError::Netlink { errno: Some(e), .. } => matches!(
                *e,
                libc::EBUSY
                    | libc::EAGAIN
                    | libc::ENOBUFS
                    | libc::EINTR
                    | libc::ENOMEM
                    | libc::ETIMEDOUT
            ),
        }
    }

    pub(super) fn from_rtnetlink(op: String, err: &rtnetlink::Error) -> Self {
        let errno = match err {
            rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()).filter(|e| *e != 0),
            _ => None,
        };
        let reason = match errno {
            Some(e) => std::io::Error::from_raw_os_error(e).to_string(),
            None => err.to_string(),
        };
        RouteError::Netlink { op, errno, reason }
    }
}

/// Reads and writes the main routing table. The reconcile loop is written against this, so
/// its tests can use a table in memory.
pub trait RouteTable: Send {
    /// Every route of the main table, both families.
    fn dump(&mut self) -> impl Future<Output = Result<Vec<KernelRoute>, RouteError>> + Send;
    /// Applies one change.
    fn apply(&mut self, op: &RouteOp) -> impl Future<Output = Result<(), RouteError>> + Send;
    /// Every link of the namespace. A table that cannot see links (one in memory) has none,
    /// so it never repairs a device route.
    fn links(&mut self) -> impl Future<Output = Result<Vec<Link>, RouteError>> + Send {
        async { Ok(Vec::new()) }
    }
    /// Adds a missing workload device route, exactly as the CNI plugin makes it. `false`
    /// when the world moved since the dump: the route appeared (the plugin won the race), or
    /// the veth went down or away (a DEL under way).
    fn add_device_route(
        &mut self,
        add: &DeviceRouteAdd,
    ) -> impl Future<Output = Result<bool, RouteError>> + Send {
        let err = RouteError::Netlink {
            op: add.to_string(),
            errno: Some(libc::EOPNOTSUPP),
            reason: "this route table cannot add device routes".into(),
        };
        async { Err(err) }
    }
}

/// The main table of this process's network namespace, over an rtnetlink socket.
#[derive(Debug)]
pub struct NetlinkRoutes {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl NetlinkRoutes {
    /// Opens the socket (in the caller's network namespace) and starts its connection task.
    pub fn new() -> Result<Self, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Open)?;
        Ok(NetlinkRoutes { handle, connection: tokio::spawn(connection) })
    }

    async fn dump_family(&self, family: AddressFamily) -> Result<Vec<KernelRoute>, RouteError> {
        let query = match family {
            AddressFamily::Inet6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
            _ => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        };
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| RouteError::from_rtnetlink(format!("dump {family:?} routes"), &e))?;
        Ok(messages.iter().filter_map(kernel_route).collect())
    }
}

impl Drop for NetlinkRoutes {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl RouteTable for NetlinkRoutes {
    async fn dump(&mut self) -> Result<Vec<KernelRoute>, RouteError> {
        let mut routes = self.dump_family(AddressFamily::Inet).await?;
        match self.dump_family(AddressFamily::Inet6).await {
            Ok(v6) => routes.extend(v6),
            // IPv6 disabled in this kernel or namespace: there are no IPv6 routes to manage.
            Err(RouteError::Netlink { errno: Some(libc::EAFNOSUPPORT), .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(routes)
    }

    async fn apply(&mut self, op: &RouteOp) -> Result<(), RouteError> {
        let tunnel = match op {
            RouteOp::Add(DesiredRoute { target: RouteTarget::Tunnel(_), .. })
            | RouteOp::Replace {
                new: DesiredRoute { target: RouteTarget::Tunnel(_), .. }, ..
            } => Some(super::tunnel::ensure_tunnel(&self.handle).await?),
            _ => None,
        };
        let result = match op {
            RouteOp::Add(route) => {
                self.handle.route().add(new_route_message(route, tunnel)?).execute().await
            }
            RouteOp::Replace { new, .. } => {
                self.handle.route().add(new_route_message(new, tunnel)?).replace().execute().await
            }
            RouteOp::Delete(route) => {
                self.handle.route().del(delete_message(route)).execute().await
            }
        };
        result.map_err(|e| RouteError::from_rtnetlink(op.to_string(), &e))
    }

    async fn links(&mut self) -> Result<Vec<Link>, RouteError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| RouteError::from_rtnetlink("dump links".into(), &e))?;
        Ok(messages.iter().filter_map(link_of).collect())
    }

    async fn add_device_route(&mut self, add: &DeviceRouteAdd) -> Result<bool, RouteError> {
        // Without NLM_F_REPLACE: a route that appeared since the dump is left as it is. The
        // kernel refuses a route out of a down link (and flushes a link's routes when it
        // goes down), so a DEL racing this cannot end with the route back.
        match self.handle.route().add(device_route_message(add)).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(msg))
                if matches!(msg.raw_code().abs(), libc::EEXIST | libc::ENETDOWN | libc::ENODEV) =>
            {
                Ok(false)
            }
            Err(e) => Err(RouteError::from_rtnetlink(add.to_string(), &e)),
        }
    }
}

/// The CNI plugin's host route (cni-plugin `dataplane::veth::host_route`): main table,
/// protocol 112, unicast out of the veth, scope link for IPv4 and universe for IPv6 (where
/// the kernel keeps every route at universe scope), no metric.
fn device_route_message(add: &DeviceRouteAdd) -> RouteMessage {
    let dst = add.route.dst;
    let mut msg = RouteMessage::default();
    let (family, scope) = match dst {
        IpNet::V4(_) => (AddressFamily::Inet, RouteScope::Link),
        IpNet::V6(_) => (AddressFamily::Inet6, RouteScope::Universe),
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = dst.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    msg.header.scope = scope;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Destination(dst.addr().into()));
    msg.attributes.push(RouteAttribute::Oif(add.index));
    msg
}

/// A dumped link, or `None` for one without a name.
fn link_of(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut kind = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    Some(Link {
        name: name?,
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        kind,
    })
}

/// The message that adds (or replaces) `route`: main table, default metric, protocol 112;
/// a tunnel route goes out of interface `tunnel` (the index of `tunl0`).
fn new_route_message(
    route: &DesiredRoute,
    tunnel: Option<u32>,
) -> Result<RouteMessage, RouteError> {
    let invalid = |e: &dyn std::fmt::Display| RouteError::Netlink {
        op: format!("build {route}"),
        errno: Some(libc::EINVAL),
        reason: e.to_string(),
    };
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(|e| invalid(&e))?
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
    let builder = match route.target {
        RouteTarget::Blackhole => builder.kind(RouteType::BlackHole),
        RouteTarget::Via(gw) => builder.gateway(gw).map_err(|e| invalid(&e))?,
        RouteTarget::Tunnel(gw) => {
            let oif = tunnel.ok_or_else(|| invalid(&"no tunnel device index"))?;
            builder.gateway(gw).map_err(|e| invalid(&e))?.output_interface(oif).onlink()
        }
    };
    Ok(builder.build())
}

/// The message that deletes exactly `route`: its protocol is part of the match, so the
/// kernel itself refuses to remove a route that is not tabby's.
fn delete_message(route: &KernelRoute) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match route.dst {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = route.dst.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::from(route.protocol);
    // "Any scope", as `ip route del` asks.
    msg.header.scope = RouteScope::NoWhere;
    msg.header.kind = match route.kind {
        KernelRouteKind::Blackhole => RouteType::BlackHole,
        KernelRouteKind::Unicast | KernelRouteKind::Other => RouteType::Unicast,
    };
    msg.attributes.push(RouteAttribute::Destination(route.dst.addr().into()));
    if let Some(gw) = route.gateway {
        msg.attributes.push(RouteAttribute::Gateway(gw.into()));
    }
    if route.metric != 0 {
        msg.attributes.push(RouteAttribute::Priority(route.metric));
    }
    msg
}

/// A dumped route of the main table, or `None` for other tables and unparsable entries.
fn kernel_route(msg: &RouteMessage) -> Option<KernelRoute> {
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let len = msg.header.destination_prefix_length;
    let mut dst_addr = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = 0;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(addr) => dst_addr = ip_of(addr),
            RouteAttribute::Gateway(addr) => gateway = ip_of(addr),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    let dst_addr = match (dst_addr, msg.header.address_family) {
        (Some(addr), _) => addr,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    let dst = IpNet::new(dst_addr, len).ok()?;
    let kind = match msg.header.kind {
        RouteType::Unicast => KernelRouteKind::Unicast,
        RouteType::BlackHole => KernelRouteKind::Blackhole,
        _ => KernelRouteKind::Other,
    };
    Some(KernelRoute {
        dst,
        protocol: u8::from(msg.header.protocol),
        kind,
        gateway,
        oif,
        metric,
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
    })
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn messages_carry_our_protocol() {
        let add = new_route_message(&"10.65.0.0/26 via 192.0.2.2".parse().unwrap(), None).unwrap();
        assert_eq!(u8::from(add.header.protocol), ROUTE_PROTOCOL);
        assert_eq!(add.header.table, RouteHeader::RT_TABLE_MAIN);
        let parsed = kernel_route(&add).unwrap();
        assert_eq!(parsed.as_desired().unwrap().to_string(), "10.65.0.0/26 via 192.0.2.2");

        let mut hole = new_route_message(&"blackhole fd00::/122".parse().unwrap(), None).unwrap();
        // As the kernel reports it: IPv6 routes added without a metric get 1024.
        hole.attributes.push(RouteAttribute::Priority(1024));
        let parsed = kernel_route(&hole).unwrap();
        assert!(parsed.is_ours());
        assert_eq!(parsed.as_desired().unwrap().to_string(), "blackhole fd00::/122");

        let del = delete_message(&parsed);
        assert_eq!(u8::from(del.header.protocol), ROUTE_PROTOCOL);
        assert_eq!(del.header.kind, RouteType::BlackHole);
        assert!(del.attributes.contains(&RouteAttribute::Priority(1024)));

        let tunnel = "10.65.0.128/26 via 198.51.100.2 dev tunl0 onlink";
        let msg = new_route_message(&tunnel.parse().unwrap(), Some(7)).unwrap();
        assert!(msg.attributes.contains(&RouteAttribute::Oif(7)));
        let parsed = kernel_route(&msg).unwrap();
        assert!(parsed.onlink && parsed.is_ours());
        assert_eq!(parsed.as_desired().unwrap().to_string(), tunnel);
        assert!(new_route_message(&tunnel.parse().unwrap(), None).is_err());
    }

    #[test]
    fn device_routes_match_the_cni_plugins() {
        let add = |dst: &str| DeviceRouteAdd {
            route: super::super::DeviceRoute {
                dst: dst.parse().unwrap(),
                interface: "cali1".into(),
            },
            index: 9,
        };
        let v4 = device_route_message(&add("10.65.0.5/32"));
        assert_eq!(v4.header.scope, RouteScope::Link);
        assert_eq!(v4.header.table, RouteHeader::RT_TABLE_MAIN);
        assert!(v4.attributes.contains(&RouteAttribute::Oif(9)));
        let parsed = kernel_route(&v4).unwrap();
        assert_eq!((parsed.protocol, parsed.oif, parsed.gateway), (ROUTE_PROTOCOL, Some(9), None));
        // The CNI plugin's, not the agent's to delete.
        assert!(!parsed.is_ours());
        let v6 = device_route_message(&add("fd00::5/128"));
        assert_eq!(v6.header.scope, RouteScope::Universe);
        assert_eq!(v6.header.address_family, AddressFamily::Inet6);
    }

    #[test]
    fn errno_decides_retry() {
        let err = |errno| RouteError::Netlink {
            op: "x".into(),
            errno: Some(errno),
            reason: String::new(),
        };
        assert!(err(libc::EBUSY).is_retryable());
        assert!(!err(libc::ENETUNREACH).is_retryable());
        assert!(!err(libc::EEXIST).is_retryable());
    }
}
