//! Agent at scale: 10,000 workload endpoints (250 on this host), 1,000 profiles and 200
//! policies, planned and programmed into a private network namespace by `NftDataplane`.
//!
//! Measures cold start (plan + first full apply), the process RSS and CPU time after it, the
//! latency of single profile-rule changes (plan + incremental apply) and of a new local
//! endpoint, and prints a Markdown table. No etcd: the model is built from resources directly,
//! as the watcher would deliver them. Needs root (it creates a network namespace).
//!
//!     cargo bench -p agent --bench agent_scale [-- --endpoints N] [--quick]
//!
//! `--endpoints N` keeps the issue's proportions (1/40 local, N/10 profiles, N/50 policies);
//! `--quick` measures 50 rule changes and 20 new endpoints instead of 200 and 50.

#[path = "common/scale.rs"]
mod scale;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use agent::dataplane::Dataplane;
use agent::host::HostInfo;
use agent::model::WatchSource;
use agent::nft_dataplane::NftDataplane;
use agent::plan::{plan, PlanConfig};
use datastore::watch::WatchEvent;
use scale::{Kvs, Scale, NODE};
use testkit::bench::{metric, millis, percentile};
use testkit::Netns;

fn main() {
    testkit::require_root();
    let endpoints = testkit::bench::value("endpoints", Scale::ISSUE.endpoints);
    let scale = if endpoints == Scale::ISSUE.endpoints {
        Scale::ISSUE
    } else {
        Scale::proportional(endpoints)
    };
    let quick = testkit::bench::flag("quick");
    let (changes, new_endpoints) = if quick { (50, 20) } else { (200, 50) };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut command = "cargo bench -p agent --bench agent_scale".to_string();
    if !args.is_empty() {
        command = format!("{command} -- {}", args.join(" "));
    }
    let ns = Netns::new("bench");
    let kvs = Kvs::new();

    let started = Instant::now();
    let mut model = kvs.model(&scale, |_, _| {});
    let decode = started.elapsed();

    let host = HostInfo::new(NODE);
    let config = PlanConfig::new("tabby").expect("config");
    let plan_times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(plan(&model, &host, &config));
            t.elapsed()
        })
        .collect();
    let planned = plan(&model, &host, &config);
    let shape = format!(
        "{} chains, {} rules, {} sets, {} set elements, {} local endpoints",
        planned.ruleset.chains().len(),
        planned.ruleset.rule_count(),
        planned.ruleset.sets().len() + planned.ruleset.maps().len(),
        planned.ruleset.sets().map(|s| s.elems().len()).sum::<usize>()
            + planned.ruleset.maps().map(|m| m.elems().len()).sum::<usize>(),
        planned.local_endpoints,
    );
    drop(planned);

    let mut dp = ns.enter(|| NftDataplane::with_config(config.clone()).expect("dataplane"));
    let cpu_before = cpu_time();
    let t = Instant::now();
    let report = dp.apply(&model, &host).expect("cold apply");
    let cold = t.elapsed();
    let cold_cpu = cpu_time().saturating_sub(cpu_before);
    assert_eq!(report.local_endpoints, scale.local);
    let rss_mb = rss_kib() as f64 / 1024.0;

    // Single profile-rule changes: an active profile's port, through the model as a watch
    // event would bring it, then plan + incremental apply.
    let mut change_times = Vec::with_capacity(changes);
    let mut change_apply_times = Vec::with_capacity(changes);
    let cpu_before = cpu_time();
    for k in 0..changes {
        let port = 8000 + u16::try_from(k).expect("few changes");
        let value = scale.profile(k % scale.local.min(scale.profiles), port);
        model.apply(WatchSource::Resources, WatchEvent::Put(kvs.kv(&value)));
        let t = Instant::now();
        dp.apply(&model, &host).expect("change apply");
        change_times.push(t.elapsed());
        let stats = dp.last_stats().expect("stats");
        assert!(!stats.full_replace && stats.chains_written >= 1, "{stats:?}");
        change_apply_times.push(stats.duration);
    }
    let change_cpu = cpu_time().saturating_sub(cpu_before) / u32::try_from(changes).expect("few");

    // New local endpoints: chains, map entries and set elements.
    let mut new_times = Vec::with_capacity(new_endpoints);
    for n in 0..new_endpoints {
        let value = scale.endpoint_on(scale.endpoints + n, NODE);
        model.apply(WatchSource::Resources, WatchEvent::Put(kvs.kv(&value)));
        let t = Instant::now();
        let report = dp.apply(&model, &host).expect("endpoint apply");
        new_times.push(t.elapsed());
        assert_eq!(report.local_endpoints, scale.local + n + 1);
    }
    let listed = ns.sh_ok("nft list map inet tabby from-wl | grep -c goto || true");
    assert!(
        listed.trim().parse::<usize>().unwrap_or(0) >= scale.local + new_endpoints,
        "map entries"
    );

    let n = scale.endpoints;
    metric(&format!("agent.plan_ms.{n}"), millis(percentile(&plan_times, 50.0)));
    metric(&format!("agent.cold_start_ms.{n}"), millis(cold));
    metric(&format!("agent.cold_start_cpu_ms.{n}"), millis(cold_cpu));
    metric(&format!("agent.rss_mb.{n}"), rss_mb);
    metric(&format!("agent.change_p50_ms.{n}"), millis(percentile(&change_times, 50.0)));
    metric(&format!("agent.change_p99_ms.{n}"), millis(percentile(&change_times, 99.0)));
    metric(&format!("agent.change_cpu_ms.{n}"), millis(change_cpu));
    metric(&format!("agent.new_endpoint_p50_ms.{n}"), millis(percentile(&new_times, 50.0)));
    metric(&format!("agent.new_endpoint_max_ms.{n}"), millis(percentile(&new_times, 100.0)));

    let mut out = String::new();
    let _ = writeln!(out, "\n## agent_scale\n");
    let _ = writeln!(
        out,
        "{} endpoints ({} local), {} profiles, {} policies; {shape}.\n",
        scale.endpoints, scale.local, scale.profiles, scale.policies
    );
    let _ = writeln!(out, "| measure | value | target |");
    let _ = writeln!(out, "| --- | --- | --- |");
    let _ = writeln!(out, "| model decode (endpoints + resources, JSON) | {} | — |", ms(decode));
    let _ = writeln!(
        out,
        "| plan only (pure, median of 5) | {} | ≪ 100 ms |",
        ms(percentile(&plan_times, 50.0))
    );
    let _ = writeln!(out, "| cold start: plan + first full apply | {} | ≤ 2 s |", ms(cold));
    let _ =
        writeln!(out, "| … CPU time of the cold start (user + system) | {} | — |", ms(cold_cpu));
    let _ =
        writeln!(out, "| RSS after cold start (whole bench process) | {rss_mb:.1} MB | ≤ 150 MB |");
    let _ = writeln!(
        out,
        "| profile rule change → applied, p50 | {} | — |",
        ms(percentile(&change_times, 50.0))
    );
    let _ = writeln!(
        out,
        "| profile rule change → applied, p99 | {} | ≤ 50 ms |",
        ms(percentile(&change_times, 99.0))
    );
    let _ = writeln!(
        out,
        "| … of which nftables transaction (diff + netlink), p50 / p99 | {} / {} | — |",
        ms(percentile(&change_apply_times, 50.0)),
        ms(percentile(&change_apply_times, 99.0))
    );
    let _ = writeln!(out, "| … CPU time per change (mean) | {} | — |", ms(change_cpu));
    let _ = writeln!(
        out,
        "| new local endpoint → programmed, p50 | {} | — |",
        ms(percentile(&new_times, 50.0))
    );
    let _ = writeln!(
        out,
        "| new local endpoint → programmed, max | {} | ≤ 100 ms |",
        ms(percentile(&new_times, 100.0))
    );
    let _ = writeln!(
        out,
        "\n{changes} rule changes, {new_endpoints} new endpoints. Command (as root): `{command}`"
    );
    println!("{out}");
}

/// User + system CPU time of this process so far (from `/proc/self/stat`, in clock ticks of
/// 10 ms: coarse, so only long spans are worth reading).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 =
        after.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
