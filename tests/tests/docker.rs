//! tabby as Docker's network and IPAM driver, end to end: a real dockerd per simulated host
//! (each in its host's namespace), the real agent serving the plugin sockets, containers from
//! a busybox image imported without a registry.
//!
//! Two networks, `web` and `db`: same-network containers reach each other, across hosts
//! too; `db` cannot reach `web` until `web`'s profile allows it. Host A names `web` with
//! `-o network=web`; its `db` and host B's `web` are named as Docker names them (the agent
//! asks its dockerd's Engine API), so they share profiles by name. `--ip` is honoured; bad
//! subnets, addresses and plugin requests are refused with the field named and nothing
//! leaks; removing containers and networks leaves no address, veth, route or endpoint.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tests::docker::{Dockerd, IMAGE, PLUGIN_DIR};
use tests::wait::poll;
use tests::Cluster;

const WEB_SUBNET: &str = "192.168.22.0/24";
const DB_SUBNET: &str = "192.168.23.0/24";
const REACH_TIMEOUT: Duration = Duration::from_secs(30);
const PROFILES: &str = "/calico/resources/v3/projectcalico.org/profiles/";
const ENDPOINTS: &str = "/calico/resources/v3/projectcalico.org/workloadendpoints/";

/// The driver name of host `i`: unique, so parallel runs and the machine's own Docker never
/// meet in the shared plugin directory.
fn driver_name(unique: &str, host: usize) -> String {
    format!("tabby-{unique}-{host}")
}

/// Removes plugin sockets left behind if an agent was killed.
struct Sockets(Vec<PathBuf>);

impl Drop for Sockets {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn pool(cluster: &Cluster, name: &str, cidr: &str) {
    cluster.apply(&json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "blockSize": 26, "ipipMode": "Never", "natOutgoing": false,
                 "nodeSelector": "all()"},
    }));
}

/// `docker network create … <name>`, with `-o network=<name>` when `by_option`, else as
/// a Calico user would (the driver asks Docker for the name). Returns the network id.
fn create_network(d: &Dockerd, driver: &str, name: &str, subnet: &str, by_option: bool) -> String {
    let ipam = format!("{driver}-ipam");
    let option = format!("network={name}");
    let mut args =
        vec!["network", "create", "--driver", driver, "--ipam-driver", &ipam, "--subnet", subnet];
    if by_option {
        args.extend(["-o", &option]);
    }
    args.push(name);
    d.docker_ok(&args)
}

fn run_container(d: &Dockerd, name: &str, net: &str, ip: Option<&str>) -> Result<String, String> {
    let mut args = vec!["run", "-d", "--name", name, "--net", net];
    if let Some(ip) = ip {
        args.extend(["--ip", ip]);
    }
    args.extend([IMAGE, "sleep", "3600"]);
    let ran = d.docker(&args);
    if ran.success() {
        Ok(ran.stdout.trim().to_owned())
    } else {
        Err(ran.stderr)
    }
}

fn address_of(d: &Dockerd, name: &str) -> String {
    let out = d.docker_ok(&["exec", name, "ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no IPv4 address on {name}'s eth0: {out}"));
    cidr.split('/').next().unwrap_or_default().to_owned()
}

fn pings(d: &Dockerd, from: &str, to: &str) -> bool {
    d.docker(&["exec", from, "ping", "-c", "1", "-W", "1", to]).success()
}

fn must_reach(d: &Dockerd, from: &str, to: &str) {
    poll(REACH_TIMEOUT, || if pings(d, from, to) { Ok(()) } else { Err(String::new()) })
        .unwrap_or_else(|_| panic!("{from} cannot reach {to} within {REACH_TIMEOUT:?}"));
}

/// A raw HTTP request to a plugin socket: (status, body).
fn plugin_call(socket: &Path, call: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    write!(
        s,
        "POST /{call} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap_or_else(|e| panic!("read: {e}"));
    let (head, payload) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(payload.trim()).unwrap_or(serde_json::Value::Null))
}

/// The profiles of the workload endpoint holding `ip`.
fn profiles_of(cluster: &Cluster, ip: &str) -> Vec<String> {
    let out = cluster.etcd().etcdctl(["get", "--prefix", "--print-value-only", ENDPOINTS]);
    let text = String::from_utf8_lossy(&out.stdout);
    let ip_net = Value::String(format!("{ip}/32"));
    let wep = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|wep| wep["spec"]["ipNetworks"].as_array().is_some_and(|n| n.contains(&ip_net)))
        .unwrap_or_else(|| panic!("no workload endpoint holds {ip}:\n{text}"));
    serde_json::from_value(wep["spec"]["profiles"].clone())
        .unwrap_or_else(|e| panic!("profiles of {wep}: {e}"))
}

fn etcd_keys(cluster: &Cluster, prefix: &str) -> Vec<String> {
    let out = cluster.etcd().etcdctl(["get", "--prefix", "--keys-only", prefix]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Links and /32 routes of Docker endpoints left in a host namespace.
fn leftovers(cluster: &Cluster, host: usize) -> Vec<String> {
    let ns = cluster.host(host).netns();
    let links = String::from_utf8_lossy(&ns.ip(["-o", "link", "show"]).stdout).into_owned();
    let routes =
        String::from_utf8_lossy(&ns.ip(["route", "show", "proto", "112"]).stdout).into_owned();
    links
        .lines()
        .filter(|l| l.contains(": cali") || l.contains(": tmp"))
        .chain(routes.lines().filter(|l| l.contains("dev cali")))
        .map(String::from)
        .collect()
}

#[test]
fn docker_networks_with_tabby_drivers() {
    testkit::require_root();
    let unique = testkit::unique_name("d", 10).replace('_', "-").to_ascii_lowercase();
    let mut cluster = Cluster::builder().hosts(2).agents(false).start();
    let drivers = [driver_name(&unique, 0), driver_name(&unique, 1)];
    let docker_dirs = [cluster.dir().join("dockerd-a"), cluster.dir().join("dockerd-b")];
    let _sockets = Sockets(
        drivers
            .iter()
            .flat_map(|d| [format!("{PLUGIN_DIR}/{d}.sock"), format!("{PLUGIN_DIR}/{d}-ipam.sock")])
            .map(PathBuf::from)
            .collect(),
    );
    for (i, driver) in drivers.iter().enumerate() {
        let host = cluster.host_mut(i);
        host.set_setting("docker.enabled", "true");
        host.set_setting("docker.socket_dir", &format!("{PLUGIN_DIR:?}"));
        host.set_setting("docker.driver_name", &format!("{driver:?}"));
        // This host's own dockerd (started below), asked for network names.
        let engine = Dockerd::socket_in(&docker_dirs[i]);
        host.set_setting("docker.engine_socket", &format!("{:?}", engine.display().to_string()));
        host.start_agent();
    }
    cluster.wait_ready(Duration::from_secs(30));
    pool(&cluster, "web-pool", WEB_SUBNET);
    pool(&cluster, "db-pool", DB_SUBNET);
    let a = Dockerd::start(&cluster.host(0).path(), &docker_dirs[0], false);
    let b = Dockerd::start(&cluster.host(1).path(), &docker_dirs[1], false);
    let (da, db) = (drivers[0].as_str(), drivers[1].as_str());

    // A subnet outside every pool is refused by the IPAM driver, naming it.
    let bad = a.docker(&[
        "network",
        "create",
        "--driver",
        da,
        "--ipam-driver",
        &format!("{da}-ipam"),
        "--subnet",
        "10.99.0.0/24",
        "nowhere",
    ]);
    assert!(!bad.success(), "{}", bad.describe());
    assert!(bad.stderr.contains("10.99.0.0/24 is not a tabby IP pool"), "{}", bad.describe());

    create_network(&a, da, "web", WEB_SUBNET, true);
    let db_id = create_network(&a, da, "db", DB_SUBNET, false);
    let web_b_id = create_network(&b, db, "web", WEB_SUBNET, false);
    // `-o network=` makes the profile at once; an unnamed network is named at its first
    // container (Docker does not know it yet while the driver creates it).
    assert_eq!(etcd_keys(&cluster, PROFILES), [format!("{PROFILES}web")]);

    run_container(&a, "web1", "web", Some("192.168.22.1")).unwrap_or_else(|e| panic!("web1: {e}"));
    run_container(&a, "web2", "web", None).unwrap_or_else(|e| panic!("web2: {e}"));
    run_container(&a, "db1", "db", None).unwrap_or_else(|e| panic!("db1: {e}"));
    run_container(&b, "web3", "web", None).unwrap_or_else(|e| panic!("web3: {e}"));
    assert_eq!(address_of(&a, "web1"), "192.168.22.1", "--ip is honoured");
    let web2 = address_of(&a, "web2");
    assert!(web2.starts_with("192.168.22."), "{web2}");
    assert!(address_of(&a, "db1").starts_with("192.168.23."));
    let web3 = address_of(&b, "web3");
    assert!(web3.starts_with("192.168.22."), "{web3}");

    // Docker's names, not the ids, name the unnamed networks' profiles and endpoints.
    assert_eq!(etcd_keys(&cluster, PROFILES), [format!("{PROFILES}db"), format!("{PROFILES}web")]);
    assert_eq!(profiles_of(&cluster, &address_of(&a, "db1")), ["db"]);
    assert_eq!(profiles_of(&cluster, &web3), ["web"], "B's web is named by Docker");
    assert_eq!(profiles_of(&cluster, "192.168.22.1"), ["web"], "A's web is named by -o");
    for id in [&db_id, &web_b_id] {
        assert!(!etcd_keys(&cluster, PROFILES).iter().any(|k| k.ends_with(&id[..12])), "{id}");
    }

    // The endpoints are Calico libnetwork endpoints the agents program ACLs for.
    let weps = etcd_keys(&cluster, ENDPOINTS);
    assert_eq!(weps.len(), 4, "{weps:?}");
    assert!(weps.iter().all(|k| k.contains("-libnetwork-libnetwork-")), "{weps:?}");

    // Same network: reachable, on one host and across hosts (A's `web` named by -o, B's by
    // Docker: one profile).
    must_reach(&a, "web2", "192.168.22.1");
    must_reach(&b, "web3", "192.168.22.1");
    must_reach(&a, "web1", &web3);
    // Across networks: refused by default (web admits only has(web); db1 carries `db` from
    // the profile named after Docker's name)…
    assert!(!pings(&a, "db1", "192.168.22.1"), "db1 reached web1 before the profile allowed it");
    // …allowed once web's profile admits db.
    cluster.apply(&json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "web"},
        "spec": {
            "ingress": [{"action": "Allow", "source": {"selector": "has(web)"}},
                        {"action": "Allow", "source": {"selector": "has(db)"}}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {"web": ""},
        },
    }));
    must_reach(&a, "db1", "192.168.22.1");

    // A subnet inside a pool (not the pool itself), with an explicit gateway: the gateway
    // takes no address, the container gets one from the subnet.
    a.docker_ok(&[
        "network",
        "create",
        "--driver",
        da,
        "--ipam-driver",
        &format!("{da}-ipam"),
        "--subnet",
        "192.168.22.128/25",
        "--gateway",
        "192.168.22.254",
        "-o",
        "network=web-half",
        "half",
    ]);
    run_container(&a, "half1", "half", None).unwrap_or_else(|e| panic!("half1: {e}"));
    let half1 = address_of(&a, "half1");
    assert_eq!(profiles_of(&cluster, &half1), ["web-half"], "-o network= overrides Docker's name");
    let last: u8 = half1.rsplit('.').next().and_then(|o| o.parse().ok()).unwrap_or(0);
    assert!(half1.starts_with("192.168.22.") && last > 128, "{half1} not in 192.168.22.128/25");
    let gw = cluster.ipamctl(&["show", "--ip", "192.168.22.254"]);
    assert!(
        gw.stdout.contains("192.168.22.254 is not assigned"),
        "the gateway took an address: {}",
        gw.describe()
    );
    a.docker_ok(&["rm", "-f", "half1"]);
    a.docker_ok(&["network", "rm", "half"]);

    // `--ip` outside the subnet, or taken: a clear error, nothing left behind.
    let handles_before = etcd_keys(&cluster, "/calico/ipam/v2/handle/");
    let err = run_container(&a, "taken", "web", Some("192.168.22.1")).unwrap_err();
    assert!(err.contains("192.168.22.1 is already assigned"), "{err}");
    let err = run_container(&a, "outside", "web", Some("192.168.23.9")).unwrap_err();
    assert!(!err.is_empty());
    assert_eq!(etcd_keys(&cluster, "/calico/ipam/v2/handle/"), handles_before);

    // Malformed and unknown plugin requests, straight to the sockets.
    let net_sock = PathBuf::from(format!("{PLUGIN_DIR}/{da}.sock"));
    let ipam_sock = PathBuf::from(format!("{PLUGIN_DIR}/{da}-ipam.sock"));
    let (status, body) = plugin_call(&net_sock, "NetworkDriver.CreateNetwork", "{oops");
    assert_eq!(status, 500);
    assert!(body["Err"].as_str().unwrap_or_default().starts_with("body: malformed"), "{body}");
    let ep = "ab".repeat(32);
    let (status, body) = plugin_call(
        &net_sock,
        "NetworkDriver.CreateEndpoint",
        &json!({"NetworkID": "cd".repeat(32), "EndpointID": ep,
                "Interface": {"Address": "192.168.22.77/32"}})
        .to_string(),
    );
    assert_eq!(status, 500);
    assert!(
        body["Err"].as_str().unwrap_or_default().starts_with("NetworkID: unknown network"),
        "{body}"
    );
    let (status, body) = plugin_call(
        &ipam_sock,
        "IpamDriver.RequestAddress",
        &json!({"PoolID": WEB_SUBNET, "Address": "192.168.99.1"}).to_string(),
    );
    assert_eq!(status, 500);
    assert!(
        body["Err"].as_str().unwrap_or_default().starts_with("Address: 192.168.99.1 is outside"),
        "{body}"
    );
    let (status, body) = plugin_call(&ipam_sock, "Plugin.Activate", "");
    assert_eq!((status, body), (200, json!({"Implements": ["IpamDriver"]})));

    // The agent restarts under running containers: it still knows host A's networks.
    cluster.host_mut(0).restart_agent();
    cluster.wait_ready(Duration::from_secs(30));
    run_container(&a, "web4", "web", None).unwrap_or_else(|e| panic!("web4 after restart: {e}"));
    run_container(&a, "db2", "db", None).unwrap_or_else(|e| panic!("db2 after restart: {e}"));
    must_reach(&a, "web4", "192.168.22.1");
    assert_eq!(profiles_of(&cluster, &address_of(&a, "db2")), ["db"], "the name survives");
    a.docker_ok(&["rm", "-f", "web4", "db2"]);

    // Removing containers and networks leaves nothing behind.
    a.docker_ok(&["rm", "-f", "web1", "web2", "db1"]);
    b.docker_ok(&["rm", "-f", "web3"]);
    a.docker_ok(&["network", "rm", "web", "db"]);
    b.docker_ok(&["network", "rm", "web"]);
    let handles = etcd_keys(&cluster, "/calico/ipam/v2/handle/");
    assert!(handles.iter().all(|k| !k.contains("libnetwork.")), "leaked handles: {handles:?}");
    let weps = etcd_keys(&cluster, ENDPOINTS);
    assert!(weps.is_empty(), "leaked endpoints: {weps:?}");
    for host in 0..2 {
        let left = leftovers(&cluster, host);
        assert!(left.is_empty(), "host {host} kept {left:?}");
    }
    let usage = cluster.ipamctl(&["check"]);
    assert!(usage.success(), "{}", usage.describe());
}
