//! The harness's own topology, checked without agents: hosts reach each other and etcd over
//! the fabric, CNI ADD through the harness gives a workload an address and host routes, and
//! workloads on one host reach each other by plain routing (proxy ARP) when nothing filters.
//! If these fail, the two-host tests cannot say anything about the agent.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use tests::netns::in_netns;
use tests::probe::{self, all_pairs, Matrix, Outcome, Service, UdpSink};
use tests::Cluster;

#[test]
fn fabric_connects_hosts_and_etcd() {
    let cluster = Cluster::builder().hosts(2).agents(false).start();
    let etcd: SocketAddr = cluster
        .etcd_endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("etcd endpoint is ip:port");
    for host in cluster.hosts() {
        let reached =
            in_netns(&host.path(), || TcpStream::connect_timeout(&etcd, Duration::from_secs(2)))
                .expect("enter host netns");
        assert!(reached.is_ok(), "{} cannot reach etcd at {etcd}: {reached:?}", host.name());
        let forward = host.sh("cat /proc/sys/net/ipv4/ip_forward").ok();
        assert_eq!(forward.trim(), "1", "{}: ip_forward", host.name());
        let routes = host.sh("ip -4 route show default").ok();
        assert!(
            routes.contains(&format!("via {}", cluster.fabric_ip())),
            "{}: default route is not via the fabric: {routes}",
            host.name()
        );
    }
    let (a, b) = (cluster.host(0), cluster.host(1));
    assert_eq!(probe::ping(&a.path(), b.ip(), Duration::from_secs(2)), Outcome::Connected);
    assert_eq!(probe::ping(&b.path(), a.ip(), Duration::from_secs(2)), Outcome::Connected);
    // The machine's own namespace never sees the fabric's addresses.
    let own = Command::new("ip").args(["-4", "-o", "addr"]).output().expect("ip addr");
    assert!(
        !String::from_utf8_lossy(&own.stdout).contains(&cluster.fabric_ip().to_string()),
        "the fabric address leaked into the machine's namespace"
    );
}

#[test]
fn cni_add_gives_an_address_and_host_route_and_del_removes_them() {
    let mut cluster = Cluster::builder().hosts(1).agents(false).start();
    let ep = cluster.add_workload(0, "web", "web-a");
    let pool_prefix: String = cluster.pool().split('.').take(2).collect::<Vec<_>>().join(".");
    assert!(
        ep.ip.to_string().starts_with(&format!("{pool_prefix}.")),
        "{} is not from pool {}",
        ep.ip,
        cluster.pool()
    );
    let workload = cluster.workload("web-a");
    let addrs = workload.sh("ip -4 -o addr show dev eth0").ok();
    assert!(addrs.contains(&format!("{}/32", ep.ip)), "container addresses: {addrs}");
    let routes = workload.sh("ip -4 route").ok();
    assert!(routes.contains("default via 169.254.1.1"), "container routes: {routes}");
    let host_ifname = workload.host_ifname().to_string();
    assert!(host_ifname.starts_with("cali"), "host side {host_ifname:?}");
    let host = cluster.host(0);
    let route = host.sh(&format!("ip -4 route show {}", ep.ip)).ok();
    assert!(route.contains(&format!("dev {host_ifname}")), "host route: {route:?}");
    // The endpoint record is in etcd, under this host.
    let keys = cluster.etcd().etcdctl([
        "get",
        "--prefix",
        "--keys-only",
        "/calico/resources/v3/projectcalico.org/workloadendpoints/",
    ]);
    let keys = String::from_utf8_lossy(&keys.stdout).into_owned();
    assert!(keys.contains("host--a") || keys.contains("host-a"), "no endpoint for host-a: {keys}");

    cluster.remove_workload("web-a");
    let host = cluster.host(0);
    let route = host.sh(&format!("ip -4 route show {}", ep.ip)).ok();
    assert!(route.trim().is_empty(), "host route left after DEL: {route:?}");
    let link = host.sh(&format!("ip link show {host_ifname}"));
    assert!(!link.success(), "{host_ifname} left after DEL");
}

#[test]
fn workloads_on_one_host_reach_each_other_without_an_agent() {
    let mut cluster = Cluster::builder().hosts(2).agents(false).start();
    cluster.add_workload(0, "web", "web-a");
    cluster.add_workload(0, "app", "app-a");
    cluster.add_workload(0, "mysqldb", "db-a");
    let endpoints = cluster.endpoints(&["web-a", "app-a", "db-a"]);
    let services = [Service::Tcp(80), Service::Tcp(3306), Service::Icmp];
    // Nothing filters yet, so everything must get through.
    Matrix::assert_eventually(
        "same-host routing without an agent",
        &all_pairs(&endpoints),
        &services,
        &|_, _, _| true,
        Duration::from_secs(10),
    );
}

#[test]
fn a_closed_port_is_refused_not_timed_out() {
    // The probe must tell a RST from a drop, or the two-host tests could not tell a policy
    // verdict from a missing server.
    let mut cluster = Cluster::builder().hosts(1).agents(false).serve_ports(&[80]).start();
    cluster.add_workload(0, "web", "web-a");
    cluster.add_workload(0, "web", "web-c");
    let from = cluster.workload("web-a").endpoint();
    let to = cluster.workload("web-c").ip();
    assert_eq!(probe::probe(&from.netns, to, Service::Tcp(80)), Outcome::Connected);
    assert_eq!(probe::probe(&from.netns, to, Service::Tcp(81)), Outcome::Refused);
}

#[test]
fn dropping_the_cluster_removes_its_namespaces() {
    let names: Vec<String>;
    {
        let mut cluster = Cluster::builder().hosts(2).agents(false).start();
        cluster.add_workload(1, "web", "web-b");
        names = std::iter::once(cluster.fabric().name().to_string())
            .chain(cluster.hosts().iter().map(|h| h.netns().name().to_string()))
            .chain(cluster.workloads().iter().map(|w| w.netns().name().to_string()))
            .collect();
        assert_eq!(names.len(), 4);
    }
    let listed = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for name in &names {
        assert!(!listed.contains(name.as_str()), "{name} still exists after drop");
    }
}

#[test]
fn agents_serve_health_and_metrics_in_their_host_and_publish_their_node() {
    let mut cluster = Cluster::builder().hosts(2).start();
    cluster.wait_ready(Duration::from_secs(20));
    for host in cluster.hosts() {
        let livez = host.http_get("/livez").expect("GET /livez");
        assert_eq!(livez.0, 200, "{}: /livez {livez:?}", host.name());
        let metrics = host.metrics().expect("GET /metrics");
        assert!(
            metrics.lines().any(|l| l.starts_with("# TYPE")),
            "{}: metrics: {metrics}",
            host.name()
        );
        // The agent found its address on the interface holding the default route.
        let key = format!("/calico/resources/v3/projectcalico.org/nodes/{}", host.name());
        let node = cluster.etcd().etcdctl(["get", "--print-value-only", &key]);
        let node = String::from_utf8_lossy(&node.stdout).into_owned();
        assert!(node.contains(&host.ip().to_string()), "{}: node resource {node:?}", host.name());
    }
}

#[test]
fn udp_delivery_reports_the_source_and_a_mac_change_keeps_routing() {
    // The spoofing tests' tools, checked where nothing filters: a datagram arrives with the
    // sender's address, and a workload whose MAC was changed still routes.
    let mut cluster = Cluster::builder().hosts(1).agents(false).serve_ports(&[]).start();
    cluster.add_workload(0, "web", "web-a");
    let to = cluster.add_workload(0, "web", "web-c");
    let sink = UdpSink::bind(&to.netns, to.ip, 7007).expect("bind");
    let web_a = cluster.workload("web-a");
    let path = web_a.netns().path();
    assert_eq!(sink.delivery(&path, None).expect("send"), Some(web_a.ip()));
    let original = web_a.mac();
    web_a.set_mac("02:00:00:00:99:01");
    assert_eq!(web_a.mac(), "02:00:00:00:99:01");
    assert_eq!(sink.delivery(&path, None).expect("send"), Some(web_a.ip()));
    web_a.set_mac(&original);
    assert_eq!(web_a.mac(), original);
}
