//! DEL: best-effort and idempotent. Removes the host veth (and with it the container end
//! and the host routes), then releases the addresses. Works without `CNI_NETNS`.

use std::path::PathBuf;

use crate::dataplane::{self, host_veth_name, Netns};
use crate::ipam::{Ipam, IpamRequest};
use crate::spec::{Error, Invocation};

/// Detaches the container. `ipam` is `Ok(None)` when the config has no IPAM section, and an
/// error when its plugin cannot be found: the veth is removed either way and the IPAM error
/// is reported afterwards.
pub async fn del<I: Ipam>(
    inv: &Invocation<Option<PathBuf>>,
    ipam: Result<Option<I>, Error>,
) -> Result<(), Error> {
    let host_ifname = host_veth_name(inv.container_id.as_str(), inv.ifname.as_str());
    // The host end is named after the attachment, so it is found without entering the
    // container's namespace, which may be gone already (Mesos then omits CNI_NETNS).
    let dataplane = dataplane::teardown(&Netns::current(), &host_ifname);
    match &dataplane {
        Ok(true) => tracing::info!(container = %inv.container_id, %host_ifname, "veth removed"),
        Ok(false) => {
            tracing::info!(container = %inv.container_id, %host_ifname, "no veth to remove");
        }
        Err(e) => tracing::warn!(container = %inv.container_id, error = %e, "veth removal failed"),
    }
    let released = match ipam {
        Ok(None) => Ok(()),
        Err(e) => Err(e),
        Ok(Some(mut ipam)) => ipam.del(&IpamRequest::of(inv)).await,
    };
    dataplane?;
    released
}
