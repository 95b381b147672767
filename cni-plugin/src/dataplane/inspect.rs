//! Reading an attachment back from the kernel and listing how it differs from what
//! [`super::setup`] would have made (for CHECK).

use std::net::IpAddr;

use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::packet_route::AddressFamily;

use super::netlink::{address_of, RouteSocket};
use super::veth::{
    container_routes, host_route, host_sysctl_list, is_host_route, link_kind, link_mac,
};
use super::{format_mac, sysctl, Error, Netns, WorkloadLink, HOST_MAC, ROUTE_PROTOCOL};

/// Compares the kernel state of an attachment with `link` and returns one human-readable
/// line per difference (empty when everything matches). When `link.addresses` is empty the
/// addresses found on the container interface are taken as the expected ones.
pub fn inspect(host: &Netns, container: &Netns, link: &WorkloadLink) -> Result<Vec<String>, Error> {
    let mut drift = Vec::new();
    let mut csock = container.socket()?;
    let mut hsock = host.socket()?;
    let lookup = |sock: &mut RouteSocket, name: &str| {
        sock.link_by_name(name).map_err(Error::netlink(format!("look up {name}")))
    };

    let cname = &link.container_ifname;
    let clink = lookup(&mut csock, cname)?;
    let mut addresses = link.addresses.clone();
    let mut container_index = None;
    match &clink {
        None => drift.push(format!("{cname} is missing in {}", container.path().display())),
        Some(clink) => {
            let index = clink.header.index;
            container_index = Some(index);
            check_link(&mut drift, clink, cname, link.mtu);
            let present = global_addresses(&mut csock, index)?;
            if addresses.is_empty() {
                addresses = present.iter().map(|(ip, _)| *ip).collect();
            }
            for ip in &addresses {
                let want = if ip.is_ipv4() { 32 } else { 128 };
                if !present.contains(&(*ip, want)) {
                    drift.push(format!("{cname} lacks address {ip}/{want}"));
                }
            }
            if addresses.is_empty() {
                drift.push(format!("{cname} has no addresses"));
            }
            let routes = all_routes(&mut csock, None)?;
            for want in container_routes(index, &addresses) {
                if !routes.iter().any(|r| same_route(r, &want)) {
                    drift
                        .push(format!("missing route {} in the container", describe(&want, cname)));
                }
            }
        }
    }

    let hname = &link.host_ifname;
    let Some(hlink) = lookup(&mut hsock, hname)? else {
        drift.push(format!("host veth {hname} is missing"));
        return Ok(drift);
    };
    let host_index = hlink.header.index;
    check_link(&mut drift, &hlink, hname, link.mtu);
    let mac = link_mac(&hlink).unwrap_or_default();
    if mac != format_mac(&HOST_MAC) {
        drift.push(format!("host veth {hname} has MAC {mac}, want {}", format_mac(&HOST_MAC)));
    }
    if let (Some(clink), Some(_)) = (&clink, container_index) {
        if peer_index(clink) != Some(host_index) {
            drift.push(format!("{cname} is not the peer of host veth {hname}"));
        }
    }
    let host_routes = all_routes(&mut hsock, Some(host_index))?;
    for ip in &addresses {
        if !host_routes.iter().any(|r| is_host_route(r, host_index, *ip)) {
            drift.push(format!(
                "host route missing: {} proto {ROUTE_PROTOCOL}",
                describe(&host_route(host_index, *ip), hname)
            ));
        }
    }
    let v6 = addresses.iter().any(IpAddr::is_ipv6);
    let hname_owned = hname.clone();
    let sysctl_drift = host.run(move || {
        host_sysctl_list(&hname_owned, v6)
            .into_iter()
            .filter(|(_, _, required)| *required)
            .filter_map(|(key, want, _)| match sysctl::read(&key) {
                Ok(got) if got == want => None,
                Ok(got) => Some(format!("sysctl {key} is {got}, want {want}")),
                Err(e) => Some(format!("sysctl {key} unreadable: {e}")),
            })
            .collect::<Vec<_>>()
    })?;
    drift.extend(sysctl_drift);
    Ok(drift)
}

/// What the workload's interface looks like now (for CHECK's comparison with the endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub mac: String,
    /// Addresses other than link-local ones.
    pub addresses: Vec<IpAddr>,
}

/// Reads the MAC and addresses of `ifname` in `container`; `None` when there is no such
/// interface.
pub fn observe(container: &Netns, ifname: &str) -> Result<Option<Observed>, Error> {
    let mut sock = container.socket()?;
    let Some(link) =
        sock.link_by_name(ifname).map_err(Error::netlink(format!("look up {ifname}")))?
    else {
        return Ok(None);
    };
    let addresses =
        global_addresses(&mut sock, link.header.index)?.into_iter().map(|(ip, _)| ip).collect();
    Ok(Some(Observed { mac: link_mac(&link).unwrap_or_default(), addresses }))
}

fn check_link(drift: &mut Vec<String>, link: &LinkMessage, name: &str, mtu: u32) {
    if link_kind(link) != Some(InfoKind::Veth) {
        drift.push(format!("{name} is not a veth"));
    }
    if !link.header.flags.contains(LinkFlags::Up) {
        drift.push(format!("{name} is down"));
    }
    let got = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    });
    if got != Some(mtu) {
        drift.push(format!("{name} has MTU {}, want {mtu}", got.unwrap_or(0)));
    }
}

fn peer_index(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Link(i) => Some(*i),
        _ => None,
    })
}

/// Addresses other than link-local ones, with their prefix length.
fn global_addresses(sock: &mut RouteSocket, index: u32) -> Result<Vec<(IpAddr, u8)>, Error> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let addrs = match sock.addresses(index, family) {
            Ok(a) => a,
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => continue,
            Err(e) => return Err(Error::netlink("list addresses")(e)),
        };
        for a in addrs {
            if let Some(ip) = address_of(&a) {
                let link_local = match ip {
                    IpAddr::V4(v4) => v4.is_link_local(),
                    IpAddr::V6(v6) => v6.is_unicast_link_local(),
                };
                if !link_local {
                    out.push((ip, a.header.prefix_len));
                }
            }
        }
    }
    Ok(out)
}

fn all_routes(sock: &mut RouteSocket, oif: Option<u32>) -> Result<Vec<RouteMessage>, Error> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        match sock.routes(family, oif) {
            Ok(r) => out.extend(r),
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(Error::netlink("list routes")(e)),
        }
    }
    Ok(out)
}

fn attr_dst(r: &RouteMessage) -> Option<&RouteAttribute> {
    r.attributes.iter().find(|a| matches!(a, RouteAttribute::Destination(_)))
}

fn attr_gw(r: &RouteMessage) -> Option<&RouteAttribute> {
    r.attributes.iter().find(|a| matches!(a, RouteAttribute::Gateway(_)))
}

/// Same destination and gateway. The output interface is not compared: a container's second
/// attachment shares the gateway routes that its first one installed.
fn same_route(got: &RouteMessage, want: &RouteMessage) -> bool {
    got.header.address_family == want.header.address_family
        && got.header.destination_prefix_length == want.header.destination_prefix_length
        && attr_dst(got) == attr_dst(want)
        && attr_gw(got) == attr_gw(want)
}

/// `dst/len [via gw] dev <name>`, for drift messages.
fn describe(r: &RouteMessage, dev: &str) -> String {
    let addr = |a: Option<&RouteAttribute>| match a {
        Some(RouteAttribute::Destination(x) | RouteAttribute::Gateway(x)) => match x {
            RouteAddress::Inet(ip) => ip.to_string(),
            RouteAddress::Inet6(ip) => ip.to_string(),
            other => format!("{other:?}"),
        },
        _ => String::new(),
    };
    let dst = match attr_dst(r) {
        None => "default".to_owned(),
        d => format!("{}/{}", addr(d), r.header.destination_prefix_length),
    };
    let via = attr_gw(r).map(|g| format!(" via {}", addr(Some(g)))).unwrap_or_default();
    format!("{dst}{via} dev {dev}")
}
