//! The IPAM benchmark: latency and etcd round trips of one host's allocations (tabby's paths
//! next to a modelled Calico request sequence), aggregate throughput of 1, 4 and 16 hosts on
//! one etcd (zero duplicates asserted), and the first allocation on a crowded /8 pool.
//!
//! Starts its own etcd (testkit) and prints Markdown tables on stdout; progress on stderr.
//! Run: `cargo bench -p ipam --bench ipam_bench`; append `-- single`, `-- aggregate` or
//! `-- crowded` to run only those parts, and `--quick` for a fifth of the samples (the
//! crowded pool keeps its 10,000 blocks, with fewer runs on it).

mod calico;
mod setup;
mod stats;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam::candidates::Candidates;
use ipam::{Allocator, Attrs};
use ipnet::IpNet;
use testkit::Etcd;

use calico::CalicoModel;
use setup::{connect, one_v4, Result, Scenario};
use stats::{ms, Md, Samples};
use testkit::bench::{metric, millis};

const COMMAND: &str = "cargo bench -p ipam --bench ipam_bench";
/// Allocate+release cycles on the fast path.
const FAST_N: usize = 1000;
/// Fresh hosts whose first allocation claims a block.
const CLAIM_N: usize = 200;
/// Allocations per aggregate scenario (at most 20 blocks of 64 for the single host).
const AGG_TOTAL: usize = 1200;
/// Concurrent requests per simulated host (its allocator's lock serialises them).
const PER_HOST_TASKS: usize = 8;
/// Blocks already claimed by other hosts in the crowded-pool scenarios.
const CLAIMED: usize = 10_000;
/// Newcomer hosts measured on the realistic crowded pool.
const NEWCOMERS: usize = 5;
/// Adversarial crowded pools (each pre-claimed from scratch).
const ADVERSARIAL_RUNS: usize = 3;

/// `n` samples, or a fifth of them (at least one) with `--quick`.
fn samples(n: usize) -> usize {
    if testkit::bench::flag("quick") {
        (n / 5).max(1)
    } else {
        n
    }
}

fn main() -> ExitCode {
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("ipam_bench: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipam_bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    eprintln!("ipam_bench: starting etcd");
    let etcd = Etcd::start();
    let status = connect(&etcd.endpoint()).await?.member_status().await?;
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let command = if args.is_empty() {
        COMMAND.to_string()
    } else {
        format!("{COMMAND} -- {}", args.join(" "))
    };
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("## IPAM benchmark\n");
    println!("Command: `{command}`\n");
    println!(
        "Release build; etcd {} (one member, data dir on local disk, fsync on) on 127.0.0.1; \
         {cpus} CPUs shared by etcd and the benchmark. Round trips are counted by the \
         client on every request.\n",
        status.version
    );
    let parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if wanted("single") {
        Box::pin(single_host(&etcd)).await?;
    }
    if wanted("aggregate") {
        Box::pin(aggregate(&etcd)).await?;
    }
    if wanted("crowded") {
        Box::pin(crowded(&etcd)).await?;
    }
    Ok(())
}

fn attrs(node: &str) -> Attrs {
    Attrs::from([("node".to_string(), node.to_string())])
}

/// Times `f`, counting the round trips it makes on `client`.
async fn measure<T, F>(client: &datastore::client::Client, f: F) -> Result<(T, Duration, u64)>
where
    F: std::future::Future<Output = Result<T>>,
{
    // Boxed: the allocator's futures are large, and this one would carry them inline.
    let f = Box::pin(f);
    let before = client.round_trips();
    let start = Instant::now();
    let out = f.await?;
    Ok((out, start.elapsed(), client.round_trips() - before))
}

async fn single_host(etcd: &Etcd) -> Result<()> {
    eprintln!("ipam_bench: (a) single host");
    let mut table = Md::new(
        &["path", "operation", "samples", "p50", "p99", "etcd round trips per operation"],
        &[2, 3, 4],
    );
    let calico = "Calico-equivalent request sequence (modelled)";

    // tabby, fast path: the host's block has room.
    let sc = Scenario::new(etcd, "single", "10.64.0.0/16").await?;
    sc.put_node("host-a").await?;
    let client = sc.connect().await?;
    let a = sc.allocator(client.clone(), "host-a")?;
    for i in 0..20 {
        let h = format!("net.warm{i}.eth0");
        a.assign(&one_v4(h.clone())).await?;
        a.release_by_handle(&h).await?;
    }
    let (mut alloc, mut rel, mut both) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..samples(FAST_N) {
        let h = format!("net.fast{i}.eth0");
        let (_, t1, r1) =
            measure(&client, async { Ok(a.assign(&one_v4(h.clone())).await?) }).await?;
        let (_, t2, r2) = measure(&client, async { Ok(a.release_by_handle(&h).await?) }).await?;
        alloc.push(t1, r1);
        rel.push(t2, r2);
        both.push(t1 + t2, r1 + r2);
    }
    metric("ipam.fast_alloc_p50_ms", millis(alloc.quantile(0.5)));
    metric("ipam.fast_alloc_p99_ms", millis(alloc.quantile(0.99)));
    metric("ipam.fast_alloc_round_trips", alloc.mean_trips());
    metric("ipam.fast_cycle_p50_ms", millis(both.quantile(0.5)));
    metric("ipam.fast_cycle_p99_ms", millis(both.quantile(0.99)));
    let fast = "tabby, fast path (affine block has room)";
    push(&mut table, fast, "allocate", &alloc);
    push(&mut table, fast, "release by handle", &rel);
    push(&mut table, fast, "allocate + release", &both);

    // tabby, first allocation of fresh hosts: each claims a block.
    let sc = Scenario::new(etcd, "single-claim", "10.65.0.0/16").await?;
    let client = sc.connect().await?;
    let (mut alloc, mut rel) = (Samples::default(), Samples::default());
    for i in 0..samples(CLAIM_N) {
        let node = format!("claim-{i}");
        sc.put_node(&node).await?;
        let a = sc.allocator(client.clone(), &node)?;
        let h = format!("net.claim{i}.eth0");
        let (_, t1, r1) =
            measure(&client, async { Ok(a.assign(&one_v4(h.clone())).await?) }).await?;
        let (_, t2, r2) = measure(&client, async { Ok(a.release_by_handle(&h).await?) }).await?;
        alloc.push(t1, r1);
        rel.push(t2, r2);
    }
    let claim = "tabby, a host's first allocation (claims a block)";
    push(&mut table, claim, "allocate", &alloc);
    push(&mut table, claim, "release by handle", &rel);

    // The modelled Calico sequence on the same etcd, fast path.
    let sc = Scenario::new(etcd, "single-calico", "10.66.0.0/16").await?;
    sc.put_node("host-c").await?;
    let client = sc.connect().await?;
    let model = CalicoModel { client: &client, keys: &sc.keys };
    let at = attrs("host-c");
    for i in 0..20 {
        let h = format!("net.warm{i}.eth0");
        model.assign("host-c", &h, &at).await?;
        model.release(&h).await?;
    }
    let (mut alloc, mut rel, mut both) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..samples(FAST_N) {
        let h = format!("net.fast{i}.eth0");
        let (_, t1, r1) = measure(&client, model.assign("host-c", &h, &at)).await?;
        let (_, t2, r2) = measure(&client, model.release(&h)).await?;
        alloc.push(t1, r1);
        rel.push(t2, r2);
        both.push(t1 + t2, r1 + r2);
    }
    metric("ipam.calico_alloc_p50_ms", millis(alloc.quantile(0.5)));
    metric("ipam.calico_alloc_round_trips", alloc.mean_trips());
    metric("ipam.calico_cycle_p50_ms", millis(both.quantile(0.5)));
    metric("ipam.calico_cycle_p99_ms", millis(both.quantile(0.99)));
    let cfast = format!("{calico}, fast path");
    push(&mut table, &cfast, "allocate", &alloc);
    push(&mut table, &cfast, "release by handle", &rel);
    push(&mut table, &cfast, "allocate + release", &both);

    let sc = Scenario::new(etcd, "single-calico-claim", "10.67.0.0/16").await?;
    let client = sc.connect().await?;
    let model = CalicoModel { client: &client, keys: &sc.keys };
    let (mut alloc, mut rel) = (Samples::default(), Samples::default());
    for i in 0..samples(CLAIM_N) {
        let node = format!("claim-{i}");
        sc.put_node(&node).await?;
        let h = format!("net.claim{i}.eth0");
        let (_, t1, r1) = measure(&client, model.assign(&node, &h, &attrs(&node))).await?;
        let (_, t2, r2) = measure(&client, model.release(&h)).await?;
        alloc.push(t1, r1);
        rel.push(t2, r2);
    }
    let cclaim = format!("{calico}, a host's first allocation (claims a block)");
    push(&mut table, &cclaim, "allocate", &alloc);
    push(&mut table, &cclaim, "release by handle", &rel);

    println!("### (a) One host, one address at a time\n");
    println!("{}", table.render());
    println!(
        "The modelled Calico sequence is IPAM only (`AutoAssign`/`ReleaseByHandle`); the CNI \
         plugin adds about 4 requests of its own around it (reference §2: ~14 per ADD).\n"
    );
    Ok(())
}

fn push(table: &mut Md, path: &str, op: &str, s: &Samples) {
    table.row(vec![path.into(), op.into(), s.len().to_string(), s.p50(), s.p99(), s.trips()]);
}

/// What the tasks of one aggregate run hand back.
type TaskOut = (usize, Vec<IpAddr>, Vec<String>, Samples);

async fn aggregate(etcd: &Etcd) -> Result<()> {
    eprintln!("ipam_bench: (b) hosts contending on one etcd");
    let mut table = Md::new(
        &[
            "hosts",
            "requests in flight",
            "allocations",
            "wall time",
            "allocations/s",
            "p50",
            "p99",
            "round trips per allocation",
            "outside own blocks",
            "duplicates",
            "releases/s",
        ],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    for hosts in [1usize, 4, 16] {
        let sc = Scenario::new(etcd, &format!("agg{hosts}"), "10.128.0.0/12").await?;
        let mut allocators = Vec::with_capacity(hosts);
        for h in 0..hosts {
            let node = format!("host-{h}");
            sc.put_node(&node).await?;
            let client = sc.connect().await?;
            allocators.push((client.clone(), Arc::new(sc.allocator(client, &node)?)));
        }
        let per_host = samples(AGG_TOTAL) / hosts;
        let trips_before: u64 = allocators.iter().map(|(c, _)| c.round_trips()).sum();
        let start = Instant::now();
        let outs = run_tasks(&allocators, per_host, None).await?;
        let wall = start.elapsed();
        let trips: u64 =
            allocators.iter().map(|(c, _)| c.round_trips()).sum::<u64>() - trips_before;

        let mut all = Samples::default();
        let mut ips: Vec<(usize, IpAddr)> = Vec::new();
        let mut handles: Vec<Vec<String>> = vec![Vec::new(); hosts];
        for (host, got, hs, samples) in outs {
            for ip in got {
                ips.push((host, ip));
            }
            handles[host].extend(hs);
            all.extend(&samples);
        }
        let total = ips.len();
        let unique: HashSet<IpAddr> = ips.iter().map(|(_, ip)| *ip).collect();
        let duplicates = total - unique.len();
        assert_eq!(duplicates, 0, "{hosts} hosts: duplicate addresses handed out");
        let report = ipam::check::check(&sc.client, &sc.keys).await?;
        assert!(report.duplicate_addresses.is_empty(), "{:?}", report.duplicate_addresses);
        assert!(report.duplicate_affinities.is_empty(), "{:?}", report.duplicate_affinities);
        assert_eq!(report.counts.allocations, total, "every allocation is in a block");
        // Whether each host's addresses sit in blocks affine to it (the pool has room).
        let usage = ipam::query::usage(&sc.client, &sc.keys).await?;
        let owner: BTreeMap<IpNet, Option<String>> =
            usage.blocks.iter().map(|b| (b.cidr, b.host.clone())).collect();
        let outside = ips
            .iter()
            .filter(|(h, ip)| {
                let cidr = IpNet::new(*ip, 26).map(|n| n.trunc()).ok();
                let host = cidr.and_then(|c| owner.get(&c).cloned().flatten());
                host.as_deref() != Some(format!("host-{h}").as_str())
            })
            .count();

        let start = Instant::now();
        run_tasks(&allocators, per_host, Some(&handles)).await?;
        let release_wall = start.elapsed();

        metric(&format!("ipam.allocs_per_s.{hosts}"), total as f64 / wall.as_secs_f64());
        metric(&format!("ipam.agg_p50_ms.{hosts}"), millis(all.quantile(0.5)));
        metric(&format!("ipam.agg_p99_ms.{hosts}"), millis(all.quantile(0.99)));
        metric(&format!("ipam.duplicates.{hosts}"), duplicates as f64);
        table.row(vec![
            hosts.to_string(),
            (hosts * PER_HOST_TASKS).to_string(),
            total.to_string(),
            ms(wall),
            format!("{:.0}", total as f64 / wall.as_secs_f64()),
            all.p50(),
            all.p99(),
            format!("{:.2}", trips as f64 / total as f64),
            outside.to_string(),
            duplicates.to_string(),
            format!("{:.0}", total as f64 / release_wall.as_secs_f64()),
        ]);
    }
    println!("### (b) Hosts contending on one etcd\n");
    println!(
        "Each host is an `Allocator` with its own lock file and etcd connection, {PER_HOST_TASKS} \
         requests in flight per host (its lock serialises them), one address per request, \
         {} allocations per row, then all released the same way. p50/p99 include \
         waiting for the host lock. Zero duplicate addresses and zero duplicate affinities are \
         asserted (also with `ipam::check`).\n",
        samples(AGG_TOTAL)
    );
    println!("{}", table.render());
    Ok(())
}

/// Runs `PER_HOST_TASKS` tasks per host, each allocating (or, given the handles, releasing)
/// its share of `per_host` addresses.
async fn run_tasks(
    allocators: &[(datastore::client::Client, Arc<Allocator>)],
    per_host: usize,
    release: Option<&Vec<Vec<String>>>,
) -> Result<Vec<TaskOut>> {
    let mut set = tokio::task::JoinSet::new();
    for (host, (_, a)) in allocators.iter().enumerate() {
        for task in 0..PER_HOST_TASKS {
            let a = Arc::clone(a);
            let mine: Vec<String> = match release {
                Some(handles) => {
                    handles[host].iter().skip(task).step_by(PER_HOST_TASKS).cloned().collect()
                }
                None => (task..per_host)
                    .step_by(PER_HOST_TASKS)
                    .map(|i| format!("net.h{host}-{i}.eth0"))
                    .collect(),
            };
            let releasing = release.is_some();
            set.spawn(async move {
                let mut ips = Vec::new();
                let mut samples = Samples::default();
                for h in &mine {
                    let start = Instant::now();
                    if releasing {
                        a.release_by_handle(h).await?;
                    } else {
                        ips.extend(a.assign(&one_v4(h.clone())).await?.v4.iter().map(IpNet::addr));
                    }
                    samples.push(start.elapsed(), 0);
                }
                Ok::<TaskOut, setup::BoxError>((host, ips, mine, samples))
            });
        }
    }
    let mut outs = Vec::new();
    while let Some(joined) = set.join_next().await {
        outs.push(joined??);
    }
    Ok(outs)
}

async fn crowded(etcd: &Etcd) -> Result<()> {
    eprintln!("ipam_bench: (c) first allocation on a crowded /8");
    let pool: IpNet = "10.0.0.0/8".parse()?;
    let mut table =
        Md::new(&["pool state", "path", "runs", "p50", "max", "etcd round trips"], &[2, 3, 4]);
    let calico = "Calico-equivalent request sequence (modelled)";

    // Realistic: 100 other hosts claimed blocks in their own probe orders.
    let real = Scenario::new(etcd, "crowd-real", "10.0.0.0/8").await?;
    let mut blocks = Vec::with_capacity(CLAIMED);
    let mut seen = HashSet::new();
    let mut orders: Vec<Candidates> =
        (0..100).map(|h| Candidates::new(pool, 26, &format!("other-{h}"))).collect();
    'fill: loop {
        for order in &mut orders {
            let Some(cidr) = order.next() else { break 'fill };
            if seen.insert(cidr) {
                blocks.push(cidr);
                if blocks.len() == CLAIMED {
                    break 'fill;
                }
            }
        }
    }
    real.preclaim(&blocks).await?;
    settle().await;
    let mut tabby = Samples::default();
    for k in 0..samples(NEWCOMERS) {
        let node = format!("newcomer-{k}");
        real.put_node(&node).await?;
        let (took, trips) =
            first_allocation(&real, &node, &ipam::AllocatorOptions::default()).await?;
        tabby.push(took, trips);
    }
    let mut model = Samples::default();
    for k in 0..samples(NEWCOMERS) {
        let node = format!("calico-newcomer-{k}");
        real.put_node(&node).await?;
        let (took, trips) = modelled_first_allocation(&real, &node).await?;
        model.push(took, trips);
    }
    let realistic = format!("realistic: {CLAIMED} blocks claimed by 100 hosts in their own orders");
    metric("ipam.crowded_p50_ms.realistic", millis(tabby.quantile(0.5)));
    metric("ipam.crowded_max_ms.realistic", millis(tabby.quantile(1.0)));
    metric("ipam.crowded_calico_p50_ms.realistic", millis(model.quantile(0.5)));
    table.row(crowd_row(&realistic, "tabby", &tabby));
    table.row(crowd_row(&realistic, calico, &model));

    // The listing alone, with values and keys only, on the realistic pool.
    let mut listing = Md::new(
        &["read of the block prefix", "keys", "runs", "p50", "etcd round trips"],
        &[1, 2, 3],
    );
    let prefix = real.keys.blocks_prefix(datastore::keys::IpFamily::V4);
    let (mut full, mut keys_only, mut count) = (Samples::default(), Samples::default(), 0);
    for _ in 0..5 {
        let (l, t, r) =
            measure(&real.client, async { Ok(real.client.list(&prefix).await?) }).await?;
        full.push(t, r);
        let (k, t, r) =
            measure(&real.client, async { Ok(real.client.list_keys(&prefix).await?) }).await?;
        keys_only.push(t, r);
        assert_eq!(l.kvs.len(), k.keys.len());
        count = k.keys.len();
    }
    listing.row(vec![
        "`Client::list` (keys and values)".into(),
        count.to_string(),
        "5".into(),
        full.p50(),
        full.trips(),
    ]);
    listing.row(vec![
        "`Client::list_keys` (keys only)".into(),
        count.to_string(),
        "5".into(),
        keys_only.p50(),
        keys_only.trips(),
    ]);

    // Adversarial: the first 10,000 blocks of this host's own order are taken. Each path
    // gets its own pool in that state.
    let defaults = ipam::AllocatorOptions::default();
    let leaps_off = ipam::AllocatorOptions { max_leaps: 0, ..defaults.clone() };
    let (mut tabby, mut listing_only, mut model) =
        (Samples::default(), Samples::default(), Samples::default());
    for k in 0..samples(ADVERSARIAL_RUNS) {
        for path in ["tabby", "list", "calico"] {
            let sc = Scenario::new(etcd, &format!("crowd-adv{k}-{path}"), "10.0.0.0/8").await?;
            let node = format!("unlucky-{k}");
            let own: Vec<IpNet> = Candidates::new(pool, 26, &node).take(CLAIMED).collect();
            sc.preclaim(&own).await?;
            settle().await;
            sc.put_node(&node).await?;
            let (took, trips) = match path {
                "tabby" => first_allocation(&sc, &node, &defaults).await?,
                "list" => first_allocation(&sc, &node, &leaps_off).await?,
                _ => modelled_first_allocation(&sc, &node).await?,
            };
            match path {
                "tabby" => tabby.push(took, trips),
                "list" => listing_only.push(took, trips),
                _ => model.push(took, trips),
            }
        }
    }
    let adversarial = format!("adversarial: this host's first {CLAIMED} candidate blocks taken");
    metric("ipam.crowded_p50_ms.adversarial", millis(tabby.quantile(0.5)));
    metric("ipam.crowded_max_ms.adversarial", millis(tabby.quantile(1.0)));
    metric("ipam.crowded_calico_p50_ms.adversarial", millis(model.quantile(0.5)));
    table.row(crowd_row(&adversarial, "tabby", &tabby));
    table.row(crowd_row(&adversarial, "tabby without leaps (`max_leaps: 0`)", &listing_only));
    table.row(crowd_row(&adversarial, calico, &model));

    println!(
        "### (c) First allocation on a /8 pool with {CLAIMED} blocks claimed by other hosts\n"
    );
    println!(
        "Each run is a fresh host with its own connection; the time covers the whole \
         allocation (reads, block search, claim, write), measured 1 s after the pre-claim \
         writes. tabby probes its candidate blocks {} per round trip; after {} fruitless \
         batches it leaps ahead in its order (doubling, at most {} leaps), then lists the \
         block keys once (`Client::list_keys`) and walks what it has not tried. Without \
         leaps it lists right after the fruitless batches. The modelled Calico sequence \
         lists every block with its value.\n",
        defaults.probe_batch, defaults.probe_batches_before_list, defaults.max_leaps
    );
    println!("{}", table.render());
    println!("{}", listing.render());
    Ok(())
}

/// Lets etcd commit the bulk pre-claim to its backend before anything is measured: in a
/// real cluster those blocks were claimed long before the newcomer arrives.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn crowd_row(state: &str, path: &str, s: &Samples) -> Vec<String> {
    vec![state.into(), path.into(), s.len().to_string(), s.p50(), ms(s.quantile(1.0)), s.trips()]
}

/// tabby's first allocation for `node` on a fresh connection; checks the block is its own.
async fn first_allocation(
    sc: &Scenario,
    node: &str,
    opts: &ipam::AllocatorOptions,
) -> Result<(Duration, u64)> {
    let run = first_allocation_inner(sc, node, opts).await?;
    eprintln!(
        "ipam_bench:   tabby first allocation for {node}: {} ({} round trips)",
        ms(run.0),
        run.1
    );
    Ok(run)
}

async fn first_allocation_inner(
    sc: &Scenario,
    node: &str,
    opts: &ipam::AllocatorOptions,
) -> Result<(Duration, u64)> {
    let client = sc.connect().await?;
    let a = sc.allocator_with(client.clone(), node, opts)?;
    let (r, took, trips) =
        measure(&client, async { Ok(a.assign(&one_v4(format!("net.{node}.eth0"))).await?) })
            .await?;
    let ip = r.v4.first().ok_or("nothing assigned")?.addr();
    let got = a.get_assignment(ip).await?.ok_or("assigned address not found")?;
    assert_eq!(got.block_host.as_deref(), Some(node), "a newcomer must get a block of its own");
    Ok((took, trips))
}

async fn modelled_first_allocation(sc: &Scenario, node: &str) -> Result<(Duration, u64)> {
    let client = sc.connect().await?;
    let model = CalicoModel { client: &client, keys: &sc.keys };
    let handle = format!("net.{node}.eth0");
    let (_, took, trips) = measure(&client, model.assign(node, &handle, &attrs(node))).await?;
    eprintln!(
        "ipam_bench:   modelled first allocation for {node}: {} ({trips} round trips)",
        ms(took)
    );
    Ok((took, trips))
}
