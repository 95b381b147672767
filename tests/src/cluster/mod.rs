//! A simulated multi-host cluster: a "fabric" namespace with a bridge where etcd runs, one
//! namespace per host joined to the bridge by a veth (default route via the fabric), a real
//! `tabby-agent` per host, and workloads attached by the real CNI plugin.
//!
//! ```text
//!  fabric netns: br0 10.250.N.1/24, etcd on 10.250.N.1
//!     ├── veth ── host-a netns: eth0 10.250.N.11/24, default via .1, tabby-agent, cali… ── workloads
//!     └── veth ── host-b netns: eth0 10.250.N.12/24, default via .1, tabby-agent, cali… ── workloads
//! ```
//!
//! Every address lives in a namespace the cluster made, so clusters never collide with each
//! other or with the machine; the per-cluster subnets differ anyway, to keep logs readable.
//! Dropping the cluster (also while panicking) detaches the workloads with CNI DEL, stops the
//! agents, deletes every namespace and stops etcd.

mod host;
mod many;
mod routing;
mod workload;

pub use host::{normalized_ruleset, Agent, Host, METRICS_PORT, NFT_TABLE};
pub use many::{spread, AttachReport, Fleet, WorkloadSpec};
pub use routing::{Bird, Outside, BIRD, BIRDC};
pub use workload::{Endpoint, Workload, IFNAME};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use testkit::{Etcd, Netns};

use crate::netns::nsenter;
use crate::process::{run, Ran};
use workload::CniContext;

/// The etcd prefix every component is pointed at.
pub const ETCD_PREFIX: &str = "/calico";
/// How long a `tabbyctl` call may take.
const CTL_TIMEOUT: Duration = Duration::from_secs(20);

/// Hands out per-cluster subnet numbers within this process.
static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

/// Options for a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    hosts: usize,
    agents: bool,
    settings: BTreeMap<String, String>,
    ports: Vec<u16>,
    bgp: bool,
    subnet_per_host: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            hosts: 2,
            agents: true,
            settings: BTreeMap::new(),
            ports: crate::scenario::PORTS.to_vec(),
            bgp: false,
            subnet_per_host: false,
        }
    }
}

impl ClusterBuilder {
    /// Number of hosts (default 2, at most 26).
    pub fn hosts(mut self, n: usize) -> Self {
        assert!((1..=26).contains(&n), "a cluster has 1 to 26 hosts, not {n}");
        self.hosts = n;
        self
    }

    /// Whether to start an agent on every host (default yes).
    pub fn agents(mut self, on: bool) -> Self {
        self.agents = on;
        self
    }

    /// The agent's full dataplane resync period (`resync_interval`).
    pub fn resync_interval(self, every: Duration) -> Self {
        self.agent_setting("resync_interval", &format!("\"{}s\"", every.as_secs().max(1)))
    }

    /// `default_endpoint_to_host_action`: `Drop` (the agent's default), `Accept` or `Return`.
    pub fn endpoint_to_host_action(self, action: &str) -> Self {
        self.agent_setting("default_endpoint_to_host_action", &format!("\"{action}\""))
    }

    /// Any agent setting: its TOML key (dotted for a section, `etcd.prefix`) and a value in
    /// TOML syntax (`"5s"`, `true`).
    pub fn agent_setting(mut self, key: &str, toml_value: &str) -> Self {
        self.settings.insert(key.to_string(), toml_value.to_string());
        self
    }

    /// Agents run BGP: each writes its BIRD config and socket path into its host's directory
    /// (start BIRD with [`Host::start_bird`]).
    pub fn bgp(mut self, on: bool) -> Self {
        self.bgp = on;
        self
    }

    /// Each host on a subnet of its own (`10.(250+i).N.0/24`, at most 5 hosts), the fabric
    /// routing between them like a router that knows only the hosts' subnets.
    pub fn subnet_per_host(mut self, on: bool) -> Self {
        self.subnet_per_host = on;
        self
    }

    /// The TCP ports every workload's echo server answers on (default [`crate::scenario::PORTS`]).
    pub fn serve_ports(mut self, ports: &[u16]) -> Self {
        self.ports = ports.to_vec();
        self
    }

    /// Builds the fabric, etcd, the hosts and the IP pool, and starts the agents (without
    /// waiting for them to be ready: see [`Cluster::wait_ready`]).
    pub fn start(self) -> Cluster {
        testkit::require_root();
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        // Mixing in the pid keeps concurrent test binaries' logs apart; correctness does not
        // depend on it, since each cluster's addresses live only in its own namespaces.
        let index = (std::process::id() % 61 * 4 + n) % 250 + 1;
        let subnet = Ipv4Addr::new(10, 250, index as u8, 0);
        let fabric_ip = Ipv4Addr::new(10, 250, index as u8, 1);
        let pool = format!("10.{}.0.0/16", 20 + index % 200);
        let dir = tempfile::Builder::new()
            .prefix("tabby-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create the cluster's temp dir: {e}"));

        let fabric = Netns::new("fabric");
        fabric.ip_ok(["link", "add", "br0", "type", "bridge"]);
        fabric.ip_ok(["addr", "add", &format!("{fabric_ip}/24"), "dev", "br0"]);
        fabric.ip_ok(["link", "set", "br0", "up"]);

        let mut hosts = Vec::with_capacity(self.hosts);
        for i in 0..self.hosts {
            let letter = char::from(b'a' + i as u8);
            let name = format!("host-{letter}");
            let (ip, gateway) = if self.subnet_per_host {
                assert!(self.hosts <= 5, "a subnet per host allows at most 5 hosts");
                let second = 250 + i as u8;
                let gateway = Ipv4Addr::new(10, second, index as u8, 1);
                if i > 0 {
                    fabric.ip_ok(["addr", "add", &format!("{gateway}/24"), "dev", "br0"]);
                }
                (Ipv4Addr::new(10, second, index as u8, 11 + i as u8), gateway)
            } else {
                (Ipv4Addr::new(10, 250, index as u8, 11 + i as u8), fabric_ip)
            };
            let netns = Netns::new(&format!("host{letter}"));
            let veth = format!("h{letter}");
            plug_into_fabric(&fabric, &veth, &netns, ip);
            netns.ip_ok(["route", "add", "default", "via", &gateway.to_string()]);
            let forwarding = run(
                nsenter(&netns.path(), "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]),
                None,
                Duration::from_secs(5),
            );
            assert!(forwarding.success(), "{name}: {}", forwarding.describe());
            let host_dir = dir.path().join(&name);
            std::fs::create_dir_all(&host_dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", host_dir.display()));
            hosts.push(Host::new(name, ip, host_dir, netns));
        }

        if self.subnet_per_host {
            let forwarding = run(
                nsenter(&fabric.path(), "sysctl").args(["-qw", "net.ipv4.ip_forward=1"]),
                None,
                Duration::from_secs(5),
            );
            assert!(forwarding.success(), "fabric: {}", forwarding.describe());
        }
        let etcd = Etcd::builder().netns(fabric.name()).listen_ip(IpAddr::V4(fabric_ip)).start();
        let mut cluster = Cluster {
            workloads: Vec::new(),
            hosts,
            etcd,
            fabric,
            subnet,
            fabric_ip,
            pool,
            ports: self.ports,
            dir,
        };
        for host in &mut cluster.hosts {
            let mut settings = BTreeMap::new();
            settings.insert("nodename".into(), quote(host.name()));
            // The agent writes its node name here for the CNI plugin; the default path is
            // shared by every host on the machine.
            settings.insert(
                "nodename_file".into(),
                quote(&host.dir().join("nodename").to_string_lossy()),
            );
            settings.insert("log_level".into(), quote("info"));
            settings.insert("metrics_addr".into(), quote(&host.metrics_addr().to_string()));
            settings.insert("status_interval".into(), quote("2s"));
            settings
                .insert("etcd.endpoints".into(), format!("[{}]", quote(&cluster.etcd.endpoint())));
            settings.insert("etcd.prefix".into(), quote(ETCD_PREFIX));
            if self.bgp {
                settings.insert("bgp.enabled".into(), "true".into());
                let config = host.bird_config_path();
                settings.insert("bgp.bird_config".into(), quote(&config.to_string_lossy()));
                let socket = host.bird_socket_path();
                settings.insert("bgp.bird_socket".into(), quote(&socket.to_string_lossy()));
                settings.insert("bgp.birdc".into(), quote(BIRDC));
            }
            settings.extend(self.settings.clone());
            host.set_settings(settings);
        }
        cluster.create_pool();
        if self.agents {
            for host in &mut cluster.hosts {
                host.start_agent();
            }
        }
        cluster
    }
}

/// A TOML string literal.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A running simulated cluster; see the module docs.
#[derive(Debug)]
pub struct Cluster {
    /// Detached and dropped first, in `Drop`.
    workloads: Vec<Workload>,
    hosts: Vec<Host>,
    etcd: Etcd,
    fabric: Netns,
    subnet: Ipv4Addr,
    fabric_ip: Ipv4Addr,
    pool: String,
    ports: Vec<u16>,
    /// Deleted last: configs and logs.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Options for a cluster.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The fabric subnet (`10.250.N.0/24`).
    pub fn subnet(&self) -> String {
        format!("{}/24", self.subnet)
    }

    /// The bridge's address, where etcd listens.
    pub fn fabric_ip(&self) -> Ipv4Addr {
        self.fabric_ip
    }

    /// The fabric namespace (etcd runs there; `tabbyctl` is run there).
    pub fn fabric(&self) -> &Netns {
        &self.fabric
    }

    /// The IP pool's CIDR.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    pub fn etcd_mut(&mut self) -> &mut Etcd {
        &mut self.etcd
    }

    /// etcd's client URL (reachable from the fabric and every host).
    pub fn etcd_endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// The directory holding configs and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn host(&self, index: usize) -> &Host {
        &self.hosts[index]
    }

    pub fn host_mut(&mut self, index: usize) -> &mut Host {
        &mut self.hosts[index]
    }

    /// The host with node name `name`.
    pub fn host_named(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name() == name)
            .unwrap_or_else(|| panic!("no host named {name}"))
    }

    /// Attaches a workload named `name` to `network` on host `host` through CNI ADD, with
    /// echo servers on the cluster's ports; returns its probe view.
    pub fn add_workload(&mut self, host: usize, network: &str, name: &str) -> Endpoint {
        assert!(
            self.workloads.iter().all(|w| w.name() != name),
            "a workload named {name} already exists"
        );
        let ctx = self.cni_context(host);
        let workload = Workload::attach(&ctx, host, name, network, &self.ports);
        let endpoint = workload.endpoint();
        self.workloads.push(workload);
        endpoint
    }

    /// Detaches a workload through CNI DEL and deletes its namespace; panics if DEL fails.
    pub fn remove_workload(&mut self, name: &str) {
        let index = self
            .workloads
            .iter()
            .position(|w| w.name() == name)
            .unwrap_or_else(|| panic!("no workload named {name}"));
        let mut workload = self.workloads.remove(index);
        let ctx = self.cni_context(workload.host_index);
        let ran = workload.detach(&ctx);
        assert!(ran.success(), "CNI DEL of {name} failed: {}", ran.describe());
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The workload named `name`.
    pub fn workload(&self, name: &str) -> &Workload {
        self.workloads
            .iter()
            .find(|w| w.name() == name)
            .unwrap_or_else(|| panic!("no workload named {name}"))
    }

    /// Probe views of the named workloads, in that order.
    pub fn endpoints(&self, names: &[&str]) -> Vec<Endpoint> {
        names.iter().map(|n| self.workload(n).endpoint()).collect()
    }

    /// Probe views of every workload.
    pub fn all_endpoints(&self) -> Vec<Endpoint> {
        self.workloads.iter().map(Workload::endpoint).collect()
    }

    fn cni_context(&self, host: usize) -> CniContext {
        let host = &self.hosts[host];
        CniContext {
            host_netns: host.path(),
            nodename: host.name().to_string(),
            etcd_endpoint: self.etcd.endpoint(),
            etcd_prefix: ETCD_PREFIX.to_string(),
            log_file: self.dir.path().join("cni.log"),
            lock_file: host.dir().join("ipam.lock"),
        }
    }

    /// The CNI plugin's log (every call of this cluster).
    pub fn cni_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cni.log")).unwrap_or_default()
    }

    /// Runs `tabbyctl --etcd-endpoints … args…` in the fabric namespace, with `stdin`.
    pub fn tabbyctl_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Ran {
        run(
            nsenter(&self.fabric.path(), crate::bins::bin(crate::bins::TABBYCTL))
                .arg("--etcd-endpoints")
                .arg(self.etcd.endpoint())
                .arg("--etcd-prefix")
                .arg(ETCD_PREFIX)
                .args(args),
            stdin,
            CTL_TIMEOUT,
        )
    }

    /// Runs `tabbyctl args…` (see [`Cluster::tabbyctl_with`]).
    pub fn tabbyctl(&self, args: &[&str]) -> Ran {
        self.tabbyctl_with(args, None)
    }

    /// Runs `tabbyctl args…` and panics unless it succeeds; returns its stdout.
    pub fn tabbyctl_ok(&self, args: &[&str]) -> String {
        self.tabbyctl(args).ok()
    }

    /// `tabbyctl apply -f -` of one resource.
    pub fn apply(&self, resource: &serde_json::Value) -> String {
        self.tabbyctl_with(&["apply", "-f", "-"], Some(resource.to_string().as_bytes())).ok()
    }

    /// Writes `value` at `key` with etcdctl, bypassing every validation (for bad-input tests).
    pub fn etcd_put(&self, key: &str, value: &str) {
        let out: Output = self.etcd.etcdctl(["put", key, value]);
        assert!(
            out.status.success(),
            "etcdctl put {key} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ipamctl args…` against this cluster's etcd, in the fabric namespace.
    pub fn ipamctl(&self, args: &[&str]) -> Ran {
        run(
            nsenter(&self.fabric.path(), crate::bins::bin(crate::bins::IPAMCTL))
                .arg("--etcd-endpoints")
                .arg(self.etcd.endpoint())
                .arg("--etcd-prefix")
                .arg(ETCD_PREFIX)
                .args(args),
            None,
            CTL_TIMEOUT,
        )
    }

    fn create_pool(&self) {
        self.set_pool_routing("Never", false);
    }

    /// Waits until every running agent answers 200 on `/readyz`; panics after `timeout` with
    /// each agent's last answer and log tail.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let started = Instant::now();
        let seen = crate::wait::poll(timeout, || {
            let mut not_ready = Vec::new();
            for host in &mut self.hosts {
                if host.agent().is_none() {
                    continue;
                }
                if !host.agent_running() {
                    let status = host.agent().and_then(Agent::exit_status);
                    return Err(format!("{}: tabby-agent exited ({status:?})", host.name()));
                }
                match host.http_get("/readyz") {
                    Ok((200, _)) => {}
                    Ok((status, body)) => {
                        not_ready.push(format!(
                            "{}: /readyz {status} {}",
                            host.name(),
                            body.trim()
                        ));
                    }
                    Err(e) => not_ready.push(format!("{}: /readyz: {e}", host.name())),
                }
            }
            if not_ready.is_empty() {
                Ok(())
            } else {
                Err(not_ready.join("\n"))
            }
        });
        if let Err(seen) = seen {
            let logs: Vec<String> = self
                .hosts
                .iter()
                .map(|h| format!("--- {} agent log (tail) ---\n{}", h.name(), h.agent_log_tail(30)))
                .collect();
            panic!(
                "agents not ready after {:.1?}:\n{seen}\n{}",
                started.elapsed(),
                logs.join("\n")
            );
        }
    }

    /// Restarts every running agent (SIGTERM, then start with the current settings).
    pub fn restart_agents(&mut self) {
        for host in &mut self.hosts {
            host.restart_agent();
        }
    }

    /// Agent log tails and the CNI log tail, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for host in self.hosts.iter().filter(|h| h.log_path().exists()) {
            let _ = writeln!(
                out,
                "--- {} ({}) agent log, last 40 lines ---\n{}",
                host.name(),
                host.ip(),
                host.agent_log_tail(40)
            );
        }
        let cni = self.cni_log();
        let lines: Vec<&str> = cni.lines().collect();
        let _ = writeln!(
            out,
            "--- CNI plugin log, last 20 lines ---\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() && !crate::cancel::requested() {
            eprintln!("cluster {} failed; diagnostics:\n{}", self.subnet(), self.diagnostics());
        }
        // CNI DEL needs etcd; with etcd stopped (a test failed during an outage) the
        // namespaces' deletion below still removes every link and route.
        let etcd_up = self.etcd.is_running();
        while let Some(mut workload) = self.workloads.pop() {
            if etcd_up {
                let ctx = self.cni_context(workload.host_index);
                let ran = workload.detach(&ctx);
                if !ran.success() {
                    eprintln!("cleanup: CNI DEL of {} failed: {}", workload.name(), ran.describe());
                }
            }
        }
        // Each agent may take a moment to exit on SIGTERM; stop them side by side.
        std::thread::scope(|scope| {
            for host in &mut self.hosts {
                scope.spawn(move || host.stop_agent());
            }
        });
        // Hosts (their namespaces), etcd, the fabric and the temp dir go in field order.
    }
}

/// Joins `netns` to the fabric bridge: `veth` on the fabric, `eth0` with `ip`/24 inside, both
/// up.
pub(crate) fn plug_into_fabric(fabric: &Netns, veth: &str, netns: &Netns, ip: Ipv4Addr) {
    // `name` keeps `ip` from reading a short name as a keyword (`he` is `help`).
    let add = ["link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns"];
    let mut args: Vec<&str> = add.to_vec();
    args.push(netns.name());
    fabric.ip_ok(args);
    fabric.ip_ok(["link", "set", "dev", veth, "master", "br0", "up"]);
    netns.ip_ok(["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    netns.ip_ok(["link", "set", "dev", "eth0", "up"]);
}
