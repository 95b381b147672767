//! Watching the hosts' nftables for churn markers: per host, an `nft monitor new rules` whose
//! lines are timestamped as they arrive, backed by a periodic `nft list table inet tabby` (in
//! case the monitor loses events under load), recording per profile when a newer change first
//! showed up.
//!
//! Every change gives its profile's inbound rule a port of its own (the marker), so the table
//! says which change of each profile a host has applied. Changes of one profile are written
//! in order, so seeing change `n` means every earlier change of that profile was applied too.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::NFT_TABLE;
use crate::netns::nsenter;
use crate::process::run;

/// The first marker port; change `seq` carries port `MARKER_BASE + seq`.
pub const MARKER_BASE: u32 = 20_000;
/// The most changes one run can mark (ports stop at 65535).
pub const MAX_CHANGES: u32 = 65_535 - MARKER_BASE;

/// What the pollers saw, shared with them.
#[derive(Debug, Default)]
pub(crate) struct Sightings {
    /// The profile of each change, by seq; filled before the change is written.
    pub profile_of: Vec<usize>,
    /// `first_seen[host][profile]`: (seq, when) each time a newer change appeared.
    pub first_seen: Vec<Vec<Vec<(u32, Instant)>>>,
    /// Listings done and time spent, per host.
    pub polls: Vec<(u64, Duration)>,
    /// Newer changes first seen by the monitor and by a listing, per host.
    pub first_by: Vec<(u64, u64)>,
}

impl Sightings {
    pub fn new(hosts: usize, profiles: usize) -> Sightings {
        Sightings {
            profile_of: Vec::new(),
            first_seen: vec![vec![Vec::new(); profiles]; hosts],
            polls: vec![(0, Duration::ZERO); hosts],
            first_by: vec![(0, 0); hosts],
        }
    }

    /// When `host` first showed change `seq` of `profile`, or a later one.
    pub fn seen_at(&self, host: usize, profile: usize, seq: u32) -> Option<Instant> {
        self.first_seen[host][profile].iter().find(|(s, _)| *s >= seq).map(|(_, at)| *at)
    }

    /// The newest change of `profile` that `host` has shown.
    pub fn latest(&self, host: usize, profile: usize) -> Option<u32> {
        self.first_seen[host][profile].last().map(|(s, _)| *s)
    }

    fn record(&mut self, host: usize, text: &str, at: Instant, by_monitor: bool) {
        for seq in markers(text) {
            let Some(&profile) = self.profile_of.get(seq as usize) else { continue };
            let seen = &mut self.first_seen[host][profile];
            if seen.last().is_none_or(|(last, _)| *last < seq) {
                seen.push((seq, at));
                let counts = &mut self.first_by[host];
                if by_monitor {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
        }
    }
}

/// The change numbers marked in an `nft list` text: marker ports on `dport` lines only
/// (elsewhere numbers are counters, addresses or parts of interface names).
pub fn markers(listing: &str) -> Vec<u32> {
    listing
        .lines()
        .filter(|line| line.contains("dport"))
        .flat_map(|line| line.split(|c: char| !c.is_ascii_digit()))
        .filter_map(|word| word.parse::<u32>().ok())
        .filter(|port| (MARKER_BASE..MARKER_BASE + MAX_CHANGES).contains(port))
        .map(|port| port - MARKER_BASE)
        .collect()
}

/// The monitors and polling threads; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Observer {
    stop: Arc<AtomicBool>,
    monitors: Vec<Child>,
    threads: Vec<JoinHandle<()>>,
}

impl Observer {
    /// Starts a monitor and a poller per host namespace; each poller lists the table every
    /// `every` at most.
    pub fn start(hosts: Vec<PathBuf>, every: Duration, seen: &Arc<Mutex<Sightings>>) -> Observer {
        let mut observer = Observer {
            stop: Arc::new(AtomicBool::new(false)),
            monitors: Vec::new(),
            threads: Vec::new(),
        };
        for (host, netns) in hosts.into_iter().enumerate() {
            observer.monitor(host, &netns, seen);
            let (stop, seen) = (Arc::clone(&observer.stop), Arc::clone(seen));
            observer.threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let ran = run(
                        nsenter(&netns, "nft").args(["list", "table", "inet", NFT_TABLE]),
                        None,
                        Duration::from_secs(10),
                    );
                    // The listing shows the table as it was at some moment before now:
                    // taking "now" bounds the convergence time from above.
                    let at = Instant::now();
                    {
                        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                        if ran.success() {
                            seen.record(host, &ran.stdout, at, false);
                        }
                        seen.polls[host].0 += 1;
                        seen.polls[host].1 += at - started;
                    }
                    // Short naps, so dropping the observer does not wait out a long period.
                    while started.elapsed() < every && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }));
        }
        observer
    }

    /// `nft monitor new rules` in the host's namespace, each line timestamped on arrival.
    fn monitor(&mut self, host: usize, netns: &Path, seen: &Arc<Mutex<Sightings>>) {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(netns);
        let spawned = Command::new("setpriv")
            // A harness that dies without its destructors takes the monitor with it.
            .args(["--pdeathsig", "KILL", "--", "nsenter"])
            .arg(net)
            .args(["--", "nft", "monitor", "new", "rules"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                // The listings still see every change, only later.
                eprintln!("cannot start nft monitor in {}: {e}", netns.display());
                return;
            }
        };
        if let Some(out) = child.stdout.take() {
            let seen = Arc::clone(seen);
            self.threads.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    let at = Instant::now();
                    seen.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record(host, &line, at, true);
                }
            }));
        }
        self.monitors.push(child);
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Their pipes close, which ends the reading threads.
        for mut child in self.monitors.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_come_from_dport_lines_only() {
        let listing = "\tchain pri-churn-0 {\n\t\ttcp dport { 8080, 20012 } accept\n\t}\n\
                       \tchain pri-churn-1 {\n\t\ttcp dport 20007 accept\n\t}\n\
                       \tchain fw-cali20001aa {\n\t\tcounter packets 20003 bytes 21000 drop\n\t}\n";
        assert_eq!(markers(listing), vec![12, 7]);
    }

    #[test]
    fn a_later_change_counts_for_the_earlier_ones_of_its_profile() {
        let mut seen = Sightings::new(1, 2);
        seen.profile_of = vec![0, 1, 0, 0];
        let t0 = Instant::now();
        seen.record(0, "tcp dport 20000 accept\ntcp dport 20001 accept", t0, true);
        let t1 = t0 + Duration::from_millis(100);
        seen.record(0, "tcp dport 20003 accept\ntcp dport 20001 accept", t1, false);
        assert_eq!(seen.seen_at(0, 0, 0), Some(t0));
        assert_eq!(seen.seen_at(0, 0, 2), Some(t1), "change 2 was skipped over by 3");
        assert_eq!(seen.seen_at(0, 0, 3), Some(t1));
        assert_eq!(seen.seen_at(0, 1, 1), Some(t0));
        assert_eq!(seen.seen_at(0, 0, 4), None);
        assert_eq!(seen.latest(0, 0), Some(3));
        assert_eq!(seen.first_by[0], (2, 1));
    }
}
