//! The plugin's side of etcd: a [`Session`] that connects only when a verb first needs the
//! datastore and bounds all of its etcd work by one deadline, and the workload endpoint and
//! profile records an attachment owns ([`endpoint`]).

pub mod endpoint;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::client::{Client, EtcdConfig};
use datastore::keys::KeyLayout;
use ipam::nodename::{self, NodenameInputs};
use tokio::sync::OnceCell;

use crate::spec::{Error, NetConf};

/// Used when the config asks for the datastore (in-process IPAM) but names no endpoint:
/// Calico's default.
pub const DEFAULT_ENDPOINT: &str = datastore::client::DEFAULT_ENDPOINT;

/// Where etcd is, which node this is, and the one connection all parts of a verb share.
///
/// Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Session {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    etcd: EtcdConfig,
    keys: KeyLayout,
    node: String,
    /// When every etcd operation of this invocation must be done.
    deadline: Instant,
    timeout: Duration,
    client: OnceCell<Client>,
}

impl Session {
    /// The session for `conf`, or `None` when the config uses no datastore (no
    /// `etcd_endpoints` and a delegated IPAM plugin). Validates the etcd settings and
    /// resolves the node name, without touching the network.
    pub fn for_conf(conf: &NetConf, needs_datastore: bool) -> Result<Option<Session>, Error> {
        if !conf.etcd.is_configured() && !needs_datastore {
            return Ok(None);
        }
        let endpoints = if conf.etcd.is_configured() {
            conf.etcd.endpoints.clone()
        } else {
            vec![DEFAULT_ENDPOINT.to_owned()]
        };
        let etcd = EtcdConfig {
            endpoints,
            ca_file: conf.etcd.ca_cert_file.clone(),
            cert_file: conf.etcd.cert_file.clone(),
            key_file: conf.etcd.key_file.clone(),
            connect_timeout: conf.etcd.timeout,
            request_timeout: conf.etcd.timeout,
        };
        etcd.validate().map_err(|e| match e {
            datastore::client::Error::Config { field, reason } => {
                Error::config(etcd_field(&field), reason)
            }
            other => Error::config("etcd_endpoints", other.to_string()),
        })?;
        let node = resolve_node(conf.nodename.clone(), conf.nodename_file.clone())?;
        Ok(Some(Session {
            inner: Arc::new(Inner {
                etcd,
                keys: KeyLayout::new(conf.etcd.prefix.clone()),
                node,
                deadline: Instant::now() + conf.etcd.timeout,
                timeout: conf.etcd.timeout,
                client: OnceCell::new(),
            }),
        }))
    }

    /// The node this plugin runs for (keys affinities, attributes and endpoint names).
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub fn keys(&self) -> &KeyLayout {
        &self.inner.keys
    }

    /// The bound on one invocation's etcd work.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The connection, made on first use. Unreachable etcd is code 11.
    pub async fn client(&self) -> Result<&Client, Error> {
        self.inner
            .client
            .get_or_try_init(|| async {
                let started = Instant::now();
                let connect = Box::pin(Client::connect_unprobed(&self.inner.etcd));
                let client = match tokio::time::timeout_at(self.inner.deadline.into(), connect).await {
                    Ok(Ok(client)) => client,
                    Ok(Err(e)) => return Err(store_error("connect to etcd", &e)),
                    Err(_) => return Err(self.timed_out("connect to etcd")),
                };
                tracing::debug!(elapsed = ?started.elapsed(), endpoints = client.endpoints(), "etcd connected");
                Ok(client)
            })
            .await
    }

    /// Round trips made so far (0 before the first connection).
    pub fn round_trips(&self) -> u64 {
        self.inner.client.get().map_or(0, Client::round_trips)
    }

    /// Writes sent to etcd so far in this invocation (see [`Client::writes_attempted`]).
    pub fn writes_attempted(&self) -> u64 {
        self.inner.client.get().map_or(0, Client::writes_attempted)
    }

    /// Runs `work` within the invocation's deadline; running past it is code 11.
    pub async fn bounded<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout_at(self.inner.deadline.into(), work).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Runs clean-up `work` (a rollback, a DEL step after a failure) with a fresh bound of
    /// one `etcd_timeout`: it must get its chance even when the main work used up the
    /// deadline, but must not hang either.
    pub async fn bounded_cleanup<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.inner.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(what)),
        }
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::TryAgainLater {
            what: format!(
                "{what}: etcd at {} did not answer within etcd_timeout ({:?})",
                self.inner.etcd.endpoints.join(","),
                self.inner.timeout
            ),
            source: None,
        }
    }
}

/// A datastore error as the runtime should hear it: code 11 when a retry can help. The
/// cause goes into the message itself, since runtimes often show only `msg`.
pub fn store_error(what: &str, e: &datastore::client::Error) -> Error {
    let what = format!("{what}: {e}");
    if e.is_retryable() {
        Error::TryAgainLater { what, source: None }
    } else {
        Error::Internal { what, source: None }
    }
}

/// The netconf field behind an etcd config field, so errors name what the operator wrote.
fn etcd_field(field: &str) -> &'static str {
    match field {
        "ca_file" => "etcd_ca_cert_file",
        "cert_file" => "etcd_cert_file",
        "key_file" => "etcd_key_file",
        "connect_timeout" | "request_timeout" => "etcd_timeout",
        _ => "etcd_endpoints",
    }
}

/// Netconf `nodename`, `TABBY_NODENAME`, the node-name file, the hostname: the first one set.
fn resolve_node(explicit: Option<String>, file: Option<PathBuf>) -> Result<String, Error> {
    let inputs = NodenameInputs { explicit, env: None, file, hostname: None };
    match nodename::resolve(&inputs) {
        Ok((name, source)) => {
            tracing::trace!(node = %name, ?source, "node name");
            Ok(name)
        }
        Err(e) => Err(Error::config("nodename", e.to_string())),
    }
}
