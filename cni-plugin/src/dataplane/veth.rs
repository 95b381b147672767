//! Building and removing a workload's veth pair, its addresses and routes.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::{route_oif, RouteSocket};
use super::{
    format_mac, sysctl, Attached, Error, Netns, WorkloadLink, GATEWAY_V4, GATEWAY_V6, HOST_MAC,
    ROUTE_PROTOCOL,
};

/// Builds the attachment: veth pair (container end created directly in `container`),
/// host sysctls, container addresses and routes, host routes. On failure, whatever was made
/// is removed again before the error is returned.
pub fn setup(host: &Netns, container: &Netns, link: &WorkloadLink) -> Result<Attached, Error> {
    let Some(container_file) = container.file() else {
        return Err(Error::SameNetns { path: container.path().to_owned() });
    };
    let mut csock = container.socket()?;
    if csock
        .link_by_name(&link.container_ifname)
        .map_err(Error::netlink(format!("look up {}", link.container_ifname)))?
        .is_some()
    {
        return Err(Error::InterfaceExists {
            ifname: link.container_ifname.clone(),
            netns: container.path().to_owned(),
        });
    }
    let mut hsock = host.socket()?;
    create_veth(&mut hsock, link, container_file.as_raw_fd())?;
    match configure(host, container, &mut hsock, &mut csock, link) {
        Ok(attached) => Ok(attached),
        Err(e) => {
            // Deleting the host end deletes the container end (and every route through it).
            if let Err(undo) = delete_link(&mut hsock, &link.host_ifname) {
                tracing::warn!(ifname = %link.host_ifname, error = %undo, "rollback: cannot delete veth");
            }
            Err(e)
        }
    }
}

/// Removes the host veth named `host_ifname` (the kernel removes its peer with it) and the
/// host routes with tabby's protocol out of it. Returns whether there was anything to remove;
/// a missing link is success.
pub fn teardown(host: &Netns, host_ifname: &str) -> Result<bool, Error> {
    let mut sock = host.socket()?;
    let Some(existing) =
        sock.link_by_name(host_ifname).map_err(Error::netlink(format!("look up {host_ifname}")))?
    else {
        return Ok(false);
    };
    if link_kind(&existing) != Some(InfoKind::Veth) {
        return Err(Error::NotAVeth { ifname: host_ifname.to_owned() });
    }
    let index = existing.header.index;
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let routes = match sock.routes(family, Some(index)) {
            Ok(routes) => routes,
            // No IPv6 in this kernel or namespace: nothing of ours there either.
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => continue,
            Err(e) => return Err(Error::netlink(format!("list routes via {host_ifname}"))(e)),
        };
        for route in routes.into_iter().filter(|r| r.header.protocol == our_protocol()) {
            match sock.request(RouteNetlinkMessage::DelRoute(route), 0) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::netlink(format!("delete route via {host_ifname}"))(e)),
            }
        }
    }
    delete_link(&mut sock, host_ifname)?;
    Ok(true)
}

fn our_protocol() -> RouteProtocol {
    RouteProtocol::from(ROUTE_PROTOCOL)
}

pub(super) fn link_kind(link: &LinkMessage) -> Option<InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.clone()),
            _ => None,
        }),
        _ => None,
    })
}

/// Creates the pair in one request from the host side, with the peer's `IFLA_NET_NS_FD`
/// set: the container end is born in its namespace. Creating it on the host and moving it
/// afterwards would take a namespace move under the RTNL lock, which serialises bursts of
/// ADDs (calico #7705, amazon-vpc-cni-k8s #3764).
fn create_veth(sock: &mut RouteSocket, link: &WorkloadLink, netns_fd: i32) -> Result<(), Error> {
    // No IFF_UP here: the kernel configures the peer before the pair is joined, and
    // opening a veth without a peer fails with ENOTCONN.
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(link.container_ifname.clone()));
    peer.attributes.push(LinkAttribute::Mtu(link.mtu));
    peer.attributes.push(LinkAttribute::NetNsFd(netns_fd));

    // The host end stays down until its sysctls are written, so IPv6 never starts DAD or
    // router solicitation on it with the defaults.
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(link.host_ifname.clone()));
    msg.attributes.push(LinkAttribute::Address(HOST_MAC.to_vec()));
    msg.attributes.push(LinkAttribute::Mtu(link.mtu));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    let op = || format!("create veth {} <-> {}", link.host_ifname, link.container_ifname);
    match sock.request(RouteNetlinkMessage::NewLink(msg.clone()), NLM_F_CREATE | NLM_F_EXCL) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::EEXIST) => {
            // The container name was checked free just before, so the clash is on the host:
            // a veth left by a plugin killed mid-ADD for this same attachment. Replace it once.
            tracing::warn!(ifname = %link.host_ifname, "deleting stale host veth");
            delete_link(sock, &link.host_ifname)?;
            sock.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
                .map_err(Error::netlink(op()))
        }
        Err(e) => Err(Error::netlink(op())(e)),
    }
}

fn delete_link(sock: &mut RouteSocket, name: &str) -> Result<(), Error> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    match sock.request(RouteNetlinkMessage::DelLink(msg), 0) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(Error::netlink(format!("delete {name}"))(e)),
    }
}

fn configure(
    host: &Netns,
    container: &Netns,
    hsock: &mut RouteSocket,
    csock: &mut RouteSocket,
    link: &WorkloadLink,
) -> Result<Attached, Error> {
    let v6 = link.addresses.iter().any(IpAddr::is_ipv6);
    let host_link = hsock
        .link_by_name(&link.host_ifname)
        .map_err(Error::netlink(format!("look up {}", link.host_ifname)))?
        .ok_or_else(|| vanished(&link.host_ifname))?;
    let host_index = host_link.header.index;
    let hostif = link.host_ifname.clone();
    host.run(move || host_sysctls(&hostif, v6))??;
    set_up(hsock, host_index, &link.host_ifname)?;

    let container_link = csock
        .link_by_name(&link.container_ifname)
        .map_err(Error::netlink(format!("look up {}", link.container_ifname)))?
        .ok_or_else(|| vanished(&link.container_ifname))?;
    let container_index = container_link.header.index;
    if v6 {
        // Before the link goes up, so its link-local address skips DAD as well.
        let key = format!("net/ipv6/conf/{}/accept_dad", link.container_ifname);
        container
            .run(|| sysctl::write(&key, "0"))?
            .map_err(|source| Error::Sysctl { key: key.clone(), source })?;
    }
    set_up(csock, container_index, &link.container_ifname)?;
    for ip in &link.addresses {
        add_address(csock, container_index, *ip)
            .map_err(Error::netlink(format!("add {ip} to {}", link.container_ifname)))?;
    }
    let routes_op = || format!("add routes in {}", container.path().display());
    // A second attachment (eth1) finds a default route already there, via eth0: the
    // container keeps it, rather than having it stolen or duplicated.
    let mut served = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let wanted = link.addresses.iter().any(|ip| self::family(*ip).0 == family);
        if wanted && has_default_route(csock, family).map_err(Error::netlink(routes_op()))? {
            tracing::debug!(ifname = %link.container_ifname, ?family, "default route kept");
            served.push(family);
        }
    }
    for route in container_routes(container_index, &link.addresses) {
        if !served.contains(&route.header.address_family) {
            csock
                .request(RouteNetlinkMessage::NewRoute(route), NLM_F_CREATE | NLM_F_EXCL)
                .map_err(Error::netlink(routes_op()))?;
        }
    }
    for ip in &link.addresses {
        hsock
            .request(
                RouteNetlinkMessage::NewRoute(host_route(host_index, *ip)),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map_err(Error::netlink(format!("add host route {ip} dev {}", link.host_ifname)))?;
    }
    Ok(Attached {
        host_ifname: link.host_ifname.clone(),
        host_index,
        container_ifname: link.container_ifname.clone(),
        container_index,
        container_mac: link_mac(&container_link).unwrap_or_default(),
    })
}

fn has_default_route(
    sock: &mut RouteSocket,
    family: AddressFamily,
) -> Result<bool, super::NetlinkError> {
    Ok(sock.routes(family, None)?.iter().any(|r| r.header.destination_prefix_length == 0))
}

fn vanished(ifname: &str) -> Error {
    Error::Netlink {
        op: format!("find {ifname} after creating it"),
        source: super::NetlinkError::Kernel(std::io::Error::from_raw_os_error(libc::ENODEV)),
    }
}

pub(super) fn link_mac(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(format_mac(mac)),
        _ => None,
    })
}

/// The host-side sysctls, as `(key, value, required)`: a failure of a required one fails the
/// ADD; the others only warn (Calico treats `accept_ra` and `proxy_delay` that way).
pub(super) fn host_sysctl_list(ifname: &str, v6: bool) -> Vec<(String, &'static str, bool)> {
    let mut list = vec![
        (format!("net/ipv4/conf/{ifname}/proxy_arp"), "1", true),
        (format!("net/ipv4/conf/{ifname}/forwarding"), "1", true),
        (format!("net/ipv4/conf/{ifname}/route_localnet"), "1", true),
        (format!("net/ipv4/neigh/{ifname}/proxy_delay"), "0", false),
    ];
    if v6 {
        list.extend([
            (format!("net/ipv6/conf/{ifname}/accept_ra"), "0", true),
            (format!("net/ipv6/conf/{ifname}/accept_dad"), "0", true),
            (format!("net/ipv6/conf/{ifname}/proxy_ndp"), "1", true),
            (format!("net/ipv6/conf/{ifname}/forwarding"), "1", true),
        ]);
    } else if sysctl::ipv6_present() {
        list.push((format!("net/ipv6/conf/{ifname}/accept_ra"), "0", false));
    }
    list
}

/// Runs in the host namespace (its `/proc/sys/net` is the one that matters).
fn host_sysctls(ifname: &str, v6: bool) -> Result<(), Error> {
    // Routing between veths needs forwarding on; leave it alone when it already is, so a
    // host that manages it elsewhere sees no write.
    if sysctl::read("net/ipv4/ip_forward").ok().as_deref() != Some("1") {
        sysctl::write("net/ipv4/ip_forward", "1")
            .map_err(|source| Error::Sysctl { key: "net/ipv4/ip_forward".into(), source })?;
    }
    for (key, value, required) in host_sysctl_list(ifname, v6) {
        match sysctl::write(&key, value) {
            Ok(()) => {}
            Err(source) if required => return Err(Error::Sysctl { key, source }),
            Err(e) => tracing::warn!(%key, error = %e, "optional sysctl not set"),
        }
    }
    Ok(())
}

fn set_up(sock: &mut RouteSocket, index: u32, name: &str) -> Result<(), Error> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    sock.request(RouteNetlinkMessage::SetLink(msg), 0)
        .map_err(Error::netlink(format!("set {name} up")))
}

fn family(ip: IpAddr) -> (AddressFamily, u8) {
    if ip.is_ipv4() {
        (AddressFamily::Inet, 32)
    } else {
        (AddressFamily::Inet6, 128)
    }
}

fn add_address(sock: &mut RouteSocket, index: u32, ip: IpAddr) -> Result<(), super::NetlinkError> {
    let (fam, len) = family(ip);
    let mut msg = AddressMessage::default();
    msg.header.family = fam;
    msg.header.prefix_len = len;
    msg.header.index = index;
    if ip.is_ipv6() {
        // DAD on a point-to-point veth only delays the address by a second or more.
        msg.header.flags = AddressHeaderFlags::Nodad;
    }
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    sock.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_REPLACE)
}

fn route(fam: AddressFamily, dst_len: u8, scope: RouteScope, proto: RouteProtocol) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = fam;
    r.header.destination_prefix_length = dst_len;
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.protocol = proto;
    r.header.scope = scope;
    r.header.kind = RouteType::Unicast;
    r
}

/// Inside the container: `169.254.1.1 dev <if> scope link` then `default via 169.254.1.1`
/// for IPv4; `default via fe80::ecee:eeff:feee:eeee dev <if>` for IPv6.
pub(super) fn container_routes(index: u32, addresses: &[IpAddr]) -> Vec<RouteMessage> {
    let mut routes = Vec::new();
    if addresses.iter().any(IpAddr::is_ipv4) {
        let mut gw = route(AddressFamily::Inet, 32, RouteScope::Link, RouteProtocol::Boot);
        gw.attributes.push(RouteAttribute::Destination(IpAddr::V4(GATEWAY_V4).into()));
        gw.attributes.push(RouteAttribute::Oif(index));
        let mut default = route(AddressFamily::Inet, 0, RouteScope::Universe, RouteProtocol::Boot);
        default.attributes.push(RouteAttribute::Gateway(IpAddr::V4(GATEWAY_V4).into()));
        default.attributes.push(RouteAttribute::Oif(index));
        routes.extend([gw, default]);
    }
    if addresses.iter().any(IpAddr::is_ipv6) {
        let mut default = route(AddressFamily::Inet6, 0, RouteScope::Universe, RouteProtocol::Boot);
        default.attributes.push(RouteAttribute::Gateway(IpAddr::V6(GATEWAY_V6).into()));
        default.attributes.push(RouteAttribute::Oif(index));
        routes.push(default);
    }
    routes
}

/// On the host: `<ip>/32 dev cali… scope link proto 112` (`/128` for IPv6, where the kernel
/// keeps every route at universe scope).
pub(super) fn host_route(index: u32, ip: IpAddr) -> RouteMessage {
    let (fam, len) = family(ip);
    let scope = if ip.is_ipv4() { RouteScope::Link } else { RouteScope::Universe };
    let mut r = route(fam, len, scope, our_protocol());
    r.attributes.push(RouteAttribute::Destination(ip.into()));
    r.attributes.push(RouteAttribute::Oif(index));
    r
}

/// Whether a dumped route is the host route for `ip` out of `index` with our protocol.
pub(super) fn is_host_route(r: &RouteMessage, index: u32, ip: IpAddr) -> bool {
    let (_, len) = family(ip);
    r.header.destination_prefix_length == len
        && r.header.protocol == our_protocol()
        && route_oif(r) == Some(index)
        && r.attributes.contains(&RouteAttribute::Destination(ip.into()))
}
