//! The reconcile loop, level-triggered in the kube-runtime manner: watch events only update
//! the model and mark it dirty; after a short quiet spell (or at most a batch latency) one
//! reconcile plans everything from the whole model and brings the kernel to it, whatever the
//! events were. One reconcile runs at a time.
//!
//! Nothing touches the kernel before every watched prefix has been listed once. A periodic
//! resync re-applies everything from scratch (repairing what others changed), a route refresh
//! re-checks the routes (putting back missing workload device routes too), failures back off
//! and retry, and stopping leaves the dataplane as it is.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use datastore::watch::WatchEvent;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::dataplane::{ApplyReport, Dataplane, DataplaneError};
use crate::health::Health;
use crate::host::HostInfo;
use crate::metrics::Metrics;
use crate::model::{ClusterModel, WatchSource};
use crate::routes::{self, PlanNote, RouteError, RouteTable};

/// What the watchers send the loop.
#[derive(Debug)]
pub enum SyncMsg {
    Event(WatchSource, WatchEvent),
    /// The watcher of this source failed to reach etcd; it retries by itself.
    Error(WatchSource, datastore::client::Error),
}

/// Timing of the loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// Quiet time after a change before reconciling, so a burst coalesces.
    pub debounce: Duration,
    /// Longest wait after the first unapplied change, however busy etcd is.
    pub max_batch_latency: Duration,
    pub resync_interval: Duration,
    pub route_refresh_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Stop after the first successful reconcile.
    pub once: bool,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            debounce: Duration::from_millis(15),
            max_batch_latency: Duration::from_millis(50),
            resync_interval: Duration::from_secs(90),
            route_refresh_interval: Duration::from_secs(90),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            once: false,
        }
    }
}

/// One thing that went wrong in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("routes: {0}")]
    Routes(#[from] RouteError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

impl Failure {
    pub fn is_retryable(&self) -> bool {
        match self {
            Failure::Routes(e) => e.is_retryable(),
            Failure::Dataplane(e) => e.is_retryable(),
        }
    }
}

/// A reconcile that did not fully succeed. Everything that could be applied was.
#[derive(Debug, thiserror::Error)]
#[error("{} failure(s), first: {}", failures.len(), failures.first().map(ToString::to_string).unwrap_or_default())]
pub struct ReconcileError {
    pub failures: Vec<Failure>,
}

impl ReconcileError {
    /// Retrying soon may help if any failure was transient.
    pub fn is_retryable(&self) -> bool {
        self.failures.iter().any(Failure::is_retryable)
    }
}

/// How the loop ended.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("the etcd watchers stopped")]
    WatchersGone,
    #[error("reconcile failed: {0}")]
    Reconcile(#[from] ReconcileError),
}

/// What one successful reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileOutcome {
    /// Route changes made.
    pub route_ops: usize,
    /// Routes the agent owns now.
    pub routes: usize,
    /// The dataplanes' combined report (empty when they were skipped: nothing new).
    pub report: ApplyReport,
}

/// Runs reconciles; see the module documentation.
pub struct Reconciler<R> {
    host: HostInfo,
    routes: R,
    dataplanes: Vec<Box<dyn Dataplane>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    settings: LoopSettings,
    /// The model generation the dataplanes last applied successfully.
    applied_generation: Option<u64>,
    /// What was last logged, to log changes only.
    last_notes: Vec<PlanNote>,
    last_conflicts: BTreeSet<String>,
    last_device_conflicts: BTreeSet<String>,
}

impl<R> std::fmt::Debug for Reconciler<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("host", &self.host)
            .field("dataplanes", &self.dataplanes.iter().map(|d| d.name()).collect::<Vec<_>>())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<R: RouteTable> Reconciler<R> {
    pub fn new(
        host: HostInfo,
        routes: R,
        dataplanes: Vec<Box<dyn Dataplane>>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        settings: LoopSettings,
    ) -> Self {
        Reconciler {
            host,
            routes,
            dataplanes,
            health,
            metrics,
            settings,
            applied_generation: None,
            last_notes: Vec::new(),
            last_conflicts: BTreeSet::new(),
            last_device_conflicts: BTreeSet::new(),
        }
    }

    /// The route table (for tests that inspect a fake one).
    pub fn routes(&self) -> &R {
        &self.routes
    }

    /// One reconcile: plan and diff routes and apply the changes, then apply every dataplane
    /// (skipped when the model has not changed since their last success, unless `full`).
    /// Failures do not stop the rest.
    pub async fn reconcile(
        &mut self,
        model: &ClusterModel,
        full: bool,
    ) -> Result<ReconcileOutcome, ReconcileError> {
        let span = tracing::info_span!(
            "reconcile",
            generation = model.generation(),
            revision = model.revision(),
            full
        );
        self.reconcile_inner(model, full).instrument(span).await
    }

    async fn reconcile_inner(
        &mut self,
        model: &ClusterModel,
        full: bool,
    ) -> Result<ReconcileOutcome, ReconcileError> {
        let started = std::time::Instant::now();
        let mut failures = Vec::new();
        let mut outcome = ReconcileOutcome::default();

        let plan = routes::plan_routes_explained(model, &self.host);
        self.log_notes(plan.notes);
        match self.routes.dump().await {
            Ok(observed) => {
                self.log_conflicts(&plan.routes, &observed);
                let ops = routes::diff(&plan.routes, &observed);
                let mut failed = 0;
                for op in &ops {
                    match self.routes.apply(op).await {
                        Ok(()) => tracing::info!(route = %op, "route programmed"),
                        Err(e) => {
                            failed += 1;
                            tracing::warn!(route = %op, error = %e, "route change failed");
                            failures.push(Failure::Routes(e));
                        }
                    }
                }
                let repaired =
                    self.repair_device_routes(&plan.device_routes, &observed, &mut failures).await;
                outcome.route_ops = ops.len() - failed + repaired;
                outcome.routes = plan.routes.len();
                self.metrics.routes.set(plan.routes.len() as u64);
            }
            Err(e) => failures.push(Failure::Routes(e)),
        }

        if full || self.applied_generation != Some(model.generation()) {
            let mut all_ok = true;
            let host = &self.host;
            for dataplane in &mut self.dataplanes {
                if full {
                    dataplane.resync();
                }
                match run_blocking(|| dataplane.apply(model, host)) {
                    Ok(report) => outcome.report.absorb(&report),
                    Err(e) => {
                        // Whatever it half did, the next apply must not trust its cache.
                        dataplane.resync();
                        all_ok = false;
                        failures.push(Failure::Dataplane(e));
                    }
                }
            }
            if all_ok {
                self.applied_generation = Some(model.generation());
                self.record_report(&outcome.report);
            }
        }

        let elapsed = started.elapsed();
        self.metrics.apply_seconds.observe(elapsed);
        self.metrics.reconciles.inc();
        self.metrics.endpoints_local.set(model.local_endpoints(&self.host.nodename).count() as u64);
        self.metrics.endpoints_total.set(model.endpoints().len() as u64);
        if !failures.is_empty() {
            return Err(ReconcileError { failures });
        }
        if outcome.route_ops > 0 || outcome.report.changed {
            tracing::info!(
                route_ops = outcome.route_ops,
                routes = outcome.routes,
                dataplane_changed = outcome.report.changed,
                took = ?elapsed,
                "dataplane reconciled"
            );
        } else {
            tracing::debug!(took = ?elapsed, "dataplane already in step");
        }
        Ok(outcome)
    }

    /// Puts back the missing device routes of this host's workloads (see
    /// [`routes::repair_device_routes`]); returns how many went in.
    async fn repair_device_routes(
        &mut self,
        desired: &BTreeSet<routes::DeviceRoute>,
        observed: &[routes::KernelRoute],
        failures: &mut Vec<Failure>,
    ) -> usize {
        // Links are read only when a wanted destination has no route at all: the usual case
        // costs no extra dump. They are read after the routes: the CNI plugin's DEL removes
        // the routes before it sets the veth down, and the kernel refuses (and flushes) routes
        // out of a down link, so a DEL caught half way never keeps a repaired route.
        let links = if routes::any_unrouted(desired, observed) {
            match self.routes.links().await {
                Ok(links) => links,
                Err(e) => {
                    failures.push(Failure::Routes(e));
                    return 0;
                }
            }
        } else {
            Vec::new()
        };
        let repair = routes::repair_device_routes(desired, observed, &links);
        self.log_device_conflicts(&repair.conflicts);
        let mut added = 0;
        for add in &repair.adds {
            match self.routes.add_device_route(add).await {
                Ok(true) => {
                    added += 1;
                    tracing::warn!(route = %add, "workload device route was missing; put it back");
                }
                Ok(false) => {
                    tracing::debug!(route = %add, "workload device route repair overtaken");
                }
                Err(e) => {
                    tracing::warn!(route = %add, error = %e, "workload device route repair failed");
                    failures.push(Failure::Routes(e));
                }
            }
        }
        added
    }

    fn log_device_conflicts(&mut self, conflicts: &[(routes::DeviceRoute, routes::KernelRoute)]) {
        let now: BTreeSet<String> =
            conflicts.iter().map(|(want, theirs)| format!("{want} (held by {theirs})")).collect();
        for conflict in now.difference(&self.last_device_conflicts) {
            tracing::warn!(
                %conflict,
                "another route holds a workload's address; leaving it alone"
            );
        }
        self.last_device_conflicts = now;
    }

    fn record_report(&self, report: &ApplyReport) {
        if self.dataplanes.is_empty() {
            return;
        }
        self.metrics.nft_chains.set(report.chains as u64);
        self.metrics.nft_rules.set(report.rules as u64);
        self.metrics.nft_sets.set(report.sets as u64);
        self.metrics.nft_set_elements.set(report.set_elements as u64);
    }

    /// Logs the destinations left unrouted, when that list changes.
    fn log_notes(&mut self, notes: Vec<PlanNote>) {
        if notes == self.last_notes {
            return;
        }
        for note in notes.iter().filter(|n| !self.last_notes.contains(n)) {
            tracing::warn!(dst = %note.dst, reason = %note.reason, "not routing");
        }
        self.last_notes = notes;
    }

    fn log_conflicts(
        &mut self,
        desired: &BTreeSet<routes::DesiredRoute>,
        observed: &[routes::KernelRoute],
    ) {
        let now: BTreeSet<String> = routes::conflicts(desired, observed)
            .into_iter()
            .map(|(want, theirs)| format!("{want} (held by {theirs})"))
            .collect();
        for conflict in now.difference(&self.last_conflicts) {
            tracing::warn!(%conflict, "another route holds a destination tabby wants; leaving it alone");
        }
        self.last_conflicts = now;
    }

    /// The loop: applies events from `events` to `model` and reconciles as described in the
    /// module documentation, until `shutdown` turns true (or, with `once`, after the first
    /// successful reconcile).
    pub async fn run(
        &mut self,
        model: &mut ClusterModel,
        events: &mut mpsc::Receiver<SyncMsg>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), LoopError> {
        let now = Instant::now();
        let mut state = LoopState {
            // The first reconcile happens as soon as the model is in sync, changed or not.
            dirty: true,
            first_change: now,
            last_change: now,
            // And it distrusts every cache: the kernel may hold anything after a restart.
            full_pending: true,
            retry_at: None,
            backoff: self.settings.backoff_min,
            next_resync: now + self.settings.resync_interval,
            next_refresh: now + self.settings.route_refresh_interval,
            watch_failing: [false; 2],
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.health.tick();
            let now = Instant::now();
            if let Some(at) = state.apply_at(model.in_sync(), &self.settings) {
                if now >= at {
                    let full = state.full_pending;
                    if full {
                        self.metrics.resyncs.inc();
                    }
                    state.dirty = false;
                    match self.reconcile(model, full).await {
                        Ok(_) => {
                            self.health.set_apply_result(Ok(()));
                            state.full_pending = false;
                            state.retry_at = None;
                            state.backoff = self.settings.backoff_min;
                            if self.settings.once {
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            self.metrics.errors.inc(["reconcile"]);
                            self.health.set_apply_result(Err(e.to_string()));
                            if self.settings.once {
                                return Err(e.into());
                            }
                            state.full_pending = true;
                            if e.is_retryable() {
                                let delay = jitter(state.backoff);
                                tracing::warn!(error = %e, retry_in = ?delay, "reconcile failed; retrying");
                                state.retry_at = Some(Instant::now() + delay);
                                state.backoff = (state.backoff * 2).min(self.settings.backoff_max);
                                state.mark_dirty(Instant::now());
                            } else {
                                tracing::error!(
                                    error = %e,
                                    "reconcile failed; retrying on the next change or refresh"
                                );
                            }
                        }
                    }
                    continue;
                }
            }
            let wake = state.next_wake(model.in_sync(), &self.settings);
            tokio::select! {
                () = stopped(&mut shutdown) => {
                    tracing::info!("stopping; the dataplane stays as programmed");
                    return Ok(());
                }
                msg = events.recv() => {
                    let Some(msg) = msg else { return Err(LoopError::WatchersGone) };
                    self.absorb(model, msg, &mut state);
                    // Take whatever else is queued now, so a burst is one batch.
                    for _ in 0..4096 {
                        match events.try_recv() {
                            Ok(msg) => self.absorb(model, msg, &mut state),
                            Err(_) => break,
                        }
                    }
                    self.record_model(model);
                }
                () = tokio::time::sleep_until(wake) => {}
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            if now >= state.next_resync {
                tracing::debug!("periodic resync due");
                state.full_pending = true;
                state.mark_dirty(now);
                state.next_resync = now + self.settings.resync_interval;
            }
            if now >= state.next_refresh {
                state.mark_dirty(now);
                state.next_refresh = now + self.settings.route_refresh_interval;
            }
        }
    }

    fn absorb(&self, model: &mut ClusterModel, msg: SyncMsg, state: &mut LoopState) {
        match msg {
            SyncMsg::Event(source, event) => {
                let kind = match &event {
                    WatchEvent::Snapshot { .. } => "snapshot",
                    WatchEvent::Put(_) => "put",
                    WatchEvent::Delete { .. } => "delete",
                };
                self.metrics.watch_events.inc([source.as_str(), kind]);
                if std::mem::take(&mut state.watch_failing[source_index(source)]) {
                    tracing::info!(source = source.as_str(), "etcd watch is back");
                }
                self.health.set_etcd(Ok(()));
                self.metrics.etcd_up.set(1);
                let was_in_sync = model.in_sync();
                let changed = model.apply(source, event);
                if !was_in_sync && model.in_sync() {
                    tracing::info!(revision = model.revision(), "in sync with etcd");
                }
                if changed || (!was_in_sync && model.in_sync()) {
                    state.mark_dirty(Instant::now());
                }
            }
            SyncMsg::Error(source, error) => {
                let failing = &mut state.watch_failing[source_index(source)];
                if *failing {
                    tracing::debug!(source = source.as_str(), %error, "etcd watch still failing");
                } else {
                    tracing::warn!(
                        source = source.as_str(),
                        %error,
                        "etcd watch failed; the dataplane stays as programmed while it retries"
                    );
                }
                *failing = true;
                self.health.set_etcd(Err(error.to_string()));
                self.metrics.etcd_up.set(0);
                self.metrics.errors.inc(["watch"]);
            }
        }
    }

    fn record_model(&self, model: &ClusterModel) {
        self.health.set_in_sync(model.in_sync());
        self.metrics.in_sync.set(u64::from(model.in_sync()));
        self.metrics.model_generation.set(model.generation());
        self.metrics.invalid_resources.set(model.invalid().len() as u64);
        self.metrics.endpoints_total.set(model.endpoints().len() as u64);
    }
}

/// Resolves once `shutdown` is true (or its sender is gone: nobody can stop us any more, so
/// stop now rather than never).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here, inside.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn source_index(source: WatchSource) -> usize {
    usize::from(source == WatchSource::Ipam)
}

/// The loop's timers and flags.
#[derive(Debug)]
struct LoopState {
    /// The model changed (or a refresh is due) since the last reconcile started.
    dirty: bool,
    first_change: Instant,
    last_change: Instant,
    /// The next reconcile is a full resync.
    full_pending: bool,
    /// After a failure: no reconcile before this.
    retry_at: Option<Instant>,
    backoff: Duration,
    next_resync: Instant,
    next_refresh: Instant,
    watch_failing: [bool; 2],
}

impl LoopState {
    fn mark_dirty(&mut self, now: Instant) {
        if !self.dirty {
            self.dirty = true;
            self.first_change = now;
        }
        self.last_change = now;
    }

    /// When the next reconcile is due, if one is.
    fn apply_at(&self, in_sync: bool, settings: &LoopSettings) -> Option<Instant> {
        if !in_sync || !self.dirty {
            return None;
        }
        let quiet = self.last_change + settings.debounce;
        let latest = self.first_change + settings.max_batch_latency;
        let due = quiet.min(latest);
        Some(self.retry_at.map_or(due, |retry| due.max(retry)))
    }

    /// The next moment the loop must look at its timers.
    fn next_wake(&self, in_sync: bool, settings: &LoopSettings) -> Instant {
        let timers = self.next_resync.min(self.next_refresh);
        self.apply_at(in_sync, settings).map_or(timers, |at| at.min(timers))
    }
}

/// `base` scaled by a random factor in [0.5, 1], so agents restarted together spread out.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Runs a synchronous apply without stalling the runtime's other tasks (health, heartbeat,
/// watchers) when the runtime has threads to spare.
fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests;
