//! The typed etcd v3 client: bounded connects and requests, consistent reads, compare-and-swap
//! writes in Calico's transaction shapes, leases, and a round-trip counter.
//!
//! Every method is one etcd round trip unless its documentation says otherwise (a large
//! `list` pages), and every round trip is counted in [`Client::round_trips`], so callers can
//! prove their fast paths stay short.

mod config;
mod connect;
mod error;
mod lease;
mod types;
mod write;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse};
use serde::de::DeserializeOwned;

pub use config::{endpoint_list, EtcdConfig, DEFAULT_ENDPOINT};
pub use error::Error;
pub use types::{
    Cmp, KeyListing, Kv, Listing, MemberStatus, Op, Read, Stored, TxnOrRead, TxnOutcome,
};

use error::{classify, Context};
use types::{kvs_from_etcd, prefix_end};

/// Keys fetched per page by [`Client::list`]: small enough that a page of large blocks stays
/// far below the message size limit, large enough that 100k keys take 100 round trips.
const LIST_PAGE: i64 = 1000;
/// Keys fetched per page by [`Client::list_keys`]: without values a page of 10,000 block keys
/// is well under a megabyte.
const KEY_PAGE: i64 = 10_000;
/// How often `list` starts over when its snapshot revision is compacted between pages.
const LIST_ATTEMPTS: usize = 3;
/// Largest response accepted: a page of 1000 IPAM blocks of a few kB each, with headroom.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// HTTP/2 pings detect a dead connection under a long-lived watch (Calico uses 10 s / 10 s).
const KEEPALIVE: Duration = Duration::from_secs(10);

/// One endpoint's connection (established lazily by the gRPC channel).
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) inner: etcd_client::Client,
    pub(crate) kv: KvClient,
}

/// A connection to etcd. Cheap to clone: clones share the connections, the choice of
/// endpoint and the round-trip counter.
///
/// With several endpoints, requests go to one of them (the first that answered) until it
/// fails; then the next one is tried. Reads move on after any connection failure; writes
/// only when the request provably never left (the connection could not be made), because a
/// write that may have been applied must not be sent twice.
#[derive(Clone)]
pub struct Client {
    members: Arc<[Member]>,
    /// Index of the member requests go to first.
    active: Arc<AtomicUsize>,
    /// The endpoints, comma-joined, for error messages.
    endpoints: Arc<str>,
    request_timeout: Duration,
    round_trips: Arc<AtomicU64>,
    /// Write requests handed to the transport, whatever came of them.
    writes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .field("active", &self.active.load(Ordering::Relaxed))
            .field("request_timeout", &self.request_timeout)
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

/// Whether a failed request may be sent again to another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Reads: after any connection failure.
    Idempotent,
    /// Writes: only if the connection was never made.
    IfNotSent,
}

impl Client {
    /// Connects to the configured endpoints and proves one answers, all within
    /// `connect_timeout`.
    ///
    /// The configuration is validated first and TLS files are read before any network
    /// traffic. Unreachable endpoints give [`Error::Unavailable`] (retryable), a refused TLS
    /// handshake [`Error::Tls`] where the transport says so and [`Error::Unavailable`]
    /// otherwise. Costs one round trip (a member status call) when the first endpoint
    /// answers.
    pub async fn connect(config: &EtcdConfig) -> Result<Client, Error> {
        Self::open(config, true).await
    }

    /// Like [`Client::connect`] without probing anything: nothing is dialled until the first
    /// request, which makes the only connection. An endpoint that refuses connections fails
    /// that request at once with [`Error::Unavailable`] (and the next endpoint is tried);
    /// one that never answers, or refuses our TLS identity, shows as [`Error::Unavailable`]
    /// or [`Error::Timeout`]. For short-lived callers whose first request comes at once (the
    /// CNI plugin), where a probe would be a connection and a round trip spent on nothing.
    pub async fn connect_unprobed(config: &EtcdConfig) -> Result<Client, Error> {
        Self::open(config, false).await
    }

    async fn open(config: &EtcdConfig, probe: bool) -> Result<Client, Error> {
        let endpoints = config.parsed_endpoints()?;
        let shown: Arc<str> = config.endpoints.join(",").into();
        let deadline = Instant::now() + config.connect_timeout;
        let tls = endpoints[0].tls;

        let tls_options = if tls { Some(connect::tls_options(config)?) } else { None };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(KEEPALIVE, KEEPALIVE);
        if let Some(tls) = &tls_options {
            options = options.with_tls(tls.clone());
        }
        let unavailable =
            |reason: String| Error::Unavailable { endpoints: shown.to_string(), reason };

        // Refused or unroutable endpoints fail here fast; on a balanced channel gRPC would
        // only time out. Plain channels (unprobed) fail their first request instead.
        let first_open = if probe {
            connect::probe_tcp(&endpoints, deadline).await.map_err(unavailable)?
        } else {
            0
        };

        let mut members = Vec::with_capacity(config.endpoints.len());
        for (url, endpoint) in config.endpoints.iter().zip(&endpoints) {
            let ctx = Context {
                endpoints: url,
                op: "connect",
                after: config.connect_timeout,
                revision: 0,
            };
            let connecting = async {
                if probe {
                    etcd_client::Client::connect([url], Some(options.clone())).await
                } else {
                    let tls = tls_options.clone();
                    connect::lazy_member(endpoint, config.connect_timeout, KEEPALIVE, tls).await
                }
            };
            let inner = match tokio::time::timeout_at(deadline.into(), connecting).await {
                Err(_) => {
                    return Err(unavailable(format!(
                        "no connection within {:?}",
                        config.connect_timeout
                    )))
                }
                Ok(Err(e)) => return Err(classify(e, &ctx)),
                Ok(Ok(inner)) => inner,
            };
            members.push(Member {
                kv: inner.kv_client().max_decoding_message_size(MAX_MESSAGE),
                inner,
            });
        }
        let client = Client {
            members: members.into(),
            active: Arc::new(AtomicUsize::new(first_open)),
            endpoints: shown.clone(),
            request_timeout: config.request_timeout,
            round_trips: Arc::new(AtomicU64::new(0)),
            writes: Arc::new(AtomicU64::new(0)),
        };
        if !probe {
            return Ok(client);
        }
        // The channels connect lazily: only a round trip shows that an endpoint answers and
        // accepts our TLS identity.
        let probe = client
            .call_until(deadline, "connect", 0, Resend::Idempotent, |m| async move {
                m.inner.maintenance_client().status().await
            })
            .await;
        match probe {
            Ok(_) => Ok(client),
            Err(Error::Timeout { .. }) => Err(unavailable(format!(
                "endpoints accept TCP connections but no etcd answered within {:?}",
                config.connect_timeout,
            ))),
            // With TLS 1.3 a refused client certificate surfaces only as a closed connection.
            Err(Error::Unavailable { endpoints, reason }) if tls => Err(Error::Unavailable {
                endpoints,
                reason: format!("{reason} (etcd may have refused our TLS client certificate)"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Round trips made so far by this client and all its clones.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Write requests (puts, deletes, transactions) this client and its clones have sent or
    /// tried to send. While it is 0, nothing this client did can have changed etcd: a caller
    /// that timed out needs no rollback.
    pub fn writes_attempted(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// The endpoints, comma-joined.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Reads one key.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, Error> {
        let op = format!("get {key}");
        let resp = self
            .call(&op, 0, Resend::Idempotent, |mut m| {
                let key = key.to_string();
                async move { m.kv.get(key, None).await }
            })
            .await?;
        Ok(kvs_from_etcd(resp.kvs()).into_iter().next())
    }

    /// Reads every key under `prefix` at one revision.
    ///
    /// Large prefixes are read in pages of 1000 keys, all pinned to the revision of the first
    /// page, so the listing is consistent however long it is (one round trip per page). If
    /// that revision is compacted between pages, the listing starts over.
    pub async fn list(&self, prefix: &str) -> Result<Listing, Error> {
        self.list_paged(prefix, Paging::Values).await
    }

    /// The keys under `prefix` and their mod revisions, without values, at one revision.
    ///
    /// Paged and pinned to one revision like [`Client::list`], in pages of 10,000 keys: etcd
    /// sends no values, so a crowded prefix (ten thousand IPAM blocks) costs a few round
    /// trips and kilobytes instead of megabytes to decode.
    pub async fn list_keys(&self, prefix: &str) -> Result<KeyListing, Error> {
        let listing = self.list_paged(prefix, Paging::KeysOnly).await?;
        Ok(KeyListing {
            keys: listing.kvs.into_iter().map(|kv| (kv.key, kv.mod_revision)).collect(),
            revision: listing.revision,
        })
    }

    async fn list_paged(&self, prefix: &str, paging: Paging) -> Result<Listing, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.list_once(prefix, paging).await {
                Err(Error::Compacted { .. }) if attempt < LIST_ATTEMPTS => {
                    tracing::debug!(
                        prefix,
                        "listing revision compacted between pages; starting over"
                    );
                }
                result => return result,
            }
        }
    }

    async fn list_once(&self, prefix: &str, paging: Paging) -> Result<Listing, Error> {
        let end = prefix_end(prefix);
        let mut start = if prefix.is_empty() { vec![0] } else { prefix.as_bytes().to_vec() };
        let mut revision = 0;
        let mut kvs = Vec::new();
        let op = match paging {
            Paging::Values => format!("list {prefix}"),
            Paging::KeysOnly => format!("list keys {prefix}"),
        };
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(paging.page())
                .with_revision(revision);
            if paging == Paging::KeysOnly {
                options = options.with_keys_only();
            }
            let resp = self
                .call(&op, revision, Resend::Idempotent, |mut m| {
                    let (start, options) = (start.clone(), options.clone());
                    async move { m.kv.get(start, Some(options)).await }
                })
                .await?;
            if revision == 0 {
                revision = header_revision(resp.header())?;
            }
            let page = resp.kvs();
            kvs.extend(kvs_from_etcd(page));
            match page.last() {
                Some(last) if resp.more() => {
                    // The next page starts just after the last key seen.
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => return Ok(Listing { kvs, revision }),
            }
        }
    }

    /// Performs all `reads` in one transaction: one round trip, one revision for all.
    ///
    /// Returns one [`Listing`] per read, in order. Prefix reads are not paged, so keep them
    /// to prefixes of modest size; etcd allows at most 128 reads per transaction by default.
    pub async fn get_many(&self, reads: &[Read]) -> Result<Vec<Listing>, Error> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let ops: Vec<TxnOp> = reads.iter().map(Read::to_etcd).collect();
        let txn = Txn::new().and_then(ops);
        let resp = self
            .call("get_many", 0, Resend::Idempotent, |mut m| {
                let txn = txn.clone();
                async move { m.kv.txn(txn).await }
            })
            .await?;
        let revision = header_revision(resp.header())?;
        resp.op_responses()
            .into_iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => Ok(Listing { kvs: kvs_from_etcd(get.kvs()), revision }),
                _ => {
                    Err(Error::Server { reason: "transaction answered a read with a write".into() })
                }
            })
            .collect()
    }

    /// Reads `key` and decodes it as JSON; decode errors name the key.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Stored<T>>, Error> {
        match self.get(key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some(Stored { value: kv.json()?, mod_revision: kv.mod_revision })),
        }
    }

    /// Runs one request within the request timeout; see [`Client::call_until`].
    pub(crate) async fn call<T, F, Fut>(
        &self,
        op: &str,
        revision: i64,
        resend: Resend,
        request: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_until(Instant::now() + self.request_timeout, op, revision, resend, request).await
    }

    /// Runs one request: counts every attempt as a round trip, bounds them all by
    /// `deadline`, moves on to the next endpoint when `resend` allows, classifies the error.
    /// `revision` is the revision the request reads at (0 for latest), for compaction errors.
    pub(crate) async fn call_until<T, F, Fut>(
        &self,
        deadline: Instant,
        op: &str,
        revision: i64,
        resend: Resend,
        mut request: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let count = self.members.len();
        let first = self.active.load(Ordering::Relaxed) % count;
        let mut attempt = 0;
        loop {
            let index = (first + attempt) % count;
            attempt += 1;
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            // Every write goes out as IfNotSent: it must never be applied twice.
            if resend == Resend::IfNotSent {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            let outcome =
                tokio::time::timeout_at(deadline.into(), request(self.members[index].clone()))
                    .await;
            let err = match outcome {
                Ok(Ok(value)) => {
                    self.active.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(_) => {
                    // A hung or black-holed member: start with the next one next time.
                    self.active.store((index + 1) % count, Ordering::Relaxed);
                    return Err(Error::Timeout { op: op.to_string(), after: started.elapsed() });
                }
                Ok(Err(err)) => err,
            };
            let connection_failed = error::is_connection_failure(&err);
            if connection_failed {
                self.active.store((index + 1) % count, Ordering::Relaxed);
            }
            let may_resend = match resend {
                Resend::Idempotent => connection_failed,
                Resend::IfNotSent => error::was_not_sent(&err),
            };
            if !(may_resend && attempt < count) {
                let ctx = Context {
                    endpoints: &self.endpoints,
                    op,
                    after: self.request_timeout,
                    revision,
                };
                return Err(classify(err, &ctx));
            }
            tracing::debug!(op, endpoint = index, error = %err, "etcd endpoint failed; trying the next");
        }
    }

    /// Opens a watch stream on every key under `prefix`, from `start_revision` (inclusive),
    /// with progress notifications and without previous values. One round trip.
    pub(crate) async fn open_watch(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<etcd_client::WatchStream, Error> {
        let options = etcd_client::WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision)
            .with_progress_notify();
        let op = format!("watch {prefix}");
        self.call(&op, start_revision, Resend::Idempotent, |m| {
            let (prefix, options) = (prefix.to_string(), options.clone());
            async move {
                let mut watch = m.inner.watch_client().max_decoding_message_size(MAX_MESSAGE);
                watch.watch(prefix, Some(options)).await
            }
        })
        .await
    }

    /// Classifies an error of a stream this client opened.
    pub(crate) fn stream_error(&self, err: etcd_client::Error, op: &str, revision: i64) -> Error {
        if error::is_connection_failure(&err) {
            let next = (self.active.load(Ordering::Relaxed) + 1) % self.members.len();
            self.active.store(next, Ordering::Relaxed);
        }
        classify(
            err,
            &Context { endpoints: &self.endpoints, op, after: self.request_timeout, revision },
        )
    }
}

/// What a paged range read fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paging {
    Values,
    KeysOnly,
}

impl Paging {
    fn page(self) -> i64 {
        match self {
            Paging::Values => LIST_PAGE,
            Paging::KeysOnly => KEY_PAGE,
        }
    }
}

/// The store revision in a response header (etcd always sends one).
fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64, Error> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| Error::Server { reason: "response without a header".into() })
}
