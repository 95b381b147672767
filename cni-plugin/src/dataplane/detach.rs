//! Taking a workload's veth away: at once for everything that matters to traffic and to
//! the next attachment (our host routes, the link down), and either right after or in a
//! detached process for the pair itself, whose deletion the kernel makes slow.
//!
//! Deleting any veth costs ~20 ms in the kernel (`rcu_barrier()` while unregistering the
//! device), whoever asks. Once the routes are gone and the link is down, nothing reaches the
//! workload through it and nothing leaves it, so CNI DEL can answer before that wait ends.

use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::RouteSocket;
use super::veth::link_kind;
use super::{Error, Netns, ROUTE_PROTOCOL};

/// A host veth cut off by [`detach`], not yet deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    pub ifname: String,
    /// The kernel's index for it: names can be taken again at once by a new attachment for
    /// the same container, indexes are not handed out again.
    pub index: u32,
}

/// Removes the host routes with tabby's protocol out of `host_ifname` and sets it down.
/// `None` when there is no such link; refuses a link that is not a veth.
pub fn detach(host: &Netns, host_ifname: &str) -> Result<Option<Detached>, Error> {
    let mut sock = host.socket()?;
    let Some(existing) =
        sock.link_by_name(host_ifname).map_err(Error::netlink(format!("look up {host_ifname}")))?
    else {
        return Ok(None);
    };
    if link_kind(&existing) != Some(InfoKind::Veth) {
        return Err(Error::NotAVeth { ifname: host_ifname.to_owned() });
    }
    let index = existing.header.index;
    let ours = RouteProtocol::from(ROUTE_PROTOCOL);
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let routes = match sock.routes(family, Some(index)) {
            Ok(routes) => routes,
            // No IPv6 in this kernel or namespace: nothing of ours there either.
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => continue,
            Err(e) => return Err(Error::netlink(format!("list routes via {host_ifname}"))(e)),
        };
        for route in routes.into_iter().filter(|r| r.header.protocol == ours) {
            match sock.request(RouteNetlinkMessage::DelRoute(route), 0) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Error::netlink(format!("delete route via {host_ifname}"))(e)),
            }
        }
    }
    let mut down = LinkMessage::default();
    down.header.index = index;
    down.header.change_mask = LinkFlags::Up;
    match sock.request(RouteNetlinkMessage::SetLink(down), 0) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(Error::netlink(format!("set {host_ifname} down"))(e)),
    }
    Ok(Some(Detached { ifname: host_ifname.to_owned(), index }))
}

/// Deletes a detached veth (the kernel removes its peer with it). A link that is already
/// gone is success.
pub fn delete_detached(host: &Netns, link: &Detached) -> Result<(), Error> {
    let mut sock = host.socket()?;
    delete_index(&mut sock, link)
}

fn delete_index(sock: &mut RouteSocket, link: &Detached) -> Result<(), Error> {
    let mut msg = LinkMessage::default();
    msg.header.index = link.index;
    msg.attributes.push(LinkAttribute::IfName(link.ifname.clone()));
    match sock.request(RouteNetlinkMessage::DelLink(msg), 0) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(Error::netlink(format!("delete {} (index {})", link.ifname, link.index))(e)),
    }
}

/// Removes the host veth named `host_ifname` (the kernel removes its peer with it) and the
/// host routes with tabby's protocol out of it, waiting for the kernel. Returns whether there
/// was anything to remove; a missing link is success.
pub fn teardown(host: &Netns, host_ifname: &str) -> Result<bool, Error> {
    let Some(link) = detach(host, host_ifname)? else { return Ok(false) };
    delete_detached(host, &link)?;
    Ok(true)
}
