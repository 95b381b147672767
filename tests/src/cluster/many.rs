//! Clusters with many workloads: attaching and detaching hundreds or thousands of containers
//! through the real CNI plugin with a bounded pool of workers, and a guard that tears them
//! down in parallel (also while a test panics) before the cluster's own sequential cleanup.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::workload::Workload;
use super::{Cluster, Endpoint};

/// One container to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// Index of its host in [`Cluster::hosts`].
    pub host: usize,
    /// Its CNI network (and so its profile).
    pub network: String,
    /// The harness's name for it; unique in the cluster.
    pub name: String,
    /// Whether it runs echo servers on the cluster's ports (each costs a thread per port, so
    /// a big cluster serves only on the workloads it probes).
    pub serve: bool,
}

/// `count` workloads spread round-robin over `hosts` hosts and `networks` (networks rotate per
/// round, so every host holds every network once `count >= hosts * networks.len()`). The first
/// workload of each (host, network) pair serves; the rest are load.
pub fn spread(count: usize, hosts: usize, networks: &[String]) -> Vec<WorkloadSpec> {
    assert!(hosts > 0 && !networks.is_empty(), "spread needs hosts and networks");
    let mut serving = std::collections::HashSet::new();
    (0..count)
        .map(|i| {
            let host = i % hosts;
            let network = networks[(i / hosts) % networks.len()].clone();
            let serve = serving.insert((host, network.clone()));
            WorkloadSpec { host, network, name: format!("w{i}"), serve }
        })
        .collect()
}

/// How a parallel attach went.
#[derive(Debug, Clone)]
pub struct AttachReport {
    /// The probe views of the attached workloads, in the order of the specs.
    pub endpoints: Vec<Endpoint>,
    pub took: Duration,
}

impl AttachReport {
    /// Containers attached per second.
    pub fn rate(&self) -> f64 {
        self.endpoints.len() as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

impl Cluster {
    /// Attaches every spec through CNI ADD, `parallel` at a time.
    ///
    /// Workers take specs in an order that interleaves hosts, so concurrent ADDs rarely queue
    /// on one host's IPAM lock. Every workload attached is kept by the cluster (and so cleaned
    /// up), also when another one fails; the first failure is then re-raised.
    pub fn add_workloads(&mut self, specs: &[WorkloadSpec], parallel: usize) -> AttachReport {
        let mut seen = std::collections::HashSet::new();
        for spec in specs {
            assert!(
                seen.insert(spec.name.as_str())
                    && self.workloads.iter().all(|w| w.name() != spec.name),
                "a workload named {} already exists",
                spec.name
            );
        }
        let started = Instant::now();
        let order = interleave_hosts(specs);
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let done: Mutex<Vec<(usize, Workload)>> = Mutex::new(Vec::with_capacity(specs.len()));
        let contexts: Vec<_> = (0..self.hosts.len()).map(|h| self.cni_context(h)).collect();
        let ports = self.ports.clone();
        let panics: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..parallel.max(1))
                .map(|_| {
                    scope.spawn(|| loop {
                        if failed.load(Ordering::SeqCst) || crate::cancel::requested() {
                            return;
                        }
                        let Some(&index) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                            return;
                        };
                        let spec = &specs[index];
                        let serve: &[u16] = if spec.serve { &ports } else { &[] };
                        let attached = std::panic::catch_unwind(|| {
                            Workload::attach(
                                &contexts[spec.host],
                                spec.host,
                                &spec.name,
                                &spec.network,
                                serve,
                            )
                        });
                        match attached {
                            Ok(workload) => {
                                let mut done = done.lock().unwrap_or_else(PoisonError::into_inner);
                                done.push((index, workload));
                                if done.len().is_multiple_of(250) {
                                    eprintln!(
                                        "attached {}/{} workloads in {:.1?}",
                                        done.len(),
                                        specs.len(),
                                        started.elapsed()
                                    );
                                }
                            }
                            Err(panic) => {
                                failed.store(true, Ordering::SeqCst);
                                std::panic::resume_unwind(panic);
                            }
                        }
                    })
                })
                .collect();
            workers.into_iter().filter_map(|w| w.join().err()).collect()
        });
        let mut done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
        done.sort_by_key(|(index, _)| *index);
        let endpoints = done.iter().map(|(_, w)| w.endpoint()).collect();
        self.workloads.extend(done.into_iter().map(|(_, w)| w));
        if let Some(panic) = panics.into_iter().next() {
            std::panic::resume_unwind(panic);
        }
        crate::cancel::check();
        AttachReport { endpoints, took: started.elapsed() }
    }

    /// Detaches every workload, `parallel` at a time: CNI DEL while etcd runs (failures are
    /// returned, not raised), then the namespace goes. Returns the DELs that failed.
    pub fn remove_all_workloads(&mut self, parallel: usize) -> Vec<String> {
        let etcd_up = self.etcd.is_running();
        let contexts: Vec<_> = (0..self.hosts.len()).map(|h| self.cni_context(h)).collect();
        let queue = Mutex::new(interleave_workloads(std::mem::take(&mut self.workloads)));
        let failures = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..parallel.max(1) {
                scope.spawn(|| loop {
                    let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
                    let Some(mut workload) = next else { return };
                    if etcd_up {
                        let ran = workload.detach(&contexts[workload.host_index]);
                        if !ran.success() {
                            failures.lock().unwrap_or_else(PoisonError::into_inner).push(format!(
                                "{}: {}",
                                workload.name(),
                                ran.describe()
                            ));
                        }
                    }
                    // Dropping it stops its servers and deletes its namespace.
                    drop(workload);
                });
            }
        });
        failures.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Cluster {
    /// The IPAM invariants: `ipamctl check` finds nothing (no address leaked, none
    /// double-assigned, blocks, handles and endpoints agree) and no two workloads hold the
    /// same address. `Ok` carries the check's report.
    pub fn check_addresses(&self) -> Result<String, String> {
        let mut owners: std::collections::HashMap<std::net::Ipv4Addr, &str> =
            std::collections::HashMap::new();
        let mut duplicated = Vec::new();
        for workload in &self.workloads {
            if let Some(other) = owners.insert(workload.ip(), workload.name()) {
                duplicated.push(format!(
                    "{} held by {other} and {}",
                    workload.ip(),
                    workload.name()
                ));
            }
        }
        let ran = self.ipamctl(&["check"]);
        match (ran.success(), duplicated.is_empty()) {
            (true, true) => Ok(ran.stdout),
            (ok, _) => Err(format!(
                "{}{}",
                if ok { String::new() } else { format!("ipamctl check: {}\n", ran.describe()) },
                duplicated.join("\n")
            )),
        }
    }
}

/// Spec indexes in an order that visits the hosts in turn.
fn interleave_hosts(specs: &[WorkloadSpec]) -> Vec<usize> {
    let mut by_host: std::collections::BTreeMap<usize, std::collections::VecDeque<usize>> =
        std::collections::BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        by_host.entry(spec.host).or_default().push_back(i);
    }
    let mut order = Vec::with_capacity(specs.len());
    while order.len() < specs.len() {
        for queue in by_host.values_mut() {
            order.extend(queue.pop_front());
        }
    }
    order
}

/// The workloads as a stack whose pops visit the hosts in turn.
fn interleave_workloads(workloads: Vec<Workload>) -> Vec<Workload> {
    let specs: Vec<WorkloadSpec> = workloads
        .iter()
        .map(|w| WorkloadSpec {
            host: w.host_index,
            network: String::new(),
            name: String::new(),
            serve: false,
        })
        .collect();
    let order = interleave_hosts(&specs);
    let mut slots: Vec<Option<Workload>> = workloads.into_iter().map(Some).collect();
    order.into_iter().rev().filter_map(|i| slots[i].take()).collect()
}

/// A cluster whose workloads are detached in parallel when it is dropped (also while a test
/// panics), before [`Cluster`]'s own cleanup, which would detach them one by one.
#[derive(Debug)]
pub struct Fleet {
    cluster: Cluster,
    parallel: usize,
}

impl Fleet {
    /// Wraps `cluster`; teardown runs `parallel` CNI DELs at a time.
    pub fn new(cluster: Cluster, parallel: usize) -> Fleet {
        Fleet { cluster, parallel }
    }
}

impl Deref for Fleet {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl DerefMut for Fleet {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.cluster.workloads.is_empty() {
            return;
        }
        let started = Instant::now();
        let count = self.cluster.workloads.len();
        if std::thread::panicking() && !crate::cancel::requested() {
            // Before the teardown, whose CNI DELs and agent reactions would fill the log
            // tails the cluster's own drop prints afterwards.
            eprintln!(
                "fleet {} failed; diagnostics before teardown:\n{}",
                self.cluster.subnet(),
                self.cluster.diagnostics()
            );
        }
        let failures = self.cluster.remove_all_workloads(self.parallel);
        for failure in &failures {
            eprintln!("cleanup: CNI DEL of {failure}");
        }
        eprintln!("fleet cleanup: {count} workloads detached in {:.1?}", started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_puts_every_network_on_every_host_and_serves_once_per_pair() {
        let networks: Vec<String> = ["a", "b", "c"].iter().map(ToString::to_string).collect();
        let specs = spread(14, 4, &networks);
        assert_eq!(specs.len(), 14);
        for host in 0..4 {
            for network in &networks {
                let here: Vec<_> =
                    specs.iter().filter(|s| s.host == host && &s.network == network).collect();
                assert!(!here.is_empty(), "host {host} has no {network}");
                assert_eq!(here.iter().filter(|s| s.serve).count(), 1);
            }
        }
        assert_eq!(specs.iter().filter(|s| s.serve).count(), 12);
        // The two left over go round again: load, not servers.
        assert!(!specs[12].serve && !specs[13].serve);
    }

    #[test]
    fn interleaving_visits_hosts_in_turn_and_keeps_every_spec() {
        let spec =
            |host| WorkloadSpec { host, network: String::new(), name: String::new(), serve: false };
        let specs = vec![spec(0), spec(0), spec(0), spec(1), spec(2), spec(2)];
        assert_eq!(interleave_hosts(&specs), vec![0, 3, 4, 1, 5, 2]);
    }
}
