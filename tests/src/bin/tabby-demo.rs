//! `tabby-demo`, README command 1: two simulated hosts with real agents, workloads attached by
//! the CNI plugin, the operators' web/app/mysqldb profiles applied with `tabbyctl`, and the
//! connectivity matrix measured with real packets. Exits 0 when every cell is as the profiles
//! say, 1 when any differs, 2 when the demo could not run, 130 when interrupted; cleans up
//! every namespace, link and process in each case.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tests::cancel;
use tests::probe::{all_pairs, Matrix};
use tests::{scenario, Cluster};

/// How long the agents get to program the scenario before the matrix counts.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long to wait for the interrupted demo to clean up before giving up on it.
const CLEANUP_GRACE: Duration = Duration::from_mins(1);

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "tabby-demo: needs root (it creates network namespaces, links and nftables tables)"
        );
        return ExitCode::from(2);
    }
    if let Err(e) = cancel::install(|signal, count| {
        if count > 1 {
            eprintln!("\ntabby-demo: {signal} again: aborting without cleanup");
            std::process::exit(130);
        }
        eprintln!("\ntabby-demo: {signal}: cleaning up (again to abort)…");
    }) {
        eprintln!("tabby-demo: cannot install the signal handler: {e}");
        return ExitCode::from(2);
    }
    // An interrupt unwinds the worker with a panic; that one is not worth a backtrace.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&cancel::INTERRUPTED) {
            report(info);
        }
    }));
    // The demo runs on a worker thread so this one can wait for it with a bound after an
    // interrupt; the worker unwinds through its Drop guards at its next wait.
    let (done, finished) = mpsc::channel();
    let worker = std::thread::Builder::new().name("demo".into()).spawn(move || {
        let code = std::panic::catch_unwind(run).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if message == cancel::INTERRUPTED {
                130
            } else {
                eprintln!("tabby-demo: failed: {message}");
                2
            }
        });
        let _ = done.send(code);
    });
    if let Err(e) = worker {
        eprintln!("tabby-demo: cannot start: {e}");
        return ExitCode::from(2);
    }
    // Poll so an interrupt during a hang still ends the process after the grace period.
    let mut interrupted_at: Option<Instant> = None;
    loop {
        match finished.recv_timeout(Duration::from_millis(200)) {
            Ok(code) => return ExitCode::from(if cancel::requested() { 130 } else { code }),
            Err(mpsc::RecvTimeoutError::Disconnected) => return ExitCode::from(2),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if cancel::requested() {
            let since = *interrupted_at.get_or_insert_with(Instant::now);
            if since.elapsed() > CLEANUP_GRACE {
                eprintln!("tabby-demo: cleanup did not finish in {CLEANUP_GRACE:?}; exiting");
                return ExitCode::from(130);
            }
        }
    }
}

/// The demo itself; returns the exit code. Panics (cleaning up on the way) when the demo
/// cannot be set up.
fn run() -> u8 {
    let started = Instant::now();
    println!("tabby demo: two hosts, real etcd, real agents, workloads attached by CNI\n");
    let mut cluster = Cluster::builder().hosts(2).start();
    println!(
        "fabric {} (bridge {}), etcd {}, IP pool {}",
        cluster.subnet(),
        cluster.fabric_ip(),
        cluster.etcd_endpoint(),
        cluster.pool()
    );
    for host in cluster.hosts() {
        println!(
            "  {:<7} node IP {:<15} tabby-agent (log {})",
            host.name(),
            host.ip(),
            host.log_path().display()
        );
    }

    println!("\nattaching workloads through the CNI plugin (tabby, CNI_COMMAND=ADD):");
    let endpoints = scenario::start_workloads(&mut cluster);
    for ep in &endpoints {
        println!("  {:<6} network {:<8} on {}  {}", ep.name, ep.network, ep.host, ep.ip);
    }

    println!("\napplying the operators' profiles:");
    for line in scenario::apply(&cluster) {
        println!("  {line}");
    }

    println!("\nwaiting for the agents to be ready…");
    cluster.wait_ready(Duration::from_secs(30));

    let pairs = all_pairs(&endpoints);
    let services = scenario::services();
    println!(
        "measuring {} pairs × {} services with real packets (converging for up to {CONVERGE:?})…\n",
        pairs.len(),
        services.len()
    );
    let (matrix, converged) =
        match Matrix::await_expected(&pairs, &services, &scenario::allowed, CONVERGE) {
            Ok(m) => (m, true),
            Err(m) => (m, false),
        };
    print!("{}", matrix.report(&scenario::allowed));
    let cells = matrix.cells().count();
    let allowed = matrix.cells().filter(|c| c.3.passed()).count();
    println!();
    if converged {
        println!(
            "verdict: PASS — all {cells} cells as the profiles say ({allowed} allowed, {} blocked); {:.1?} in all",
            cells - allowed,
            started.elapsed()
        );
    } else {
        let wrong = matrix.mismatches(&scenario::allowed).len();
        println!(
            "verdict: FAIL — {wrong} of {cells} cells differ from the profiles after {CONVERGE:?}"
        );
        println!("\n{}", cluster.diagnostics());
    }
    println!("cleaning up…");
    let cleanup = Instant::now();
    drop(cluster);
    println!("cleaned up in {:.1?}", cleanup.elapsed());
    u8::from(!converged)
}
