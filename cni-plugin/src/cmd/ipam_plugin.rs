//! The verbs of `tabby-ipam`, the IPAM plugin binary other CNI plugins (ptp, bridge, ...)
//! delegate to: the same in-process allocator `tabby` uses, answering with addresses only.
//!
//! ADD returns each address with its block's prefix and the link-local gateway tabby uses,
//! because plugins such as `ptp` install the prefix behind that gateway and need a prefix
//! shorter than /32 to do so.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::gc::{gc, Scope};
use super::version;
use crate::dataplane::{GATEWAY_V4, GATEWAY_V6};
use crate::ipam::{Backend, InProcess, InProcessConf, IpamRequest};
use crate::spec::{CniResult, Error, IpConfig, NetConf, Request};
use crate::store::endpoint;
use crate::store::Session;

pub(super) async fn dispatch(request: Request) -> Result<Option<Value>, Error> {
    match request {
        Request::Version(v) => Ok(Some(version(v))),
        Request::Add(inv) => {
            let p = allocator_for(&inv.conf)?;
            let req = IpamRequest::of(&inv);
            let session = p.session();
            let prefetch = session.bounded("read pools", endpoint::prefetch(session, None));
            let (nets, facts) = tokio::join!(p.add(&req), prefetch);
            let nets = nets?;
            let facts = facts.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read pools; answering with /32 and /128");
                endpoint::Prefetched::default()
            });
            let ips = nets
                .iter()
                .map(|net| {
                    let ip = net.addr();
                    let prefix = facts.pool_of(ip).map_or(net.prefix_len(), |pool| pool.block_size);
                    IpConfig {
                        address: IpNet::new(ip, prefix).unwrap_or(*net),
                        gateway: Some(gateway(ip)),
                        interface: None,
                    }
                })
                .collect();
            tracing::info!(container = %inv.container_id, ifname = %inv.ifname, addresses = ?nets,
                etcd_round_trips = session.round_trips(), "assigned");
            let result = CniResult { ips, ..CniResult::default() };
            Ok(Some(result.render(inv.conf.cni_version)))
        }
        Request::Del(inv) => {
            let p = allocator_for(&inv.conf)?;
            let freed = p.del(&IpamRequest::of(&inv)).await?;
            tracing::info!(container = %inv.container_id, ifname = %inv.ifname, ?freed, "released");
            Ok(None)
        }
        Request::Check(inv) => {
            let p = allocator_for(&inv.conf)?;
            let prev = inv.conf.prev_result.as_ref().ok_or_else(|| {
                Error::config("prevResult", "required by CHECK: it names the addresses to verify")
            })?;
            let ips: Vec<IpAddr> = prev.ips.iter().map(|ip| ip.address.addr()).collect();
            let drift = p.check(&IpamRequest::of(&inv), &ips).await?;
            if drift.is_empty() {
                Ok(None)
            } else {
                Err(Error::CheckFailed { drift })
            }
        }
        Request::Gc(m) => {
            let backend = Backend::InProcess(Box::new(allocator_for(&m.conf)?));
            gc(&m, Some(&backend), Scope::Addresses).await.map(|()| None)
        }
        Request::Status(m) => {
            let p = allocator_for(&m.conf)?;
            p.status().await.map(|()| None).map_err(|reason| Error::NotAvailable { reason })
        }
    }
}

/// The allocator for this config; etcd fields at the top level, the rest under `ipam`.
fn allocator_for(conf: &NetConf) -> Result<InProcess, Error> {
    let ipam = conf
        .ipam
        .as_ref()
        .ok_or_else(|| Error::config("ipam", "required: it configures tabby-ipam"))?;
    let parsed = InProcessConf::parse(ipam, conf)?;
    let session = Session::for_conf(conf, true)?
        .ok_or_else(|| Error::config("etcd_endpoints", "tabby-ipam needs the datastore"))?;
    Ok(InProcess::new(parsed, session, &conf.name).standalone())
}

fn gateway(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() {
        GATEWAY_V4.into()
    } else {
        GATEWAY_V6.into()
    }
}
