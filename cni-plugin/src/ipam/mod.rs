//! Where an attachment's addresses come from: the [`Backend`] is either the etcd block
//! allocator run in-process (`ipam.type: tabby-ipam`, no exec) or any other CNI IPAM plugin
//! exec'd from `CNI_PATH` (so `host-local` works too). The verbs see one type either way.

mod delegate;
pub mod inprocess;

use std::net::IpAddr;
use std::path::PathBuf;

pub use delegate::Delegate;
pub use inprocess::{handle_for, InProcess, InProcessConf, PLUGIN_TYPE};

use crate::spec::{
    CniArgs, CniResult, ContainerId, Error, IfName, Invocation, IpConfig, Maintenance, NetConf,
};
use crate::store::Session;

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
    /// Records the in-process allocator writes in its own transaction (the workload
    /// endpoint); a delegate, and requests for specific addresses, ignore it.
    pub also_write: Option<&'a ipam::AlsoWrite>,
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
            also_write: None,
        }
    }
}

/// What [`Backend::add`] got.
#[derive(Debug)]
pub struct Assigned {
    pub result: CniResult,
    /// Whether the request's `also_write` records were written with the addresses.
    pub records_written: bool,
    /// The pools the addresses came from, when the backend knows them (the in-process
    /// allocator, when it chose them).
    pub pools: Option<Vec<ipam::pool::Pool>>,
}

/// An address manager for CNI attachments.
#[derive(Debug)]
pub enum Backend {
    Delegate(Delegate),
    /// Boxed: it holds the allocator, far larger than a delegate's path.
    InProcess(Box<InProcess>),
}

impl Backend {
    /// Whether `conf` selects the in-process allocator (and so needs the datastore).
    pub fn is_in_process(conf: &NetConf) -> bool {
        conf.ipam.as_ref().is_some_and(|i| i.plugin_type == PLUGIN_TYPE)
    }

    /// The backend the config names, validated and located before anything is done; `None`
    /// when the config has no `ipam` section. The in-process one needs `session`.
    pub fn for_conf(
        conf: &NetConf,
        cni_path: &[PathBuf],
        session: Option<&Session>,
    ) -> Result<Option<Backend>, Error> {
        let Some(ipam) = conf.ipam.as_ref() else { return Ok(None) };
        if ipam.plugin_type != PLUGIN_TYPE {
            return Delegate::find(ipam, cni_path).map(|d| Some(Backend::Delegate(d)));
        }
        let parsed = InProcessConf::parse(ipam, conf)?;
        let session = session.ok_or_else(|| {
            Error::config("etcd_endpoints", "tabby-ipam needs the datastore but none is configured")
        })?;
        Ok(Some(Backend::InProcess(Box::new(InProcess::new(parsed, session.clone(), &conf.name)))))
    }

    /// Whether [`Backend::add`] will write `req.also_write` with the addresses and report
    /// their pools: the in-process allocator choosing the addresses itself.
    pub fn writes_records(&self, req: &IpamRequest<'_>) -> bool {
        matches!(self, Backend::InProcess(_))
            && req.also_write.is_some()
            && inprocess::requested_ips(req).is_empty()
    }

    /// Assigns the attachment's addresses: `ips` as the delegate gave them, or /32 and /128
    /// from the allocator.
    pub async fn add(&self, req: &IpamRequest<'_>) -> Result<Assigned, Error> {
        match self {
            Backend::Delegate(d) => {
                d.add(req).map(|result| Assigned { result, records_written: false, pools: None })
            }
            Backend::InProcess(p) => {
                let (nets, records_written, pools) = p.add_with(req).await?;
                let ips = nets.into_iter().map(|address| IpConfig {
                    address,
                    gateway: None,
                    interface: None,
                });
                let result = CniResult { ips: ips.collect(), ..CniResult::default() };
                Ok(Assigned { result, records_written, pools })
            }
        }
    }

    /// Releases the attachment's addresses; idempotent.
    pub async fn del(&self, req: &IpamRequest<'_>) -> Result<(), Error> {
        match self {
            Backend::Delegate(d) => d.del(req),
            Backend::InProcess(p) => p.del(req).await.map(drop),
        }
    }

    /// Drift between IPAM and the attachment's addresses, one line each. A delegate does its
    /// own CHECK (with the runtime's prevResult) and answers with an error or nothing.
    pub async fn check(&self, req: &IpamRequest<'_>, ips: &[IpAddr]) -> Result<Vec<String>, Error> {
        match self {
            Backend::Delegate(d) => d.check(req).map(|()| Vec::new()),
            Backend::InProcess(p) => p.check(req, ips).await,
        }
    }

    /// STATUS: whether an ADD could get addresses now (code 50 otherwise).
    pub async fn status(&self, req: &Maintenance) -> Result<(), Error> {
        match self {
            Backend::Delegate(d) => d.status(req),
            Backend::InProcess(p) => {
                p.status().await.map_err(|reason| Error::NotAvailable { reason })
            }
        }
    }
}
