//! `docker run` on a tabby network against Docker's own `bridge`, on one dockerd: the time
//! from `docker run -d` to a running container whose interface is configured (libnetwork
//! sets the interface up before the process starts, so `run -d` returning is that moment;
//! the address is checked afterwards, untimed). Prints p50 and p99 of 20 runs each as a
//! markdown table.
//!
//! Run (as root, after `cargo build -p agent -p ctl -p cni-plugin`):
//! `cargo bench -p tests --bench docker_run`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tests::docker::{Dockerd, IMAGE, PLUGIN_DIR};
use tests::Cluster;

const RUNS: usize = 20;
const WARMUP: usize = 2;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Starts one container on `net`, returns how long `docker run -d` took.
fn one_run(d: &Dockerd, net: &str, name: &str) -> Duration {
    let started = Instant::now();
    d.docker_ok(&["run", "-d", "--name", name, "--net", net, IMAGE, "sleep", "600"]);
    let took = started.elapsed();
    let addr = d.docker_ok(&["exec", name, "ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("inet "), "{name} on {net} has no address: {addr}");
    d.docker_ok(&["rm", "-f", name]);
    took
}

fn main() {
    testkit::require_root();
    let unique = testkit::unique_name("b", 10).replace('_', "-").to_ascii_lowercase();
    let driver = format!("tabby-{unique}");
    let sockets: Vec<PathBuf> = [format!("{driver}.sock"), format!("{driver}-ipam.sock")]
        .iter()
        .map(|s| PathBuf::from(PLUGIN_DIR).join(s))
        .collect();
    let mut cluster = Cluster::builder().hosts(1).agents(false).start();
    {
        let host = cluster.host_mut(0);
        host.set_setting("docker.enabled", "true");
        host.set_setting("docker.socket_dir", &format!("{PLUGIN_DIR:?}"));
        host.set_setting("docker.driver_name", &format!("{driver:?}"));
        host.set_setting("log_level", "\"warn\"");
        host.start_agent();
    }
    cluster.wait_ready(Duration::from_secs(30));
    let dockerd = Dockerd::start(&cluster.host(0).path(), &cluster.dir().join("dockerd"), true);
    let subnet = cluster.pool().to_owned();
    dockerd.docker_ok(&[
        "network",
        "create",
        "--driver",
        &driver,
        "--ipam-driver",
        &format!("{driver}-ipam"),
        "--subnet",
        &subnet,
        "-o",
        "network=tabbynet",
        "tabbynet",
    ]);

    let nets = ["tabbynet", "bridge"];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); nets.len()];
    for i in 0..WARMUP + RUNS {
        // Alternate, so drift in the machine's load hits both alike.
        for (k, net) in nets.iter().enumerate() {
            let took = one_run(&dockerd, net, &format!("bench-{net}-{i}"));
            if i >= WARMUP {
                times[k].push(took);
            }
        }
    }
    println!("| network | runs | p50 | p99 |");
    println!("| --- | --- | --- | --- |");
    for (k, net) in nets.iter().enumerate() {
        let mut t = times[k].clone();
        t.sort_unstable();
        println!(
            "| `docker run --net {net}` | {} | {:.0} ms | {:.0} ms |",
            t.len(),
            percentile(&t, 50.0).as_secs_f64() * 1000.0,
            percentile(&t, 99.0).as_secs_f64() * 1000.0,
        );
    }
    dockerd.docker_ok(&["network", "rm", "tabbynet"]);
    drop(dockerd);
    drop(cluster);
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
}
