//! The agent's heartbeat in etcd: a status record at
//! `<prefix>/felix/v2/no-region/host/<node>/status`, attached to a lease three times the
//! reporting interval, so the record disappears on its own when the agent stops reporting.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datastore::client::{Client, Error as EtcdError};
use datastore::keys::KeyLayout;
use datastore::model::AgentStatus;
use serde_json::Map;
use tokio::sync::watch;

use crate::health::Health;
use crate::metrics::Metrics;

/// The lease lives this many reporting intervals: two missed reports are tolerated.
const TTL_INTERVALS: u32 = 3;
/// Bound on revoking the lease at shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes the heartbeat; see the module documentation.
#[derive(Debug)]
pub struct StatusReporter {
    client: Client,
    key: String,
    interval: Duration,
    address: Option<String>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    lease: Option<i64>,
    first: bool,
    /// Whether the last report failed (to log a change of state once, not every tick).
    failing: bool,
}

impl StatusReporter {
    pub fn new(
        client: Client,
        layout: &KeyLayout,
        nodename: &str,
        interval: Duration,
        address: Option<String>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
    ) -> Self {
        StatusReporter {
            client,
            key: layout.agent_status(nodename),
            interval,
            address,
            health,
            metrics,
            lease: None,
            first: true,
            failing: false,
        }
    }

    /// The lease time to live.
    pub fn ttl(&self) -> Duration {
        self.interval * TTL_INTERVALS
    }

    /// The lease the record is attached to, once granted.
    pub fn lease(&self) -> Option<i64> {
        self.lease
    }

    /// Refreshes the lease (granting a new one if it expired) and writes the record.
    pub async fn report_once(&mut self) -> Result<(), EtcdError> {
        if let Some(lease) = self.lease {
            match self.client.keep_alive(lease).await {
                Ok(()) => {}
                Err(EtcdError::NotFound { .. }) => {
                    tracing::info!(
                        lease = format!("{lease:x}"),
                        "status lease expired; granting a new one"
                    );
                    self.lease = None;
                }
                Err(e) => return Err(e),
            }
        }
        let lease = if let Some(lease) = self.lease {
            lease
        } else {
            let lease = self.client.grant_lease(self.ttl()).await?;
            self.lease = Some(lease);
            lease
        };
        let status = AgentStatus {
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            uptime: self.health.started().elapsed().as_secs_f64(),
            first_update: self.first,
            version: env!("CARGO_PKG_VERSION").to_string(),
            address: self.address.clone(),
            endpoints: u32::try_from(self.metrics.endpoints_local.get()).unwrap_or(u32::MAX),
            extra: Map::new(),
        };
        let value = serde_json::to_vec(&status)
            .map_err(|e| EtcdError::Decode { key: self.key.clone(), reason: e.to_string() })?;
        match self.client.put(&self.key, value, Some(lease)).await {
            Ok(_) => {
                self.first = false;
                Ok(())
            }
            Err(e) => {
                // The lease may have expired between the refresh and the put: start over.
                if !e.is_retryable() {
                    self.lease = None;
                }
                Err(e)
            }
        }
    }

    /// Reports every interval until `shutdown` turns true, then revokes the lease so the
    /// record goes at once.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick().await,
                () = crate::reconcile::stopped(&mut shutdown) => break,
            }
        }
        if let Some(lease) = self.lease {
            match tokio::time::timeout(REVOKE_TIMEOUT, self.client.revoke_lease(lease)).await {
                Ok(Ok(_)) => tracing::debug!("status lease revoked"),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot revoke the status lease; it will expire");
                }
                Err(_) => tracing::debug!("revoking the status lease timed out; it will expire"),
            }
        }
    }

    async fn tick(&mut self) {
        match self.report_once().await {
            Ok(()) => {
                if self.failing {
                    tracing::info!(key = %self.key, "status heartbeat written again");
                }
                self.failing = false;
                self.health.set_etcd(Ok(()));
                self.metrics.etcd_up.set(1);
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(key = %self.key, error = %e, "cannot write the status heartbeat");
                }
                self.failing = true;
                self.health.set_etcd(Err(e.to_string()));
                self.metrics.etcd_up.set(0);
                self.metrics.errors.inc(["status"]);
            }
        }
    }
}
