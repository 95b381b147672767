//! ADD and DEL latency of `tabby` (in-process etcd IPAM) against the reference `ptp` +
//! `host-local` plugins, side by side in one run on one simulated host.
//!
//! Both plugins are exec'd directly, as a runtime does, from a thread that sits in the test
//! host's network namespace (so neither pays for an `nsenter`). Sequential runs alternate
//! between the two plugins so drift in the machine's load hits both alike; then a burst of
//! ADDs launched at once measures the wall time until the last one finishes.
//!
//! `cargo bench -p cni-plugin --bench cni_latency -- [--runs N] [--burst M] [--quick]` (root
//! needed); `--quick` is `--runs 20 --burst 20`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a panic is the report")]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::bench::{metric, millis, percentile};
use testkit::{Etcd, Netns};

const TABBY: &str = env!("CARGO_BIN_EXE_tabby");
const REFERENCE_DIR: &str = "/usr/lib/cni";

/// How `path` is linked, from its ELF header and program headers: a `PT_INTERP` entry means
/// the dynamic loader runs on every exec.
fn linkage(path: &Path) -> &'static str {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = std::fs::read(path) else { return "unreadable" };
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at =
        |o: usize| elf.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return "not ELF64";
    };
    let interp = (0..usize::from(count))
        .filter_map(|i| usize::try_from(phoff).ok().map(|o| o + i * usize::from(size)))
        .any(|o| u32_at(o) == Some(PT_INTERP));
    // ET_EXEC: fixed addresses, so nothing is relocated at start either.
    const ET_EXEC: u16 = 2;
    match (interp, u16_at(0x10) == Some(ET_EXEC)) {
        (true, _) => "dynamically linked",
        (false, true) => "statically linked, not position-independent",
        (false, false) => "statically linked, position-independent (relocated at start)",
    }
}

struct Args {
    runs: usize,
    burst: usize,
}

fn args() -> Args {
    let mut out = Args { runs: 100, burst: 100 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok()).expect("a number after the flag");
        match a.as_str() {
            "--runs" => out.runs = value(),
            "--burst" => out.burst = value(),
            "--quick" => (out.runs, out.burst) = (20, 20),
            // cargo bench passes --bench; anything else is a mistake worth hearing about.
            "--bench" => {}
            other => panic!("unknown argument {other}; use --runs N --burst M or --quick"),
        }
    }
    out
}

/// One plugin under test: how to invoke it.
struct Plugin {
    label: &'static str,
    binary: PathBuf,
    cni_path: String,
    conf: Value,
}

impl Plugin {
    fn command(&self, verb: &str, id: &str, netns: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn(&self, verb: &str, id: &str, netns: &Path) -> Child {
        let mut child = self.command(verb, id, netns).spawn().expect("spawn plugin");
        child.stdin.take().unwrap().write_all(self.conf.to_string().as_bytes()).unwrap();
        child
    }

    /// Runs one verb to completion; returns its wall time and stderr.
    fn run(&self, verb: &str, id: &str, netns: &Path) -> (Duration, String) {
        let start = Instant::now();
        let out = self.spawn(verb, id, netns).wait_with_output().expect("wait plugin");
        let took = start.elapsed();
        assert!(
            out.status.success(),
            "{} {verb} {id} failed: {}{}",
            self.label,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (took, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[derive(Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    burst_add: Duration,
    burst_del: Duration,
    round_trips_add: Vec<u64>,
    round_trips_del: Vec<u64>,
}

fn round_trips(stderr: &str) -> Option<u64> {
    let at = stderr.rfind("etcd_round_trips=")?;
    stderr[at + "etcd_round_trips=".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Enters `ns` for the rest of this thread's life: children spawned from it start there.
fn enter(ns: &Netns) {
    let f = File::open(ns.path()).expect("open netns");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

fn main() {
    testkit::require_root();
    let args = args();
    let host = Netns::new("bench");
    let etcd = Etcd::builder().netns(host.name()).start();
    let prefix = "/bench";
    let pool = json!({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "bench"}, "spec": {"cidr": "10.160.0.0/16"}});
    let put = etcd.etcdctl([
        "put".to_string(),
        format!("{prefix}/resources/v3/projectcalico.org/ippools/bench"),
        pool.to_string(),
    ]);
    assert!(put.status.success(), "create pool: {}", String::from_utf8_lossy(&put.stderr));
    let scratch = tempfile::tempdir().unwrap();
    let tabby = Plugin {
        label: "tabby (tabby-ipam, etcd)",
        binary: testkit::plugin("tabby", TABBY),
        cni_path: REFERENCE_DIR.into(),
        conf: json!({"cniVersion": "1.0.0", "name": "bench", "type": "tabby",
            "etcd_endpoints": etcd.endpoint(), "etcd_prefix": prefix, "nodename": "bench-node",
            "ipam": {"type": "tabby-ipam",
                     "ipam_lock_file": scratch.path().join("ipam.lock").to_str().unwrap()}}),
    };
    let reference = Plugin {
        label: "ptp + host-local",
        binary: Path::new(REFERENCE_DIR).join("ptp"),
        cni_path: REFERENCE_DIR.into(),
        conf: json!({"cniVersion": "1.0.0", "name": "bench-ref", "type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.161.0.0/16",
                     "dataDir": scratch.path().join("host-local").to_str().unwrap()}}),
    };
    let plugins = [&tabby, &reference];
    let n = args.runs.max(args.burst);
    eprintln!("creating {} container namespaces...", 2 * n);
    let containers: Vec<[Netns; 2]> =
        (0..n).map(|i| [Netns::new(&format!("bt{i}")), Netns::new(&format!("br{i}"))]).collect();

    let mut samples: [Samples; 2] = [Samples::default(), Samples::default()];
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&host);
            // Warm-up: the first exec of each binary pays for page faults and, for tabby, the
            // first block claim; neither is what a busy host sees.
            for (p, plugin) in plugins.iter().enumerate() {
                let ns = containers[0][p].path();
                plugin.run("ADD", "warm", &ns);
                plugin.run("DEL", "warm", &ns);
            }
            eprintln!(
                "sequential: {} ADDs then {} DELs per plugin, alternating...",
                args.runs, args.runs
            );
            for (i, pair) in containers.iter().enumerate().take(args.runs) {
                for (p, plugin) in plugins.iter().enumerate() {
                    let (took, err) = plugin.run("ADD", &format!("seq{i}"), &pair[p].path());
                    samples[p].add.push(took);
                    samples[p].round_trips_add.extend(round_trips(&err));
                }
            }
            for (i, pair) in containers.iter().enumerate().take(args.runs) {
                for (p, plugin) in plugins.iter().enumerate() {
                    let (took, err) = plugin.run("DEL", &format!("seq{i}"), &pair[p].path());
                    samples[p].del.push(took);
                    samples[p].round_trips_del.extend(round_trips(&err));
                }
            }
            eprintln!("burst: {} ADDs at once per plugin...", args.burst);
            for (p, plugin) in plugins.iter().enumerate() {
                for (verb, slot) in [("ADD", 0), ("DEL", 1)] {
                    let start = Instant::now();
                    let children: Vec<Child> = (0..args.burst)
                        .map(|i| plugin.spawn(verb, &format!("burst{i}"), &containers[i][p].path()))
                        .collect();
                    for (i, c) in children.into_iter().enumerate() {
                        let out = c.wait_with_output().unwrap();
                        assert!(
                            out.status.success(),
                            "{} burst {verb} {i}: {}{}",
                            plugin.label,
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    let took = start.elapsed();
                    if slot == 0 {
                        samples[p].burst_add = took;
                    } else {
                        samples[p].burst_del = took;
                    }
                }
            }
        });
    });

    let cmdline: Vec<String> = std::env::args().collect();
    println!(
        "\n`cargo bench -p cni-plugin --bench cni_latency -- --runs {} --burst {}` ({})\n",
        args.runs,
        args.burst,
        cmdline.join(" ")
    );
    println!(
        "tabby binary: `{}` ({}; `cargo plugins` and `{}` select the shipped static build)\n",
        tabby.binary.display(),
        linkage(&tabby.binary),
        testkit::PLUGIN_DIR_ENV,
    );
    println!("| plugin | ADD p50 ms | ADD p99 ms | DEL p50 ms | DEL p99 ms | {} ADDs at once, wall ms | {} DELs at once, wall ms | etcd round trips ADD / DEL (median) |",
        args.burst, args.burst);
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut p50 = [[Duration::ZERO; 2]; 2];
    for (p, plugin) in plugins.iter().enumerate() {
        let s = &mut samples[p];
        s.add.sort();
        s.del.sort();
        s.round_trips_add.sort_unstable();
        s.round_trips_del.sort_unstable();
        let median = |v: &[u64]| v.get(v.len() / 2).map_or("-".to_string(), ToString::to_string);
        p50[p] = [percentile(&s.add, 50.0), percentile(&s.del, 50.0)];
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            plugin.label,
            ms(p50[p][0]),
            ms(percentile(&s.add, 99.0)),
            ms(p50[p][1]),
            ms(percentile(&s.del, 99.0)),
            ms(s.burst_add),
            ms(s.burst_del),
            median(&s.round_trips_add),
            median(&s.round_trips_del),
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    for (p, key) in ["tabby", "reference"].iter().enumerate() {
        let s = &samples[p];
        metric(&format!("cni.add_p50_ms.{key}"), millis(p50[p][0]));
        metric(&format!("cni.add_p99_ms.{key}"), millis(percentile(&s.add, 99.0)));
        metric(&format!("cni.del_p50_ms.{key}"), millis(p50[p][1]));
        metric(&format!("cni.del_p99_ms.{key}"), millis(percentile(&s.del, 99.0)));
        metric(&format!("cni.burst_add_ms.{key}"), millis(s.burst_add));
        metric(&format!("cni.burst_del_ms.{key}"), millis(s.burst_del));
    }
    metric("cni.add_p50_ratio", ratio(p50[0][0], p50[1][0]));
    metric("cni.del_p50_ratio", ratio(p50[0][1], p50[1][1]));
    metric("cni.burst_add_ratio", ratio(samples[0].burst_add, samples[1].burst_add));
    println!(
        "\nratio tabby / reference, p50: ADD {:.2}, DEL {:.2}; burst wall: ADD {:.2}, DEL {:.2}",
        ratio(p50[0][0], p50[1][0]),
        ratio(p50[0][1], p50[1][1]),
        ratio(samples[0].burst_add, samples[1].burst_add),
        ratio(samples[0].burst_del, samples[1].burst_del),
    );
}
