//! The `tabby-agent` binary against a real etcd and a real kernel, inside a private network
//! namespace that plays one host: etcd runs in the namespace too (on its own loopback), the
//! agent is started as an operator would, and everything is checked from the outside —
//! routes with `ip`, health and metrics with `curl`, etcd with `etcdctl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::{Etcd, Netns};

const PREFIX: &str = "/tabby-test";
const METRICS: &str = "127.0.0.1:9099";

/// A host namespace with an uplink (`up0`, 192.0.2.1/24, default route via .254), a
/// foreign route, and etcd listening on the namespace's loopback.
struct Host {
    // Dropped in this order: etcd, then the namespace (an `Agent`, declared later in a
    // test, is dropped before its `Host`).
    etcd: Etcd,
    ns: Netns,
    dir: tempfile::TempDir,
}

impl Host {
    fn new(tag: &str) -> Host {
        testkit::require_root();
        let ns = Netns::new(tag);
        ns.ip_ok(["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
        ns.ip_ok(["link", "set", "up1", "up"]);
        ns.ip_ok(["link", "set", "up0", "up"]);
        ns.ip_ok(["addr", "add", "192.0.2.1/24", "dev", "up0"]);
        ns.ip_ok(["route", "add", "default", "via", "192.0.2.254"]);
        ns.ip_ok(["route", "add", "10.77.0.0/24", "via", "192.0.2.9", "proto", "static"]);
        let etcd = Etcd::builder().netns(ns.name()).start();
        Host { etcd, ns, dir: tempfile::tempdir().unwrap() }
    }

    fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("agent.toml");
        let text = format!(
            "nodename = \"host-a\"\n\
             nodename_file = \"{}\"\n\
             metrics_addr = \"{METRICS}\"\n\
             route_refresh_interval = \"2s\"\n\
             status_interval = \"1s\"\n\
             log_level = \"info,agent=debug\"\n\
             {extra}\n\
             [etcd]\n\
             endpoints = [\"{}\"]\n\
             prefix = \"{PREFIX}\"\n",
            self.dir.path().join("nodename").display(),
            self.etcd.endpoint(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn put(&self, key: &str, value: &Value) {
        let out = self.etcd.etcdctl(["put".to_string(), key.to_string(), value.to_string()]);
        assert!(
            out.status.success(),
            "etcdctl put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn put_raw(&self, key: &str, value: &str) {
        let out = self.etcd.etcdctl(["put", key, value]);
        assert!(
            out.status.success(),
            "etcdctl put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn delete(&self, key: &str) {
        let out = self.etcd.etcdctl(["del", key]);
        assert!(out.status.success(), "etcdctl del {key}");
    }

    /// The key-value at `key` as etcdctl's JSON (`kvs[0]`), if present.
    fn get(&self, key: &str) -> Option<Value> {
        let out = self.etcd.etcdctl(["get", key, "-w", "json"]);
        assert!(out.status.success(), "etcdctl get {key}");
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        json["kvs"].get(0).cloned()
    }

    /// tabby's routes in the namespace, as `ip route` prints them.
    fn routes(&self) -> String {
        let v4 = self.ns.ip_ok(["route", "show", "proto", "112"]);
        let v6 = self.ns.ip_ok(["-6", "route", "show", "proto", "112"]);
        format!("{v4}{v6}")
    }

    /// GET `path` from the agent's health server: status code and body.
    fn http(&self, path: &str) -> (u16, String) {
        let url = format!("http://{METRICS}{path}");
        let out = self.ns.run("curl", ["-s", "-m", "2", "-w", "\n%{http_code}", url.as_str()]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn start_agent(&self, args: &[&str]) -> Agent {
        let log = self.dir.path().join("agent.log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        // The agent dies with the test thread even if the test is killed.
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "ip", "netns", "exec", self.ns.name()])
            .arg(env!("CARGO_BIN_EXE_tabby-agent"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("cannot start tabby-agent");
        Agent { child: Some(child), log }
    }
}

fn block(cidr: &str, host: &str) -> Value {
    let mut allocations = vec![Value::Null; 64];
    allocations[1] = json!(0);
    json!({
        "cidr": cidr, "affinity": format!("host:{host}"),
        "allocations": allocations, "unallocated": (2..64).chain(0..1).collect::<Vec<_>>(),
        "attributes": [{"handle_id": "net.c1.eth0", "secondary": {"node": host}}],
        "sequenceNumber": 1, "sequenceNumberForAllocation": {"1": 1}, "deleted": false
    })
}

fn block_key(cidr: &str) -> String {
    format!("{PREFIX}/ipam/v2/assignment/ipv4/block/{}", cidr.replace('/', "-"))
}

fn node(name: &str, address: &str) -> (String, Value) {
    (
        format!("{PREFIX}/resources/v3/projectcalico.org/nodes/{name}"),
        json!({
            "kind": "Node", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name}, "spec": {"bgp": {"ipv4Address": address}}
        }),
    )
}

/// A running agent; killed on drop if still running.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("tabby-agent exited ({status}):\n{}", self.log());
        }
    }

    /// SIGTERM, then the exit status (SIGKILL after 10 s).
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tabby-agent ignored SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("agent already stopped");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tabby-agent did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` until it holds, or panics with `what` and the agent's log.
fn wait_for(agent: &mut Agent, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        agent.assert_running();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn agent_programs_routes_from_etcd_and_rides_out_an_etcd_outage() {
    let mut host = Host::new("agent");
    let (b_key, b_node) = node("host-b", "192.0.2.2/24");
    host.put(&b_key, &b_node);
    host.put(&block_key("10.65.0.0/26"), &block("10.65.0.0/26", "host-a"));
    host.put(&block_key("10.65.1.0/26"), &block("10.65.1.0/26", "host-b"));
    // Bad input: logged once with its key, ignored, the rest programmed.
    let bad_block = block_key("10.65.9.0/26");
    host.put_raw(&bad_block, "{\"cidr\": ");
    let bad_profile = format!("{PREFIX}/resources/v3/projectcalico.org/profiles/broken");
    host.put(
        &bad_profile,
        &json!({
            "kind": "Profile", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "broken"},
            "spec": {"ingress": [{"action": "Allow", "source": {"selector": "has(("}}]}
        }),
    );

    let config = host.config("");
    let mut agent = host.start_agent(&["--config", config.to_str().unwrap()]);

    wait_for(&mut agent, "routes from the first snapshot", Duration::from_secs(20), || {
        let r = host.routes();
        r.contains("blackhole 10.65.0.0/26") && r.contains("10.65.1.0/26 via 192.0.2.2 dev up0")
    });
    wait_for(&mut agent, "/readyz 200", Duration::from_secs(10), || host.http("/readyz").0 == 200);
    assert_eq!(host.http("/livez").0, 200);

    // The node address was discovered (default route's interface) and published.
    let (a_key, _) = node("host-a", "");
    wait_for(&mut agent, "the Node resource of host-a", Duration::from_secs(10), || {
        host.get(&a_key).is_some()
    });
    let published = host.get(&a_key).unwrap();
    let published: Value =
        serde_json::from_slice(&base64_decode(published["value"].as_str().unwrap())).unwrap();
    assert_eq!(published["spec"]["bgp"]["ipv4Address"], "192.0.2.1/24");
    assert_eq!(std::fs::read_to_string(host.dir.path().join("nodename")).unwrap().trim(), "host-a");

    // The heartbeat is on a lease.
    let status_key = format!("{PREFIX}/felix/v2/no-region/host/host-a/status");
    let status = host.get(&status_key).expect("no heartbeat");
    assert_ne!(status["lease"].as_i64().unwrap_or(0), 0, "heartbeat without a lease: {status}");
    let report: Value =
        serde_json::from_slice(&base64_decode(status["value"].as_str().unwrap())).unwrap();
    assert_eq!(report["address"], "192.0.2.1");

    let metrics = host.http("/metrics").1;
    assert!(metrics.contains("tabby_agent_routes 2\n"), "{metrics}");
    assert!(metrics.contains("tabby_agent_invalid_resources 2\n"), "{metrics}");
    assert!(metrics.contains("tabby_agent_apply_duration_seconds_count"), "{metrics}");

    // A block that moves to another node moves its route (watch, not re-list).
    let (c_key, c_node) = node("host-c", "192.0.2.3/24");
    host.put(&c_key, &c_node);
    host.put(&block_key("10.65.1.0/26"), &block("10.65.1.0/26", "host-c"));
    wait_for(&mut agent, "the moved block's route", Duration::from_secs(10), || {
        host.routes().contains("10.65.1.0/26 via 192.0.2.3 dev up0")
    });

    // A route deleted by hand is back after the route refresh.
    host.ns.ip_ok(["route", "del", "blackhole", "10.65.0.0/26"]);
    wait_for(&mut agent, "the deleted route to be repaired", Duration::from_secs(10), || {
        host.routes().contains("blackhole 10.65.0.0/26")
    });

    // etcd goes away: the dataplane stays as programmed and /readyz says why.
    let before = host.routes();
    host.etcd.stop();
    wait_for(&mut agent, "/readyz to report etcd down", Duration::from_secs(15), || {
        let (code, body) = host.http("/readyz");
        code == 503 && body.contains("etcd: down")
    });
    std::thread::sleep(Duration::from_secs(4));
    agent.assert_running();
    assert_eq!(host.routes(), before, "routes changed while etcd was down");
    assert_eq!(host.http("/livez").0, 200);

    // etcd comes back with changes the agent missed, and their history compacted away.
    host.etcd.start_again();
    host.put(&block_key("10.65.2.0/26"), &block("10.65.2.0/26", "host-b"));
    host.delete(&block_key("10.65.1.0/26"));
    host.etcd.compact_latest();
    wait_for(&mut agent, "catching up after the outage", Duration::from_secs(30), || {
        let r = host.routes();
        r.contains("10.65.2.0/26 via 192.0.2.2") && !r.contains("10.65.1.0/26")
    });
    wait_for(&mut agent, "/readyz 200 again", Duration::from_secs(15), || {
        host.http("/readyz").0 == 200
    });

    // Each bad value was reported once, re-lists notwithstanding.
    let log = agent.log();
    assert_eq!(count(&log, &bad_block), 1, "{log}");
    assert_eq!(count(&log, &bad_profile), 1, "{log}");

    // SIGTERM: a clean exit that leaves the dataplane in place and takes the heartbeat along.
    let programmed = host.routes();
    let status = agent.terminate();
    assert!(status.success(), "exit {status}:\n{}", agent.log());
    assert_eq!(host.routes(), programmed);
    assert!(host.get(&status_key).is_none(), "heartbeat outlived the agent");
    // Someone else's route was never touched.
    assert!(host
        .ns
        .ip_ok(["route", "show"])
        .contains("10.77.0.0/24 via 192.0.2.9 dev up0 proto static"));
}

#[test]
fn once_programs_and_exits() {
    let host = Host::new("once");
    host.put(&block_key("10.65.0.0/26"), &block("10.65.0.0/26", "host-a"));
    let config = host.config("");
    let mut agent = host.start_agent(&[
        "--config",
        config.to_str().unwrap(),
        "--once",
        "--node-ip",
        "192.0.2.1",
    ]);
    let status = agent.wait(Duration::from_mins(1));
    assert!(status.success(), "exit {status}:\n{}", agent.log());
    assert!(host.routes().contains("blackhole 10.65.0.0/26"), "{}", host.routes());
}

#[test]
fn invalid_configuration_exits_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "nodename = \"host-a\"\nresync_interval = \"often\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tabby-agent"))
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resync_interval") && stderr.contains(&path.display().to_string()),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tabby-agent"))
        .args(["--config", path.to_str().unwrap(), "--resync-interval", "30s", "--node-ip", "::1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flag --node-ip"));
}

/// etcdctl's JSON output has base64 values; a small decoder spares a dependency.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("not base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
