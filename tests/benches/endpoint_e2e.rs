//! New endpoint via CNI ADD → its traffic allowed, end to end: a simulated host with a real
//! `tabby-agent`, a peer workload already running on network `web` (whose profile admits
//! every member of `web`), and then, again and again, a new workload on `web` attached by
//! exec'ing the real `tabby` plugin as a runtime would.
//!
//! The clock starts just before the plugin is exec'd. From before that moment a thread in the
//! new workload's namespace sends a UDP datagram to the peer every millisecond (they fail
//! with "network unreachable" until the plugin has made the interface, and are dropped by the
//! host's table until the agent has programmed the new endpoint); the clock stops when the
//! peer's socket receives the first one. Reported: that total, the plugin's own run time, and
//! the rest (the agent noticing the endpoint in etcd and programming it).
//!
//!     cargo build --release --bins -p cni-plugin -p agent -p ctl
//!     cargo bench -p tests --bench endpoint_e2e [-- --runs N] [--quick]
//!
//! The binaries are taken from `TABBY_BIN_DIR`, else `target/release` (where the first
//! command puts them), the plugin from `TABBY_PLUGIN_DIR` when set (`cargo plugins`, the
//! static build that ships); the report names them. Needs root.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a panic is the report")]

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::bench::{flag, metric, millis, percentile, value, Md};
use testkit::Netns;
use tests::cluster::ETCD_PREFIX;
use tests::netns::in_netns;
use tests::Cluster;

/// Where the peer listens for probes.
const PROBE_PORT: u16 = 7777;
/// How often the new workload sends a probe.
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// A run that has not got through by then has failed.
const GIVE_UP: Duration = Duration::from_secs(10);
const NETWORK: &str = "web";

fn main() {
    testkit::require_root();
    // 100 runs: the p99 of 20 is their maximum, which one etcd fsync stall of this disk
    // (hundreds of ms, now and then) decides alone.
    let runs: usize = value("runs", if flag("quick") { 5 } else { 100 });
    let bin_dir = tests::bins::bin_dir();
    eprintln!("endpoint_e2e: binaries from {}", bin_dir.display());

    let mut cluster = Cluster::builder().hosts(1).serve_ports(&[]).start();
    cluster.wait_ready(Duration::from_mins(1));
    let peer = cluster.add_workload(0, NETWORK, "peer");
    let host_path = cluster.host(0).path();
    let conf = json!({
        "cniVersion": "0.3.1",
        "name": NETWORK,
        "type": tests::bins::CNI_PLUGIN,
        "etcd_endpoints": cluster.etcd_endpoint(),
        "etcd_prefix": ETCD_PREFIX,
        "nodename": cluster.host(0).name(),
        "ipam": {"type": "tabby-ipam", "ipam_lock_file": cluster.host(0).dir().join("ipam.lock")},
    })
    .to_string();

    // The peer's receiver: every datagram's run number, with the instant it arrived.
    let socket = in_netns(&peer.netns, || UdpSocket::bind((peer.ip, PROBE_PORT)))
        .expect("enter the peer")
        .expect("bind the probe port");
    let (arrived_tx, arrived) = mpsc::channel::<(u32, Instant)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n >= 4 {
                let run = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
                if arrived_tx.send((run, Instant::now())).is_err() {
                    break;
                }
            }
        }
    });
    let target = SocketAddr::from((peer.ip, PROBE_PORT));

    let (mut totals, mut adds, mut afters) = (Vec::new(), Vec::new(), Vec::new());
    let mut after_negative = 0usize;
    for run in 0..=runs {
        let run_id = u32::try_from(run).expect("few runs");
        let workload = Netns::new("e2e");
        let stop = Arc::new(AtomicBool::new(false));
        let prober = spawn_prober(&workload.path(), target, run_id, Arc::clone(&stop));
        let container_id = testkit::unique_name("e2e", 40);

        let (started, add_done) =
            cni(&host_path, &bin_dir, "ADD", &container_id, &workload.path(), &conf);
        let reached = loop {
            let (id, at) = arrived
                .recv_timeout(GIVE_UP)
                .unwrap_or_else(|_| panic!("run {run}: no probe reached the peer in {GIVE_UP:?}"));
            if id == run_id {
                break at;
            }
        };
        stop.store(true, Ordering::Relaxed);
        prober.join().expect("prober");
        cni(&host_path, &bin_dir, "DEL", &container_id, &workload.path(), &conf);
        // Run 0 warms the page cache and the agent's first block of this kind; not counted.
        if run == 0 {
            continue;
        }
        totals.push(reached - started);
        adds.push(add_done - started);
        if reached >= add_done {
            afters.push(reached - add_done);
        } else {
            after_negative += 1;
            afters.push(Duration::ZERO);
        }
        eprintln!(
            "endpoint_e2e: run {run}: {:.1} ms (ADD {:.1} ms)",
            millis(reached - started),
            millis(add_done - started)
        );
    }
    drop(cluster);
    report(&totals, &adds, &afters, after_negative, &bin_dir);
}

/// A thread in the workload's namespace that sends `run` to `target` every
/// [`PROBE_EVERY`] until `stop` (send errors, before the interface exists, are expected).
fn spawn_prober(
    netns: &Path,
    target: SocketAddr,
    run: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let socket = in_netns(netns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("enter the workload")
        .expect("bind the prober");
    std::thread::spawn(move || {
        let deadline = Instant::now() + GIVE_UP;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let _ = socket.send_to(&run.to_be_bytes(), target);
            std::thread::sleep(PROBE_EVERY);
        }
    })
}

/// Execs the plugin in the host namespace as a runtime would; returns the instants just
/// before the exec and just after it exited. Panics with its output unless it succeeded.
fn cni(
    host: &Path,
    bin_dir: &Path,
    verb: &str,
    id: &str,
    netns: &Path,
    conf: &str,
) -> (Instant, Instant) {
    let cni_path = std::env::join_paths([bin_dir, Path::new("/usr/lib/cni")]).expect("CNI_PATH");
    // The shipped (static) plugin when the caller names it, as the CNI latency bench does.
    let plugin = testkit::plugin(tests::bins::CNI_PLUGIN, bin_dir.join(tests::bins::CNI_PLUGIN));
    let mut command = Command::new(plugin);
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", tests::cluster::IFNAME)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Spawned from a thread inside the host namespace: the plugin starts there, with no
    // `nsenter` exec in front of it that a runtime would not pay either.
    let (started, child) =
        in_netns(host, || (Instant::now(), command.spawn())).expect("enter the host");
    let mut child = child.expect("exec the tabby plugin");
    child.stdin.take().expect("stdin").write_all(conf.as_bytes()).expect("netconf");
    let out = child.wait_with_output().expect("wait for the plugin");
    let done = Instant::now();
    assert!(
        out.status.success(),
        "CNI {verb} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (started, done)
}

fn report(
    totals: &[Duration],
    adds: &[Duration],
    afters: &[Duration],
    negative: usize,
    bins: &Path,
) {
    let mut table =
        Md::new(&["span", "runs", "p50 ms", "p99 ms", "max ms", "target"], &[1, 2, 3, 4]);
    let rows = [
        ("CNI ADD exec → first packet reaches the peer", totals, "≤ 100 ms"),
        ("… CNI ADD (exec → plugin exited)", adds, "—"),
        ("… agent: plugin exited → first packet through", afters, "—"),
    ];
    for (label, samples, target) in rows {
        table.row(vec![
            label.to_string(),
            samples.len().to_string(),
            format!("{:.1}", millis(percentile(samples, 50.0))),
            format!("{:.1}", millis(percentile(samples, 99.0))),
            format!("{:.1}", millis(percentile(samples, 100.0))),
            target.to_string(),
        ]);
    }
    metric("e2e.total_p50_ms", millis(percentile(totals, 50.0)));
    metric("e2e.total_p99_ms", millis(percentile(totals, 99.0)));
    metric("e2e.add_p50_ms", millis(percentile(adds, 50.0)));
    metric("e2e.agent_p50_ms", millis(percentile(afters, 50.0)));
    metric("e2e.agent_p99_ms", millis(percentile(afters, 99.0)));
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut command = "cargo bench -p tests --bench endpoint_e2e".to_string();
    if !args.is_empty() {
        command = format!("{command} -- {}", args.join(" "));
    }
    println!("\n## endpoint_e2e\n");
    println!(
        "One simulated host (netns) with a real tabby-agent and etcd; a peer workload on network \
         `{NETWORK}`; each run attaches a new workload with the real `tabby` plugin (exec'd from \
         the host namespace, etcd IPAM) while it sends a UDP datagram to the peer every \
         {} ms. One warm-up run not counted.\n",
        PROBE_EVERY.as_millis()
    );
    println!("{}", table.render());
    if negative > 0 {
        println!("In {negative} runs the first packet got through before the plugin had exited (counted as 0 ms for the agent).\n");
    }
    println!(
        "Plugin: `{}`.",
        testkit::plugin(tests::bins::CNI_PLUGIN, bins.join(tests::bins::CNI_PLUGIN)).display()
    );
    println!("Binaries: `{}`. Command (as root, after `cargo build --release --bins -p cni-plugin -p agent -p ctl`): `{command}`", bins.display());
}
