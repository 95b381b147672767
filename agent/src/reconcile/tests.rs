#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use datastore::client::Kv;
use datastore::keys::{KeyLayout, Kind};
use serde_json::json;

use super::*;
use crate::routes::{DesiredRoute, KernelRoute, RouteOp};

const NODE: &str = "host-a";

fn layout() -> KeyLayout {
    KeyLayout::new("/t")
}

fn kv(key: String, value: &serde_json::Value, rev: i64) -> Kv {
    Kv {
        key,
        value: value.to_string().into_bytes(),
        mod_revision: rev,
        create_revision: rev,
        version: 1,
    }
}

fn block_kv(cidr: &str, host: &str, rev: i64) -> Kv {
    let value = json!({
        "cidr": cidr, "affinity": format!("host:{host}"),
        "allocations": [null, null, null, null], "unallocated": [0, 1, 2, 3], "attributes": []
    });
    kv(layout().block(cidr.parse().unwrap()), &value, rev)
}

fn profile_kv(name: &str, rev: i64) -> Kv {
    let value = json!({
        "kind": "Profile", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name}, "spec": {}
    });
    kv(layout().resource(Kind::Profile, None, name), &value, rev)
}

fn snapshot(kvs: Vec<Kv>, revision: i64) -> WatchEvent {
    WatchEvent::Snapshot { kvs, revision }
}

/// A routing table in memory that records what was done to it.
#[derive(Debug, Default)]
struct FakeTable {
    routes: Vec<KernelRoute>,
    dumps: usize,
    ops: Vec<String>,
    /// Fail this many upcoming changes with EBUSY.
    fail_next: usize,
}

#[derive(Debug, Clone, Default)]
struct FakeRoutes(Arc<Mutex<FakeTable>>);

impl FakeRoutes {
    fn table(&self) -> std::sync::MutexGuard<'_, FakeTable> {
        self.0.lock().unwrap()
    }

    fn has(&self, route: &str) -> bool {
        let want: DesiredRoute = route.parse().unwrap();
        self.table().routes.iter().any(|r| r.as_desired() == Some(want))
    }
}

fn to_kernel(route: &DesiredRoute) -> KernelRoute {
    KernelRoute::written(route)
}

impl RouteTable for FakeRoutes {
    async fn dump(&mut self) -> Result<Vec<KernelRoute>, RouteError> {
        let mut table = self.table();
        table.dumps += 1;
        Ok(table.routes.clone())
    }

    async fn apply(&mut self, op: &RouteOp) -> Result<(), RouteError> {
        let mut table = self.table();
        if table.fail_next > 0 {
            table.fail_next -= 1;
            return Err(RouteError::Netlink {
                op: op.to_string(),
                errno: Some(libc::EBUSY),
                reason: "busy".into(),
            });
        }
        table.ops.push(op.to_string());
        match op {
            RouteOp::Add(r) => table.routes.push(to_kernel(r)),
            RouteOp::Replace { old, new } => {
                table.routes.retain(|k| k != old);
                table.routes.push(to_kernel(new));
            }
            RouteOp::Delete(k) => table.routes.retain(|r| r != k),
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct DpLog {
    applies: Vec<u64>,
    resyncs: usize,
    /// Fail the upcoming applies with this retryability.
    fail: Option<bool>,
}

#[derive(Debug, Clone, Default)]
struct FakeDataplane(Arc<Mutex<DpLog>>);

impl Dataplane for FakeDataplane {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn apply(
        &mut self,
        model: &ClusterModel,
        _host: &HostInfo,
    ) -> Result<ApplyReport, DataplaneError> {
        let mut log = self.0.lock().unwrap();
        if let Some(retryable) = log.fail {
            return Err(DataplaneError::new("fake", retryable, "injected failure"));
        }
        log.applies.push(model.generation());
        Ok(ApplyReport { changed: true, rules: model.profiles().len(), ..ApplyReport::default() })
    }

    fn resync(&mut self) {
        self.0.lock().unwrap().resyncs += 1;
    }
}

struct Harness {
    tx: mpsc::Sender<SyncMsg>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(ClusterModel, Result<(), LoopError>)>,
    routes: FakeRoutes,
    dp: FakeDataplane,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

fn start(settings: LoopSettings) -> Harness {
    let routes = FakeRoutes::default();
    let dp = FakeDataplane::default();
    let health = Arc::new(Health::new());
    let metrics = Arc::new(Metrics::default());
    let mut host = HostInfo::new(NODE);
    host.ipv4 = Some("192.0.2.1/24".parse().unwrap());
    let mut reconciler = Reconciler::new(
        host,
        routes.clone(),
        vec![Box::new(dp.clone())],
        health.clone(),
        metrics.clone(),
        settings,
    );
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut model = ClusterModel::new(layout());
        let result = reconciler.run(&mut model, &mut rx, stop_rx).await;
        (model, result)
    });
    Harness { tx, stop, task, routes, dp, health, metrics }
}

impl Harness {
    async fn send(&self, source: WatchSource, event: WatchEvent) {
        self.tx.send(SyncMsg::Event(source, event)).await.unwrap();
    }

    async fn sync(&self, resources: Vec<Kv>, ipam: Vec<Kv>) {
        self.send(WatchSource::Resources, snapshot(resources, 10)).await;
        self.send(WatchSource::Ipam, snapshot(ipam, 10)).await;
    }

    async fn stop(self) -> ClusterModel {
        self.stop.send(true).unwrap();
        let (model, result) = self.task.await.unwrap();
        result.unwrap();
        model
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_programmed_before_every_prefix_is_listed() {
    let h = start(LoopSettings::default());
    h.send(WatchSource::Ipam, snapshot(vec![block_kv("10.65.0.0/30", NODE, 5)], 5)).await;
    settle().await;
    assert_eq!(h.routes.table().dumps, 0, "kernel read before sync");
    assert!(h.routes.table().ops.is_empty());
    assert!(h.dp.0.lock().unwrap().applies.is_empty());
    assert!(h.health.readiness().is_err());

    h.send(WatchSource::Resources, snapshot(vec![], 6)).await;
    settle().await;
    assert!(h.routes.has("blackhole 10.65.0.0/30"));
    // The first apply after start is a full one.
    assert_eq!(h.dp.0.lock().unwrap().resyncs, 1);
    assert!(h.health.readiness().is_ok(), "{:?}", h.health.readiness());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_events_is_a_handful_of_reconciles() {
    let h = start(LoopSettings::default());
    h.sync(vec![], vec![]).await;
    settle().await;
    let before = h.dp.0.lock().unwrap().applies.len();
    // 1000 events over 100 ms (the timer's resolution is 1 ms: ten events per tick).
    for i in 0..1000 {
        h.send(WatchSource::Resources, WatchEvent::Put(profile_kv(&format!("p{i}"), 11 + i))).await;
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    settle().await;
    let applies = h.dp.0.lock().unwrap().applies.len() - before;
    assert!((1..=5).contains(&applies), "{applies} reconciles for 1000 events");
    assert_eq!(h.metrics.watch_events.get(["resources", "put"]), 1000);
    let model = h.stop().await;
    assert_eq!(model.profiles().len(), 1000);
}

#[tokio::test(start_paused = true)]
async fn changes_move_routes_and_unchanged_models_skip_the_dataplane() {
    let h = start(LoopSettings {
        route_refresh_interval: Duration::from_secs(5),
        ..LoopSettings::default()
    });
    let node_b = json!({
        "kind": "Node", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "host-b"}, "spec": {"bgp": {"ipv4Address": "192.0.2.2/24"}}
    });
    h.sync(
        vec![kv(layout().resource(Kind::Node, None, "host-b"), &node_b, 3)],
        vec![block_kv("10.65.0.0/30", NODE, 4)],
    )
    .await;
    settle().await;
    assert!(h.routes.has("blackhole 10.65.0.0/30"));

    // The block moves to host-b: one replace.
    h.send(WatchSource::Ipam, WatchEvent::Put(block_kv("10.65.0.0/30", "host-b", 20))).await;
    settle().await;
    assert!(h.routes.has("10.65.0.0/30 via 192.0.2.2"));
    assert!(!h.routes.has("blackhole 10.65.0.0/30"));
    assert!(h.routes.table().ops.last().unwrap().starts_with("replace"));

    // A route deleted behind the agent's back is back after the route refresh, without the
    // (unchanged) dataplane being re-applied.
    let applies = h.dp.0.lock().unwrap().applies.len();
    h.routes.table().routes.clear();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(h.routes.has("10.65.0.0/30 via 192.0.2.2"));
    assert_eq!(h.dp.0.lock().unwrap().applies.len(), applies);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn periodic_resync_reapplies_everything() {
    let h =
        start(LoopSettings { resync_interval: Duration::from_secs(1), ..LoopSettings::default() });
    h.sync(vec![], vec![]).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (resyncs, applies) = {
        let log = h.dp.0.lock().unwrap();
        (log.resyncs, log.applies.len())
    };
    // The start-up apply plus three resyncs, each a full apply.
    assert!(resyncs >= 4, "{resyncs} resyncs");
    assert!(applies >= 4);
    assert!(h.metrics.resyncs.get() >= 4);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_and_retry() {
    let h = start(LoopSettings::default());
    h.routes.table().fail_next = 2;
    h.sync(vec![], vec![block_kv("10.65.0.0/30", NODE, 4)]).await;
    // The first attempt failed; the retry waits at least half the first backoff (50 ms).
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!h.routes.has("blackhole 10.65.0.0/30"));
    assert!(h.health.readiness().unwrap_err().contains("busy"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.routes.has("blackhole 10.65.0.0/30"));
    assert!(h.health.readiness().is_ok());
    assert_eq!(h.metrics.errors.get(["reconcile"]), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_wait_for_a_change() {
    let h = start(LoopSettings::default());
    h.dp.0.lock().unwrap().fail = Some(false);
    h.sync(vec![], vec![]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.metrics.errors.get(["reconcile"]), 1, "retried without a change");
    h.dp.0.lock().unwrap().fail = None;
    h.send(WatchSource::Resources, WatchEvent::Put(profile_kv("web", 30))).await;
    settle().await;
    assert_eq!(h.dp.0.lock().unwrap().applies.len(), 1);
    assert!(h.health.readiness().is_ok());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn watch_errors_mark_etcd_down_and_touch_nothing() {
    let h = start(LoopSettings::default());
    h.sync(vec![], vec![block_kv("10.65.0.0/30", NODE, 4)]).await;
    settle().await;
    let ops = h.routes.table().ops.len();
    let error =
        datastore::client::Error::Unavailable { endpoints: "e".into(), reason: "refused".into() };
    h.tx.send(SyncMsg::Error(WatchSource::Ipam, error)).await.unwrap();
    settle().await;
    assert!(h.health.readiness().unwrap_err().contains("etcd: down"));
    assert_eq!(h.metrics.etcd_up.get(), 0);
    assert_eq!(h.routes.table().ops.len(), ops);
    assert!(h.routes.has("blackhole 10.65.0.0/30"));
    // A re-list after the outage (a compaction, say) brings the agent back in step.
    h.send(WatchSource::Ipam, snapshot(vec![block_kv("10.65.0.4/30", NODE, 50)], 50)).await;
    settle().await;
    assert!(h.health.readiness().is_ok());
    assert!(h.routes.has("blackhole 10.65.0.4/30"));
    assert!(!h.routes.has("blackhole 10.65.0.0/30"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn once_returns_after_the_first_apply() {
    let h = start(LoopSettings { once: true, ..LoopSettings::default() });
    h.sync(vec![], vec![block_kv("10.65.0.0/30", NODE, 4)]).await;
    let (_, result) = h.task.await.unwrap();
    result.unwrap();
    assert!(h.routes.has("blackhole 10.65.0.0/30"));
}

#[tokio::test(start_paused = true)]
async fn stopping_leaves_the_dataplane_alone() {
    let h = start(LoopSettings::default());
    h.sync(vec![], vec![block_kv("10.65.0.0/30", NODE, 4)]).await;
    settle().await;
    let routes = h.routes.clone();
    let ops = routes.table().ops.len();
    h.stop().await;
    assert_eq!(routes.table().ops.len(), ops);
    assert!(routes.has("blackhole 10.65.0.0/30"));
}
