//! The agent put together: discover the host, serve health and metrics, connect to etcd,
//! publish the node, heartbeat, watch, and run the reconcile loop until told to stop.

use std::sync::Arc;
use std::time::Duration;

use datastore::client::{Client, Error as EtcdError};
use datastore::keys::KeyLayout;
use datastore::watch::Watcher;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::AgentConfig;
use crate::dataplane::Dataplane;
use crate::health::Health;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::model::{ClusterModel, WatchSource};
use crate::node::{self, NodeError};
use crate::reconcile::{LoopError, LoopSettings, Reconciler, SyncMsg};
use crate::routes::{NetlinkRoutes, RouteError};
use crate::status::StatusReporter;

/// Events buffered between the watchers and the loop; a full buffer slows the watchers,
/// which is the back-pressure etcd's watch stream needs.
const EVENT_BUFFER: usize = 4096;
/// Longest wait between attempts to connect to etcd.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Until SIGTERM/SIGINT: health server, heartbeat, node publishing, periodic resync.
    Daemon,
    /// Connect, sync, program once and return; fails if that takes longer than `timeout`.
    Once { timeout: Duration },
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Host(#[from] NodeError),
    #[error("cannot serve health and metrics on {addr}: {source}")]
    Http { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot connect to etcd: {0}")]
    Etcd(#[from] EtcdError),
    #[error("{0}")]
    Routes(#[from] RouteError),
    #[error("{0}")]
    Loop(#[from] LoopError),
    #[error("not programmed within {0:?} (is etcd reachable?)")]
    Timeout(Duration),
}

/// Runs the agent with `dataplanes` besides routes, until `shutdown` turns true (daemon) or
/// after one apply (once). Stopping leaves routes and nftables as they are.
pub async fn run(
    config: AgentConfig,
    mode: Mode,
    dataplanes: Vec<Box<dyn Dataplane>>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    match mode {
        Mode::Daemon => run_inner(config, mode, dataplanes, shutdown).await,
        Mode::Once { timeout } => {
            tokio::time::timeout(timeout, run_inner(config, mode, dataplanes, shutdown))
                .await
                .map_err(|_| AgentError::Timeout(timeout))?
        }
    }
}

async fn run_inner(
    config: AgentConfig,
    mode: Mode,
    dataplanes: Vec<Box<dyn Dataplane>>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let daemon = mode == Mode::Daemon;
    let host = node::discover_host(&config).await?;
    tracing::info!(
        node = %host.nodename,
        address = ?host.ipv4,
        endpoint_to_host = %host.endpoint_to_host_action,
        "this host"
    );
    let mut dataplanes = dataplanes;
    if config.bgp.enabled {
        tracing::info!(
            config = %config.bgp.bird_config.display(),
            socket = %config.bgp.bird_socket.display(),
            "BGP on: BIRD routes remote blocks (except IPIP pools'); writing its config"
        );
        dataplanes.push(Box::new(crate::bgp::BirdDataplane::new(&config.bgp)));
    }
    let health = Arc::new(Health::new());
    let metrics = Arc::new(Metrics::default());
    let mut tasks = Tasks::default();

    if daemon {
        let (listener, addr) = http::bind(config.metrics_addr)
            .await
            .map_err(|source| AgentError::Http { addr: config.metrics_addr, source })?;
        tracing::info!(%addr, "serving /livez, /readyz and /metrics");
        let state = HttpState { health: health.clone(), metrics: metrics.clone() };
        tasks.push(tokio::spawn(http::serve(listener, state)));
        write_nodename_file(&config);
    }

    let Some(client) = connect(&config, &health, shutdown.clone()).await? else {
        return Ok(());
    };
    let layout = config.etcd.layout();
    if daemon && config.docker.enabled {
        tasks.push(tokio::spawn(serve_docker(&config, client.clone(), &layout, shutdown.clone())));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut status_task = None;
    if daemon {
        if let Some(ip) = host.ipv4 {
            tasks.push(tokio::spawn(node::publish_until_done(
                client.clone(),
                layout.clone(),
                host.nodename.clone(),
                ip,
                metrics.clone(),
            )));
        }
        let reporter = StatusReporter::new(
            client.clone(),
            &layout,
            &host.nodename,
            config.status_interval,
            host.ipv4.map(|ip| ip.addr().to_string()),
            health.clone(),
            metrics.clone(),
        );
        status_task = Some(tokio::spawn(reporter.run(stop_rx)));
    }

    let (events_tx, mut events) = mpsc::channel(EVENT_BUFFER);
    for source in WatchSource::ALL {
        tasks.push(tokio::spawn(watch_source(client.clone(), &layout, source, events_tx.clone())));
    }
    drop(events_tx);

    let settings = LoopSettings {
        resync_interval: config.resync_interval,
        route_refresh_interval: config.route_refresh_interval,
        once: !daemon,
        ..LoopSettings::default()
    };
    let mut reconciler =
        Reconciler::new(host, NetlinkRoutes::new()?, dataplanes, health, metrics, settings);
    let mut model = ClusterModel::new(layout);
    let result = reconciler.run(&mut model, &mut events, shutdown).await;

    // The loop is done: stop the heartbeat (it revokes its lease) and everything else.
    let _ = stop_tx.send(true);
    if let Some(task) = status_task {
        let _ = task.await;
    }
    drop(tasks);
    result.map_err(AgentError::from)
}

/// Tasks aborted when dropped, so no error path leaves a watcher or server behind.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn push(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Connects to etcd, retrying while it is unreachable (the agent may start before etcd);
/// `None` if told to stop meanwhile. Configuration and TLS errors fail at once.
async fn connect(
    config: &AgentConfig,
    health: &Health,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Option<Client>, AgentError> {
    let etcd = config.etcd.client_config();
    let mut delay = Duration::from_millis(200);
    loop {
        match Client::connect(&etcd).await {
            Ok(client) => {
                tracing::info!(endpoints = %client.endpoints(), prefix = %config.etcd.prefix, "connected to etcd");
                health.set_etcd(Ok(()));
                return Ok(Some(client));
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, retry_in = ?delay, "etcd unreachable; the dataplane stays as it is");
                health.set_etcd(Err(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = crate::reconcile::stopped(&mut shutdown) => return Ok(None),
        }
        delay = (delay * 2).min(CONNECT_BACKOFF_MAX);
    }
}

/// Forwards one prefix's watch events (and failures, so health can say etcd is down) to the
/// loop, until the loop goes away.
fn watch_source(
    client: Client,
    layout: &KeyLayout,
    source: WatchSource,
    tx: mpsc::Sender<SyncMsg>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut watcher = Watcher::new(client, source.prefix(layout));
    async move {
        loop {
            let msg = match watcher.try_next().await {
                Ok(event) => SyncMsg::Event(source, event),
                Err(error) => SyncMsg::Error(source, error),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// Serves the Docker network and IPAM drivers until shutdown; a failure to serve is logged
/// and leaves the rest of the agent running.
fn serve_docker(
    config: &AgentConfig,
    client: Client,
    layout: &KeyLayout,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let state = crate::docker::state_path(&config.nodename_file);
    let serving = crate::docker::serve(
        config.docker.clone(),
        client,
        layout.clone(),
        config.nodename.clone(),
        state,
        shutdown,
    );
    async move {
        if let Err(e) = serving.await {
            tracing::error!(error = %e, "cannot serve the Docker plugin");
        }
    }
}

/// Writes the node name where the CNI plugin and IPAM look for it, so all three agree.
fn write_nodename_file(config: &AgentConfig) {
    let path = &config.nodename_file;
    let current = std::fs::read_to_string(path).ok();
    if current.as_deref().map(str::trim) == Some(config.nodename.as_str()) {
        return;
    }
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, format!("{}\n", config.nodename)));
    match result {
        Ok(()) => tracing::info!(path = %path.display(), "wrote the node name for the CNI plugin"),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the node name file");
        }
    }
}
