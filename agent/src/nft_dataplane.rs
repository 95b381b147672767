//! The nftables [`Dataplane`]: plans the table from the model ([`crate::plan`]) and hands it
//! to the applier ([`crate::nft::Applier`]), which writes only the chains and set elements
//! that changed — or the whole table on the first apply, after a resync, and whenever
//! someone else changed nftables since our last commit.

use std::collections::HashSet;

use crate::config::AgentConfig;
use crate::dataplane::{ApplyReport, Dataplane, DataplaneError};
use crate::host::HostInfo;
use crate::model::ClusterModel;
use crate::nft::ir::Ruleset;
use crate::nft::{Applier, ApplyStats};
use crate::plan::{self, PlanCache, PlanConfig, PlanWarning};

const NAME: &str = "nftables";

/// Plans and programs table `inet <table>` of the network namespace it was created in.
pub struct NftDataplane {
    config: PlanConfig,
    applier: Applier,
    /// What the last plan computed that the next may reuse (selector sets).
    cache: PlanCache,
    /// The next apply replaces the table whole.
    full_next: bool,
    /// Warnings already logged: each is logged once while it lasts.
    warned: HashSet<PlanWarning>,
    last_stats: Option<ApplyStats>,
}

impl std::fmt::Debug for NftDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftDataplane")
            .field("table", &self.config.table)
            .field("full_next", &self.full_next)
            .finish_non_exhaustive()
    }
}

impl NftDataplane {
    /// For the agent: the table named in `config`, in the calling thread's namespace.
    pub fn new(config: &AgentConfig) -> Result<Self, DataplaneError> {
        let plan_config =
            PlanConfig::from_agent(config).map_err(|e| DataplaneError::new(NAME, false, e))?;
        Self::with_config(plan_config)
    }

    /// With an explicit planner configuration (tests, benchmarks).
    pub fn with_config(config: PlanConfig) -> Result<Self, DataplaneError> {
        let applier = Applier::new().map_err(|e| DataplaneError::new(NAME, e.is_retryable(), e))?;
        Ok(NftDataplane {
            config,
            applier,
            cache: PlanCache::default(),
            full_next: true,
            warned: HashSet::new(),
            last_stats: None,
        })
    }

    /// What the last successful apply wrote (for benchmarks and debugging).
    pub fn last_stats(&self) -> Option<&ApplyStats> {
        self.last_stats.as_ref()
    }

    /// Plans for `model` and `host`, logging new warnings once.
    pub fn plan(&mut self, model: &ClusterModel, host: &HostInfo) -> (Ruleset, usize) {
        let plan = plan::plan_with_cache(model, host, &self.config, &mut self.cache);
        for w in &plan.warnings {
            if !self.warned.contains(w) {
                tracing::warn!(subject = %w.subject, "{}", w.message);
            }
        }
        // Forget warnings that went away, so they are logged again if they come back.
        self.warned = plan.warnings.into_iter().collect();
        (plan.ruleset, plan.local_endpoints)
    }
}

impl Dataplane for NftDataplane {
    fn name(&self) -> &'static str {
        NAME
    }

    fn apply(
        &mut self,
        model: &ClusterModel,
        host: &HostInfo,
    ) -> Result<ApplyReport, DataplaneError> {
        let (ruleset, local_endpoints) = self.plan(model, host);
        let result = if self.full_next {
            self.applier.resync(&ruleset)
        } else {
            self.applier.apply(&ruleset)
        };
        let stats = result.map_err(|e| {
            // The applier already forgot what the kernel holds; replace whole next time.
            self.full_next = true;
            DataplaneError::new(NAME, e.is_retryable(), e)
        })?;
        self.full_next = false;
        let report = ApplyReport {
            changed: stats.messages > 0,
            chains: ruleset.chains().len(),
            rules: ruleset.rule_count(),
            sets: ruleset.sets().len() + ruleset.maps().len(),
            set_elements: ruleset.sets().map(|s| s.elems().len()).sum::<usize>()
                + ruleset.maps().map(|m| m.elems().len()).sum::<usize>(),
            local_endpoints,
        };
        self.last_stats = Some(stats);
        Ok(report)
    }

    fn resync(&mut self) {
        self.full_next = true;
        self.applier.forget();
    }
}
