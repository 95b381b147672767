//! Policy churn against a running cluster: profiles whose inbound verdict on one port flips
//! at a set rate by direct etcd writes, the time each flip takes to reach every host that
//! needs it (watched in the hosts' nftables), and packet checks that the verdicts are right.
//!
//! Each churn profile `churn-<k>` allows egress and, inbound, tcp to a marker port unique to
//! the change (see [`observe`]) and, when open, also to [`PORT`]. A probe to [`PORT`] on a
//! workload of that network therefore connects exactly when its profile is open.

mod background;
pub mod observe;
mod rig;
pub mod stats;
mod writer;

pub use background::Background;
pub use rig::{Rig, Size};
pub use stats::{render, PhaseReport};
pub use writer::EtcdWriter;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use datastore::keys::{KeyLayout, Kind};
use serde_json::json;

use crate::cluster::{Cluster, Endpoint, WorkloadSpec, ETCD_PREFIX};
use crate::probe::{Matrix, Service};
use observe::{Observer, Sightings, MARKER_BASE, MAX_CHANGES};

/// The port whose verdict the churn flips.
pub const PORT: u16 = 8080;
/// At most this many writes in flight: enough for 100 changes/s at tens of ms per write on a
/// loaded machine.
const MAX_LANES: usize = 20;

/// The churn profiles' (and networks') names.
pub fn profile_names(count: usize) -> Vec<String> {
    (0..count).map(|k| format!("churn-{k}")).collect()
}

/// How one host was watched; see [`Churn::poll_stats`].
#[derive(Debug, Clone)]
pub struct PollStats {
    pub host: String,
    pub listings: u64,
    pub mean_listing: Duration,
    pub by_monitor: u64,
    pub by_listing: u64,
}

/// One write of a profile.
#[derive(Debug, Clone)]
pub struct Change {
    pub seq: u32,
    pub profile: usize,
    pub open: bool,
    /// Taken just before the write was sent.
    pub written: Instant,
    /// Whether etcd took the write.
    pub ok: bool,
}

#[derive(Debug)]
struct State {
    /// Each profile's verdict on [`PORT`] as last written successfully.
    open: Vec<bool>,
    changes: Vec<Change>,
}

/// A churn driver bound to one cluster; see the module docs.
#[derive(Debug)]
pub struct Churn {
    /// One per lane: profile `k`'s writes go through writer `k % lanes`, so a lane's round
    /// trips to etcd overlap with the others'.
    writers: Vec<EtcdWriter>,
    keys: KeyLayout,
    profiles: Vec<String>,
    /// Per profile, the hosts that have its workloads (and so its chains).
    affected: Vec<Vec<usize>>,
    host_names: Vec<String>,
    seen: Arc<Mutex<Sightings>>,
    /// Per profile, held across each of its writes, so its changes reach etcd in seq order.
    writing: Vec<Mutex<()>>,
    state: Mutex<State>,
    _observer: Observer,
}

impl Churn {
    /// Writes `profiles` profiles (all closed) and starts watching every host's table, each
    /// listed at most every `poll`. `specs` are the workloads that will run: they say which
    /// hosts a profile's change must reach. Call before attaching them, so the CNI plugin
    /// finds the profiles and leaves them alone.
    pub fn start(
        cluster: &Cluster,
        profiles: usize,
        specs: &[WorkloadSpec],
        poll: Duration,
    ) -> Churn {
        let profile_names = profile_names(profiles);
        let hosts = cluster.hosts().len();
        let mut affected = vec![Vec::new(); profiles];
        for spec in specs {
            let k = profile_names.iter().position(|p| *p == spec.network).unwrap_or_else(|| {
                panic!("{} is on {}, not a churn network", spec.name, spec.network)
            });
            if !affected[k].contains(&spec.host) {
                affected[k].push(spec.host);
            }
        }
        let writers = (0..profiles.clamp(1, MAX_LANES))
            .map(|_| {
                EtcdWriter::start(&cluster.fabric().path(), &cluster.etcd_endpoint())
                    .unwrap_or_else(|e| panic!("cannot start an etcd writer: {e}"))
            })
            .collect();
        let seen = Arc::new(Mutex::new(Sightings::new(hosts, profiles)));
        let observer = Observer::start(
            cluster.hosts().iter().map(crate::cluster::Host::path).collect(),
            poll,
            &seen,
        );
        let churn = Churn {
            writers,
            keys: KeyLayout::new(ETCD_PREFIX),
            profiles: profile_names,
            affected,
            host_names: cluster.hosts().iter().map(|h| h.name().to_string()).collect(),
            seen,
            writing: (0..profiles).map(|_| Mutex::new(())).collect(),
            state: Mutex::new(State { open: vec![false; profiles], changes: Vec::new() }),
            _observer: observer,
        };
        for k in 0..profiles {
            if let Err(e) = churn.write(k, false) {
                panic!("cannot create profile {}: {e}", churn.profiles[k]);
            }
        }
        churn
    }

    /// The profile names, by index.
    pub fn profiles(&self) -> &[String] {
        &self.profiles
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sightings(&self) -> MutexGuard<'_, Sightings> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes profile `k` with its verdict on [`PORT`] `open`; returns the change's seq.
    pub fn write(&self, k: usize, open: bool) -> Result<u32, String> {
        let _writing = self.writing[k].lock().unwrap_or_else(PoisonError::into_inner);
        self.write_locked(k, open)
    }

    /// Flips profile `k`'s verdict; a failed write is recorded and returned.
    pub fn flip(&self, k: usize) -> Result<u32, String> {
        let _writing = self.writing[k].lock().unwrap_or_else(PoisonError::into_inner);
        let open = !self.state().open[k];
        self.write_locked(k, open)
    }

    fn write_locked(&self, k: usize, open: bool) -> Result<u32, String> {
        let seq = {
            let mut state = self.state();
            let seq = u32::try_from(state.changes.len()).unwrap_or(u32::MAX);
            assert!(seq < MAX_CHANGES, "a churn run marks at most {MAX_CHANGES} changes");
            // Registered before the write: a monitor may see the marker before put returns.
            self.sightings().profile_of.push(k);
            let written = Instant::now();
            state.changes.push(Change { seq, profile: k, open, written, ok: false });
            seq
        };
        let name = &self.profiles[k];
        let marker = MARKER_BASE + seq;
        let ports: Vec<u32> = if open { vec![u32::from(PORT), marker] } else { vec![marker] };
        let profile = json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "Profile",
            "metadata": { "name": name },
            "spec": {
                "ingress": [{ "action": "Allow", "protocol": "TCP", "destination": { "ports": ports } }],
                "egress": [{ "action": "Allow" }],
                "labelsToApply": { name: "" },
            },
        });
        let key = self.keys.resource(Kind::Profile, None, name);
        let result =
            self.writers[k % self.writers.len()].put(&key, profile.to_string().into_bytes());
        let mut state = self.state();
        if result.is_ok() {
            state.open[k] = open;
            state.changes[seq as usize].ok = true;
        }
        result.map(|_| seq)
    }

    /// How many lanes [`Churn::run`] and [`Background`] drive at once.
    pub fn lanes(&self) -> usize {
        self.writers.len()
    }

    /// The profile lane `lane` flips on its `turn`-th change.
    pub(crate) fn lane_profile(&self, lane: usize, turn: usize) -> usize {
        let lanes = self.lanes();
        let mine = (self.profiles.len() - lane).div_ceil(lanes);
        lane + (turn % mine) * lanes
    }

    /// How many changes have been made so far: a position to measure a phase from.
    pub fn mark(&self) -> usize {
        self.state().changes.len()
    }

    /// Flips profiles in turn, `rate` changes a second in all (spread over the lanes), for
    /// `duration` or until `stop`. Returns how many writes were tried.
    pub fn run(&self, rate: f64, duration: Duration, stop: &AtomicBool) -> usize {
        let started = Instant::now();
        let lanes = self.lanes();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..lanes)
                .map(|lane| {
                    scope.spawn(move || {
                        let mut pacer = Pacer::new(rate / lanes as f64);
                        let mut tried = 0;
                        while started.elapsed() < duration
                            && !stop.load(Ordering::SeqCst)
                            && !crate::cancel::requested()
                        {
                            pacer.wait();
                            let _ = self.flip(self.lane_profile(lane, tried));
                            tried += 1;
                        }
                        tried
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
        })
    }

    /// Waits until every successful change since `from` shows on every host it affects;
    /// on timeout says which hosts lag on which profiles.
    pub fn wait_converged(&self, from: usize, timeout: Duration) -> Result<(), String> {
        crate::wait::poll(timeout, || {
            let pending = self.pending(from);
            if pending.is_empty() {
                Ok(())
            } else {
                Err(pending.join("\n"))
            }
        })
    }

    /// For each (host, profile) still behind: what it shows and what it should.
    fn pending(&self, from: usize) -> Vec<String> {
        let state = self.state();
        let seen = self.sightings();
        let mut newest: HashMap<usize, u32> = HashMap::new();
        for change in state.changes[from.min(state.changes.len())..].iter().filter(|c| c.ok) {
            newest.insert(change.profile, change.seq);
        }
        let mut pending = Vec::new();
        for (&k, &seq) in &newest {
            for &host in &self.affected[k] {
                if seen.seen_at(host, k, seq).is_none() {
                    pending.push(format!(
                        "{}: {} shows change {:?}, wants {seq}",
                        self.host_names[host],
                        self.profiles[k],
                        seen.latest(host, k)
                    ));
                }
            }
        }
        pending.sort();
        pending
    }

    /// The convergence report of the changes in `from..to` (`to` = [`Churn::mark`] at the
    /// phase's end).
    pub fn report(&self, name: &str, from: usize, to: usize, took: Duration) -> PhaseReport {
        let state = self.state();
        let seen = self.sightings();
        let changes = &state.changes[from.min(to)..to.min(state.changes.len())];
        let mut latencies: Vec<Duration> = changes
            .iter()
            .filter(|c| c.ok)
            .filter_map(|c| {
                self.affected[c.profile]
                    .iter()
                    .map(|&host| seen.seen_at(host, c.profile, c.seq))
                    .try_fold(c.written, |latest, at| at.map(|at| latest.max(at)))
                    .map(|at| at - c.written)
            })
            .collect();
        latencies.sort();
        PhaseReport {
            name: name.to_string(),
            changes: changes.iter().filter(|c| c.ok).count(),
            failed_writes: changes.iter().filter(|c| !c.ok).count(),
            latencies,
            took,
            ..PhaseReport::default()
        }
    }

    /// Per host: listings done, their mean duration, and how many newer changes the monitor
    /// and the listings saw first (the monitor's times are exact, the listings' coarse).
    pub fn poll_stats(&self) -> Vec<PollStats> {
        let seen = self.sightings();
        self.host_names
            .iter()
            .zip(seen.polls.iter().zip(&seen.first_by))
            .map(|(name, (&(listings, spent), &(by_monitor, by_listing)))| PollStats {
                host: name.clone(),
                listings,
                mean_listing: spent / u32::try_from(listings.max(1)).unwrap_or(u32::MAX),
                by_monitor,
                by_listing,
            })
            .collect()
    }

    /// Whether traffic to [`PORT`] on a workload of `network` must get through now.
    pub fn allows(&self, network: &str) -> bool {
        let state = self.state();
        self.profiles.iter().position(|p| p == network).is_some_and(|k| state.open[k])
    }

    /// A checkpoint: writes every profile with verdict `(k + round) % 2 == 0` (so each round
    /// flips them all), waits up to `timeout` for every host to show it, then probes `sample`
    /// with real packets until they agree (up to `timeout` again). The report's packet
    /// counts say how the probes went; `Err` carries what differed.
    pub fn checkpoint(
        &self,
        name: &str,
        round: usize,
        sample: &[(Endpoint, Endpoint)],
        timeout: Duration,
    ) -> Result<PhaseReport, (PhaseReport, String)> {
        let started = Instant::now();
        let from = self.mark();
        let mut failed = Vec::new();
        for k in 0..self.profiles.len() {
            if let Err(e) = self.write(k, (k + round).is_multiple_of(2)) {
                failed.push(format!("{}: {e}", self.profiles[k]));
            }
        }
        let converged = self.wait_converged(from, timeout);
        let services = [Service::Tcp(PORT)];
        let expect = |_: &Endpoint, to: &Endpoint, _: Service| self.allows(&to.network);
        let matrix = match Matrix::await_expected(sample, &services, &expect, timeout) {
            Ok(m) | Err(m) => m,
        };
        let mismatches = matrix.mismatches(&expect);
        let mut report = self.report(name, from, self.mark(), started.elapsed());
        report.packet_checks = sample.len();
        report.packet_failures = mismatches.len();
        let mut problems = Vec::new();
        if !failed.is_empty() {
            problems.push(format!("writes failed:\n{}", failed.join("\n")));
        }
        if let Err(lag) = converged {
            problems.push(format!("not converged after {timeout:?}:\n{lag}"));
        }
        if !mismatches.is_empty() {
            problems.push(matrix.report(&expect));
        }
        if problems.is_empty() {
            Ok(report)
        } else {
            Err((report, format!("{name}: {}", problems.join("\n"))))
        }
    }
}

/// Probe pairs over the serving workloads: every server is probed once, alternately from
/// another server on the same host and on another host (when there is one).
pub fn sample_pairs(specs: &[WorkloadSpec], endpoints: &[Endpoint]) -> Vec<(Endpoint, Endpoint)> {
    let servers: Vec<&Endpoint> =
        specs.iter().zip(endpoints).filter(|(spec, _)| spec.serve).map(|(_, ep)| ep).collect();
    servers
        .iter()
        .enumerate()
        .filter_map(|(j, dst)| {
            let same_host = j % 2 == 0;
            let others = || servers.iter().filter(|s| s.name != dst.name);
            let src =
                others().find(|s| (s.host == dst.host) == same_host).or_else(|| others().next())?;
            Some(((*src).clone(), (*dst).clone()))
        })
        .collect()
}

/// Spaces calls `1/rate` apart; after a stall (an etcd outage) it picks up at the rate again
/// instead of bursting to catch up.
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        Pacer { period: Duration::from_secs_f64(1.0 / rate.max(0.001)), next: Instant::now() }
    }

    /// Sleeps until the next slot and books the one after.
    pub fn wait(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        } else if now - self.next > Duration::from_secs(1) {
            self.next = now;
        }
        self.next += self.period;
    }
}
