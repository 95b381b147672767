//! The IPAM seam: where the plugin gets addresses from. [`Delegate`] execs a CNI IPAM plugin
//! from `CNI_PATH` (so `host-local` works); the in-process etcd allocator plugs in behind the
//! same trait.

mod delegate;

use std::path::PathBuf;

pub use delegate::Delegate;

use crate::spec::{
    CniArgs, CniResult, ContainerId, Error, IfName, Invocation, Maintenance, NetConf,
};

/// Everything an IPAM backend may need for one attachment.
#[derive(Clone, Copy, Debug)]
pub struct IpamRequest<'a> {
    pub container_id: &'a ContainerId,
    pub ifname: &'a IfName,
    pub conf: &'a NetConf,
    pub args: &'a CniArgs,
    /// The config exactly as the runtime sent it (what a delegate must receive).
    pub stdin: &'a [u8],
    pub cni_path: &'a [PathBuf],
}

impl<'a> IpamRequest<'a> {
    /// The IPAM view of an ADD, CHECK or DEL.
    pub fn of<N>(inv: &'a Invocation<N>) -> IpamRequest<'a> {
        IpamRequest {
            container_id: &inv.container_id,
            ifname: &inv.ifname,
            conf: &inv.conf,
            args: &inv.args,
            stdin: &inv.stdin,
            cni_path: &inv.cni_path,
        }
    }
}

/// An address manager for CNI attachments.
///
/// `add` returns at least the addresses (`ips`); interfaces in its result are ignored. `del`
/// must be idempotent: releasing what is not allocated is success.
// The plugin runs one command on a current-thread runtime, so these futures never need to
// be `Send`; the lint warns about exactly that missing bound.
#[allow(async_fn_in_trait)]
pub trait Ipam {
    async fn add(&mut self, req: &IpamRequest<'_>) -> Result<CniResult, Error>;
    async fn del(&mut self, req: &IpamRequest<'_>) -> Result<(), Error>;
    async fn check(&mut self, req: &IpamRequest<'_>) -> Result<(), Error>;
    /// Releases allocations whose attachment is not in the GC request's valid list.
    async fn gc(&mut self, req: &Maintenance) -> Result<(), Error>;
    /// Whether an ADD could be served now (code 50/51 otherwise).
    async fn status(&mut self, req: &Maintenance) -> Result<(), Error>;
}
