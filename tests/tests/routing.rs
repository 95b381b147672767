//! Routing beyond one L2 segment, black box: real agents with BGP writing BIRD configs, a real
//! BIRD (`bird2`) per simulated host, hosts on different subnets behind a router namespace,
//! and an "outside" namespace reached through outgoing NAT. Every wait is bounded.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde_json::{json, Value};
use tests::cluster::{Cluster, Endpoint, Host};
use tests::probe::{self, all_pairs, EchoServer, Matrix, Outcome, Service, UdpSink};
use tests::wait;

/// Agents report ready within this.
const READY: Duration = Duration::from_secs(20);
/// BGP sessions come up and routes reach the kernel within this (connect delay 2 s, kernel
/// scan every 2 s).
const CONVERGE: Duration = Duration::from_secs(30);
/// The port the workloads' echo servers answer on.
const PORT: u16 = 8080;

fn services() -> Vec<Service> {
    vec![Service::Tcp(PORT)]
}

/// One workload per host on network `net`, and the blocks they were given.
fn workload_per_host(cluster: &mut Cluster) -> Vec<Endpoint> {
    (0..cluster.hosts().len()).map(|i| cluster.add_workload(i, "net", &format!("w{i}"))).collect()
}

/// The /26 block holding `ip`.
fn block_of(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}/26", o[0], o[1], o[2], o[3] & 0xc0)
}

/// Waits until `host`'s kernel has a `proto bird` route for each of `blocks`.
fn await_bird_routes(host: &Host, blocks: &[String]) {
    wait::until(&format!("{}: proto bird routes to {blocks:?}", host.name()), CONVERGE, || {
        let routes = host.bird_routes();
        if blocks.iter().all(|b| routes.lines().any(|l| l.starts_with(b.as_str()))) {
            Ok(())
        } else {
            Err(format!("{routes}\n{}", host.birdc(&["show", "protocols"]).stdout))
        }
    });
}

/// The BGP rows of `birdc show protocols` on `host`: (name, info).
fn sessions(host: &Host) -> Vec<(String, String)> {
    host.birdc(&["show", "protocols"])
        .stdout
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.get(1) == Some(&"BGP")).then(|| (w[0].to_string(), w[5..].join(" ")))
        })
        .collect()
}

fn everyone_reaches_everyone(what: &str, endpoints: &[Endpoint]) {
    Matrix::assert_eventually(what, &all_pairs(endpoints), &services(), &|_, _, _| true, CONVERGE);
}

#[test]
fn bgp_mesh_carries_blocks_between_three_hosts() {
    let mut cluster = Cluster::builder().hosts(3).bgp(true).serve_ports(&[PORT]).start();
    cluster.wait_ready(READY);
    let birds: Vec<_> = cluster.hosts().iter().map(Host::start_bird).collect();
    let endpoints = workload_per_host(&mut cluster);
    let blocks: Vec<String> = endpoints.iter().map(|e| block_of(e.ip)).collect();
    for (i, host) in cluster.hosts().iter().enumerate() {
        let remote: Vec<String> =
            blocks.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, b)| b.clone()).collect();
        await_bird_routes(host, &remote);
        // BIRD, not the agent, routes the remote blocks; the agent keeps its blackhole.
        let ours = host.sh("ip -4 route show proto 112").stdout;
        assert!(!remote.iter().any(|b| ours.contains(&format!("{b} via"))), "{ours}");
        assert!(ours.contains(&format!("blackhole {}", blocks[i])), "{ours}");
        // Only aggregates travel: no peer's /32 reached this host's kernel through BIRD.
        let bird = host.bird_routes();
        assert!(!bird.lines().any(|l| l.contains("/32") || !l.contains('/')), "{bird}");
    }
    everyone_reaches_everyone("the mesh", &endpoints);
    let established = sessions(cluster.host(0));
    assert_eq!(established.len(), 2, "{established:?}");
    assert!(established.iter().all(|(_, info)| info.starts_with("Established")), "{established:?}");

    // tabbyctl shows the sessions of the BIRD it is pointed at.
    let socket = cluster.host(0).bird_socket_path();
    let status = cluster.tabbyctl_ok(&[
        "node",
        "status",
        "--bird-socket",
        &socket.to_string_lossy(),
        "--birdc",
        tests::cluster::BIRDC,
    ]);
    assert!(status.contains("BGP sessions of the local BIRD"), "{status}");
    assert_eq!(status.matches("Established").count(), 2, "{status}");

    // Stopping host-c's BIRD withdraws its block from the others.
    let mut birds = birds;
    if let Some(bird) = birds.pop() {
        bird.stop();
    }
    for host in &cluster.hosts()[..2] {
        wait::until(&format!("{}: {} withdrawn", host.name(), blocks[2]), CONVERGE, || {
            let routes = host.bird_routes();
            if routes.contains(&blocks[2]) {
                Err(routes)
            } else {
                Ok(())
            }
        });
    }
    let ab = vec![(endpoints[0].clone(), endpoints[1].clone())];
    Matrix::assert_eventually(
        "a and b without c's BIRD",
        &ab,
        &services(),
        &|_, _, _| true,
        CONVERGE,
    );
}

#[test]
fn route_reflector_replaces_the_mesh() {
    let mut cluster = Cluster::builder().hosts(3).bgp(true).serve_ports(&[PORT]).start();
    cluster.wait_ready(READY);
    cluster.apply(&json!({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
        "metadata": {"name": "default"},
        "spec": {"nodeToNodeMeshEnabled": false},
    }));
    // host-a becomes the reflector: its Node as the agent published it, plus the marks.
    let key = format!("/calico/resources/v3/projectcalico.org/nodes/{}", cluster.host(0).name());
    let out = cluster.etcd().etcdctl(["get", "--print-value-only", &key]);
    let mut node: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("node {key} is not JSON ({e}): {out:?}"));
    node["metadata"]["labels"] = json!({"route-reflector": "true"});
    node["spec"]["bgp"]["routeReflectorClusterID"] = json!("224.0.0.1");
    cluster.apply(&node);
    cluster.apply(&json!({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
        "metadata": {"name": "to-reflectors"},
        "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
    }));
    let _birds: Vec<_> = cluster.hosts().iter().map(Host::start_bird).collect();
    let endpoints = workload_per_host(&mut cluster);
    let blocks: Vec<String> = endpoints.iter().map(|e| block_of(e.ip)).collect();
    // b and c learn each other's blocks through a, with the next hop left as the origin.
    await_bird_routes(cluster.host(1), &[blocks[0].clone(), blocks[2].clone()]);
    await_bird_routes(cluster.host(2), &[blocks[0].clone(), blocks[1].clone()]);
    let via_c = cluster.host(1).bird_routes();
    assert!(via_c.contains(&format!("{} via {}", blocks[2], cluster.host(2).ip())), "{via_c}");
    everyone_reaches_everyone("through the reflector", &endpoints);

    let a = sessions(cluster.host(0));
    assert_eq!(a.len(), 2, "the reflector peers with both clients: {a:?}");
    for client in &cluster.hosts()[1..] {
        let s = sessions(client);
        let want = format!("_{}", cluster.host(0).ip().to_string().replace('.', "_"));
        assert!(s.len() == 1 && s[0].0.ends_with(&want), "{}: {s:?}", client.name());
        assert!(s[0].1.starts_with("Established"), "{}: {s:?}", client.name());
    }
    let config = std::fs::read_to_string(cluster.host(0).bird_config_path()).unwrap_or_default();
    assert_eq!(config.matches("rr client;").count(), 2, "{config}");
}

#[test]
fn cross_subnet_hosts_need_ipip() {
    let mut cluster =
        Cluster::builder().hosts(2).subnet_per_host(true).serve_ports(&[PORT]).start();
    cluster.wait_ready(READY);
    let endpoints = workload_per_host(&mut cluster);
    let pairs = all_pairs(&endpoints);
    // The router knows the hosts' subnets only: without IPIP the blocks are unroutable.
    wait::holds(
        "no route across subnets",
        Duration::from_secs(3),
        Duration::from_millis(500),
        || {
            let m = Matrix::measure(&pairs, &services());
            let reached: Vec<String> = m
                .cells()
                .filter(|(_, _, _, got)| got.passed())
                .map(|(from, to, _, _)| format!("{} reached {}", from.name, to.name))
                .collect();
            if reached.is_empty() {
                Ok(())
            } else {
                Err(reached.join("\n"))
            }
        },
    );
    let log = cluster.host(0).agent_log();
    assert!(log.contains("outside this host's subnet"), "{}", cluster.host(0).agent_log_tail(20));
}

#[test]
#[ignore = "needs IPIP in the kernel (CONFIG_NET_IPIP); this machine's kernel has none"]
fn cross_subnet_hosts_reach_each_other_with_ipip() {
    let mut cluster =
        Cluster::builder().hosts(2).subnet_per_host(true).serve_ports(&[PORT]).start();
    cluster.wait_ready(READY);
    let probe =
        cluster.host(0).sh("ip link add name tabbyprobe type ipip && ip link del tabbyprobe");
    assert!(probe.success(), "this kernel cannot make IPIP devices: {}", probe.describe());
    let endpoints = workload_per_host(&mut cluster);
    cluster.set_pool_routing("CrossSubnet", false);
    everyone_reaches_everyone("IPIP across subnets", &endpoints);
    let routes = cluster.host(0).sh("ip -4 route show dev tunl0").stdout;
    assert!(routes.contains("onlink"), "{routes}");
}

#[test]
fn nat_outgoing_reaches_outside_as_the_host() {
    let mut cluster = Cluster::builder().hosts(1).serve_ports(&[PORT]).start();
    cluster.wait_ready(READY);
    let outside = cluster.add_outside();
    let _server = EchoServer::start(&outside.netns.path(), &[PORT]).expect("echo server outside");
    let sink = UdpSink::bind(&outside.netns.path(), outside.ip, 7007).expect("UDP sink outside");
    let w = cluster.add_workload(0, "net", "w0");
    let dst = SocketAddrV4::new(outside.ip, PORT);

    // The outside has no route back to the pool.
    wait::holds("no NAT, no way back", Duration::from_secs(3), Duration::from_millis(500), || {
        match probe::tcp(&w.netns, dst, probe::PROBE_TIMEOUT) {
            Outcome::Connected => Err("reached the outside without NAT".into()),
            _ => Ok(()),
        }
    });
    assert_eq!(sink.delivery(&w.netns, None).expect("send"), Some(w.ip), "no NAT: own source");

    cluster.set_pool_routing("Never", true);
    wait::until("NAT to the outside", CONVERGE, || {
        match probe::tcp(&w.netns, dst, probe::PROBE_TIMEOUT) {
            Outcome::Connected => Ok(()),
            other => Err(format!("{other:?}\n{}", cluster.host(0).table())),
        }
    });
    let host_ip = cluster.host(0).ip();
    assert_eq!(sink.delivery(&w.netns, None).expect("send"), Some(host_ip));
    // The agent's postrouting chain did it.
    let ours = cluster.host(0).table();
    assert!(ours.contains("masquerade"), "{ours}");
}

#[test]
fn bad_bgp_input_is_refused_and_the_config_stays_whole() {
    let mut cluster = Cluster::builder().hosts(2).bgp(true).start();
    cluster.wait_ready(READY);
    let peer = |name: &str, ip: &str, asn: Value| {
        json!({
            "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
            "metadata": {"name": name},
            "spec": {"peerIP": ip, "asNumber": asn},
        })
        .to_string()
    };
    for (doc, field) in [
        (peer("bad-as", "192.0.2.1", json!(0)), "spec.asNumber"),
        (peer("big-as", "192.0.2.1", json!(4_294_967_296_u64)), "asNumber"),
        (peer("bad-ip", "tor.example", json!(65000)), "spec.peerIP"),
    ] {
        let ran = cluster.tabbyctl_with(&["apply", "-f", "-"], Some(doc.as_bytes()));
        assert!(!ran.success(), "accepted {doc}");
        assert!(ran.stderr.contains(field), "{field} not named: {}", ran.describe());
    }

    // Written past tabbyctl: the agent logs it once and leaves it out.
    let config = cluster.host(0).bird_config_path();
    wait::until("the first BIRD config", CONVERGE, || {
        std::fs::read_to_string(&config).map_err(|e| e.to_string())
    });
    cluster.etcd_put(
        "/calico/resources/v3/projectcalico.org/bgppeers/bad-ip",
        &peer("bad-ip", "tor.example", json!(65000)),
    );
    cluster.apply(&serde_json::from_str(&peer("tor", "192.0.2.254", json!(65000))).expect("json"));
    wait::until("the good peer in the config", CONVERGE, || {
        let text = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
        if text.contains("neighbor 192.0.2.254 as 65000;") {
            Ok(())
        } else {
            Err(text)
        }
    });
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(!text.contains("tor.example") && !text.contains("192.0.2.1 "), "{text}");
    let parsed = std::process::Command::new(tests::cluster::BIRD)
        .arg("-p")
        .arg("-c")
        .arg(&config)
        .output()
        .expect("run bird -p");
    assert!(parsed.status.success(), "BIRD refuses the config: {parsed:?}\n{text}");
    let log = cluster.host(0).agent_log();
    assert_eq!(log.matches("bgppeers/bad-ip").count(), 1, "{}", cluster.host(0).agent_log_tail(20));
    // No temporary file left beside the config.
    let dir: Vec<_> = std::fs::read_dir(cluster.host(0).dir())
        .expect("host dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tabby-") && n.contains("bird"))
        .collect();
    assert!(dir.is_empty(), "{dir:?}");
}
