//! The scale and chaos tests' common setup: a cluster of a given size with workloads spread
//! over the churn networks, the churn driver, the probe sample, and the summary rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{profile_names, sample_pairs, Churn, PhaseReport, PORT};
use crate::cluster::{spread, AttachReport, ClusterBuilder, Endpoint, Fleet, WorkloadSpec};

/// How big a run is.
#[derive(Debug, Clone, PartialEq)]
pub struct Size {
    pub hosts: usize,
    pub containers: usize,
    /// Churn profiles (and networks).
    pub profiles: usize,
    /// Profile changes a second.
    pub rate: f64,
    /// How long the churn runs.
    pub duration: Duration,
    /// CNI calls at once when attaching and detaching.
    pub parallel: usize,
    /// How often each host's table is listed (the timing resolution).
    pub poll: Duration,
}

impl Size {
    /// This size with any of `TABBY_SCALE_HOSTS`, `_CONTAINERS`, `_PROFILES`, `_RATE`,
    /// `_SECONDS`, `_PARALLEL` set in the environment taking their place (to run part of the
    /// full size on a slow machine). Panics on a value that does not parse.
    pub fn with_env_overrides(mut self) -> Size {
        fn var<T: std::str::FromStr>(name: &str) -> Option<T> {
            let value = std::env::var(name).ok()?;
            Some(value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
        }
        self.hosts = var("TABBY_SCALE_HOSTS").unwrap_or(self.hosts);
        self.containers = var("TABBY_SCALE_CONTAINERS").unwrap_or(self.containers);
        self.profiles = var("TABBY_SCALE_PROFILES").unwrap_or(self.profiles);
        self.rate = var("TABBY_SCALE_RATE").unwrap_or(self.rate);
        self.duration = var("TABBY_SCALE_SECONDS").map_or(self.duration, Duration::from_secs_f64);
        self.parallel = var("TABBY_SCALE_PARALLEL").unwrap_or(self.parallel);
        self
    }
}

/// A running churn setup. The churn (and its pollers) stops before the fleet is torn down.
#[derive(Debug)]
pub struct Rig {
    pub churn: Arc<Churn>,
    pub fleet: Fleet,
    pub size: Size,
    pub specs: Vec<WorkloadSpec>,
    /// The attached workloads' probe views, in the order of `specs`.
    pub endpoints: Vec<Endpoint>,
    /// The pairs every checkpoint probes.
    pub sample: Vec<(Endpoint, Endpoint)>,
    pub attach: AttachReport,
    /// Summary rows so far.
    pub rows: Vec<PhaseReport>,
    /// Checkpoints run, so each flips every profile again.
    rounds: usize,
}

impl Rig {
    /// Starts a cluster from `builder` with `size.hosts` hosts, writes the churn profiles,
    /// attaches the workloads and waits for the agents to be ready.
    pub fn start(size: Size, builder: ClusterBuilder) -> Rig {
        let cluster = builder.hosts(size.hosts).serve_ports(&[PORT]).start();
        let mut fleet = Fleet::new(cluster, size.parallel);
        let specs = spread(size.containers, size.hosts, &profile_names(size.profiles));
        let churn = Arc::new(Churn::start(&fleet, size.profiles, &specs, size.poll));
        let attach = fleet.add_workloads(&specs, size.parallel);
        eprintln!(
            "attached {} workloads on {} hosts in {:.1?} ({:.1}/s, {} at a time)",
            attach.endpoints.len(),
            size.hosts,
            attach.took,
            attach.rate(),
            size.parallel
        );
        fleet.wait_ready(Duration::from_mins(2));
        let endpoints = attach.endpoints.clone();
        let sample = sample_pairs(&specs, &endpoints);
        Rig { churn, fleet, size, specs, endpoints, sample, attach, rows: Vec::new(), rounds: 0 }
    }

    /// A checkpoint (see [`Churn::checkpoint`]) recorded as a row; panics with diagnostics
    /// if the hosts do not converge or a probe disagrees within `timeout`.
    pub fn checkpoint(&mut self, name: &str, timeout: Duration) {
        let round = self.rounds;
        self.rounds += 1;
        match self.churn.checkpoint(name, round, &self.sample, timeout) {
            Ok(row) => self.rows.push(row),
            Err((row, problem)) => {
                self.rows.push(row);
                panic!("{problem}\n{}", self.summary());
            }
        }
    }

    /// Churns for `duration` at the size's rate, then waits up to `settle` for every change
    /// to arrive; records the phase as a row and panics if some never did.
    pub fn churn_for(&mut self, name: &str, duration: Duration, settle: Duration) {
        let from = self.churn.mark();
        let started = Instant::now();
        self.churn.run(self.size.rate, duration, &std::sync::atomic::AtomicBool::new(false));
        let converged = self.churn.wait_converged(from, settle);
        let row = self.churn.report(name, from, self.churn.mark(), started.elapsed());
        self.rows.push(row);
        if let Err(lag) = converged {
            panic!(
                "{name}: changes not converged {settle:?} after the churn:\n{lag}\n{}",
                self.summary()
            );
        }
    }

    /// Every phase so far in one row.
    pub fn total(&self) -> PhaseReport {
        let mut total = PhaseReport { name: "total".into(), ..PhaseReport::default() };
        for row in &self.rows {
            total.changes += row.changes;
            total.failed_writes += row.failed_writes;
            total.latencies.extend(&row.latencies);
            total.packet_checks += row.packet_checks;
            total.packet_failures += row.packet_failures;
            total.took += row.took;
        }
        total.latencies.sort();
        total
    }

    /// The summary table (every row and the total) and the pollers' resolution.
    pub fn summary(&self) -> String {
        let mut rows = self.rows.clone();
        rows.push(self.total());
        let polls: Vec<String> = self
            .churn
            .poll_stats()
            .into_iter()
            .map(|p| {
                format!(
                    "{}: {} listings of {:.0?}, first sightings {} by monitor / {} by listing",
                    p.host, p.listings, p.mean_listing, p.by_monitor, p.by_listing
                )
            })
            .collect();
        format!(
            "{} hosts, {} workloads ({} serving, {} probe pairs), {} profiles, {} changes/s\n{}\
             convergence = etcd write → every affected host's nft table shows it (nft monitor, \
             and a listing every {:?}):\n{}\n",
            self.size.hosts,
            self.endpoints.len(),
            self.specs.iter().filter(|s| s.serve).count(),
            self.sample.len(),
            self.size.profiles,
            self.size.rate,
            super::render(&rows),
            self.size.poll,
            polls.join("\n")
        )
    }
}
