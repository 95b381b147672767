//! What the agent's rules cost a packet: TCP throughput (iperf3), request/response latency
//! and connection rate between two workloads on one host, with no rules, with the tabby
//! ruleset at issue #5's scale, and with the same allow expressed as a linear iptables chain.
//!
//! Each configuration gets its own copy of one topology, built by the CNI plugin's own
//! dataplane code (`cni_plugin::dataplane::setup`: `cali…` veths, /32s behind 169.254.1.1,
//! host routes), so no configuration inherits hooks or conntrack state from another:
//!
//! ```text
//!   client netns (10.64.0.12) ── cali… ── host netns ── cali… ── server netns (10.64.0.11)
//! ```
//!
//! The tabby host is programmed by `NftDataplane` from the model `agent_scale` uses (10,000
//! endpoints, 250 local including these two, 1,000 profiles, 200 policies); the client's
//! egress passes a policy's selector rule and the server's ingress a profile's selector+port
//! rule. The iptables hosts (`iptables-legacy`, x_tables: evaluated rule by rule) have N
//! non-matching `-s <ip>/32 -j ACCEPT` rules in FORWARD before the two that match, with policy
//! DROP; one variant accepts established flows first, as a conntrack-aware chain would.
//! Every configuration is checked to drop a port its rules do not allow before it is timed.
//! Rounds visit the configurations in rotating order so drift in the machine's load hits all.
//!
//!     cargo bench -p agent --bench datapath [-- --quick] [--rounds N] [--seconds S]
//!         [--round-trips N] [--connects N] [--iptables-rules N]
//!
//! Needs root, `iperf3` and `iptables-legacy`. Prints a Markdown table on stdout.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a panic is the report")]

#[allow(dead_code, reason = "shared with agent_scale, which uses the rest")]
#[path = "common/scale.rs"]
mod scale;

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use agent::dataplane::Dataplane;
use agent::host::HostInfo;
use agent::nft_dataplane::NftDataplane;
use agent::plan::PlanConfig;
use cni_plugin::dataplane::{host_veth_name, WorkloadLink};
use scale::{Kvs, Scale, NODE};
use serde_json::{json, Value};
use testkit::bench::{flag, median, metric, percentile, value, Md};
use testkit::Netns;

/// Endpoint indices of the two workloads in the generated model. The server (11: profile
/// `prof-11`, tier `db`, no policy selects `app-11`) admits TCP 5432 from `prof-12` members
/// and 443 from anyone; the client (12: `prof-12`, `app-12`) is selected by policy `pol-6`,
/// whose egress allows traffic to tier `db`.
const SERVER_J: usize = 11;
const CLIENT_J: usize = 12;
/// iperf3 listens here (allowed by the server profile's first rule).
const IPERF_PORT: u16 = 443;
/// The request/response server listens here (the profile's selector + port rule).
const RR_PORT: u16 = 5432;
/// A port no configuration allows: connecting to it must time out (dropped), not be refused.
const CLOSED_PORT: u16 = 6001;
/// Bytes per request and per response.
const MESSAGE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Config {
    NoRules,
    Tabby,
    Iptables { conntrack: bool },
}

impl Config {
    fn label(self, iptables_rules: usize) -> String {
        match self {
            Config::NoRules => "no rules (forwarding only)".into(),
            Config::Tabby => "tabby ruleset (nftables, verdict maps + sets)".into(),
            Config::Iptables { conntrack: false } => {
                format!("linear iptables chain, {iptables_rules} rules")
            }
            Config::Iptables { conntrack: true } => {
                format!("linear iptables chain, {iptables_rules} rules, established accepted first")
            }
        }
    }

    fn key(self) -> &'static str {
        match self {
            Config::NoRules => "none",
            Config::Tabby => "tabby",
            Config::Iptables { conntrack: false } => "iptables",
            Config::Iptables { conntrack: true } => "iptables_ct",
        }
    }
}

struct Opts {
    rounds: usize,
    seconds: u32,
    round_trips: usize,
    connects: usize,
    iptables_rules: usize,
}

/// One client/host/server triple, configured once.
struct Topology {
    config: Config,
    /// Kept so the table stays owned by a live applier for the whole run.
    _dataplane: Option<NftDataplane>,
    setup_note: String,
    iperf: Child,
    server_ip: Ipv4Addr,
    client: Netns,
    _server: Netns,
    _host: Netns,
    throughput: Vec<f64>,
    rr: Vec<Duration>,
    connect_rates: Vec<f64>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = self.iperf.kill();
        let _ = self.iperf.wait();
    }
}

fn main() {
    testkit::require_root();
    let quick = flag("quick");
    let opts = Opts {
        rounds: value("rounds", if quick { 1 } else { 3 }),
        seconds: value("seconds", if quick { 2 } else { 5 }),
        round_trips: value("round-trips", if quick { 5_000 } else { 20_000 }),
        connects: value("connects", if quick { 300 } else { 2_000 }),
        iptables_rules: value("iptables-rules", Scale::ISSUE.endpoints),
    };
    let configs = [
        Config::NoRules,
        Config::Tabby,
        Config::Iptables { conntrack: false },
        Config::Iptables { conntrack: true },
    ];
    let mut topologies: Vec<Topology> = configs
        .iter()
        .map(|&c| {
            eprintln!("datapath: building {}", c.label(opts.iptables_rules));
            Topology::build(c, &opts)
        })
        .collect();

    for round in 0..opts.rounds {
        for k in 0..topologies.len() {
            let t = &mut topologies[(k + round) % configs.len()];
            eprintln!("datapath: round {}/{}: {}", round + 1, opts.rounds, t.config.key());
            t.measure(&opts);
        }
    }
    print_report(&topologies, &opts);
}

impl Topology {
    fn build(config: Config, opts: &Opts) -> Topology {
        let host = Netns::new("dphost");
        let client = Netns::new("dpcli");
        let server = Netns::new("dpsrv");
        host.sh_ok("sysctl -qw net.ipv4.ip_forward=1");
        client.sh_ok("sysctl -qw net.ipv4.tcp_tw_reuse=1");
        let server_ip = endpoint_ip(SERVER_J);
        let client_ip = endpoint_ip(CLIENT_J);
        let server_link = attach(&host, &server, server_ip);
        let client_link = attach(&host, &client, client_ip);

        let mut dataplane = None;
        let setup_note = match config {
            Config::NoRules => String::new(),
            Config::Tabby => {
                let links = [(SERVER_J, &server_link), (CLIENT_J, &client_link)];
                let model = Kvs::new().model(&Scale::ISSUE, |j, v| {
                    if let Some((_, (ifname, mac))) = links.iter().find(|(i, _)| *i == j) {
                        v["spec"]["interfaceName"] = json!(ifname);
                        v["spec"]["mac"] = json!(mac);
                    }
                });
                let config = PlanConfig::new("tabby").expect("config");
                let mut dp = host.enter(|| NftDataplane::with_config(config).expect("dataplane"));
                let started = Instant::now();
                let report = dp.apply(&model, &HostInfo::new(NODE)).expect("apply");
                let took = started.elapsed();
                assert_eq!(report.local_endpoints, Scale::ISSUE.local);
                let (ruleset, _) = dp.plan(&model, &HostInfo::new(NODE));
                dataplane = Some(dp);
                format!(
                    "{} chains, {} rules, {} sets and maps; applied in {:.0} ms",
                    ruleset.chains().len(),
                    ruleset.rule_count(),
                    ruleset.sets().len() + ruleset.maps().len(),
                    took.as_secs_f64() * 1e3
                )
            }
            Config::Iptables { conntrack } => {
                load_iptables(&host, client_ip, server_ip, opts.iptables_rules, conntrack);
                let listed = host.sh_ok("iptables-legacy -S FORWARD | grep -c -- '-j ACCEPT'");
                format!("{} ACCEPT rules in FORWARD, policy DROP", listed.trim())
            }
        };

        let iperf = server
            .command("iperf3")
            .args(["-s", "-p", &IPERF_PORT.to_string(), "-B", &server_ip.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s (is iperf3 installed?)");
        let listener = server.enter(|| TcpListener::bind((server_ip, RR_PORT))).expect("bind");
        std::thread::spawn(move || serve_echo(&listener));
        let topology = Topology {
            config,
            _dataplane: dataplane,
            setup_note,
            iperf,
            server_ip,
            client,
            _server: server,
            _host: host,
            throughput: Vec::new(),
            rr: Vec::new(),
            connect_rates: Vec::new(),
        };
        topology.check_enforced();
        topology
    }

    /// Fails the run unless the allowed port answers and a port outside the rules is dropped
    /// (times out) where rules are loaded, or refused (RST) where there are none.
    fn check_enforced(&self) {
        let closed = SocketAddr::new(IpAddr::V4(self.server_ip), CLOSED_PORT);
        let open = SocketAddr::new(IpAddr::V4(self.server_ip), RR_PORT);
        let (open_result, closed_result) = self.client.enter(|| {
            // The first packet waits for proxy ARP; give it time before judging the rules.
            let open = TcpStream::connect_timeout(&open, Duration::from_secs(3)).map(drop);
            let closed = TcpStream::connect_timeout(&closed, Duration::from_millis(500)).map(drop);
            (open, closed)
        });
        assert!(open_result.is_ok(), "{:?}: allowed port {RR_PORT}: {open_result:?}", self.config);
        let kind = closed_result.expect_err("the closed port has no listener").kind();
        let expected = if self.config == Config::NoRules {
            ErrorKind::ConnectionRefused
        } else {
            ErrorKind::TimedOut
        };
        assert_eq!(kind, expected, "{:?}: port {CLOSED_PORT} should be {expected:?}", self.config);
    }

    fn measure(&mut self, opts: &Opts) {
        self.throughput.push(self.iperf(opts.seconds));
        let addr = SocketAddr::new(IpAddr::V4(self.server_ip), RR_PORT);
        let stream = self.client.enter(|| TcpStream::connect(addr)).expect("connect rr");
        self.rr.extend(round_trips(stream, opts.round_trips));
        let connects = opts.connects;
        let rate = self.client.enter(move || connect_rate(addr, connects));
        self.connect_rates.push(rate);
    }

    /// One iperf3 run; received Gbit/s.
    fn iperf(&self, seconds: u32) -> f64 {
        let mut args = vec![
            "-c".to_string(),
            self.server_ip.to_string(),
            "-p".into(),
            IPERF_PORT.to_string(),
            "-t".into(),
            seconds.to_string(),
            "-J".into(),
        ];
        if seconds >= 3 {
            args.extend(["-O".into(), "1".into()]);
        }
        let out = self.client.run("iperf3", &args);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("iperf3 printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr))
        });
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or_else(|| panic!("iperf3: no end.sum_received in {report}"));
        bps / 1e9
    }
}

/// The address the generator gives endpoint `j` (for the small `j` used here).
fn endpoint_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 64, 0, u8::try_from(j).expect("a small index"))
}

/// Attaches `workload` to `host` as the CNI plugin does; returns the host veth and the
/// workload's MAC (which the ruleset's anti-spoofing rule checks).
fn attach(host: &Netns, workload: &Netns, ip: Ipv4Addr) -> (String, String) {
    let id = testkit::unique_name("dp", 40);
    let link = WorkloadLink {
        host_ifname: host_veth_name(&id, "eth0"),
        container_ifname: "eth0".into(),
        mtu: 1500,
        addresses: vec![IpAddr::V4(ip)],
    };
    let open = |ns: &Netns| cni_plugin::dataplane::Netns::open(&ns.path()).expect("open netns");
    let attached =
        cni_plugin::dataplane::setup(&open(host), &open(workload), &link).expect("veth setup");
    (attached.host_ifname, attached.container_mac)
}

/// FORWARD: optionally established-first, then `rules` non-matching sources, then the two
/// matching allows (client → server ports, and the replies), policy DROP.
fn load_iptables(host: &Netns, client: Ipv4Addr, server: Ipv4Addr, rules: usize, ct: bool) {
    let mut script =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    if ct {
        script.push_str("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n");
    }
    // Remote endpoints' addresses, as a rule per member of a tag would list them.
    for j in 0..rules {
        let j = j + Scale::ISSUE.local;
        let _ = writeln!(
            script,
            "-A FORWARD -s 10.{}.{}.{}/32 -j ACCEPT",
            64 + j / 65_536,
            (j / 256) % 256,
            j % 256
        );
    }
    let ports = format!("{IPERF_PORT},{RR_PORT}");
    let _ = writeln!(
        script,
        "-A FORWARD -s {client}/32 -d {server}/32 -p tcp -m multiport --dports {ports} -j ACCEPT"
    );
    let _ = writeln!(
        script,
        "-A FORWARD -s {server}/32 -d {client}/32 -p tcp -m multiport --sports {ports} -j ACCEPT"
    );
    script.push_str("COMMIT\n");
    let out = host.run_with_stdin(
        "iptables-legacy-restore",
        std::iter::empty::<&str>(),
        script.as_bytes(),
    );
    assert!(
        out.status.success(),
        "iptables-legacy-restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Echoes whatever each connection sends until it closes; one thread per connection.
fn serve_echo(listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut buf = [0u8; MESSAGE];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// `n` request/response round trips of [`MESSAGE`] bytes on one connection (after a short
/// warm-up); their latencies.
fn round_trips(mut stream: TcpStream, n: usize) -> Vec<Duration> {
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let request = [7u8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    let mut one = || {
        let t = Instant::now();
        stream.write_all(&request).expect("rr write");
        stream.read_exact(&mut reply).expect("rr read");
        t.elapsed()
    };
    for _ in 0..n / 20 {
        one();
    }
    (0..n).map(|_| one()).collect()
}

/// Connections per second: connect, one byte each way, close; `n` times in a row.
fn connect_rate(addr: SocketAddr, n: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.write_all(&[1]).expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("read");
    }
    #[allow(clippy::cast_precision_loss, reason = "a count of connections")]
    let rate = n as f64 / started.elapsed().as_secs_f64();
    rate
}

fn print_report(topologies: &[Topology], opts: &Opts) {
    let base = &topologies[0];
    let base_gbps = median_f64(&base.throughput);
    let base_rr = median(&base.rr);
    let base_cps = median_f64(&base.connect_rates);
    let mut table = Md::new(
        &[
            "configuration",
            "Gbit/s (median)",
            "× no rules",
            "RR p50 µs",
            "RR p99 µs",
            "RR p50 × no rules",
            "connects/s",
            "× no rules",
        ],
        &[1, 2, 3, 4, 5, 6, 7],
    );
    for t in topologies {
        let gbps = median_f64(&t.throughput);
        let p50 = median(&t.rr);
        let p99 = percentile(&t.rr, 99.0);
        let cps = median_f64(&t.connect_rates);
        let key = t.config.key();
        metric(&format!("datapath.gbps.{key}"), gbps);
        metric(&format!("datapath.rr_p50_us.{key}"), micros(p50));
        metric(&format!("datapath.rr_p99_us.{key}"), micros(p99));
        metric(&format!("datapath.connects_per_s.{key}"), cps);
        metric(&format!("datapath.gbps_ratio.{key}"), gbps / base_gbps);
        table.row(vec![
            t.config.label(opts.iptables_rules),
            format!("{gbps:.2}"),
            format!("{:.2}", gbps / base_gbps),
            format!("{:.1}", micros(p50)),
            format!("{:.1}", micros(p99)),
            format!("{:.2}", p50.as_secs_f64() / base_rr.as_secs_f64()),
            format!("{cps:.0}"),
            format!("{:.2}", cps / base_cps),
        ]);
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut command = "cargo bench -p agent --bench datapath".to_string();
    if !args.is_empty() {
        let _ = write!(command, " -- {}", args.join(" "));
    }
    println!("\n## datapath\n");
    println!(
        "Two workloads on one host, forwarded through the host namespace. {} rounds, configurations \
         in rotating order; per round: iperf3 TCP {} s, {} round trips of {MESSAGE} bytes, {} \
         connects (connect, 1 byte each way, close). Gbit/s and connects/s are medians over \
         rounds; RR percentiles pool every round.\n",
        opts.rounds, opts.seconds, opts.round_trips, opts.connects
    );
    println!("{}", table.render());
    for t in topologies.iter().filter(|t| !t.setup_note.is_empty()) {
        println!("- {}: {}", t.config.label(opts.iptables_rules), t.setup_note);
    }
    println!("\nCommand (as root): `{command}`");
}

fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
