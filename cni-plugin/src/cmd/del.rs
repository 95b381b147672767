//! DEL: best-effort and idempotent. Removes the host veth (and with it the container end
//! and the host routes), releases the addresses and deletes the workload endpoint, all three
//! at once; whatever is already gone counts as done. Works without `CNI_NETNS`. The veth is
//! cut off before DEL answers; the pair itself may still be on its way out for a few tens of
//! milliseconds (see `reap`).

use std::path::PathBuf;
use std::time::Instant;

use super::reap;
use crate::dataplane::{self, host_veth_name, Netns};
use crate::ipam::{Backend, IpamRequest};
use crate::spec::{Error, Invocation};
use crate::store::endpoint::{self, EndpointPlan};
use crate::store::Session;

/// Detaches the container. `backend` and `session` are errors when the config could not
/// produce them (IPAM plugin missing, bad etcd settings): the other steps still run and
/// those errors are reported afterwards, the first failed step's error winning.
pub async fn del(
    inv: &Invocation<Option<PathBuf>>,
    backend: Result<Option<Backend>, Error>,
    session: Result<Option<Session>, Error>,
) -> Result<(), Error> {
    let started = Instant::now();
    let host_ifname = host_veth_name(inv.container_id.as_str(), inv.ifname.as_str());
    // The host end is named after the attachment, so it is found without entering the
    // container's namespace, which may be gone already (Mesos then omits CNI_NETNS).
    let veth = {
        let name = host_ifname.clone();
        tokio::task::spawn_blocking(move || remove_veth(&name))
    };
    let req = IpamRequest::of(inv);
    let ipam = async {
        match &backend {
            Ok(Some(b)) => b.del(&req).await,
            _ => Ok(()),
        }
    };
    let record = async {
        let Ok(Some(s)) = &session else { return Ok(false) };
        let key = EndpointPlan::key_only(s, &inv.conf, &inv.container_id, &inv.ifname)?;
        s.bounded_cleanup("delete workload endpoint", async {
            endpoint::delete(s.client().await?, &key, None).await
        })
        .await
    };
    let (veth, ipam, record) = tokio::join!(veth, ipam, record);
    let veth: Result<bool, Error> = match veth {
        Ok(done) => done.map_err(Error::from),
        Err(e) => Err(Error::internal(format!("delete {host_ifname}"), e)),
    };
    let container = &inv.container_id;
    match &veth {
        Ok(true) => tracing::debug!(%container, %host_ifname, "veth removed"),
        Ok(false) => tracing::debug!(%container, %host_ifname, "no veth to remove"),
        Err(e) => tracing::warn!(%container, error = %e, "veth removal failed"),
    }
    if let Err(e) = &ipam {
        tracing::warn!(%container, error = %e, "address release failed");
    }
    match &record {
        Ok(deleted) => tracing::debug!(%container, deleted, "workload endpoint"),
        Err(e) => tracing::warn!(%container, error = %e, "workload endpoint removal failed"),
    }
    tracing::info!(
        %container, ifname = %inv.ifname, elapsed = ?started.elapsed(),
        etcd_round_trips = session.as_ref().ok().and_then(Option::as_ref).map_or(0, Session::round_trips),
        "detached"
    );
    veth?;
    session?;
    backend?;
    ipam?;
    record.map(drop)
}

/// Cuts the veth off (routes, link down) and leaves the kernel's ~20 ms deletion of the pair
/// to a reaper process; deletes it here when no reaper can start.
fn remove_veth(name: &str) -> Result<bool, dataplane::Error> {
    let host = Netns::current();
    let Some(link) = dataplane::detach(&host, name)? else { return Ok(false) };
    match reap::spawn(&link) {
        Ok(()) => tracing::debug!(ifname = name, index = link.index, "veth left to a reaper"),
        Err(e) => {
            tracing::debug!(ifname = name, error = %e, "no reaper; deleting the veth here");
            dataplane::delete_detached(&host, &link)?;
        }
    }
    Ok(true)
}
