//! Agent at scale: 10,000 workload endpoints (250 on this host), 1,000 profiles and 200
//! policies, planned and programmed into a private network namespace by `NftDataplane`.
//!
//! Measures cold start (plan + first full apply), the process RSS after it, the latency of
//! single profile-rule changes (plan + incremental apply) and of a new local endpoint, and
//! prints a Markdown table. No etcd: the model is built from resources directly, as the
//! watcher would deliver them. Needs root (it creates a network namespace).
//!
//!     cargo bench -p agent --bench agent_scale

use std::cell::Cell;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use agent::dataplane::Dataplane;
use agent::host::HostInfo;
use agent::model::{ClusterModel, WatchSource};
use agent::nft_dataplane::NftDataplane;
use agent::plan::{plan, PlanConfig};
use datastore::client::Kv;
use datastore::keys::KeyLayout;
use datastore::model::parse_resource;
use datastore::watch::WatchEvent;
use serde_json::{json, Value};
use testkit::Netns;

const ENDPOINTS: usize = 10_000;
const LOCAL: usize = 250;
const PROFILES: usize = 1_000;
const POLICIES: usize = 200;
const CHANGES: usize = 200;
const NEW_ENDPOINTS: usize = 50;
const OTHER_NODES: usize = 39;
const NODE: &str = "bench-host";
const COMMAND: &str = "cargo bench -p agent --bench agent_scale";

fn main() {
    testkit::require_root();
    let ns = Netns::new("bench");
    let layout = KeyLayout::new("/calico");
    let revision = Cell::new(1);
    let kv = |value: &Value| -> Kv {
        let bytes = serde_json::to_vec(value).expect("json");
        let r = parse_resource(&bytes).expect("resource");
        revision.set(revision.get() + 1);
        Kv {
            key: layout.resource(r.kind(), r.namespace(), r.name()),
            value: bytes,
            mod_revision: revision.get(),
            create_revision: revision.get(),
            version: 1,
        }
    };

    let started = Instant::now();
    let mut kvs: Vec<Kv> = Vec::with_capacity(ENDPOINTS + PROFILES + POLICIES + 1);
    kvs.push(kv(&json!({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "pool"}, "spec": {"cidr": "10.64.0.0/10", "natOutgoing": true}})));
    kvs.extend((0..PROFILES).map(|i| kv(&profile(i, 80))));
    kvs.extend((0..POLICIES).map(|i| kv(&policy(i))));
    kvs.extend((0..ENDPOINTS).map(|j| kv(&endpoint(j))));
    let mut model = ClusterModel::from_kvs(layout.clone(), &kvs, revision.get());
    assert!(model.invalid().is_empty(), "{:?}", model.invalid().iter().next());
    drop(kvs);
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
    let t = Instant::now();
    let report = dp.apply(&model, &host).expect("cold apply");
    let cold = t.elapsed();
    assert_eq!(report.local_endpoints, LOCAL);
    let rss_mb = rss_kib() as f64 / 1024.0;

    // Single profile-rule changes: an active profile's port, through the model as a watch
    // event would bring it, then plan + incremental apply.
    let mut change_times = Vec::with_capacity(CHANGES);
    let mut change_apply_times = Vec::with_capacity(CHANGES);
    for k in 0..CHANGES {
        let port = 8000 + u16::try_from(k).expect("few changes");
        let value = profile(k % LOCAL, port);
        model.apply(WatchSource::Resources, WatchEvent::Put(kv(&value)));
        let t = Instant::now();
        dp.apply(&model, &host).expect("change apply");
        change_times.push(t.elapsed());
        let stats = dp.last_stats().expect("stats");
        assert!(!stats.full_replace && stats.chains_written >= 1, "{stats:?}");
        change_apply_times.push(stats.duration);
    }

    // New local endpoints: chains, map entries and set elements.
    let mut new_times = Vec::with_capacity(NEW_ENDPOINTS);
    for n in 0..NEW_ENDPOINTS {
        model.apply(WatchSource::Resources, WatchEvent::Put(kv(&endpoint_on(ENDPOINTS + n, NODE))));
        let t = Instant::now();
        let report = dp.apply(&model, &host).expect("endpoint apply");
        new_times.push(t.elapsed());
        assert_eq!(report.local_endpoints, LOCAL + n + 1);
    }
    let listed = ns.sh_ok("nft list map inet tabby from-wl | grep -c goto || true");
    assert!(listed.trim().parse::<usize>().unwrap_or(0) >= LOCAL + NEW_ENDPOINTS, "map entries");

    let mut out = String::new();
    let _ = writeln!(out, "\n## agent_scale\n");
    let _ = writeln!(
        out,
        "{ENDPOINTS} endpoints ({LOCAL} local), {PROFILES} profiles, {POLICIES} policies; {shape}.\n"
    );
    let _ = writeln!(out, "| measure | value | target |");
    let _ = writeln!(out, "| --- | --- | --- |");
    let _ =
        writeln!(out, "| model decode (10,000 endpoints + resources, JSON) | {} | — |", ms(decode));
    let _ = writeln!(
        out,
        "| plan only (pure, median of 5) | {} | ≪ 100 ms |",
        ms(percentile(&plan_times, 50))
    );
    let _ = writeln!(out, "| cold start: plan + first full apply | {} | ≤ 2 s |", ms(cold));
    let _ =
        writeln!(out, "| RSS after cold start (whole bench process) | {rss_mb:.1} MB | ≤ 150 MB |");
    let _ = writeln!(
        out,
        "| profile rule change → applied, p50 | {} | — |",
        ms(percentile(&change_times, 50))
    );
    let _ = writeln!(
        out,
        "| profile rule change → applied, p99 | {} | ≤ 50 ms |",
        ms(percentile(&change_times, 99))
    );
    let _ = writeln!(
        out,
        "| … of which nftables transaction (diff + netlink), p50 / p99 | {} / {} | — |",
        ms(percentile(&change_apply_times, 50)),
        ms(percentile(&change_apply_times, 99))
    );
    let _ = writeln!(
        out,
        "| new local endpoint → programmed, p50 | {} | — |",
        ms(percentile(&new_times, 50))
    );
    let _ = writeln!(
        out,
        "| new local endpoint → programmed, max | {} | ≤ 100 ms |",
        ms(percentile(&new_times, 100))
    );
    let _ = writeln!(out, "\nCommand (as root): `{COMMAND}`");
    println!("{out}");
}

/// Profile `i`: web ports from anyone, everything from its own members, a database port
/// from the next profile's members, egress open; its members get label `prof-<i>`.
fn profile(i: usize, port: u16) -> Value {
    let next = (i + 1) % PROFILES;
    json!({"kind": "Profile", "apiVersion": "projectcalico.org/v3",
    "metadata": {"name": format!("prof-{i}")},
    "spec": {
        "ingress": [
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": [port, 443]}},
            {"action": "Allow", "source": {"selector": format!("has(prof-{i})")}},
            {"action": "Allow", "protocol": "TCP", "source": {"selector": format!("has(prof-{next})")},
             "destination": {"ports": [5432]}}
        ],
        "egress": [{"action": "Allow"}],
        "labelsToApply": {format!("prof-{i}"): ""}
    }})
}

/// Policy `i`: applies to app `app-<2i>`, in order `i`.
fn policy(i: usize) -> Value {
    json!({"kind": "NetworkPolicy", "apiVersion": "projectcalico.org/v3",
    "metadata": {"name": format!("pol-{i}"), "namespace": "default"},
    "spec": {
        "order": i,
        "selector": format!("app == 'app-{}'", 2 * i),
        "types": ["Ingress", "Egress"],
        "ingress": [
            {"action": "Allow", "protocol": "TCP", "source": {"selector": "tier == 'web'"},
             "destination": {"ports": [8080, "9000:9100"]}},
            {"action": "Deny", "source": {"nets": [format!("10.99.{}.0/24", i % 256)]}},
            {"action": "Pass", "source": {"selector": format!("app == 'app-{}'", i + 1)}}
        ],
        "egress": [
            {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}},
            {"action": "Allow", "destination": {"selector": "tier == 'db'"}}
        ]
    }})
}

/// Endpoint `j`: the first [`LOCAL`] on this host, the rest spread over other nodes.
fn endpoint(j: usize) -> Value {
    let node = if j < LOCAL { NODE.to_string() } else { format!("node-{}", j % OTHER_NODES) };
    endpoint_on(j, &node)
}

fn endpoint_on(j: usize, node: &str) -> Value {
    let id = format!("c{j}");
    let mut ips = vec![format!("10.{}.{}.{}/32", 64 + j / 65_536, (j / 256) % 256, j % 256)];
    if j.is_multiple_of(10) {
        ips.push(format!("fd00:64::{j:x}/128"));
    }
    let tier = ["web", "app", "db"][j % 3];
    json!({"kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": format!("{}-cni-{id}-eth0", node.replace('-', "--")), "namespace": "default",
                     "labels": {"app": format!("app-{}", j % 500), "tier": tier}},
        "spec": {"orchestrator": "cni", "node": node, "containerID": id, "endpoint": "eth0",
                 "ipNetworks": ips, "profiles": [format!("prof-{}", j % PROFILES)],
                 "interfaceName": format!("cali{j:011x}"), "mac": "ee:ee:ee:ee:ee:ee"}})
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

/// The `p`th percentile (nearest rank) of `samples`.
fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
