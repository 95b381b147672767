//! The planned ruleset against real packets: a simulated host (its own network namespace)
//! with workloads behind `cali*` veths, programmed by `NftDataplane`, checked with TCP and
//! UDP between workloads, from workloads to the host and from the host to workloads.
//!
//! What it proves about the layout: a packet between two local workloads needs the sender's
//! egress *and* the receiver's ingress; Pass continues at the profiles while a policy that
//! matches nothing drops; spoofed source addresses and MACs are dropped; workload→host
//! follows `DefaultEndpointToHostAction`; a profile change is applied incrementally.

// Fixture builders take `json!` literals by value, which reads best at the call sites.
#![allow(clippy::needless_pass_by_value)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use agent::dataplane::Dataplane;
use agent::host::{EndpointToHostAction, HostInfo};
use agent::model::ClusterModel;
use agent::nft_dataplane::NftDataplane;
use agent::plan::PlanConfig;
use datastore::client::Kv;
use datastore::keys::KeyLayout;
use datastore::model::parse_resource;
use serde_json::{json, Value};
use testkit::Netns;

const HOST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
/// Long enough for a SYN and its answer on veths, short enough for many denied probes.
const PROBE: Duration = Duration::from_millis(400);

/// A workload: its namespace, host-side interface, address and MAC.
struct Workload {
    ns: Netns,
    iface: String,
    ip: Ipv4Addr,
    mac: String,
}

/// A host namespace (an uplink with the host's address and a default route, so proxy ARP
/// answers for the workloads' gateway) with workloads wired the way the CNI plugin does.
struct Lab {
    host: Netns,
    workloads: Vec<Workload>,
}

impl Lab {
    fn new(names: &[&str]) -> Lab {
        let host = Netns::new("plhost");
        host.sh_ok(&format!(
            "sysctl -qw net.ipv4.ip_forward=1 && \
             ip link add uplink type veth peer name uplink-peer && \
             ip addr add {HOST_IP}/24 dev uplink && ip link set uplink-peer up && \
             ip link set uplink up && ip route add default via 192.0.2.1 dev uplink"
        ));
        let mut workloads = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ns = Netns::new(name);
            let iface = format!("cali{name}");
            let ip = Ipv4Addr::new(10, 65, 0, u8::try_from(i + 1).expect("few workloads"));
            let mac = format!("0a:58:0a:41:00:{:02x}", i + 1);
            host.sh_ok(&format!(
                "ip link add {iface} type veth peer name eth0 netns {wl} && \
                 ip link set {iface} up && sysctl -qw net.ipv4.conf.{iface}.proxy_arp=1 && \
                 sysctl -qw net.ipv4.conf.{iface}.rp_filter=0 && \
                 sysctl -qw net.ipv4.neigh.{iface}.proxy_delay=0 && \
                 ip route add {ip}/32 dev {iface} scope link",
                wl = ns.name()
            ));
            ns.sh_ok(&format!(
                "ip link set eth0 address {mac} && ip link set eth0 up && \
                 ip addr add {ip}/32 dev eth0 && \
                 ip route add 169.254.1.1 dev eth0 scope link && \
                 ip route add default via 169.254.1.1 dev eth0"
            ));
            workloads.push(Workload { ns, iface, ip, mac });
        }
        Lab { host, workloads }
    }

    fn wl(&self, i: usize) -> &Workload {
        &self.workloads[i]
    }

    /// The endpoint resource of workload `i` on node `h1`.
    fn wep(&self, i: usize, profiles: &[&str], labels: Value) -> Value {
        let w = self.wl(i);
        let id = format!("c{i}");
        json!({
            "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": format!("h1-cni-{id}-eth0"), "namespace": "default", "labels": labels},
            "spec": {"orchestrator": "cni", "node": "h1", "containerID": id, "endpoint": "eth0",
                     "ipNetworks": [format!("{}/32", w.ip)], "profiles": profiles,
                     "interfaceName": w.iface, "mac": w.mac}
        })
    }
}

fn model(resources: &[Value]) -> ClusterModel {
    let layout = KeyLayout::new("/calico");
    let kvs: Vec<Kv> = resources
        .iter()
        .map(|v| {
            let bytes = serde_json::to_vec(v).expect("json");
            let r = parse_resource(&bytes).expect("resource");
            let key = layout.resource(r.kind(), r.namespace(), r.name());
            Kv { key, value: bytes, mod_revision: 1, create_revision: 1, version: 1 }
        })
        .collect();
    let model = ClusterModel::from_kvs(layout, &kvs, 1);
    assert!(model.invalid().is_empty(), "{:?}", model.invalid());
    model
}

fn profile(name: &str, spec: Value) -> Value {
    json!({"kind": "Profile", "apiVersion": "projectcalico.org/v3", "metadata": {"name": name}, "spec": spec})
}

fn host(action: EndpointToHostAction) -> HostInfo {
    HostInfo { endpoint_to_host_action: action, ..HostInfo::new("h1") }
}

/// Listening TCP sockets on every port of `ports` in `ns` (the kernel completes handshakes
/// into the backlog; nobody needs to accept).
fn listen(ns: &Netns, ports: &[u16]) -> Vec<TcpListener> {
    ns.enter(|| {
        ports.iter().map(|p| TcpListener::bind(("0.0.0.0", *p)).expect("bind listener")).collect()
    })
}

fn tcp_ok(from: &Netns, to: Ipv4Addr, port: u16) -> bool {
    from.enter(|| TcpStream::connect_timeout(&SocketAddr::from((to, port)), PROBE).is_ok())
}

/// Whether a datagram from `src` in `from` reaches a socket bound in `to_ns` on `to`.
fn udp_ok(from: &Netns, src: Ipv4Addr, to_ns: &Netns, to: Ipv4Addr, port: u16) -> bool {
    let rx = to_ns.enter(|| UdpSocket::bind((to, port)).expect("bind udp"));
    rx.set_read_timeout(Some(PROBE)).expect("timeout");
    from.enter(|| {
        let tx = UdpSocket::bind((src, 0)).expect("bind sender");
        tx.send_to(b"ping", (to, port)).expect("send");
    });
    let mut buf = [0u8; 16];
    rx.recv_from(&mut buf).is_ok()
}

fn apply(dp: &mut NftDataplane, model: &ClusterModel, host: &HostInfo) {
    let report = dp.apply(model, host).expect("apply");
    assert!(report.local_endpoints > 0);
}

fn web_app_db(lab: &Lab, app_egress: Value) -> Vec<Value> {
    vec![
        profile(
            "web",
            json!({
            "ingress": [{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, 443]}},
                        {"action": "Allow", "source": {"selector": "has(web)"}}],
            "egress": [{"action": "Allow"}], "labelsToApply": {"web": ""}}),
        ),
        profile(
            "app",
            json!({
            "ingress": [{"action": "Allow", "source": {"selector": "has(web)"}}],
            "egress": app_egress, "labelsToApply": {"app": "", "db-users": ""}}),
        ),
        profile(
            "mysqldb",
            json!({
            "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "has(db-users)"},
                         "destination": {"ports": [3306]}}],
            "egress": [{"action": "Allow"}], "labelsToApply": {"mysqldb": ""}}),
        ),
        lab.wep(0, &["web"], json!({})),
        lab.wep(1, &["app"], json!({})),
        lab.wep(2, &["mysqldb"], json!({})),
    ]
}

#[test]
fn profiles_decide_between_local_workloads_in_both_directions() {
    let lab = Lab::new(&["web", "app", "db"]);
    let (web, app, db) = (lab.wl(0), lab.wl(1), lab.wl(2));
    let _l = [listen(&web.ns, &[80, 5000]), listen(&app.ns, &[5000]), listen(&db.ns, &[80, 3306])];
    let _h = listen(&lab.host, &[9000]);
    let mut dp = lab.host.enter(|| {
        NftDataplane::with_config(PlanConfig::new("tabby").expect("config")).expect("dataplane")
    });
    let drop_host = host(EndpointToHostAction::Drop);
    apply(&mut dp, &model(&web_app_db(&lab, json!([{"action": "Allow"}]))), &drop_host);
    assert!(dp.last_stats().is_some_and(|s| s.full_replace), "the first apply replaces the table");

    assert!(tcp_ok(&app.ns, web.ip, 80), "web takes tcp 80 from anyone");
    assert!(tcp_ok(&db.ns, web.ip, 80), "web takes tcp 80 from anyone");
    assert!(tcp_ok(&web.ns, app.ip, 5000), "app takes everything from web");
    assert!(!tcp_ok(&db.ns, app.ip, 5000), "app takes nothing from db");
    assert!(tcp_ok(&app.ns, db.ip, 3306), "mysqldb takes 3306 from db-users (app's label)");
    assert!(!tcp_ok(&web.ns, db.ip, 3306), "web is not a db-user");
    assert!(!tcp_ok(&app.ns, db.ip, 80), "mysqldb takes only 3306");
    assert!(!tcp_ok(&web.ns, HOST_IP, 9000), "workload to host: dropped by default");
    assert!(tcp_ok(&lab.host, web.ip, 80), "host to workload: through web's ingress");
    assert!(!tcp_ok(&lab.host, app.ip, 5000), "host to workload: app takes only web");

    // The sender's egress counts too: app may no longer send, though web's ingress allows.
    apply(&mut dp, &model(&web_app_db(&lab, json!([]))), &drop_host);
    let stats = dp.last_stats().expect("stats").clone();
    assert!(!stats.full_replace && stats.chains_written == 1, "only pro-app rewritten: {stats:?}");
    assert!(!tcp_ok(&app.ns, web.ip, 80), "app's egress allows nothing now");
    assert!(tcp_ok(&db.ns, web.ip, 80), "others are unaffected");

    // Workload to host when configured: the sender's egress decides.
    apply(&mut dp, &model(&web_app_db(&lab, json!([]))), &host(EndpointToHostAction::Accept));
    assert!(tcp_ok(&web.ns, HOST_IP, 9000), "web's egress allows all");
    assert!(!tcp_ok(&app.ns, HOST_IP, 9000), "app's egress allows nothing");
}

#[test]
fn pass_goes_to_profiles_and_unmatched_policies_drop() {
    let lab = Lab::new(&["web", "app", "db"]);
    let (web, app, db) = (lab.wl(0), lab.wl(1), lab.wl(2));
    let _l = listen(&app.ns, &[5000]);
    let gate = |source: &str| {
        json!({
            "kind": "GlobalNetworkPolicy", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": "gate"},
            "spec": {"order": 1, "selector": "has(app)", "types": ["Ingress"],
                     "ingress": [{"action": "Pass", "source": {"selector": source}}]}
        })
    };
    let open = json!({"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]});
    let mut resources = vec![
        gate("has(web)"),
        profile("web", json!({"egress": [{"action": "Allow"}], "labelsToApply": {"web": ""}})),
        profile("app", json!({"ingress": [{"action": "Allow"}], "labelsToApply": {"app": ""}})),
        profile("open", open),
        lab.wep(0, &["web"], json!({})),
        lab.wep(1, &["app"], json!({})),
        lab.wep(2, &["open"], json!({})),
    ];
    let mut dp = lab.host.enter(|| {
        NftDataplane::with_config(PlanConfig::new("tabby").expect("config")).expect("dataplane")
    });
    apply(&mut dp, &model(&resources), &host(EndpointToHostAction::Drop));

    assert!(tcp_ok(&web.ns, app.ip, 5000), "web is passed on to app's profile, which allows");
    assert!(
        !tcp_ok(&db.ns, app.ip, 5000),
        "no policy rule matched db: dropped although app's profile would allow"
    );
    resources[0] = gate("all()");
    apply(&mut dp, &model(&resources), &host(EndpointToHostAction::Drop));
    assert!(tcp_ok(&db.ns, app.ip, 5000), "passed on too now, so app's profile allows");

    // Anti-spoofing: web may reach db (open) from its own address only, and MAC.
    assert!(udp_ok(&web.ns, web.ip, &db.ns, db.ip, 7000), "web's own address passes");
    let spoofed = Ipv4Addr::new(10, 65, 0, 99);
    web.ns.sh_ok(&format!("ip addr add {spoofed}/32 dev eth0"));
    assert!(!udp_ok(&web.ns, spoofed, &db.ns, db.ip, 7001), "spoofed source dropped");
    web.ns.sh_ok("ip link set eth0 address 0a:58:0a:41:00:99");
    assert!(!udp_ok(&web.ns, web.ip, &db.ns, db.ip, 7002), "spoofed MAC dropped");
    web.ns.sh_ok(&format!("ip link set eth0 address {}", web.mac));
    assert!(udp_ok(&web.ns, web.ip, &db.ns, db.ip, 7003), "back to its own MAC: passes");
}

#[test]
fn unknown_workload_interfaces_are_dropped_and_resync_repairs_the_table() {
    let lab = Lab::new(&["known", "stray"]);
    let (known, stray) = (lab.wl(0), lab.wl(1));
    let _l = listen(&known.ns, &[80]);
    let resources = vec![
        profile("open", json!({"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]})),
        lab.wep(0, &["open"], json!({})),
    ];
    let model = model(&resources);
    let mut dp = lab.host.enter(|| {
        NftDataplane::with_config(PlanConfig::new("tabby").expect("config")).expect("dataplane")
    });
    let h = host(EndpointToHostAction::Drop);
    apply(&mut dp, &model, &h);
    assert!(tcp_ok(&lab.host, known.ip, 80), "programmed workload reachable");
    assert!(!tcp_ok(&stray.ns, known.ip, 80), "a cali* interface without endpoint passes nothing");

    // Someone deletes the table; a resync puts it back whole.
    lab.host.sh_ok("nft delete table inet tabby");
    assert!(tcp_ok(&stray.ns, known.ip, 80), "without the table nothing is filtered");
    dp.resync();
    apply(&mut dp, &model, &h);
    assert!(dp.last_stats().is_some_and(|s| s.full_replace));
    assert!(!tcp_ok(&stray.ns, known.ip, 80), "fail closed again after the resync");
}
