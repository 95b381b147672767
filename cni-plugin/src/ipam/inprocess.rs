//! `tabby-ipam` run inside the plugin: the etcd block allocator called directly, without
//! an exec, on the invocation's shared etcd [`Session`].

use std::net::IpAddr;
use std::path::PathBuf;

use ipam::pool::Pool;
use ipam::{attr, Allocator, AllocatorOptions, AssignRequest, Attrs, IpamError};
use ipnet::IpNet;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::IpamRequest;
use crate::spec::{Error, IpamConf, NetConf};
use crate::store::Session;

/// The `ipam.type` that selects the in-process allocator.
pub const PLUGIN_TYPE: &str = "tabby-ipam";

/// The `ipam` block of a `tabby-ipam` config, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InProcessConf {
    /// Pools (names or CIDRs) to allocate IPv4 from; empty: every pool selecting the node.
    pub v4_pools: Vec<String>,
    pub v6_pools: Vec<String>,
    pub assign_v4: bool,
    pub assign_v6: bool,
    pub lock_file: PathBuf,
}

impl InProcessConf {
    /// Reads `ipv4_pools`, `ipv6_pools`, `assign_ipv4` (default true), `assign_ipv6`
    /// (default false) and `ipam_lock_file` (here or at the top level). Booleans may be
    /// JSON booleans or Calico's strings `"true"`/`"false"`.
    pub fn parse(ipam: &IpamConf, conf: &NetConf) -> Result<InProcessConf, Error> {
        let pools = |field: &str| -> Result<Vec<String>, Error> {
            match ipam.rest.get(field) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v.as_str().map(str::trim) {
                        Some(s) if !s.is_empty() => Ok(s.to_owned()),
                        _ => Err(Error::config(
                            format!("ipam.{field}[{i}]"),
                            format!("{v} is not a pool name or CIDR"),
                        )),
                    })
                    .collect(),
                Some(other) => Err(Error::config(
                    format!("ipam.{field}"),
                    format!("{other} is not a list of pool names or CIDRs"),
                )),
            }
        };
        let flag = |field: &str, default: bool| -> Result<bool, Error> {
            match ipam.rest.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
                Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
                Some(other) => Err(Error::config(
                    format!("ipam.{field}"),
                    format!("{other} is not true or false"),
                )),
            }
        };
        let lock_file = match ipam.rest.get("ipam_lock_file") {
            None | Some(Value::Null) => conf
                .ipam_lock_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(ipam::lock::DEFAULT_LOCK_FILE)),
            Some(Value::String(s)) if s.starts_with('/') => PathBuf::from(s),
            Some(other) => {
                return Err(Error::config(
                    "ipam.ipam_lock_file",
                    format!("{other} is not an absolute path"),
                ))
            }
        };
        let parsed = InProcessConf {
            v4_pools: pools("ipv4_pools")?,
            v6_pools: pools("ipv6_pools")?,
            assign_v4: flag("assign_ipv4", true)?,
            assign_v6: flag("assign_ipv6", false)?,
            lock_file,
        };
        if !parsed.assign_v4 && !parsed.assign_v6 {
            return Err(Error::config(
                "ipam.assign_ipv4",
                "assign_ipv4 and assign_ipv6 are both false: there would be nothing to assign",
            ));
        }
        Ok(parsed)
    }
}

/// The allocator of this node, connected on first use.
#[derive(Debug)]
pub struct InProcess {
    conf: InProcessConf,
    session: Session,
    network: String,
    /// Running as the stand-alone `tabby-ipam` plugin: no endpoint backs the addresses.
    standalone: bool,
    allocator: OnceCell<Allocator>,
}

impl InProcess {
    pub fn new(conf: InProcessConf, session: Session, network: &str) -> InProcess {
        InProcess {
            conf,
            session,
            network: network.to_owned(),
            standalone: false,
            allocator: OnceCell::new(),
        }
    }

    /// Marks this allocator as the stand-alone `tabby-ipam` plugin: its allocations carry
    /// `type: cniIpamPluginAddress`, so `ipamctl check`/`gc` leave them to the runtime.
    pub fn standalone(mut self) -> InProcess {
        self.standalone = true;
        self
    }

    pub fn conf(&self) -> &InProcessConf {
        &self.conf
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The handle of an attachment: `<network>.<containerid>.<ifname>`.
    pub fn handle(&self, container_id: &str, ifname: &str) -> String {
        handle_for(&self.network, container_id, ifname)
    }

    /// The allocator, connecting to etcd if this is the first etcd work of the invocation.
    pub async fn allocator(&self) -> Result<&Allocator, Error> {
        self.allocator
            .get_or_try_init(|| async {
                let client = self.session.client().await?.clone();
                let timeout = self.session.timeout();
                // Beside the lock: the hint and the memo save the next ADD round trips, and
                // the lock's directory is the one place every invocation on this host can
                // write.
                let beside = |suffix: &str| {
                    let mut path = self.conf.lock_file.clone().into_os_string();
                    path.push(suffix);
                    std::path::PathBuf::from(path)
                };
                let opts = AllocatorOptions {
                    lock_file: Some(self.conf.lock_file.clone()),
                    hint_file: Some(beside(".hint")),
                    memo_file: Some(beside(".memo")),
                    lock_timeout: timeout,
                    timeout,
                    ..AllocatorOptions::default()
                };
                Allocator::new(client, self.session.keys().clone(), self.session.node(), opts)
                    .map_err(|e| ipam_error("set up the allocator", &e))
            })
            .await
    }

    /// Assigns the attachment's addresses: exactly the requested ones when the runtime
    /// asked for specific addresses, else one per enabled family. All or nothing.
    pub async fn add(&self, req: &IpamRequest<'_>) -> Result<Vec<IpNet>, Error> {
        self.add_with(req).await.map(|(nets, _, _)| nets)
    }

    /// [`InProcess::add`], also writing `req.also_write` in the allocation's transaction when
    /// the allocator picks the addresses; the flag says whether it did, and then the pools
    /// the addresses came from are known too.
    pub async fn add_with(
        &self,
        req: &IpamRequest<'_>,
    ) -> Result<(Vec<IpNet>, bool, Option<Vec<Pool>>), Error> {
        let handle = self.handle(req.container_id.as_str(), req.ifname.as_str());
        let mut attrs = Attrs::from([
            (attr::CONTAINER_ID.to_owned(), req.container_id.to_string()),
            (attr::INTERFACE.to_owned(), req.ifname.to_string()),
            (attr::NETWORK.to_owned(), self.network.clone()),
        ]);
        if self.standalone {
            attrs.insert(attr::TYPE.to_owned(), attr::TYPE_IPAM_PLUGIN.to_owned());
        }
        let requested = requested_ips(req);
        self.session
            .bounded("assign addresses", async {
                let allocator = self.allocator().await?;
                // Planning (often on the memo alone) is CPU work that does not yield: let the
                // ADD's other etcd request go out first, so the connection to etcd (made on
                // the first request) is set up by etcd while this process plans. (There is
                // none when the endpoint rides in the allocation.)
                tokio::task::yield_now().await;
                if requested.is_empty() {
                    let assign = AssignRequest {
                        handle: handle.clone(),
                        attrs,
                        num_v4: usize::from(self.conf.assign_v4),
                        num_v6: usize::from(self.conf.assign_v6),
                        v4_pools: self.conf.v4_pools.clone(),
                        v6_pools: self.conf.v6_pools.clone(),
                        also_write: req.also_write.cloned(),
                    };
                    let got = Box::pin(allocator.assign(&assign))
                        .await
                        .map_err(|e| ipam_error("assign", &e))?;
                    Ok((got.all().collect(), req.also_write.is_some(), Some(got.pools)))
                } else {
                    tracing::debug!(?requested, "assigning requested addresses");
                    Box::pin(allocator.assign_ips(&requested, &handle, &attrs))
                        .await
                        .map(|nets| (nets, false, None))
                        .map_err(|e| ipam_error("assign requested addresses", &e))
                }
            })
            .await
    }

    /// Releases everything the attachment holds; releasing nothing is success.
    pub async fn del(&self, req: &IpamRequest<'_>) -> Result<Vec<IpAddr>, Error> {
        let handle = self.handle(req.container_id.as_str(), req.ifname.as_str());
        self.session
            .bounded_cleanup("release addresses", async {
                let allocator = self.allocator().await?;
                Box::pin(allocator.release_by_handle(&handle))
                    .await
                    .map_err(|e| ipam_error("release", &e))
            })
            .await
    }

    /// One line per address that IPAM does not hold for this attachment.
    pub async fn check(&self, req: &IpamRequest<'_>, ips: &[IpAddr]) -> Result<Vec<String>, Error> {
        let handle = self.handle(req.container_id.as_str(), req.ifname.as_str());
        self.session
            .bounded("check allocations", async {
                let allocator = self.allocator().await?;
                let mut drift = Vec::new();
                for ip in ips {
                    let held = Box::pin(allocator.get_assignment(*ip))
                        .await
                        .map_err(|e| ipam_error("read allocation", &e))?;
                    match held.and_then(|a| a.allocation.handle) {
                        Some(h) if h == handle => {}
                        Some(other) => drift.push(format!(
                            "IPAM assigns {ip} to handle {other}, not to this attachment ({handle})"
                        )),
                        None => drift.push(format!("IPAM has no allocation of {ip} ({handle})")),
                    }
                }
                Ok(drift)
            })
            .await
    }

    /// Whether an ADD could get addresses now: etcd answers and every family this config
    /// assigns has a usable pool with a free address. The reason is code 50's message.
    pub async fn status(&self) -> Result<(), String> {
        let work = async {
            let client = self.session.client().await.map_err(|e| e.to_string())?;
            client.health().await.map_err(|e| format!("etcd is not healthy: {e}"))?;
            let allocator = self.allocator().await.map_err(|e| e.to_string())?;
            let usable = Box::pin(allocator.status())
                .await
                .map_err(|e| format!("cannot read pools: {e}"))?;
            let families = [
                (self.conf.assign_v4, true, &self.conf.v4_pools, "IPv4"),
                (self.conf.assign_v6, false, &self.conf.v6_pools, "IPv6"),
            ];
            for (wanted, v4, named, family) in families {
                if !wanted {
                    continue;
                }
                let room: u128 = usable
                    .iter()
                    .filter(|p| p.cidr.addr().is_ipv4() == v4 && !p.disabled)
                    .filter(|p| {
                        named.is_empty()
                            || named.iter().any(|n| *n == p.name || n.parse() == Ok(p.cidr))
                    })
                    .map(|p| p.free)
                    .sum();
                if room == 0 {
                    return Err(format!(
                        "no {family} pool for node {} has a free address",
                        self.session.node()
                    ));
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.session.timeout(), work).await {
            Ok(r) => r,
            Err(_) => Err(format!("etcd did not answer within {:?}", self.session.timeout())),
        }
    }
}

/// `<network>.<containerid>.<ifname>`: one handle per attachment, so a container's second
/// network or interface has its own.
pub fn handle_for(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network}.{container_id}.{ifname}")
}

/// Specific addresses asked for, in order, without repeats: `args.cni.ips` and the `ips`
/// capability, then `CNI_ARGS` `IP=`, then Mesos `ip_addresses`.
pub fn requested_ips(req: &IpamRequest<'_>) -> Vec<IpAddr> {
    let mesos = req.conf.mesos.iter().flat_map(|m| m.ip_addresses.iter());
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in req.conf.requested_ips.iter().chain(req.args.ips()).chain(mesos) {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// An IPAM error as the runtime hears it: code 11 when retrying can help, otherwise code
/// 999 with IPAM's own message (which names the pool, address or key).
pub fn ipam_error(what: &str, e: &IpamError) -> Error {
    if e.is_retryable() {
        Error::TryAgainLater { what: format!("IPAM {what}: {e}"), source: None }
    } else {
        Error::Internal { what: format!("IPAM {what}: {e}"), source: None }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(ipam: &Value) -> Result<InProcessConf, Error> {
        let conf = NetConf::parse(
            json!({"name": "n", "type": "tabby", "ipam": ipam, "ipam_lock_file": "/top.lock"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        InProcessConf::parse(conf.ipam.as_ref().unwrap(), &conf)
    }

    #[test]
    fn defaults_and_calico_string_booleans() {
        let c = parse(&json!({"type": "tabby-ipam"})).unwrap();
        assert!(c.assign_v4 && !c.assign_v6);
        assert_eq!(c.lock_file, PathBuf::from("/top.lock"));
        let c = parse(&json!({"type": "tabby-ipam", "assign_ipv6": "true", "assign_ipv4": "false",
            "ipv6_pools": ["fd00::/64"], "ipam_lock_file": "/x.lock"}))
        .unwrap();
        assert!(!c.assign_v4 && c.assign_v6);
        assert_eq!(c.v6_pools, ["fd00::/64"]);
        assert_eq!(c.lock_file, PathBuf::from("/x.lock"));
    }

    #[test]
    fn bad_fields_are_named() {
        for (ipam, field) in [
            (json!({"type": "tabby-ipam", "assign_ipv4": "yes"}), "ipam.assign_ipv4"),
            (json!({"type": "tabby-ipam", "ipv4_pools": "p"}), "ipam.ipv4_pools"),
            (json!({"type": "tabby-ipam", "ipv4_pools": [""]}), "ipam.ipv4_pools[0]"),
            (json!({"type": "tabby-ipam", "assign_ipv4": false}), "ipam.assign_ipv4"),
            (json!({"type": "tabby-ipam", "ipam_lock_file": "rel"}), "ipam.ipam_lock_file"),
        ] {
            let err = parse(&ipam).unwrap_err();
            assert_eq!(err.code(), 7, "{ipam}");
            assert!(err.to_string().contains(field), "{ipam}: {err}");
        }
    }

    #[test]
    fn handles_name_network_container_and_interface() {
        assert_eq!(handle_for("net", "p.c", "eth1"), "net.p.c.eth1");
    }
}
