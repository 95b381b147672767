//! The etcd-backed allocator: hands out addresses from blocks affine to this node, claims new
//! blocks with the two-phase claim, borrows when the pool is full, and releases by handle or
//! by address, every write a compare-and-swap with bounded retries.
//!
//! Round trips on the fast path (a free address in an affine block): one `get_many` for the
//! IPAM config, the pools, this node, its affinities, the handle and the blocks it held last
//! time; one more `get_many` only for affine blocks not read yet; one transaction that writes
//! block and handle together. No crash can leave a handle without its allocation or the other
//! way round. With a memo of the last read, the first attempt plans on the memo and its one
//! transaction also checks the memo is still true (reading the truth when it is not).

mod assign;
mod claim;
mod hint;
mod memo;
mod release;
mod snapshot;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::client::Client;
use datastore::keys::KeyLayout;
use ipnet::IpNet;

use crate::block::{Allocation, Attrs, ReleaseOutcome};
use crate::error::{IpamError, Result};
use crate::lock;
use crate::pool::Pool;
use crate::query::{self, PoolUsage, Usage};

pub use release::HostRelease;
pub(crate) use release::{blocks_for_ips, release_ips};
pub(crate) use snapshot::{decode_config, decode_pools};

/// Attribute keys the allocator and the collector agree on.
pub mod attr {
    /// Node that made the allocation (the borrower, for a borrowed address).
    pub const NODE: &str = "node";
    /// When the allocation was made, RFC 3339 UTC (Calico's Go format is also read).
    pub const TIMESTAMP: &str = "timestamp";
    pub const CONTAINER_ID: &str = "containerID";
    pub const INTERFACE: &str = "interface";
    pub const NETWORK: &str = "network";
    /// Calico marks tunnel addresses with `type` (`ipipTunnelAddress`, ...).
    pub const TYPE: &str = "type";
    /// `type` of an address handed out by the stand-alone `tabby-ipam` plugin under another
    /// plugin: no workload endpoint will ever back it, and its lifetime belongs to the runtime
    /// (CNI DEL and GC), so `check` and `gc` must never take it for a leak.
    pub const TYPE_IPAM_PLUGIN: &str = "cniIpamPluginAddress";
}

/// Tuning of an [`Allocator`]; `Default` gives production values.
#[derive(Debug, Clone)]
pub struct AllocatorOptions {
    /// Host-wide lock file; `None` disables the lock (tools that only read, tests).
    pub lock_file: Option<PathBuf>,
    /// Bound on waiting for the lock.
    pub lock_timeout: Duration,
    /// Bound on one assign or release, counted from the moment the lock is held.
    pub timeout: Duration,
    /// Bound on compare-and-swap attempts of one operation (Calico: 100).
    pub max_attempts: u32,
    /// Candidate blocks probed per `get_many` when looking for a free block.
    pub probe_batch: usize,
    /// Probe batches in a row that find only taken blocks before the allocator stops walking
    /// its order one batch after another (it leaps ahead, then lists the block keys).
    ///
    /// A batch of 64 random candidates is all taken with probability f^64 for a pool filled
    /// to the fraction f (0.1 % at 90 % full), so two fruitless batches in a row mean the
    /// pool is crowded along this host's own order, where walking on wastes round trips.
    pub probe_batches_before_list: usize,
    /// After that many fruitless batches: leaps ahead in the order (doubling, from twice a
    /// batch) before the allocator gives up probing and lists the block keys. 0 lists at once.
    pub max_leaps: u32,
    /// Where the blocks this node was affine to at its last write are kept between
    /// processes (a CNI plugin is a new process each time); `None` keeps them in memory only.
    pub hint_file: Option<PathBuf>,
    /// Where what the last read found (and this node's writes since) is kept between
    /// processes, so an assign can plan without reading and commit in one round trip (see
    /// `memo`); `None` keeps it in memory only.
    pub memo_file: Option<PathBuf>,
}

impl Default for AllocatorOptions {
    fn default() -> Self {
        AllocatorOptions {
            lock_file: Some(PathBuf::from(lock::DEFAULT_LOCK_FILE)),
            lock_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            max_attempts: 100,
            probe_batch: 64,
            probe_batches_before_list: 2,
            max_leaps: 10,
            hint_file: None,
            memo_file: None,
        }
    }
}

/// One request for addresses.
#[derive(Debug, Clone, Default)]
pub struct AssignRequest {
    /// Owner of the addresses, `<network>.<containerid>.<ifname>` for the CNI plugin.
    pub handle: String,
    /// Stored with every address; `node` and `timestamp` are filled in when missing.
    pub attrs: Attrs,
    pub num_v4: usize,
    pub num_v6: usize,
    /// Pools (names or CIDRs) to allocate from; empty: every enabled pool selecting the node.
    pub v4_pools: Vec<String>,
    pub v6_pools: Vec<String>,
    /// Records to write in the allocation's own transaction, made from what it assigned.
    pub also_write: Option<AlsoWrite>,
}

/// Records a caller wants written in the same etcd transaction as its allocation, made from
/// the addresses assigned (the CNI plugin's workload endpoint): they land together or not at
/// all, and the caller saves a write and its fsync. The keys are written unconditionally, so
/// they must be keys only this caller writes (etcd also refuses a key twice in one txn, so
/// never an IPAM key).
#[derive(Clone)]
pub struct AlsoWrite {
    records: Arc<AlsoWriteFn>,
    /// Written only where nothing is stored yet.
    defaults: Vec<(String, Vec<u8>)>,
}

type AlsoWriteFn = dyn Fn(&AssignResult) -> Vec<(String, Vec<u8>)> + Send + Sync;

impl AlsoWrite {
    pub fn new(
        records: impl Fn(&AssignResult) -> Vec<(String, Vec<u8>)> + Send + Sync + 'static,
    ) -> Self {
        AlsoWrite { records: Arc::new(records), defaults: Vec::new() }
    }

    /// Also creates `key` holding `value` if nothing is stored there, leaving any value that
    /// is (the network's default profile, which an operator may have edited).
    #[must_use]
    pub fn with_default(mut self, key: String, value: Vec<u8>) -> Self {
        self.defaults.push((key, value));
        self
    }

    pub(crate) fn ops(&self, assigned: &AssignResult) -> Vec<datastore::client::Op> {
        use datastore::client::Op;
        let records = (self.records)(assigned).into_iter().map(|(key, value)| Op::Put {
            key,
            value,
            lease: None,
        });
        let defaults = self
            .defaults
            .iter()
            .map(|(key, value)| Op::PutIfAbsent { key: key.clone(), value: value.clone() });
        records.chain(defaults).collect()
    }
}

impl std::fmt::Debug for AlsoWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlsoWrite(..)")
    }
}

/// The addresses assigned, as host networks (/32, /128).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssignResult {
    pub v4: Vec<IpNet>,
    pub v6: Vec<IpNet>,
    /// The pools the addresses were taken from, each once: what a caller needs to know of
    /// them (encapsulation, hence MTU) without reading them again.
    pub pools: Vec<Pool>,
}

impl AssignResult {
    pub fn all(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v4.iter().chain(self.v6.iter()).copied()
    }
}

/// One address to release, with optional guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    pub ip: IpAddr,
    /// Only release when the address is still held by this handle.
    pub handle: Option<String>,
    /// Only release when the address still carries this sequence number (from
    /// [`Allocation::sequence`]): refuses to free an address re-assigned since.
    pub sequence: Option<u64>,
}

impl ReleaseRequest {
    pub fn ip(ip: IpAddr) -> Self {
        ReleaseRequest { ip, handle: None, sequence: None }
    }
}

/// An address's allocation together with the block that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub allocation: Allocation,
    pub block: IpNet,
    /// Host the block is affine to (differs from the `node` attribute when borrowed).
    pub block_host: Option<String>,
}

/// The allocator of one node.
#[derive(Debug)]
pub struct Allocator {
    client: Client,
    keys: KeyLayout,
    node: String,
    opts: AllocatorOptions,
    /// Serialises this process's callers before they contend for the file lock, so they
    /// queue fairly instead of polling it.
    local: tokio::sync::Mutex<()>,
    /// Blocks this node was affine to at its last write: read in the first round trip next
    /// time, which saves the second one.
    hint: hint::Hint,
    /// What etcd held at the last read, for planning the next assign without one.
    memo: memo::Memo,
}

impl Allocator {
    /// An allocator for `node`. Validates the node name (it becomes a key segment).
    pub fn new(
        client: Client,
        keys: KeyLayout,
        node: impl Into<String>,
        opts: AllocatorOptions,
    ) -> Result<Self> {
        let node = node.into();
        check_segment("node", &node)?;
        if opts.max_attempts == 0 || opts.probe_batch == 0 {
            return Err(IpamError::invalid(
                "options",
                "max_attempts and probe_batch must be at least 1",
            ));
        }
        Ok(Allocator {
            hint: hint::Hint::new(opts.hint_file.clone()),
            memo: memo::Memo::new(opts.memo_file.clone()),
            client,
            keys,
            node,
            opts,
            local: tokio::sync::Mutex::new(()),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    /// Assigns `num_v4` + `num_v6` addresses to the request's handle, all or nothing.
    pub async fn assign(&self, req: &AssignRequest) -> Result<AssignResult> {
        check_handle(&req.handle)?;
        if req.num_v4 == 0 && req.num_v6 == 0 {
            return Ok(AssignResult::default());
        }
        let attrs = self.complete_attrs(&req.attrs);
        // Boxed: the planning state machine is large and would bloat every caller's future.
        Box::pin(self.locked("assign", self.assign_inner(req, &attrs))).await
    }

    /// Assigns exactly `ip` to `handle`: refused when it is taken or outside every enabled pool.
    pub async fn assign_ip(&self, ip: IpAddr, handle: &str, attrs: &Attrs) -> Result<IpNet> {
        let nets = self.assign_ips(&[ip], handle, attrs).await?;
        nets.into_iter().next().ok_or_else(|| IpamError::invalid("ip", "nothing was assigned"))
    }

    /// Assigns exactly these addresses (say one v4 and one v6 from the CNI `ips` capability)
    /// to `handle`, all or none.
    pub async fn assign_ips(
        &self,
        ips: &[IpAddr],
        handle: &str,
        attrs: &Attrs,
    ) -> Result<Vec<IpNet>> {
        check_handle(handle)?;
        let mut seen = BTreeSet::new();
        if let Some(dup) = ips.iter().find(|ip| !seen.insert(**ip)) {
            return Err(IpamError::invalid("ips", format!("{dup} is requested twice")));
        }
        if ips.is_empty() {
            return Ok(Vec::new());
        }
        let attrs = self.complete_attrs(attrs);
        Box::pin(self.locked("assign_ips", self.assign_ips_inner(ips, handle, &attrs))).await
    }

    /// Releases everything held by `handle`; returns the addresses freed. Releasing an
    /// unknown handle frees nothing and succeeds.
    pub async fn release_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        check_handle(handle)?;
        self.locked("release_by_handle", self.release_by_handle_inner(handle)).await
    }

    /// Releases single addresses, honouring their guards; one outcome per request, in order.
    pub async fn release_ips(&self, reqs: &[ReleaseRequest]) -> Result<Vec<ReleaseOutcome>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        self.locked("release_ips", release::release_ips(&self.client, &self.keys, reqs, &self.opts))
            .await
    }

    /// Forgets `node` (host removed): deletes its affinities, deletes its empty blocks and
    /// leaves its non-empty blocks unaffine (their addresses stay allocated).
    pub async fn release_host(&self, node: &str) -> Result<HostRelease> {
        check_segment("node", node)?;
        let fut = release::release_host(&self.client, &self.keys, node, &self.opts);
        match tokio::time::timeout(self.opts.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out("release_host")),
        }
    }

    /// Who holds `ip`, if anyone.
    pub async fn get_assignment(&self, ip: IpAddr) -> Result<Option<Assignment>> {
        query::get_assignment(&self.client, &self.keys, ip).await
    }

    /// Per-pool and per-block totals.
    pub async fn usage(&self) -> Result<Usage> {
        query::usage(&self.client, &self.keys).await
    }

    /// Whether this node can get addresses (CNI STATUS): the pools of each family that
    /// select it, with their free addresses. Lists every block: for status checks, not for
    /// the allocation path.
    pub async fn status(&self) -> Result<Vec<PoolUsage>> {
        let reads = [
            datastore::client::Read::Prefix(
                self.keys.resources_prefix(datastore::keys::Kind::IpPool),
            ),
            datastore::client::Read::Key(self.keys.resource(
                datastore::keys::Kind::Node,
                None,
                &self.node,
            )),
        ];
        let listings =
            self.client.get_many(&reads).await.map_err(|e| IpamError::store("read pools", e))?;
        let pools = decode_pools(listings.first().map_or(&[][..], |l| &l.kvs[..]));
        let labels = listings
            .get(1)
            .and_then(|l| l.kvs.first())
            .map(snapshot::node_labels)
            .unwrap_or_default();
        let usage = self.usage().await?;
        Ok(usage
            .pools
            .into_iter()
            .filter(|u| pools.iter().any(|p| p.name == u.name && p.selects(&labels)))
            .collect())
    }

    fn complete_attrs(&self, attrs: &Attrs) -> Attrs {
        let mut attrs = attrs.clone();
        attrs.entry(attr::NODE.to_string()).or_insert_with(|| self.node.clone());
        attrs.entry(attr::TIMESTAMP.to_string()).or_insert_with(crate::time::now_rfc3339);
        attrs
    }

    /// Runs `op` under the host lock, bounded by the operation timeout once the lock is held.
    async fn locked<T>(&self, op: &'static str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let lock_timeout = self.opts.lock_timeout;
        let Ok(_local) = tokio::time::timeout(lock_timeout, self.local.lock()).await else {
            let path = self.opts.lock_file.clone().unwrap_or_default();
            return Err(IpamError::LockTimeout { path, waited: start.elapsed() });
        };
        let _file = match &self.opts.lock_file {
            Some(path) => {
                let left = lock_timeout.saturating_sub(start.elapsed());
                Some(lock::acquire(path, left).await?)
            }
            None => None,
        };
        match tokio::time::timeout(self.opts.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(op)),
        }
    }

    fn timed_out(&self, op: &'static str) -> IpamError {
        let endpoints = self.client.endpoints().to_string();
        IpamError::Timeout { op, timeout: self.opts.timeout, endpoints }
    }

    fn hinted_blocks(&self) -> Vec<IpNet> {
        self.hint.get(&self.node)
    }

    fn set_hint(&self, blocks: impl IntoIterator<Item = IpNet>) {
        self.hint.set(&self.node, blocks.into_iter().collect());
    }
}

/// Handles become key segments: refuse what Calico later had to sanitise (`\r\n`, spaces).
fn check_handle(handle: &str) -> Result<()> {
    if handle.is_empty() {
        return Err(IpamError::invalid("handle", "must not be empty"));
    }
    if let Some(c) = handle.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(IpamError::invalid("handle", format!("{handle:?} contains {c:?}")));
    }
    Ok(())
}

fn check_segment(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(IpamError::invalid(field, "must not be empty"));
    }
    if let Some(c) = value.chars().find(|c| *c == '/' || c.is_whitespace() || c.is_control()) {
        return Err(IpamError::invalid(field, format!("{value:?} contains {c:?}")));
    }
    Ok(())
}
