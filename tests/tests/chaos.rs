//! Chaos: while profiles churn in the background, break things one at a time — kill -9 an
//! agent (then start it again), restart etcd, compact etcd, delete `table inet tabby` on a
//! host, delete a host's route to another host's workloads — and after each require that the
//! system converges: every change reaches every host, the deleted table and route come back
//! within the resync interval, real packets get the verdicts the profiles say, and IPAM has
//! no duplicated or leaked address (`ipamctl check` plus a scan of the workloads' addresses),
//! with a container attached and one detached during each step.
//!
//! The CI size runs in the normal `cargo test`; the long form is `#[ignore]`d: `cargo test
//! -p tests --test chaos -- --ignored --nocapture` (`TABBY_SCALE_*` variables resize it).

use std::time::{Duration, Instant};

use tests::churn::{Background, Rig, Size};
use tests::cluster::NFT_TABLE;
use tests::{wait, Cluster};

/// Extra time, beyond the resync interval, for a repaired table or route to show.
const REPAIR_SLACK: Duration = Duration::from_secs(3);

struct Chaos {
    rig: Rig,
    background: Option<Background>,
    dwell: Duration,
    resync: Duration,
    settle: Duration,
    /// Workloads attached during the steps, and the next load workload to detach.
    attached: usize,
    next_detach: usize,
}

impl Chaos {
    fn background(&self) -> &Background {
        self.background.as_ref().expect("the churn runs during the steps")
    }

    /// Runs `act` while the churn goes on, attaches and detaches a container, then pauses
    /// the churn for a checkpoint and the IPAM check.
    fn step(&mut self, name: &str, act: impl FnOnce(&mut Chaos)) {
        eprintln!("chaos step: {name}");
        let from = self.rig.churn.mark();
        let started = Instant::now();
        act(self);
        self.cycle_workload();
        self.background().pause();
        let to = self.rig.churn.mark();
        self.rig.checkpoint(&format!("{name}: checkpoint"), self.settle);
        // Measured after the checkpoint, so changes made while something was broken count
        // with the time they took to arrive once it was repaired.
        let row = self.rig.churn.report(&format!("{name}: churn"), from, to, started.elapsed());
        let at = self.rig.rows.len() - 1;
        self.rig.rows.insert(at, row);
        if let Err(problem) = self.rig.fleet.check_addresses() {
            panic!("after {name}, IPAM is inconsistent:\n{problem}\n{}", self.rig.summary());
        }
        self.background().resume();
    }

    /// CNI ADD of a new container and DEL of one of the load containers (never a probed one).
    fn cycle_workload(&mut self) {
        let hosts = self.rig.size.hosts;
        let profiles = self.rig.churn.profiles().to_vec();
        let n = self.attached;
        self.attached += 1;
        self.rig.fleet.add_workload(n % hosts, &profiles[n % profiles.len()], &format!("x{n}"));
        let victim = self.rig.specs[self.next_detach..].iter().position(|s| !s.serve);
        if let Some(offset) = victim {
            let name = self.rig.specs[self.next_detach + offset].name.clone();
            self.next_detach += offset + 1;
            self.rig.fleet.remove_workload(&name);
        }
    }

    /// Waits for `check` to pass within the resync interval plus slack; returns how long it took.
    fn repaired(&self, what: &str, check: impl FnMut() -> Result<(), String>) -> Duration {
        let started = Instant::now();
        wait::until(what, self.resync + REPAIR_SLACK, check);
        started.elapsed()
    }
}

fn chaos(size: Size, dwell: Duration, resync: Duration, settle: Duration) {
    let rig = Rig::start(size, Cluster::builder().resync_interval(resync));
    let mut chaos =
        Chaos { rig, background: None, dwell, resync, settle, attached: 0, next_detach: 0 };
    chaos.rig.checkpoint("checkpoint: initial", settle);
    chaos.background = Some(Background::start(&chaos.rig.churn, chaos.rig.size.rate));
    let mut repairs = Vec::new();

    chaos.step("agent kill -9", |c| {
        let host = c.rig.fleet.host_mut(1);
        let status = host.kill_agent();
        assert!(
            status.is_some_and(|s| !s.success()),
            "the agent was not running to be killed: {status:?}"
        );
        std::thread::sleep(c.dwell);
        host.start_agent();
        c.rig.fleet.wait_ready(c.settle);
    });

    chaos.step("etcd restart", |c| {
        c.rig.fleet.etcd_mut().stop();
        std::thread::sleep(c.dwell);
        c.rig.fleet.etcd_mut().start_again();
        // Compacting at once leaves an agent that resumes its watch from before the outage
        // nothing to resume from: it has to list again.
        c.rig.fleet.etcd().compact_latest();
    });

    chaos.step("etcd compaction", |c| {
        let revision = c.rig.fleet.etcd().compact_latest();
        eprintln!("compacted etcd at revision {revision}");
        std::thread::sleep(c.dwell);
    });

    chaos.step("table deleted", |c| {
        let host = c.rig.fleet.host(0);
        host.nft(["delete", "table", "inet", NFT_TABLE]).ok();
        let took = c.repaired(&format!("table inet {NFT_TABLE} back on {}", host.name()), || {
            if host.table_exists() {
                Ok(())
            } else {
                Err("absent".into())
            }
        });
        repairs.push(format!("table inet {NFT_TABLE} back after {took:.1?}"));
    });

    chaos.step("route deleted", |c| {
        let (host, peer) = (c.rig.fleet.host(0), c.rig.fleet.host(1));
        let routes = host.sh(&format!("ip -4 route show | grep ' via {} '", peer.ip())).ok();
        let dst = routes
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("{} has no route via {}: {routes:?}", host.name(), peer.ip()))
            .to_string();
        host.sh(&format!("ip -4 route del {dst} via {}", peer.ip())).ok();
        let took = c.repaired(&format!("the route to {dst} back on {}", host.name()), || {
            let now = host.sh(&format!("ip -4 route show {dst}")).ok();
            if now.contains(&format!("via {}", peer.ip())) {
                Ok(())
            } else {
                Err(format!("routes to {dst}: {now:?}"))
            }
        });
        repairs.push(format!("route {dst} via {} back after {took:.1?}", peer.ip()));
    });

    let tried = chaos.background.take().map_or(0, Background::stop);
    let total = chaos.rig.total();
    eprintln!("{}\n{tried} background writes; {}", chaos.rig.summary(), repairs.join("; "));
    assert_eq!(total.unconverged(), 0, "changes never converged:\n{}", chaos.rig.summary());
    assert_eq!(total.packet_failures, 0, "{}", chaos.rig.summary());
    assert!(total.changes > 0 && total.packet_checks > 0, "{}", chaos.rig.summary());
}

#[test]
fn the_cluster_recovers_from_each_failure_during_churn() {
    let size = Size {
        hosts: 3,
        containers: 24,
        profiles: 3,
        rate: 10.0,
        duration: Duration::ZERO,
        parallel: 8,
        poll: Duration::from_secs(1),
    };
    chaos(size, Duration::from_secs(3), Duration::from_secs(3), Duration::from_secs(30));
}

#[test]
#[ignore = "long form (8 hosts, 400 containers, 50 changes/s, 15 s per failure): run with --ignored"]
fn the_cluster_recovers_from_each_failure_during_churn_long_form() {
    let size = Size {
        hosts: 8,
        containers: 400,
        profiles: 8,
        rate: 50.0,
        duration: Duration::ZERO,
        parallel: 8,
        poll: Duration::from_secs(2),
    }
    .with_env_overrides();
    chaos(size, Duration::from_secs(15), Duration::from_secs(5), Duration::from_mins(2));
}
