//! Scale: many simulated hosts with real agents, many workloads attached by the real CNI
//! plugin, and profile churn written straight to etcd. Measures how long each change takes
//! to reach every host's nftables (p50/p99/max), confirms the verdicts with real packets at
//! checkpoints, and checks IPAM stays consistent through attach and detach at that size.
//!
//! The CI size runs in the normal `cargo test`; the full size (16 hosts, 2,000 containers,
//! 100 changes/s for 60 s) is `#[ignore]`d: `cargo test -p tests --test scale -- --ignored
//! --nocapture`. `TABBY_SCALE_*` variables shrink or grow it (see `tests::churn::Size`).

use std::time::{Duration, Instant};

use tests::churn::{Rig, Size};
use tests::Cluster;

fn scale(size: &Size, settle: Duration) {
    let mut rig = Rig::start(size.clone(), Cluster::builder());
    rig.checkpoint("checkpoint: initial", settle);
    let half = size.duration / 2;
    rig.churn_for(&format!("churn {}/s × {:.0?}", size.rate, half), half, settle);
    rig.checkpoint("checkpoint: mid", settle);
    rig.churn_for(&format!("churn {}/s × {:.0?}", size.rate, half), half, settle);
    rig.checkpoint("checkpoint: end", settle);
    let addresses = rig.fleet.check_addresses();
    eprintln!("{}", rig.summary());
    if let Err(problem) = addresses {
        panic!("IPAM is inconsistent after the churn:\n{problem}");
    }

    let total = rig.total();
    assert_eq!(total.failed_writes, 0, "etcd refused churn writes:\n{}", rig.summary());
    assert_eq!(total.unconverged(), 0, "changes never converged:\n{}", rig.summary());
    assert_eq!(total.packet_failures, 0, "{}", rig.summary());
    assert!(
        total.packet_checks > 0
            && total.changes as f64 >= size.rate * size.duration.as_secs_f64() * 0.5
    );

    // Detaching everything leaves IPAM clean too: no address leaked by DEL at this size.
    let started = Instant::now();
    let failures = rig.fleet.remove_all_workloads(size.parallel);
    eprintln!("detached {} workloads in {:.1?}", rig.endpoints.len(), started.elapsed());
    assert!(failures.is_empty(), "CNI DEL failed:\n{}", failures.join("\n"));
    if let Err(problem) = rig.fleet.check_addresses() {
        panic!("IPAM is inconsistent after detaching every workload:\n{problem}");
    }
}

#[test]
fn policy_churn_converges_everywhere_at_ci_size() {
    let size = Size {
        hosts: 4,
        containers: 60,
        profiles: 4,
        rate: 20.0,
        duration: Duration::from_secs(10),
        parallel: 8,
        poll: Duration::from_secs(1),
    };
    scale(&size, Duration::from_secs(30));
}

#[test]
#[ignore = "full size (16 hosts, 2,000 containers, 100 changes/s for 60 s) takes many minutes: run with --ignored"]
fn policy_churn_converges_everywhere_at_full_size() {
    let size = Size {
        hosts: 16,
        containers: 2000,
        // 20 profiles: 20 writes in flight, 5 changes/s each.
        profiles: 20,
        rate: 100.0,
        duration: Duration::from_mins(1),
        parallel: 8,
        // Listing a 125-endpoint table costs half a second here; the monitor does the timing.
        poll: Duration::from_secs(10),
    }
    .with_env_overrides();
    scale(&size, Duration::from_mins(3));
}
