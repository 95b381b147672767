//! List+watch of a key prefix: a complete snapshot first, then every change in order, with a
//! fresh snapshot whenever history needed to resume was compacted away.
//!
//! The watcher never hands out a partial view: after a compaction, a cancelled watch or a
//! closed stream it re-lists and emits a new [`WatchEvent::Snapshot`] that replaces
//! everything the caller knew. Connection errors are retried with jittered, bounded backoff,
//! resuming from the last revision received, so no change is lost or repeated.

use std::collections::VecDeque;
use std::time::Duration;

use futures::Stream;
use rand::Rng;

use crate::client::{Client, Error, Kv};

/// First retry delay after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay: etcd coming back is noticed within this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One step of the watched prefix's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The complete state of the prefix at `revision`: replaces whatever the caller held.
    /// Emitted first, and again after every re-list.
    Snapshot { kvs: Vec<Kv>, revision: i64 },
    /// A key was created or changed.
    Put(Kv),
    /// A key was deleted at revision `mod_revision`.
    Delete { key: String, mod_revision: i64 },
}

impl WatchEvent {
    /// The store revision this event brings the caller to.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Snapshot { revision, .. } => *revision,
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Lists a prefix, then follows its changes. See the module documentation.
///
/// ```no_run
/// # async fn run(client: datastore::client::Client) -> Result<(), datastore::client::Error> {
/// use datastore::watch::{Watcher, WatchEvent};
/// let mut watcher = Watcher::new(client, "/calico/resources/v3/");
/// loop {
///     match watcher.next().await? {
///         WatchEvent::Snapshot { kvs, revision } => { /* replace state */ }
///         WatchEvent::Put(kv) => { /* upsert */ }
///         WatchEvent::Delete { key, .. } => { /* remove */ }
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Watcher {
    client: Client,
    prefix: String,
    /// The caller's state is complete up to this revision.
    revision: i64,
    /// Every event up to this revision has been received (and queued): the resume point.
    received: i64,
    /// Whether the next step must be a fresh listing.
    needs_snapshot: bool,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<WatchEvent>,
    /// Wait this long before the next attempt (set after a failure).
    retry_in: Option<Duration>,
    backoff: Duration,
}

impl Watcher {
    /// Watches every key under `prefix`, starting with a snapshot of it.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self::build(client, prefix.into(), 0, true)
    }

    /// Resumes watching `prefix` for a caller whose state is complete at `revision`: the
    /// first events are the changes after it. If that history is compacted, the watcher
    /// re-lists and starts with a snapshot instead.
    pub fn from_revision(client: Client, prefix: impl Into<String>, revision: i64) -> Self {
        Self::build(client, prefix.into(), revision, false)
    }

    fn build(client: Client, prefix: String, revision: i64, needs_snapshot: bool) -> Self {
        Watcher {
            client,
            prefix,
            revision,
            received: revision,
            needs_snapshot,
            stream: None,
            pending: VecDeque::new(),
            retry_in: None,
            backoff: BACKOFF_MIN,
        }
    }

    /// The revision up to which the caller has been given every change (0 before the first
    /// snapshot). A caller that persists its state can resume with
    /// [`Watcher::from_revision`] from it.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The watched prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The next event. Retryable failures (etcd unreachable, timeouts) are retried here,
    /// with jittered backoff and a warning per failure, until etcd answers again; only
    /// errors that retrying cannot fix are returned.
    pub async fn next(&mut self) -> Result<WatchEvent, Error> {
        loop {
            match self.try_next().await {
                // A compacted listing revision is followed by a fresh listing, so it is as
                // transient as an unreachable etcd.
                Err(e) if e.is_retryable() || matches!(e, Error::Compacted { .. }) => {
                    tracing::warn!(prefix = %self.prefix, error = %e, "etcd watch failed; retrying");
                }
                result => return result,
            }
        }
    }

    /// Like [`Watcher::next`], but returns every failure, retryable or not, so the caller
    /// can report that etcd is unreachable. The watcher stays usable: the next call waits
    /// out a jittered backoff and resumes where it left off.
    pub async fn try_next(&mut self) -> Result<WatchEvent, Error> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.revision = match self.pending.front() {
                    // More events of the same transaction are queued: not complete yet.
                    Some(next) if next.revision() == event.revision() => event.revision() - 1,
                    Some(_) => event.revision(),
                    None => self.received.max(event.revision()),
                };
                return Ok(event);
            }
            if let Some(delay) = self.retry_in.take() {
                tokio::time::sleep(delay).await;
            }
            if self.needs_snapshot {
                return self.snapshot().await;
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => match self.client.open_watch(&self.prefix, self.received + 1).await {
                    Ok(stream) => self.stream.insert(stream),
                    Err(e) => return Err(self.failed(e)),
                },
            };
            match stream.message().await {
                Ok(Some(response)) => {
                    self.backoff = BACKOFF_MIN;
                    self.absorb(&response);
                }
                Ok(None) => {
                    tracing::info!(prefix = %self.prefix, "etcd closed the watch stream; re-listing");
                    self.restart_with_snapshot();
                }
                Err(e) => {
                    self.stream = None;
                    let op = format!("watch {}", self.prefix);
                    let e = self.client.stream_error(e, &op, self.received + 1);
                    return Err(self.failed(e));
                }
            }
        }
    }

    /// This watcher as a never-ending stream of [`Watcher::next`] results.
    pub fn into_stream(self) -> impl Stream<Item = Result<WatchEvent, Error>> {
        futures::stream::unfold(self, |mut watcher| async move {
            let item = watcher.next().await;
            Some((item, watcher))
        })
    }

    /// Lists the prefix and hands the result out as a snapshot.
    async fn snapshot(&mut self) -> Result<WatchEvent, Error> {
        match self.client.list(&self.prefix).await {
            Ok(listing) => {
                self.needs_snapshot = false;
                self.backoff = BACKOFF_MIN;
                self.received = listing.revision;
                self.revision = listing.revision;
                Ok(WatchEvent::Snapshot { kvs: listing.kvs, revision: listing.revision })
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Queues the events of one watch response, or arranges a re-list if the watch ended.
    fn absorb(&mut self, response: &etcd_client::WatchResponse) {
        if response.compact_revision() > 0 {
            tracing::info!(
                prefix = %self.prefix,
                from = self.received + 1,
                compacted = response.compact_revision(),
                "watch history compacted; re-listing"
            );
            self.restart_with_snapshot();
            return;
        }
        if response.canceled() {
            tracing::info!(
                prefix = %self.prefix,
                reason = response.cancel_reason(),
                "etcd cancelled the watch; re-listing"
            );
            self.restart_with_snapshot();
            return;
        }
        if response.events().is_empty() {
            if !response.created() {
                // A progress notification: nothing under the prefix changed up to here.
                let header = response.header().map_or(0, etcd_client::ResponseHeader::revision);
                self.received = self.received.max(header);
                self.revision = self.revision.max(self.received);
            }
            return;
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let kv = match Kv::from_etcd(kv) {
                Ok(kv) => kv,
                Err(e) => {
                    // Listings skip such keys too, so snapshots and events stay consistent.
                    tracing::warn!(error = %e, "skipping watch event for a key that is not UTF-8");
                    self.received = self.received.max(kv.mod_revision());
                    continue;
                }
            };
            self.received = self.received.max(kv.mod_revision);
            self.pending.push_back(match event.event_type() {
                etcd_client::EventType::Put => WatchEvent::Put(kv),
                etcd_client::EventType::Delete => {
                    WatchEvent::Delete { key: kv.key, mod_revision: kv.mod_revision }
                }
            });
        }
    }

    fn restart_with_snapshot(&mut self) {
        self.stream = None;
        self.needs_snapshot = true;
    }

    /// Records a failure: the next attempt waits a jittered, growing, bounded delay.
    fn failed(&mut self, error: Error) -> Error {
        let jittered = self.backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        self.retry_in = Some(jittered);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        if matches!(error, Error::Compacted { .. }) {
            self.restart_with_snapshot();
        }
        error
    }
}
