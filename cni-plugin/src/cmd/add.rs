//! ADD: the veth pair and the addresses (made at the same time), then the pair's addresses
//! and routes and the workload endpoint (written at the same time); undo everything on
//! failure.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use ipnet::IpNet;

use crate::dataplane::{
    self, format_mac, host_veth_name, Attached, Netns, WorkloadLink, GATEWAY_V4, GATEWAY_V6,
    HOST_MAC,
};
use crate::ipam::{Backend, IpamRequest};
use crate::spec::{CniResult, Error, Interface, Invocation, IpConfig, Route, DEFAULT_MTU};
use crate::store::endpoint::{self, EndpointPlan, Prefetched};
use crate::store::Session;

/// Attaches the container and returns the result (merged after any prevResult).
///
/// The kernel and etcd work overlap: the veth pair is created on a blocking thread while
/// IPAM assigns the addresses, and the same thread configures it with the addresses as soon
/// as IPAM has planned them, while their transaction (which also writes the endpoint) is in
/// flight. The rare plan that loses its race and commits other addresses gets a pair made
/// afresh.
pub async fn add(
    inv: &Invocation<PathBuf>,
    backend: &Backend,
    session: Option<&Session>,
) -> Result<CniResult, Error> {
    let started = Instant::now();
    // Everything that can be refused for its input is refused before anything is made.
    let plan = session
        .map(|s| EndpointPlan::new(s, &inv.conf, &inv.container_id, &inv.ifname))
        .transpose()?;
    // Opening the namespace first means a vanished container fails before any address is
    // taken, with nothing to undo. Its netlink socket is opened now too, while this thread
    // has nothing else to do and a failure still needs no rollback.
    let container = Netns::open_with_socket(&inv.netns)?;
    let host_ifname = host_veth_name(inv.container_id.as_str(), inv.ifname.as_str());
    // The container end's MAC is chosen here, so the endpoint record is complete as soon as
    // the addresses are known and rides in the allocation's own transaction.
    let mac = dataplane::random_mac();
    let mac_text = format_mac(&mac);
    // IPAM's planned addresses, then `None` once IPAM is over.
    let (planned_tx, planned_rx) = std::sync::mpsc::channel::<Option<Vec<IpAddr>>>();
    let also_write = plan
        .as_ref()
        .and_then(|p| endpoint_with_allocation(p, &host_ifname, &mac_text, planned_tx.clone()));
    let mut req = IpamRequest::of(inv);
    req.also_write = also_write.as_ref();
    // The allocator's transaction then carries the endpoint and the profile, and the IPAM
    // result names the pools: there is nothing left to read beforehand.
    let needs_prefetch = !backend.writes_records(&req);

    // The MTU may still change once the pool is known; changing it later costs two netlink
    // requests, waiting for it would cost the overlap.
    let first_mtu = inv.conf.mtu.unwrap_or(DEFAULT_MTU);
    // One task for both steps: a second one would mostly get a second thread (the first is
    // not idle again yet when it is spawned), whose start costs as much as the configuring.
    let early = {
        let (host_ifname, container_ifname) = (host_ifname.clone(), inv.ifname.to_string());
        let worker = tokio::task::spawn_blocking(move || {
            let names = (host_ifname.as_str(), container_ifname.as_str());
            make_early(container, names, first_mtu, mac, &planned_rx, started)
        });
        async move { worker.await.map_err(|e| Error::internal("veth worker failed", e))? }
    };
    // Otherwise the pools (for the MTU) and the profile's existence are read while IPAM
    // works.
    let prefetch = async {
        let (Some(s), Some(plan), true) = (session, plan.as_ref(), needs_prefetch) else {
            return Prefetched::default();
        };
        match s.bounded("read pools", endpoint::prefetch(s, Some(&plan.profile_key))).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "prefetch failed; defaults apply");
                Prefetched::default()
            }
        }
    };
    let ipam = async {
        // The prefetch is polled first: its request opens the connection to etcd, which then
        // comes up while IPAM plans (see the in-process backend's yield).
        let (facts, assigned) = tokio::join!(prefetch, backend.add(&req));
        // The worker may be waiting for a plan that will not come; it may also be gone.
        let _ = planned_tx.send(None);
        (assigned, facts)
    };
    let (early, (assigned, facts)) = tokio::join!(early, ipam);
    // A delegate may keep half an allocation (the spec asks for a DEL); an in-process
    // assignment that timed out may have been written, but only if a write went out (a hung
    // etcd usually stops the first read, and then there is nothing to undo).
    let may_hold =
        |e: &Error| matches!(backend, Backend::Delegate(_)) || (e.is_retryable() && wrote(session));
    let (early, assigned) = match (early, assigned) {
        (Ok(early), Ok(assigned)) => (early, assigned),
        (Ok(early), Err(e)) => {
            early.undo(&host_ifname);
            if may_hold(&e) {
                forget_endpoint(session, plan.as_ref(), also_write.is_some()).await;
                release(backend, &req, "failed IPAM ADD").await;
            }
            return Err(e);
        }
        (Err(e), assigned) => {
            if assigned.as_ref().map_or_else(may_hold, |_| true) {
                forget_endpoint(session, plan.as_ref(), also_write.is_some()).await;
                release(backend, &req, "failed veth creation").await;
            }
            return Err(e);
        }
    };
    let endpoint_written = assigned.records_written;
    let facts = match assigned.pools {
        // Written with the endpoint: the profile exists now, whoever made it.
        Some(pools) if endpoint_written => Prefetched { profile_exists: Some(true), pools },
        Some(pools) => Prefetched { pools, ..facts },
        None => facts,
    };
    let assigned = assigned.result;
    let addresses: Vec<IpAddr> = assigned.ips.iter().map(|ip| ip.address.addr()).collect();
    tracing::debug!(?addresses, elapsed = ?started.elapsed(), "IPAM assigned, veth created");
    if addresses.is_empty() {
        early.undo(&host_ifname);
        release(backend, &req, "empty IPAM result").await;
        return Err(Error::Internal { what: "IPAM returned no addresses".into(), source: None });
    }
    let mtu = inv.conf.mtu.or_else(|| facts.mtu_for(&addresses)).unwrap_or(DEFAULT_MTU);
    let link = WorkloadLink {
        host_ifname: host_ifname.clone(),
        container_ifname: inv.ifname.to_string(),
        mtu,
        addresses,
    };
    let nets: Vec<IpNet> = link.addresses.iter().map(|ip| IpNet::from(*ip)).collect();
    let record = plan.as_ref().map(|p| p.record(&nets, &host_ifname, &mac_text));

    let configured = early.finish(&link, first_mtu, mac, started);
    let written = async {
        let (Some(s), Some(plan), Some(record)) = (session, plan.as_ref(), record.as_ref()) else {
            return Ok(());
        };
        s.bounded("write workload endpoint", async {
            let client = s.client().await?;
            if !endpoint_written {
                return endpoint::write(client, plan, record, facts.profile_exists).await.map(drop);
            }
            // The endpoint went in with the addresses; only a missing profile is left.
            if facts.profile_exists == Some(true) {
                return Ok(());
            }
            endpoint::ensure_profile(client, &plan.profile_key, &plan.profile).await
        })
        .await
        .map(|()| tracing::debug!(elapsed = ?started.elapsed(), "endpoint written"))
    };
    let (configured, written) = tokio::join!(configured, written);
    // A failed configuration removed its pair itself; after it succeeded, the pair is ours
    // to remove if the endpoint write failed.
    let veth_made = configured.is_ok();
    let attached = match configured.and_then(|attached| written.map(|()| attached)) {
        Ok(attached) => attached,
        Err(e) => {
            if veth_made {
                teardown(&host_ifname);
            }
            // The write may have landed before it failed (a timeout), or landed while the
            // veth failed: remove it either way.
            forget_endpoint(session, plan.as_ref(), true).await;
            release(backend, &req, "failed ADD").await;
            return Err(e);
        }
    };
    tracing::info!(
        container = %inv.container_id, ifname = %inv.ifname, host_ifname = %attached.host_ifname,
        addresses = ?link.addresses, mtu = link.mtu, elapsed = ?started.elapsed(),
        etcd_round_trips = session.map_or(0, Session::round_trips), "attached"
    );
    let own = result_for(inv, &link, &attached, assigned);
    Ok(match inv.conf.prev_result.clone() {
        Some(prev) => prev.merge(own),
        None => own,
    })
}

/// The veth pair once made, and configured if IPAM planned addresses before it finished.
enum Early {
    /// Made, not configured: IPAM finished without announcing a plan (a delegate plugin).
    Made(Netns, dataplane::Created),
    /// Configured with `addresses` at the first MTU (or failed to be, and then removed).
    Configured { container: Netns, result: Result<Attached, Error>, addresses: Vec<IpAddr> },
}

/// Makes the pair, then waits for IPAM's planned addresses (or its end) and configures the
/// pair with them. Runs on a blocking thread.
fn make_early(
    container: Netns,
    (host_ifname, container_ifname): (&str, &str),
    mtu: u32,
    mac: [u8; 6],
    planned: &std::sync::mpsc::Receiver<Option<Vec<IpAddr>>>,
    started: Instant,
) -> Result<Early, Error> {
    let host = Netns::current();
    let made = dataplane::create(&host, &container, host_ifname, container_ifname, mtu, Some(mac))?;
    tracing::debug!(elapsed = ?started.elapsed(), "veth pair created");
    // The first message wins: a plan announced before IPAM finished is still used.
    let Ok(Some(addresses)) = planned.recv() else { return Ok(Early::Made(container, made)) };
    let result = made.configure(&host, &container, &addresses, mtu);
    tracing::debug!(elapsed = ?started.elapsed(), "veth configured with the planned addresses");
    Ok(Early::Configured { container, result: result.map_err(Error::from), addresses })
}

impl Early {
    /// Rollback: removes whatever pair is left.
    fn undo(self, host_ifname: &str) {
        match self {
            Early::Made(_, pair) => remove(pair),
            Early::Configured { result: Ok(_), .. } => teardown(host_ifname),
            // A failed configuration removed its pair.
            Early::Configured { result: Err(_), .. } => {}
        }
    }

    /// The pair attached as `link` says: configured now, or checked against what it was
    /// configured with (MTU adjusted, or made afresh for addresses the plan did not commit).
    async fn finish(
        self,
        link: &WorkloadLink,
        first_mtu: u32,
        mac: [u8; 6],
        started: Instant,
    ) -> Result<Attached, Error> {
        let early = match self {
            // The usual case: nothing left to do, and no thread to wake for it.
            Early::Configured { result, addresses, .. }
                if addresses == link.addresses && link.mtu == first_mtu =>
            {
                return result;
            }
            other => other,
        };
        let link = link.clone();
        let host_ifname = link.host_ifname.clone();
        let joined = tokio::task::spawn_blocking(move || -> Result<Attached, Error> {
            let host = Netns::current();
            let done = match early {
                Early::Made(container, made) => {
                    made.configure(&host, &container, &link.addresses, link.mtu)?
                }
                Early::Configured { container, result, addresses } => {
                    let attached = result?;
                    if addresses == link.addresses {
                        if link.mtu != first_mtu {
                            dataplane::set_pair_mtu(&host, &container, &attached, link.mtu)
                                .inspect_err(|_| teardown(&link.host_ifname))?;
                        }
                        attached
                    } else {
                        // The plan lost a race and committed other addresses.
                        tracing::debug!(planned = ?addresses, committed = ?link.addresses, "re-making the veth pair");
                        dataplane::teardown(&host, &link.host_ifname)?;
                        let made = dataplane::create(
                            &host,
                            &container,
                            &link.host_ifname,
                            &link.container_ifname,
                            link.mtu,
                            Some(mac),
                        )?;
                        made.configure(&host, &container, &link.addresses, link.mtu)?
                    }
                }
            };
            tracing::debug!(elapsed = ?started.elapsed(), "veth configured");
            Ok(done)
        });
        match joined.await {
            Ok(done) => done,
            Err(e) => Err(Error::internal(format!("configure {host_ifname}: worker failed"), e)),
        }
    }
}

/// The workload endpoint as records for the allocator's transaction: written with the
/// addresses, or not at all, with the network's default profile where it is missing; the
/// planned addresses are also announced on `planned`. `None` when a record cannot be encoded
/// (the endpoint is then written on its own, which reports the error). The endpoint write is
/// unconditional: an endpoint already at this key can only be a stale one of this same
/// attachment.
fn endpoint_with_allocation(
    plan: &EndpointPlan,
    host_ifname: &str,
    mac: &str,
    planned: std::sync::mpsc::Sender<Option<Vec<IpAddr>>>,
) -> Option<ipam::AlsoWrite> {
    plan.record(&[], host_ifname, mac).to_json().ok()?;
    let profile = datastore::model::Profile::classic_default(&plan.profile).to_json().ok()?;
    let profile_key = plan.profile_key.clone();
    let (plan, host_ifname, mac) = (plan.clone(), host_ifname.to_owned(), mac.to_owned());
    let records = ipam::AlsoWrite::new(move |assigned| {
        let nets: Vec<IpNet> = assigned.all().collect();
        // Called as the transaction is built: the pair can be configured meanwhile.
        let _ = planned.send(Some(nets.iter().map(IpNet::addr).collect()));
        match plan.record(&nets, &host_ifname, &mac).to_json() {
            Ok(json) => vec![(plan.key.clone(), json)],
            Err(e) => {
                tracing::warn!(key = %plan.key, error = %e, "cannot encode workload endpoint");
                Vec::new()
            }
        }
    });
    Some(records.with_default(profile_key, profile))
}

/// Best-effort removal of the workload endpoint during rollback, when one may have been
/// written (`maybe_written`).
async fn forget_endpoint(
    session: Option<&Session>,
    plan: Option<&EndpointPlan>,
    maybe_written: bool,
) {
    let (Some(s), Some(plan), true) = (session, plan, maybe_written) else { return };
    let deleted = s
        .bounded_cleanup("remove workload endpoint", async {
            endpoint::delete(s.client().await?, &plan.key, None).await
        })
        .await;
    if let Err(undo) = deleted {
        tracing::warn!(key = %plan.key, error = %undo, "rollback: cannot delete workload endpoint");
    }
}

/// Best-effort removal of a pair made for an ADD that failed.
fn remove(pair: dataplane::Created) {
    let name = pair.host_ifname().to_owned();
    if let Err(e) = pair.remove() {
        tracing::warn!(ifname = %name, error = %e, "rollback: cannot delete veth");
    }
}

fn wrote(session: Option<&Session>) -> bool {
    session.is_some_and(|s| s.writes_attempted() > 0)
}

/// Best-effort IPAM release during rollback; the original error is what the runtime hears.
async fn release(backend: &Backend, req: &IpamRequest<'_>, why: &str) {
    if let Err(e) = backend.del(req).await {
        tracing::warn!(error = %e, "rollback after {why}: IPAM release failed");
    }
}

/// Best-effort veth removal during rollback.
fn teardown(host_ifname: &str) {
    if let Err(e) = dataplane::teardown(&Netns::current(), host_ifname) {
        tracing::warn!(ifname = host_ifname, error = %e, "rollback: cannot delete veth");
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
            address: IpNet::from(*ip),
            gateway: Some(gateway(ip)),
            interface: Some(1),
        })
        .collect();
    let mut routes = Vec::new();
    if link.addresses.iter().any(IpAddr::is_ipv4) {
        routes
            .push(Route { dst: IpNet::V4(ipnet::Ipv4Net::default()), gw: Some(GATEWAY_V4.into()) });
    }
    if link.addresses.iter().any(IpAddr::is_ipv6) {
        routes
            .push(Route { dst: IpNet::V6(ipnet::Ipv6Net::default()), gw: Some(GATEWAY_V6.into()) });
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
