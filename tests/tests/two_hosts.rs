//! The agent's "Must show", black box: two simulated hosts, a real etcd, a real `tabby-agent`
//! per host, workloads attached by the real CNI plugin, the operators' profiles applied with
//! `tabbyctl`, and verdicts measured with real packets. Each test builds its own cluster
//! (unique namespaces and subnets) and every wait is bounded.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::cluster::{Endpoint, NFT_TABLE};
use tests::netns::nsenter;
use tests::probe::{all_pairs, EchoClient, EchoServer, Matrix, Outcome, Service, UdpSink};
use tests::process::run;
use tests::{scenario, wait, Cluster};

/// Agents report ready within this.
const READY: Duration = Duration::from_secs(20);
/// A change in etcd shows in the dataplane within this.
const CONVERGE: Duration = Duration::from_secs(15);
/// Port of the UDP sinks in the spoofing tests.
const UDP_PORT: u16 = 7007;

/// Every ordered pair of the scenario's workloads.
fn scenario_pairs(endpoints: &[Endpoint]) -> Vec<(Endpoint, Endpoint)> {
    all_pairs(endpoints)
}

/// The scenario plus one extra allowed flow.
fn scenario_plus(
    extra: impl Fn(&Endpoint, &Endpoint, Service) -> bool + Sync,
) -> impl Fn(&Endpoint, &Endpoint, Service) -> bool + Sync {
    move |from, to, service| scenario::allowed(from, to, service) || extra(from, to, service)
}

#[test]
fn scenario_matrix_holds_across_and_within_hosts() {
    let (cluster, endpoints) = scenario::start(Cluster::builder(), READY);
    let pairs = scenario_pairs(&endpoints);
    assert!(pairs.iter().any(|(a, b)| a.host == b.host), "no same-host pair");
    assert!(pairs.iter().any(|(a, b)| a.host != b.host), "no cross-host pair");
    let services = scenario::services();
    let matrix = Matrix::assert_eventually(
        "the operators' scenario",
        &pairs,
        &services,
        &scenario::allowed,
        CONVERGE,
    );
    // Blocked traffic is dropped (DESIGN: "traffic that no profile or policy accepts
    // dropped"), so a blocked probe times out; a RST or an unreachable would be a reject.
    let not_dropped: Vec<String> = matrix
        .cells()
        .filter(|(_, _, _, got)| !got.passed() && **got != Outcome::TimedOut)
        .map(|(from, to, service, got)| format!("{} → {} {service}: {got}", from.name, to.name))
        .collect();
    assert!(not_dropped.is_empty(), "blocked traffic was not dropped:\n{}", not_dropped.join("\n"));
    // And it stays that way.
    Matrix::measure(&pairs, &services)
        .assert_matches("the scenario, measured a second time", &scenario::allowed);
    drop(cluster);
}

#[test]
fn workloads_on_different_hosts_reach_each_other_through_agent_routes() {
    let mut cluster = Cluster::builder().start();
    let web_a = cluster.add_workload(0, "web", "web-a");
    let web_b = cluster.add_workload(1, "web", "web-b");
    cluster.wait_ready(READY);
    for (host, remote, via) in
        [(0, &web_b, cluster.host(1).ip()), (1, &web_a, cluster.host(0).ip())]
    {
        let host = cluster.host(host);
        wait::until(
            &format!("{}: a route to {} via {via}", host.name(), remote.ip),
            CONVERGE,
            || {
                let route = host.sh(&format!("ip -4 route get {}", remote.ip)).stdout;
                if route.contains(&format!("via {via}")) {
                    Ok(())
                } else {
                    Err(route)
                }
            },
        );
        let blackholes = host.sh("ip -4 route show type blackhole").ok();
        assert!(
            !blackholes.trim().is_empty(),
            "{}: no blackhole route for its own block",
            host.name()
        );
    }
    // The classic default profile of `web` accepts everything from `web`.
    Matrix::assert_eventually(
        "web-a ↔ web-b across hosts",
        &all_pairs(&[web_a, web_b]),
        &[Service::Tcp(80), Service::Tcp(8080), Service::Icmp],
        &|_, _, _| true,
        CONVERGE,
    );
}

#[test]
fn profile_changes_in_etcd_change_verdicts_without_restarts() {
    let (mut cluster, endpoints) = scenario::start(Cluster::builder(), READY);
    let pairs = scenario_pairs(&endpoints);
    let services = scenario::services();
    Matrix::assert_eventually("the scenario", &pairs, &services, &scenario::allowed, CONVERGE);
    let pids: Vec<u32> =
        (0..2).map(|i| cluster.host_mut(i).agent().expect("agent running").pid()).collect();

    // A new rule: web may reach mysqldb on 3306.
    cluster.tabbyctl_ok(&[
        "profile", "mysqldb", "rule", "add", "inbound", "allow", "tcp", "from", "tag", "web", "to",
        "ports", "3306",
    ]);
    let web_to_db = scenario_plus(|from, to, service| {
        from.network == "web" && to.network == "mysqldb" && service == Service::Tcp(3306)
    });
    Matrix::assert_eventually(
        "after allowing web → mysqldb:3306",
        &pairs,
        &services,
        &web_to_db,
        CONVERGE,
    );

    // A removed rule: web is no longer open to everyone on 80 and 443.
    cluster.tabbyctl_ok(&[
        "profile", "web", "rule", "remove", "inbound", "allow", "tcp", "to", "ports", "80,443",
    ]);
    let web_closed = |from: &Endpoint, to: &Endpoint, service: Service| {
        if to.network == "web" {
            from.network == "web"
        } else {
            web_to_db(from, to, service)
        }
    };
    Matrix::assert_eventually(
        "after closing web's 80/443",
        &pairs,
        &services,
        &web_closed,
        CONVERGE,
    );

    // A removed tag: app endpoints lose the db-users label, so mysqldb refuses them.
    cluster.tabbyctl_ok(&["profile", "app", "tag", "remove", "db-users"]);
    let untagged = |from: &Endpoint, to: &Endpoint, service: Service| {
        !(from.network == "app" && to.network == "mysqldb") && web_closed(from, to, service)
    };
    Matrix::assert_eventually(
        "after removing app's db-users tag",
        &pairs,
        &services,
        &untagged,
        CONVERGE,
    );

    for (i, pid) in pids.into_iter().enumerate() {
        let host = cluster.host_mut(i);
        let name = host.name().to_string();
        let agent = host.agent().expect("agent still there");
        assert!(agent.is_running(), "the agent on {name} exited");
        assert_eq!(agent.pid(), pid, "the agent on {name} was restarted");
    }
}

#[test]
fn icmp_echo_from_one_address_is_refused_while_others_pass() {
    let (cluster, endpoints) = scenario::start(Cluster::builder(), READY);
    // Everyone → both web workloads, by ping and on port 80.
    let pairs: Vec<_> =
        all_pairs(&endpoints).into_iter().filter(|(_, to)| to.network == "web").collect();
    let services = [Service::Icmp, Service::Tcp(80)];
    Matrix::assert_eventually("the scenario", &pairs, &services, &scenario::allowed, CONVERGE);

    cluster
        .tabbyctl_ok(&["profile", "web", "rule", "add", "inbound", "allow", "icmp", "type", "8"]);
    let pingable =
        scenario_plus(|_, to: &Endpoint, service| to.network == "web" && service == Service::Icmp);
    Matrix::assert_eventually(
        "after allowing echo requests to web",
        &pairs,
        &services,
        &pingable,
        CONVERGE,
    );

    let banned = cluster.workload("app-b").ip();
    cluster.tabbyctl_ok(&[
        "profile",
        "web",
        "rule",
        "add",
        "inbound",
        "--at=1",
        "deny",
        "icmp",
        "type",
        "8",
        "from",
        "cidr",
        &format!("{banned}/32"),
    ]);
    let expect = |from: &Endpoint, to: &Endpoint, service: Service| {
        if from.ip == banned && service == Service::Icmp {
            false
        } else {
            pingable(from, to, service)
        }
    };
    let matrix = Matrix::assert_eventually(
        &format!("after denying echo requests from {banned}"),
        &pairs,
        &services,
        &expect,
        CONVERGE,
    );
    // The ban is on echo requests only: app-b still reaches web on port 80.
    assert_eq!(matrix.outcome("app-b", "web-a", Service::Tcp(80)), Some(&Outcome::Connected));
}

/// The source address `sink` sees for datagrams from the namespace at `src` sent from `from`
/// (or the default source), or `None` when none arrives.
fn deliver(src: &Path, from: Option<Ipv4Addr>, to: &Endpoint, sink: &UdpSink) -> Option<Ipv4Addr> {
    sink.delivery(src, from).unwrap_or_else(|e| panic!("UDP to {} failed: {e}", to.name))
}

/// A scenario cluster with the policy programmed (web → app allowed, app → app blocked) and UDP
/// sinks on app-a (same host as web-a) and app-b (the other host).
fn spoofing_setup() -> (Cluster, Vec<(Endpoint, UdpSink)>) {
    let (cluster, _) = scenario::start(Cluster::builder(), READY);
    let [web_a, app_a, app_b] = ["web-a", "app-a", "app-b"].map(|n| cluster.workload(n).endpoint());
    Matrix::assert_eventually(
        "the scenario between web-a, app-a and app-b",
        &[(web_a.clone(), app_a.clone()), (web_a, app_b.clone()), (app_a.clone(), app_b.clone())],
        &[Service::Tcp(8080)],
        &scenario::allowed,
        CONVERGE,
    );
    let sinks = [app_a, app_b]
        .into_iter()
        .map(|ep| {
            let sink = UdpSink::bind(&ep.netns, ep.ip, UDP_PORT).expect("bind UDP sink");
            (ep, sink)
        })
        .collect();
    (cluster, sinks)
}

#[test]
fn a_workload_cannot_spoof_its_source_address() {
    let (cluster, sinks) = spoofing_setup();
    let web_a = cluster.workload("web-a");
    let victim = cluster.workload("web-b").ip();
    for (to, sink) in &sinks {
        assert_eq!(
            deliver(&web_a.netns().path(), None, to, sink),
            Some(web_a.ip()),
            "control: web-a's own datagrams must reach {} (app accepts everything from web)",
            to.name
        );
    }
    // web-a claims web-b's address, which the app profile would accept.
    web_a.sh(&format!("ip addr add {victim}/32 dev eth0")).ok();
    for (to, sink) in &sinks {
        let seen = deliver(&web_a.netns().path(), Some(victim), to, sink);
        assert_eq!(seen, None, "web-a spoofing {victim} reached {} ({})", to.name, to.host);
    }
    for (to, sink) in &sinks {
        assert_eq!(
            deliver(&web_a.netns().path(), None, to, sink),
            Some(web_a.ip()),
            "control after"
        );
    }
}

#[test]
fn a_workload_cannot_spoof_its_mac_address() {
    let (cluster, sinks) = spoofing_setup();
    let web_a = cluster.workload("web-a");
    let path = web_a.netns().path();
    for (to, sink) in &sinks {
        assert_eq!(
            deliver(&path, None, to, sink),
            Some(web_a.ip()),
            "control: web-a → {}",
            to.name
        );
    }
    let original = web_a.mac();
    web_a.set_mac("02:00:00:00:99:01");
    for (to, sink) in &sinks {
        let seen = deliver(&path, None, to, sink);
        assert_eq!(seen, None, "web-a with a spoofed MAC reached {} ({})", to.name, to.host);
    }
    web_a.set_mac(&original);
    for (to, sink) in &sinks {
        assert_eq!(
            deliver(&path, None, to, sink),
            Some(web_a.ip()),
            "with its own MAC back, web-a must reach {} again",
            to.name
        );
    }
}

/// web-a and db-a on host-a, web-b on host-b, an echo server on port 80 of host-a itself.
/// With the classic default profiles mysqldb accepts only mysqldb, so web-a → db-a is blocked
/// once the agent programs anything.
fn host_access(cluster: &mut Cluster) -> (Vec<(Endpoint, Endpoint)>, EchoServer) {
    let web_a = cluster.add_workload(0, "web", "web-a");
    let db_a = cluster.add_workload(0, "mysqldb", "db-a");
    let web_b = cluster.add_workload(1, "web", "web-b");
    cluster.wait_ready(READY);
    let (host_a, host_b) = (cluster.host(0).endpoint(), cluster.host(1).endpoint());
    let server = EchoServer::start(&host_a.netns, &[80]).expect("echo server in host-a");
    let pairs = vec![
        (web_a.clone(), host_a.clone()),
        (web_b, host_a.clone()),
        (host_b, host_a),
        (web_a, db_a),
    ];
    (pairs, server)
}

#[test]
fn a_workload_cannot_reach_its_host_by_default() {
    let mut cluster = Cluster::builder().start();
    let (pairs, _server) = host_access(&mut cluster);
    let expect =
        |from: &Endpoint, to: &Endpoint, _: Service| match (from.name.as_str(), to.name.as_str()) {
            // Workload → its own host: DefaultEndpointToHostAction (Drop); and web-a → db-a,
            // proof that the agent programs policy at all.
            ("web-a", "host-a" | "db-a") => false,
            // Through the fabric, the host is an ordinary destination.
            ("web-b" | "host-b", "host-a") => true,
            other => panic!("unexpected pair {other:?}"),
        };
    let matrix = Matrix::assert_eventually(
        "workload → host with the default action",
        &pairs,
        &[Service::Tcp(80)],
        &expect,
        CONVERGE,
    );
    assert_eq!(
        matrix.outcome("web-a", "host-a", Service::Tcp(80)),
        Some(&Outcome::TimedOut),
        "workload → host must be dropped"
    );
}

#[test]
fn a_workload_reaches_its_host_when_configured() {
    let mut cluster = Cluster::builder().endpoint_to_host_action("Accept").start();
    let (pairs, _server) = host_access(&mut cluster);
    let expect =
        |from: &Endpoint, to: &Endpoint, _: Service| from.name != "web-a" || to.name != "db-a";
    Matrix::assert_eventually(
        "workload → host with DefaultEndpointToHostAction = Accept",
        &pairs,
        &[Service::Tcp(80)],
        &expect,
        CONVERGE,
    );
}

fn table_present(host_netns: &Path) -> bool {
    run(
        nsenter(host_netns, "nft").args(["list", "table", "inet", NFT_TABLE]),
        None,
        Duration::from_secs(5),
    )
    .success()
}

#[test]
fn agent_restart_keeps_established_connections_and_the_ruleset() {
    let (mut cluster, endpoints) = scenario::start(Cluster::builder(), READY);
    let pairs = scenario_pairs(&endpoints);
    let services = scenario::services();
    Matrix::assert_eventually("the scenario", &pairs, &services, &scenario::allowed, CONVERGE);
    let [app_a, web_b, db_a] = ["app-a", "web-b", "db-a"].map(|n| cluster.workload(n).endpoint());
    let second = Duration::from_secs(1);
    let mut cross = EchoClient::connect(&app_a.netns, SocketAddrV4::new(web_b.ip, 80), second)
        .expect("app-a → web-b:80 connects");
    let mut local = EchoClient::connect(&app_a.netns, SocketAddrV4::new(db_a.ip, 3306), second)
        .expect("app-a → db-a:3306 connects");
    cross.roundtrip(second).expect("echo over app-a → web-b:80");
    local.roundtrip(second).expect("echo over app-a → db-a:3306");
    let before: Vec<Vec<String>> = cluster.hosts().iter().map(tests::Host::ruleset).collect();
    for (host, rules) in cluster.hosts().iter().zip(&before) {
        assert!(!rules.is_empty(), "{}: no table inet {NFT_TABLE} before the restart", host.name());
    }

    // Watch the tables on both hosts for the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    let paths: Vec<PathBuf> = cluster.hosts().iter().map(tests::Host::path).collect();
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let started = Instant::now();
            let (mut samples, mut missing) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                for path in &paths {
                    samples += 1;
                    if !table_present(path) {
                        missing.push(format!("{} at {:?}", path.display(), started.elapsed()));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, missing)
        })
    };

    for i in 0..2 {
        cluster.host_mut(i).stop_agent().expect("agent was running");
    }
    cross.roundtrip(second).expect("established connection while the agents are stopped");
    local.roundtrip(second).expect("established local connection while the agents are stopped");
    Matrix::measure(&pairs, &services)
        .assert_matches("while the agents are stopped", &scenario::allowed);
    for i in 0..2 {
        cluster.host_mut(i).start_agent();
    }
    cluster.wait_ready(READY);
    Matrix::measure(&pairs, &services).assert_matches("after the restart", &scenario::allowed);
    cross.roundtrip(second).expect("established cross-host connection after the restart");
    local.roundtrip(second).expect("established local connection after the restart");

    stop.store(true, Ordering::SeqCst);
    let (samples, missing) = sampler.join().expect("sampler thread");
    assert!(samples > 10, "only {samples} samples of the tables were taken");
    assert!(
        missing.is_empty(),
        "table inet {NFT_TABLE} was missing during the restart:\n{}",
        missing.join("\n")
    );
    let after: Vec<Vec<String>> = cluster.hosts().iter().map(tests::Host::ruleset).collect();
    for ((host, before), after) in cluster.hosts().iter().zip(&before).zip(&after) {
        let gone: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
        let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
        assert!(
            gone.is_empty() && new.is_empty(),
            "{}: the restart changed the ruleset although etcd did not change\n\
             lines gone: {gone:#?}\nlines new: {new:#?}",
            host.name()
        );
    }
}

#[test]
fn a_table_deleted_by_hand_is_back_within_the_resync_interval() {
    const RESYNC: Duration = Duration::from_secs(3);
    let (cluster, endpoints) = scenario::start(Cluster::builder().resync_interval(RESYNC), READY);
    let pairs = scenario_pairs(&endpoints);
    let services = scenario::services();
    Matrix::assert_eventually("the scenario", &pairs, &services, &scenario::allowed, CONVERGE);
    let host = cluster.host(0);
    host.nft(["delete", "table", "inet", NFT_TABLE]).ok();
    let deleted = Instant::now();
    let slack = Duration::from_secs(2);
    wait::until(&format!("table inet {NFT_TABLE} to be back on host-a"), RESYNC + slack, || {
        if host.table_exists() {
            Ok(())
        } else {
            Err("the table is absent".into())
        }
    });
    eprintln!("table inet {NFT_TABLE} was back {:.1?} after its deletion", deleted.elapsed());
    Matrix::assert_eventually(
        "after the table came back",
        &pairs,
        &services,
        &scenario::allowed,
        CONVERGE,
    );
}

#[test]
fn etcd_outage_keeps_the_dataplane_and_the_agents_catch_up() {
    let (mut cluster, endpoints) = scenario::start(Cluster::builder(), READY);
    let pairs = scenario_pairs(&endpoints);
    let services = scenario::services();
    Matrix::assert_eventually("the scenario", &pairs, &services, &scenario::allowed, CONVERGE);

    cluster.etcd_mut().stop();
    wait::holds(
        "the dataplane as last programmed while etcd is down",
        Duration::from_secs(30),
        Duration::from_secs(3),
        || {
            let matrix = Matrix::measure(&pairs, &services);
            if matrix.mismatches(&scenario::allowed).is_empty() {
                Ok(())
            } else {
                Err(matrix.report(&scenario::allowed))
            }
        },
    );
    for i in 0..2 {
        let host = cluster.host_mut(i);
        let name = host.name().to_string();
        assert!(host.agent_running(), "the agent on {name} exited while etcd was down");
    }

    cluster.etcd_mut().start_again();
    cluster.tabbyctl_ok(&[
        "profile", "mysqldb", "rule", "add", "inbound", "allow", "tcp", "from", "tag", "web", "to",
        "ports", "3306",
    ]);
    // Compacting right away leaves an agent that resumes its watch from its old revision
    // nothing to resume from: it has to list again.
    cluster.etcd().compact_latest();
    let web_to_db = scenario_plus(|from, to, service| {
        from.network == "web" && to.network == "mysqldb" && service == Service::Tcp(3306)
    });
    Matrix::assert_eventually(
        "after etcd came back, a profile change and a compaction",
        &pairs,
        &services,
        &web_to_db,
        Duration::from_secs(30),
    );
    // The watch is live again, not just the one re-list.
    cluster.tabbyctl_ok(&[
        "profile", "mysqldb", "rule", "remove", "inbound", "allow", "tcp", "from", "tag", "web",
        "to", "ports", "3306",
    ]);
    Matrix::assert_eventually(
        "after the next change",
        &pairs,
        &services,
        &scenario::allowed,
        CONVERGE,
    );
}

#[test]
fn bad_input_in_etcd_is_logged_once_and_ignored() {
    const RESYNC: Duration = Duration::from_secs(2);
    let (cluster, endpoints) = scenario::start(Cluster::builder().resync_interval(RESYNC), READY);
    let pairs = scenario_pairs(&endpoints);
    let services = scenario::services();
    Matrix::assert_eventually("the scenario", &pairs, &services, &scenario::allowed, CONVERGE);

    let base = "/calico/resources/v3/projectcalico.org";
    // Each bad policy also carries a valid Deny that would break the scenario if the agent
    // kept the part it could read instead of ignoring the whole resource.
    let policy = |name: &str, ingress: serde_json::Value| {
        json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "GlobalNetworkPolicy",
            "metadata": { "name": name },
            "spec": { "selector": "all()", "order": 10, "types": ["Ingress"], "ingress": ingress },
        })
        .to_string()
    };
    let bad = [
        (
            format!("{base}/globalnetworkpolicies/bad-selector"),
            policy(
                "bad-selector",
                json!([
                    { "action": "Deny", "protocol": "TCP", "destination": { "ports": [443] } },
                    { "action": "Allow", "source": { "selector": "has(web &&" } },
                ]),
            ),
        ),
        (
            format!("{base}/globalnetworkpolicies/bad-action"),
            policy(
                "bad-action",
                json!([
                    { "action": "Deny", "protocol": "TCP", "destination": { "ports": [80] } },
                    { "action": "Frobnicate" },
                ]),
            ),
        ),
        (
            format!("{base}/profiles/bad-json"),
            r#"{"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "bad-json"}, "spec": {"ingress": ["#
                .to_string(),
        ),
    ];
    for (key, value) in &bad {
        cluster.etcd_put(key, value);
    }
    let put_at = Instant::now();
    // The rest is still programmed: a valid change made after the bad input takes effect.
    cluster.tabbyctl_ok(&[
        "profile", "mysqldb", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "8080",
    ]);
    let expect =
        scenario_plus(|_, to, service| to.network == "mysqldb" && service == Service::Tcp(8080));
    Matrix::assert_eventually(
        "a valid change next to bad input",
        &pairs,
        &services,
        &expect,
        CONVERGE,
    );

    // A few resyncs later the bad input has still been logged only once.
    std::thread::sleep((put_at + RESYNC * 3).saturating_duration_since(Instant::now()));
    Matrix::measure(&pairs, &services).assert_matches("after a few resyncs", &expect);
    for host in cluster.hosts() {
        let livez = host.http_get("/livez");
        assert!(matches!(livez, Ok((200, _))), "{}: /livez answered {livez:?}", host.name());
        let log = host.agent_log();
        for (key, _) in &bad {
            let mentions: Vec<&str> = log.lines().filter(|l| l.contains(key.as_str())).collect();
            let reports =
                mentions.iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).count();
            assert_eq!(
                reports,
                1,
                "{}: {key} must be logged once as a warning or error; log lines naming it:\n{}",
                host.name(),
                mentions.join("\n")
            );
        }
    }
}
