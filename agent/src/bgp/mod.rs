//! BGP through BIRD 2: the agent renders this node's BIRD config from the cluster model
//! ([`peers::plan`] then [`render::render`], both pure), writes it whole, and asks the
//! running BIRD to load it only when its text changed ([`BirdDataplane`]).
//!
//! BIRD then advertises this node's blocks (aggregates only) to its peers and programs the
//! blocks it learns into the kernel as `proto bird` routes; the agent's route planner leaves
//! those out (`HostInfo::bgp`). The agent keeps its own blackholes for local blocks and the
//! CNI plugin its `/32` workload routes, so workloads keep working while BIRD restarts.
//! Blocks of IPIP pools are routed by the agent through `tunl0` whatever BGP says: stock
//! BIRD cannot program IPIP routes (Calico forked it for that), and its kernel filter
//! leaves them alone.

pub mod bird;
pub mod peers;
pub mod render;

use std::path::PathBuf;

use datastore::model::AsNumber;

pub use bird::{write_config, BirdError, Birdc, Reply};
pub use peers::{plan, BirdPlan, PeerKind, PlanError, PoolRoutes, Session};
pub use render::render;

use crate::config::BgpSettings;
use crate::dataplane::{ApplyReport, Dataplane, DataplaneError};
use crate::host::HostInfo;
use crate::model::ClusterModel;

/// Renders, writes and loads this node's BIRD config on every apply.
#[derive(Debug)]
pub struct BirdDataplane {
    config_path: PathBuf,
    birdc: Birdc,
    default_as: AsNumber,
    /// The text the running BIRD last accepted; `None` when it needs loading (start, a
    /// failed or skipped reload).
    loaded: Option<String>,
    /// The last notes logged, to log changes only.
    notes: Vec<String>,
    /// BIRD was found absent, and said so once.
    warned_unreachable: bool,
}

impl BirdDataplane {
    pub fn new(settings: &BgpSettings) -> Self {
        BirdDataplane {
            config_path: settings.bird_config.clone(),
            birdc: Birdc { program: settings.birdc.clone(), socket: settings.bird_socket.clone() },
            default_as: settings.as_number,
            loaded: None,
            notes: Vec::new(),
            warned_unreachable: false,
        }
    }

    fn error(
        retryable: bool,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> DataplaneError {
        DataplaneError::new("bird", retryable, e)
    }

    /// Has BIRD check `tmp` (when BIRD runs): a refused config never replaces the file.
    fn check(&self, tmp: &std::path::Path) -> Result<(), BirdError> {
        if !self.birdc.socket_exists() {
            return Ok(());
        }
        let arg = format!("\"{}\"", tmp.display());
        match self.birdc.run(&["configure", "check", &arg])? {
            Reply::Ok(_) | Reply::Unreachable(_) => Ok(()),
            Reply::Failed(output) => Err(BirdError::Refused { path: tmp.to_path_buf(), output }),
        }
    }

    /// Asks BIRD to load the config file; `false` when no BIRD is running (it reads the file
    /// when it starts).
    fn reload(&mut self) -> Result<bool, BirdError> {
        let arg = format!("\"{}\"", self.config_path.display());
        match self.birdc.run(&["configure", &arg])? {
            Reply::Ok(output) => {
                tracing::info!(path = %self.config_path.display(), reply = %output.trim(), "BIRD reconfigured");
                self.warned_unreachable = false;
                Ok(true)
            }
            Reply::Unreachable(output) => {
                if !self.warned_unreachable {
                    tracing::warn!(socket = %self.birdc.socket.display(), reply = %output.trim(), "BIRD is not running; it will read the config when it starts");
                    self.warned_unreachable = true;
                }
                Ok(false)
            }
            Reply::Failed(output) => {
                let refused = output.contains(&self.config_path.display().to_string());
                if refused {
                    Err(BirdError::Refused { path: self.config_path.clone(), output })
                } else {
                    Err(BirdError::Birdc { command: format!("configure {arg}"), output })
                }
            }
        }
    }
}

impl Dataplane for BirdDataplane {
    fn name(&self) -> &'static str {
        "bird"
    }

    fn apply(
        &mut self,
        model: &ClusterModel,
        host: &HostInfo,
    ) -> Result<ApplyReport, DataplaneError> {
        let plan = plan(model, host, self.default_as).map_err(|e| Self::error(false, e))?;
        if plan.notes != self.notes {
            for note in plan.notes.iter().filter(|n| !self.notes.contains(n)) {
                tracing::warn!(%note, "BGP peer left out");
            }
            self.notes.clone_from(&plan.notes);
        }
        let text = render(&plan);
        let wrote = write_config(&self.config_path, &text, |tmp| self.check(tmp))
            .map_err(|e| Self::error(e.is_retryable(), e))?;
        if wrote {
            tracing::info!(
                path = %self.config_path.display(),
                sessions = plan.sessions.len(),
                blocks = plan.local_blocks.len(),
                "wrote the BIRD config"
            );
        }
        let mut changed = wrote;
        // A rewrite also reloads: the file had drifted from what BIRD was given.
        if wrote || self.loaded.as_deref() != Some(text.as_str()) {
            match self.reload() {
                Ok(true) => {
                    self.loaded = Some(text);
                    changed = true;
                }
                Ok(false) => {}
                Err(e) => {
                    self.loaded = None;
                    return Err(Self::error(e.is_retryable(), e));
                }
            }
        }
        Ok(ApplyReport { changed, ..ApplyReport::default() })
    }

    /// Nothing cached to forget: every apply compares the file itself, and BIRD is asked to
    /// reload only when the text changed (a restarted BIRD reads the file by itself).
    fn resync(&mut self) {}
}

#[cfg(test)]
mod tests;
