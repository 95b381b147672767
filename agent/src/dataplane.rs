//! The seam between the reconcile loop and the parts that program the kernel from the whole
//! cluster model (the nftables ruleset first). The loop owns routes itself; everything else
//! plugs in here as a [`Dataplane`] without the loop knowing what it programs.

use crate::config::AgentConfig;
use crate::host::HostInfo;
use crate::model::ClusterModel;

/// What one apply programmed, for metrics and logs. Counts describe the state after the
/// apply (the whole ruleset), not the change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Whether anything was written to the kernel.
    pub changed: bool,
    pub chains: usize,
    pub rules: usize,
    pub sets: usize,
    /// Elements over all sets and maps.
    pub set_elements: usize,
    /// Local workload endpoints programmed.
    pub local_endpoints: usize,
}

impl ApplyReport {
    /// Adds `other`'s counts to these (several dataplanes report into one set of metrics).
    pub fn absorb(&mut self, other: &ApplyReport) {
        self.changed |= other.changed;
        self.chains += other.chains;
        self.rules += other.rules;
        self.sets += other.sets;
        self.set_elements += other.set_elements;
        self.local_endpoints = self.local_endpoints.max(other.local_endpoints);
    }
}

/// A failed apply, with what the loop should do about it.
#[derive(Debug, thiserror::Error)]
#[error("{component}: {source}")]
pub struct DataplaneError {
    /// Which dataplane failed (its [`Dataplane::name`]).
    pub component: &'static str,
    /// Whether trying again soon may succeed (a busy kernel, a lost socket). If not, the loop
    /// waits for the model to change or for the next resync.
    pub retryable: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl DataplaneError {
    pub fn new(
        component: &'static str,
        retryable: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DataplaneError { component, retryable, source: source.into() }
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Something that programs the kernel from the whole model, level-triggered: each `apply`
/// gets the complete current model and makes the kernel match it, whatever happened before.
///
/// The loop calls `apply` only once the model is in sync, one call at a time, from a thread
/// that may block (applies are synchronous). It calls `resync` before the apply of a periodic
/// resync (and after a failed apply): the dataplane must then stop trusting what it believes
/// the kernel holds, so that apply reads or rewrites it whole and repairs whatever someone
/// else changed.
pub trait Dataplane: Send {
    /// A short name for logs and metrics (`nftables`).
    fn name(&self) -> &'static str;

    /// Makes the kernel match `model` for `host`.
    fn apply(
        &mut self,
        model: &ClusterModel,
        host: &HostInfo,
    ) -> Result<ApplyReport, DataplaneError>;

    /// Forgets cached kernel state; the next apply verifies and repairs everything.
    fn resync(&mut self);
}

/// The dataplanes the agent runs besides routes, built from the configuration: the nftables
/// dataplane (planner + applier), owning table `inet <nft_table>` of the calling thread's
/// network namespace.
pub fn configured(config: &AgentConfig) -> Result<Vec<Box<dyn Dataplane>>, DataplaneError> {
    Ok(vec![Box::new(crate::nft_dataplane::NftDataplane::new(config)?)])
}
