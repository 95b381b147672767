//! Building and removing a workload's veth pair, its addresses and routes.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use rtnetlink::packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
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
    let pair = create(host, container, &link.host_ifname, &link.container_ifname, link.mtu, None)?;
    pair.configure(host, container, &link.addresses, link.mtu)
}

/// A veth pair made for an attachment, not yet configured: the first half of [`setup`],
/// which needs no addresses, so it can run while the addresses are being assigned.
///
/// Dropping it leaves the pair in place; [`Created::configure`] and [`Created::remove`]
/// consume it.
pub struct Created {
    host_ifname: String,
    host_index: u32,
    container_ifname: String,
    container_index: u32,
    container_mac: String,
    mtu: u32,
    hsock: RouteSocket,
    csock: RouteSocket,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Created")
            .field("host_ifname", &self.host_ifname)
            .field("container_ifname", &self.container_ifname)
            .field("container_mac", &self.container_mac)
            .finish_non_exhaustive()
    }
}

/// Creates the pair: `container_ifname` in `container` and `host_ifname` in `host`, both
/// down, with `mtu`. What an earlier attachment of the same container and ifname left under
/// either name is replaced; anything else named `container_ifname` is refused.
pub fn create(
    host: &Netns,
    container: &Netns,
    host_ifname: &str,
    container_ifname: &str,
    mtu: u32,
    container_mac: Option<[u8; 6]>,
) -> Result<Created, Error> {
    let Some(container_file) = container.file() else {
        return Err(Error::SameNetns { path: container.path().to_owned() });
    };
    let mut csock = container.socket()?;
    let mut hsock = host.socket()?;
    let netns_fd = Some(container_file.as_raw_fd());
    create_veth(
        &mut hsock,
        host_ifname,
        container_ifname,
        mtu,
        netns_fd,
        container_mac,
        |hsock| clear_clash(hsock, &mut csock, container, host_ifname, container_ifname),
    )?;
    let found = (|| {
        let host_index = made_link(&mut hsock, host_ifname)?.header.index;
        let container_link = made_link(&mut csock, container_ifname)?;
        Ok::<_, Error>((host_index, container_link))
    })();
    match found {
        Ok((host_index, container_link)) => Ok(Created {
            host_ifname: host_ifname.to_owned(),
            host_index,
            container_ifname: container_ifname.to_owned(),
            container_index: container_link.header.index,
            container_mac: link_mac(&container_link).unwrap_or_default(),
            mtu,
            hsock,
            csock,
        }),
        Err(e) => {
            undo(&mut hsock, host_ifname);
            Err(e)
        }
    }
}

impl Created {
    /// The container side's MAC, chosen by the kernel.
    pub fn container_mac(&self) -> &str {
        &self.container_mac
    }

    pub fn host_ifname(&self) -> &str {
        &self.host_ifname
    }

    /// The second half of [`setup`]: MTU (when it changed since [`create`]), host sysctls,
    /// links up, the container's addresses and routes, the host routes. On failure the pair
    /// is deleted before the error is returned.
    pub fn configure(
        mut self,
        host: &Netns,
        container: &Netns,
        addresses: &[IpAddr],
        mtu: u32,
    ) -> Result<Attached, Error> {
        match self.configure_inner(host, container, addresses, mtu) {
            Ok(()) => Ok(Attached {
                host_ifname: self.host_ifname,
                host_index: self.host_index,
                container_ifname: self.container_ifname,
                container_index: self.container_index,
                container_mac: self.container_mac,
            }),
            Err(e) => {
                undo(&mut self.hsock, &self.host_ifname);
                Err(e)
            }
        }
    }

    /// Deletes the pair (rollback when the addresses could not be had).
    pub fn remove(mut self) -> Result<(), Error> {
        delete_link(&mut self.hsock, &self.host_ifname)
    }

    fn configure_inner(
        &mut self,
        host: &Netns,
        container: &Netns,
        addresses: &[IpAddr],
        mtu: u32,
    ) -> Result<(), Error> {
        let v6 = addresses.iter().any(IpAddr::is_ipv6);
        if mtu != self.mtu {
            set_mtu(&mut self.hsock, self.host_index, &self.host_ifname, mtu)?;
            set_mtu(&mut self.csock, self.container_index, &self.container_ifname, mtu)?;
            self.mtu = mtu;
        }
        prepare_host_end(&mut self.hsock, host, self.host_index, &self.host_ifname, v6)?;
        if v6 {
            // Before the link goes up, so its link-local address skips DAD as well.
            let key = format!("net/ipv6/conf/{}/accept_dad", self.container_ifname);
            container
                .run(|| sysctl::write(&key, "0"))?
                .map_err(|source| Error::Sysctl { key: key.clone(), source })?;
        }
        let csock = &mut self.csock;
        let (cname, cindex) = (&self.container_ifname, self.container_index);
        set_up(csock, cindex, cname)?;
        for ip in addresses {
            add_address(csock, cindex, *ip)
                .map_err(Error::netlink(format!("add {ip} to {cname}")))?;
        }
        let routes_op = || format!("add routes in {}", container.path().display());
        // A second attachment (eth1) finds a default route already there, via eth0: the
        // container keeps it, rather than having it stolen or duplicated.
        let mut served = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let wanted = addresses.iter().any(|ip| self::family(*ip).0 == family);
            if wanted && has_default_route(csock, family).map_err(Error::netlink(routes_op()))? {
                tracing::debug!(ifname = %cname, ?family, "default route kept");
                served.push(family);
            }
        }
        for route in container_routes(cindex, addresses) {
            if !served.contains(&route.header.address_family) {
                csock
                    .request(RouteNetlinkMessage::NewRoute(route), NLM_F_CREATE | NLM_F_EXCL)
                    .map_err(Error::netlink(routes_op()))?;
            }
        }
        if addresses.iter().any(IpAddr::is_ipv4) {
            // The gateway's MAC is known: every host veth has it. Proxy ARP on the host end
            // answers only when the host has a route towards 169.254.1.1 through another
            // interface (a default route), which not every host has; a permanent entry makes
            // the container independent of that, and saves an ARP exchange at start.
            csock
                .request(
                    RouteNetlinkMessage::NewNeighbour(gateway_neighbour(cindex)),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
                .map_err(Error::netlink(format!("add neighbour {GATEWAY_V4} to {cname}")))?;
        }
        add_host_routes(&mut self.hsock, self.host_index, &self.host_ifname, addresses)
    }
}

/// Sets the MTU of both ends of an attached pair: for a pair configured before its pool (and
/// so the MTU its pool wants) was known.
pub fn set_pair_mtu(
    host: &Netns,
    container: &Netns,
    attached: &Attached,
    mtu: u32,
) -> Result<(), Error> {
    set_mtu(&mut host.socket()?, attached.host_index, &attached.host_ifname, mtu)?;
    set_mtu(&mut container.socket()?, attached.container_index, &attached.container_ifname, mtu)
}

/// The attachment for a runtime that moves the workload end into the sandbox itself
/// (Docker's libnetwork): both ends are made in `host`; the host end gets the sysctls, link
/// state and host routes [`setup`] gives it, and `link.container_ifname` is left down and
/// unaddressed for the runtime to move, rename and address. On failure nothing is left.
pub fn setup_host_side(host: &Netns, link: &WorkloadLink) -> Result<Attached, Error> {
    let (host_ifname, peer) = (link.host_ifname.as_str(), link.container_ifname.as_str());
    let mut hsock = host.socket()?;
    if hsock.link_by_name(peer).map_err(Error::netlink(format!("look up {peer}")))?.is_some() {
        return Err(Error::InterfaceExists {
            ifname: peer.to_owned(),
            netns: host.path().to_owned(),
        });
    }
    create_veth(&mut hsock, host_ifname, peer, link.mtu, None, None, |hsock| {
        // The peer's name was free just before, so the host end's is taken: a veth left by a
        // driver killed mid-join for this same endpoint.
        tracing::warn!(ifname = %host_ifname, "deleting stale host veth");
        delete_link(hsock, host_ifname)
    })?;
    let made = (|| {
        let host_index = made_link(&mut hsock, host_ifname)?.header.index;
        let peer_link = made_link(&mut hsock, peer)?;
        let v6 = link.addresses.iter().any(IpAddr::is_ipv6);
        prepare_host_end(&mut hsock, host, host_index, host_ifname, v6)?;
        add_host_routes(&mut hsock, host_index, host_ifname, &link.addresses)?;
        Ok(Attached {
            host_ifname: host_ifname.to_owned(),
            host_index,
            container_ifname: peer.to_owned(),
            container_index: peer_link.header.index,
            container_mac: link_mac(&peer_link).unwrap_or_default(),
        })
    })();
    if made.is_err() {
        undo(&mut hsock, host_ifname);
    }
    made
}

/// Host sysctls, then the host end up (it must be up before routes can point at it).
fn prepare_host_end(
    hsock: &mut RouteSocket,
    host: &Netns,
    index: u32,
    ifname: &str,
    v6: bool,
) -> Result<(), Error> {
    let owned = ifname.to_owned();
    host.run(move || host_sysctls(&owned, v6))??;
    set_up(hsock, index, ifname)
}

/// `<ip>/32 dev <host end>` (or /128) for every address, replacing any stale one.
fn add_host_routes(
    hsock: &mut RouteSocket,
    index: u32,
    ifname: &str,
    addresses: &[IpAddr],
) -> Result<(), Error> {
    for ip in addresses {
        hsock
            .request(
                RouteNetlinkMessage::NewRoute(host_route(index, *ip)),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map_err(Error::netlink(format!("add host route {ip} dev {ifname}")))?;
    }
    Ok(())
}

/// Whether `container_link` is the peer of our host veth `host_ifname` and that host end is
/// down: a pair a DEL detached and has not finished deleting.
fn is_stale_pair(
    hsock: &mut RouteSocket,
    container_link: &LinkMessage,
    host_ifname: &str,
) -> Result<bool, Error> {
    let Some(host_link) = hsock
        .link_by_name(host_ifname)
        .map_err(Error::netlink(format!("look up {host_ifname}")))?
    else {
        return Ok(false);
    };
    // Indexes are per namespace: each end must name the other and say it lives elsewhere.
    let peer_elsewhere = |link: &LinkMessage| {
        let peer = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Link(index) => Some(*index),
            _ => None,
        });
        let elsewhere = link.attributes.iter().any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
        peer.filter(|_| elsewhere)
    };
    Ok(link_kind(&host_link) == Some(InfoKind::Veth)
        && link_kind(container_link) == Some(InfoKind::Veth)
        && peer_elsewhere(container_link) == Some(host_link.header.index)
        && peer_elsewhere(&host_link) == Some(container_link.header.index)
        && !host_link.header.flags.contains(LinkFlags::Up))
}

/// Rollback: deleting the host end deletes the container end (and every route through it).
fn undo(hsock: &mut RouteSocket, host_ifname: &str) {
    if let Err(e) = delete_link(hsock, host_ifname) {
        tracing::warn!(ifname = %host_ifname, error = %e, "rollback: cannot delete veth");
    }
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

/// After a creation failed with EEXIST: either end's name was taken. The container's name
/// may be held by the pair of an earlier attachment of this same container and ifname that a
/// DEL cut off and left to a reaper, and the host's by a veth left by a plugin killed
/// mid-ADD; both are removed (deleting the host end deletes the pair). Anything else in the
/// container under that name is refused.
fn clear_clash(
    hsock: &mut RouteSocket,
    csock: &mut RouteSocket,
    container: &Netns,
    host_ifname: &str,
    container_ifname: &str,
) -> Result<(), Error> {
    if let Some(existing) = csock
        .link_by_name(container_ifname)
        .map_err(Error::netlink(format!("look up {container_ifname}")))?
    {
        if !is_stale_pair(hsock, &existing, host_ifname)? {
            return Err(Error::InterfaceExists {
                ifname: container_ifname.to_owned(),
                netns: container.path().to_owned(),
            });
        }
        tracing::debug!(ifname = %host_ifname, "deleting the detached pair of an earlier attachment");
    } else {
        tracing::warn!(ifname = %host_ifname, "deleting stale host veth");
    }
    delete_link(hsock, host_ifname)
}

/// Creates the pair in one request from the host side, with the peer's `IFLA_NET_NS_FD`
/// set when given: the container end is born in its namespace (without it, in the host's).
/// Creating it on the host and moving it afterwards would take a namespace move under the
/// RTNL lock, which serialises bursts of ADDs (calico #7705, amazon-vpc-cni-k8s #3764).
///
/// Names are rarely taken, so the pair is made first: when either name is (EEXIST),
/// `clear_clash` gets to remove what holds it or refuse, and the pair is made once more.
fn create_veth(
    sock: &mut RouteSocket,
    host_ifname: &str,
    container_ifname: &str,
    mtu: u32,
    netns_fd: Option<i32>,
    peer_mac: Option<[u8; 6]>,
    clear_clash: impl FnOnce(&mut RouteSocket) -> Result<(), Error>,
) -> Result<(), Error> {
    // No IFF_UP here: the kernel configures the peer before the pair is joined, and
    // opening a veth without a peer fails with ENOTCONN.
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName(container_ifname.to_owned()));
    peer.attributes.push(LinkAttribute::Mtu(mtu));
    if let Some(mac) = peer_mac {
        peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(fd) = netns_fd {
        peer.attributes.push(LinkAttribute::NetNsFd(fd));
    }

    // The host end stays down until its sysctls are written, so IPv6 never starts DAD or
    // router solicitation on it with the defaults.
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(host_ifname.to_owned()));
    msg.attributes.push(LinkAttribute::Address(HOST_MAC.to_vec()));
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    let op = || format!("create veth {host_ifname} <-> {container_ifname}");
    match sock.request(RouteNetlinkMessage::NewLink(msg.clone()), NLM_F_CREATE | NLM_F_EXCL) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::EEXIST) => {
            clear_clash(sock)?;
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

fn has_default_route(
    sock: &mut RouteSocket,
    family: AddressFamily,
) -> Result<bool, super::NetlinkError> {
    Ok(sock.routes(family, None)?.iter().any(|r| r.header.destination_prefix_length == 0))
}

/// A link this call has just made: gone again is an error.
fn made_link(sock: &mut RouteSocket, ifname: &str) -> Result<LinkMessage, Error> {
    sock.link_by_name(ifname)
        .map_err(Error::netlink(format!("look up {ifname}")))?
        .ok_or_else(|| vanished(ifname))
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

fn set_mtu(sock: &mut RouteSocket, index: u32, name: &str, mtu: u32) -> Result<(), Error> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    sock.request(RouteNetlinkMessage::SetLink(msg), 0)
        .map_err(Error::netlink(format!("set MTU {mtu} on {name}")))
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

/// Inside the container: `169.254.1.1 lladdr ee:ee:ee:ee:ee:ee PERMANENT`.
pub(super) fn gateway_neighbour(index: u32) -> NeighbourMessage {
    let mut n = NeighbourMessage::default();
    n.header.family = AddressFamily::Inet;
    n.header.ifindex = index;
    n.header.state = NeighbourState::Permanent;
    n.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(GATEWAY_V4)));
    n.attributes.push(NeighbourAttribute::LinkLayerAddress(HOST_MAC.to_vec()));
    n
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
