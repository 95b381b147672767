//! ADD: addresses from IPAM, then the veth pair, addresses and routes; undo everything on
//! failure.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::dataplane::{
    self, format_mac, host_veth_name, Attached, Netns, WorkloadLink, GATEWAY_V4, GATEWAY_V6,
    HOST_MAC,
};
use crate::ipam::{Ipam, IpamRequest};
use crate::spec::{CniResult, Error, Interface, Invocation, IpConfig, Route};

/// Attaches the container and returns the result (merged after any prevResult).
pub async fn add(inv: &Invocation<PathBuf>, ipam: &mut impl Ipam) -> Result<CniResult, Error> {
    // Opening the namespace first means a vanished container fails before any address is
    // taken, with nothing to undo.
    let container = Netns::open(&inv.netns)?;
    let host = Netns::current();
    let req = IpamRequest::of(inv);
    let assigned = match ipam.add(&req).await {
        Ok(r) => r,
        Err(e) => {
            // The spec asks for a DEL on a delegate whose ADD failed: it may have kept
            // half an allocation.
            release(ipam, &req, "failed IPAM ADD").await;
            return Err(e);
        }
    };
    let addresses: Vec<IpAddr> = assigned.ips.iter().map(|ip| ip.address.addr()).collect();
    tracing::debug!(?addresses, "IPAM assigned");
    if addresses.is_empty() {
        release(ipam, &req, "empty IPAM result").await;
        return Err(Error::Internal { what: "IPAM returned no addresses".into(), source: None });
    }
    let link = WorkloadLink {
        host_ifname: host_veth_name(inv.container_id.as_str(), inv.ifname.as_str()),
        container_ifname: inv.ifname.to_string(),
        mtu: inv.conf.mtu(),
        addresses,
    };
    let attached = match dataplane::setup(&host, &container, &link) {
        Ok(a) => a,
        Err(e) => {
            release(ipam, &req, "failed veth setup").await;
            return Err(e.into());
        }
    };
    tracing::info!(
        container = %inv.container_id, ifname = %inv.ifname, host_ifname = %attached.host_ifname,
        addresses = ?link.addresses, "attached"
    );
    let own = result_for(inv, &link, &attached, assigned);
    Ok(match inv.conf.prev_result.clone() {
        Some(prev) => prev.merge(own),
        None => own,
    })
}

/// Best-effort IPAM release during rollback; the original error is what the runtime hears.
async fn release(ipam: &mut impl Ipam, req: &IpamRequest<'_>, why: &str) {
    if let Err(e) = ipam.del(req).await {
        tracing::warn!(error = %e, "rollback after {why}: IPAM release failed");
    }
}

/// Interfaces `[host veth, container veth]`, every address on the container one as /32 or
/// /128 with the link-local gateway, and the default routes the container now has.
fn result_for(
    inv: &Invocation<PathBuf>,
    link: &WorkloadLink,
    attached: &Attached,
    assigned: CniResult,
) -> CniResult {
    let gateway = |ip: &IpAddr| -> IpAddr {
        if ip.is_ipv4() {
            GATEWAY_V4.into()
        } else {
            GATEWAY_V6.into()
        }
    };
    let ips = link
        .addresses
        .iter()
        .map(|ip| IpConfig {
            address: ipnet::IpNet::from(*ip),
            gateway: Some(gateway(ip)),
            interface: Some(1),
        })
        .collect();
    let mut routes = Vec::new();
    if link.addresses.iter().any(IpAddr::is_ipv4) {
        routes.push(Route {
            dst: ipnet::IpNet::V4(ipnet::Ipv4Net::default()),
            gw: Some(GATEWAY_V4.into()),
        });
    }
    if link.addresses.iter().any(IpAddr::is_ipv6) {
        routes.push(Route {
            dst: ipnet::IpNet::V6(ipnet::Ipv6Net::default()),
            gw: Some(GATEWAY_V6.into()),
        });
    }
    CniResult {
        interfaces: vec![
            Interface {
                name: attached.host_ifname.clone(),
                mac: Some(format_mac(&HOST_MAC)),
                mtu: Some(link.mtu),
                sandbox: None,
            },
            Interface {
                name: attached.container_ifname.clone(),
                mac: Some(attached.container_mac.clone()),
                mtu: Some(link.mtu),
                sandbox: Some(inv.netns.display().to_string()),
            },
        ],
        ips,
        routes,
        dns: assigned.dns,
    }
}
