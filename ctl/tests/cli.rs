//! Black-box tests of the `tabbyctl` binary against a real etcd: examples round-trip, the v1
//! runbook behaves as its golden files say, bad input is refused whole with a message naming
//! file, document and field, and compare-and-swap refuses stale writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;
use serde_json::Value;
use testkit::Etcd;

mod runbook;

/// tabbyctl bound to the shared test etcd under a prefix of its own.
struct Ctl {
    etcd: &'static Etcd,
    prefix: String,
}

impl Ctl {
    fn new() -> Ctl {
        Ctl { etcd: Etcd::shared(), prefix: format!("/tt/{}", testkit::unique_name("ctl", 16)) }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tabbyctl"))
            .args(["--etcd-endpoints", &self.etcd.endpoint(), "--etcd-prefix", &self.prefix])
            .args(args)
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("ETCD_CA_CERT_FILE")
            .env_remove("ETCD_CERT_FILE")
            .env_remove("ETCD_KEY_FILE")
            .env_remove("TABBY_ETCD_PREFIX")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run tabbyctl");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs and asserts exit 0; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "tabbyctl {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and asserts exit status `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args, None);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "tabbyctl {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    /// Every key under this test's prefix.
    fn keys(&self) -> Vec<String> {
        let out =
            self.etcd.etcdctl(["get", "--prefix", "--keys-only", &format!("{}/", self.prefix)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn put(&self, key: &str, value: &str) {
        let out = self.etcd.etcdctl(["put", &format!("{}{key}", self.prefix), value]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    fn stored(&self, key: &str) -> Value {
        let out =
            self.etcd.etcdctl(["get", "--print-value-only", &format!("{}{key}", self.prefix)]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{key}: {e}"))
    }
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "examples missing: {files:?}");
    files
}

/// The documents of a YAML file as written.
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// A resource without what the server sets.
fn without_server_metadata(mut value: Value) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["resourceVersion", "uid", "creationTimestamp"] {
            meta.remove(field);
        }
    }
    value
}

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn every_example_applies_reads_back_identical_and_deletes() {
    let ctl = Ctl::new();
    for file in examples() {
        let path = file.display().to_string();
        let docs = yaml_docs(&std::fs::read_to_string(&file).unwrap());
        let out = ctl.ok(&["apply", "-f", &path]);
        assert!(
            out.starts_with(&format!("Successfully applied {} resource(s)", docs.len())),
            "{out}"
        );
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap();
            let name = doc["metadata"]["name"].as_str().unwrap();
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            let yaml = ctl.ok(&["get", kind, name, "-n", ns, "-o", "yaml"]);
            let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
            assert!(
                back["metadata"]["resourceVersion"]
                    .as_str()
                    .is_some_and(|rv| rv.parse::<i64>().is_ok()),
                "{yaml}"
            );
            assert!(
                back["metadata"]["uid"].is_string()
                    && back["metadata"]["creationTimestamp"].is_string(),
                "{yaml}"
            );
            assert_eq!(
                without_server_metadata(back),
                *doc,
                "{path}: {kind} {name} read back differently:\n{yaml}"
            );
            let json: Value =
                serde_json::from_str(&ctl.ok(&["get", kind, name, "-n", ns, "-o", "json"]))
                    .unwrap();
            assert_eq!(without_server_metadata(json), *doc);
            let table = ctl.ok(&["get", kind, "-n", ns]);
            assert!(table.starts_with("NAME") || table.starts_with("NAMESPACE"), "{table}");
            assert!(table.contains(name), "{table}");
        }
        // Applying again changes nothing but the revision, and keeps what the server set.
        let before = ctl.ok(&[
            "get",
            docs[0]["kind"].as_str().unwrap(),
            docs[0]["metadata"]["name"].as_str().unwrap(),
            "-n",
            docs[0]["metadata"]["namespace"].as_str().unwrap_or("default"),
            "-o",
            "json",
        ]);
        ctl.ok(&["apply", "-f", &path]);
        let after = ctl.ok(&[
            "get",
            docs[0]["kind"].as_str().unwrap(),
            docs[0]["metadata"]["name"].as_str().unwrap(),
            "-n",
            docs[0]["metadata"]["namespace"].as_str().unwrap_or("default"),
            "-o",
            "json",
        ]);
        let (before, after): (Value, Value) =
            (serde_json::from_str(&before).unwrap(), serde_json::from_str(&after).unwrap());
        assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
        assert_eq!(before["metadata"]["creationTimestamp"], after["metadata"]["creationTimestamp"]);
        assert_ne!(before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"]);

        let out = ctl.ok(&["delete", "-f", &path]);
        assert!(out.starts_with(&format!("Successfully deleted {}", docs.len())), "{out}");
        assert_eq!(ctl.keys(), Vec::<String>::new(), "{path} left keys behind");
    }
}

#[test]
fn stored_json_is_calicos_without_resource_version() {
    let ctl = Ctl::new();
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(&dir, "p.yaml", "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: web\n  resourceVersion: \"\"\nspec:\n  labelsToApply:\n    web: \"\"\n");
    ctl.ok(&["create", "-f", &file]);
    let stored = ctl.stored("/resources/v3/projectcalico.org/profiles/web");
    assert_eq!(stored["kind"], "Profile");
    assert_eq!(stored["apiVersion"], "projectcalico.org/v3");
    assert!(stored["metadata"].get("resourceVersion").is_none(), "{stored}");
    assert!(stored["metadata"]["uid"].is_string(), "{stored}");
    assert_eq!(stored["spec"]["labelsToApply"]["web"], "");
}

#[test]
fn list_output_applies_back() {
    let ctl = Ctl::new();
    let pools = examples().into_iter().find(|p| p.ends_with("ippools.yaml")).unwrap();
    ctl.ok(&["apply", "-f", &pools.display().to_string()]);
    let listed = ctl.ok(&["get", "ippools", "-o", "yaml"]);
    let list: Value = serde_yaml_ng::from_str(&listed).unwrap();
    assert_eq!(list["kind"], "IPPoolList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    // The listing carries resourceVersions: applying it is a compare-and-swap that holds.
    let out = ctl.ok_with(&["apply", "-f", "-"], Some(&listed));
    assert!(out.starts_with("Successfully applied 2"), "{out}");
    // …and, now stale, is refused.
    let err = String::from_utf8(ctl.run(&["apply", "-f", "-"], Some(&listed)).stderr).unwrap();
    assert!(
        err.contains("stale metadata.resourceVersion") && err.contains("nothing was written"),
        "{err}"
    );
    let wide = ctl.ok(&["get", "ippool", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().split_whitespace().eq([
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR"
        ]),
        "{wide}"
    );
    assert!(wide.contains("10.65.0.0/16") && wide.contains("true"), "{wide}");
}

#[test]
fn create_twice_is_refused_and_changes_nothing() {
    let ctl = Ctl::new();
    let pools =
        examples().into_iter().find(|p| p.ends_with("ippools.yaml")).unwrap().display().to_string();
    ctl.ok(&["create", "-f", &pools]);
    let before = ctl.stored("/resources/v3/projectcalico.org/ippools/default-ipv4-ippool");
    let err = ctl.fails(&["create", "-f", &pools], 1);
    assert!(err.contains("document 1 (IPPool \"default-ipv4-ippool\"): already exists"), "{err}");
    assert!(err.contains("document 2 (IPPool \"default-ipv6-ippool\"): already exists"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(ctl.stored("/resources/v3/projectcalico.org/ippools/default-ipv4-ippool"), before);
}

#[test]
fn replace_needs_the_current_resource_version() {
    let ctl = Ctl::new();
    let dir = tempfile::tempdir().unwrap();
    let profile = |labels: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: web\nspec:\n  labelsToApply: {{{labels}}}\n")
    };
    let missing = write_file(&dir, "missing.yaml", &profile("a: \"\""));
    let err = ctl.fails(&["replace", "-f", &missing], 1);
    assert!(err.contains("does not exist"), "{err}");
    ctl.ok(&["apply", "-f", &missing]);

    let current = ctl.ok(&["get", "profile", "web", "-o", "yaml"]);
    let edited = write_file(&dir, "edited.yaml", &current.replace("a: ''", "b: ''"));
    assert_ne!(
        current,
        std::fs::read_to_string(&edited).unwrap(),
        "edit did not apply:\n{current}"
    );
    ctl.ok(&["replace", "-f", &edited]);
    // The file still holds the revision it was read at: replacing with it again is stale.
    let err = ctl.fails(&["replace", "-f", &edited], 1);
    assert!(err.contains("stale metadata.resourceVersion") && err.contains("(now at "), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    let now: Value =
        serde_yaml_ng::from_str(&ctl.ok(&["get", "profile", "web", "-o", "yaml"])).unwrap();
    assert_eq!(now["spec"]["labelsToApply"], serde_json::json!({"b": ""}));
    // Without a resourceVersion, replace uses the one it reads.
    let plain = write_file(&dir, "plain.yaml", &profile("c: \"\""));
    ctl.ok(&["replace", "-f", &plain]);
    let err = ctl.fails(&["replace", "-f", "-", "--namespace", "x"], 1);
    assert!(err.contains("<stdin>: no resources found"), "{err}");
}

#[test]
fn bad_documents_are_refused_whole_with_file_document_and_field() {
    let ctl = Ctl::new();
    let dir = tempfile::tempdir().unwrap();
    let pool = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: good\nspec:\n  cidr: 10.70.0.0/16\n";
    let profile =
        "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: good\nspec: {}\n";
    let cases: [(&str, String, &[&str]); 5] = [
        (
            "selector.yaml",
            format!("{pool}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: bad\nspec:\n  cidr: 10.71.0.0/16\n  nodeSelector: \"rack == \"\n---\n{profile}"),
            &["selector.yaml: document 2 (IPPool \"bad\"): spec.nodeSelector: invalid selector", "at position 8"],
        ),
        (
            "kind.yaml",
            format!("apiVersion: projectcalico.org/v3\nkind: Pool\nmetadata:\n  name: x\nspec: {{}}\n---\n{pool}"),
            &["kind.yaml: document 1 (Pool \"x\"): kind: unknown resource kind \"Pool\"", "IPPool, Profile"],
        ),
        (
            "port.yaml",
            format!("{pool}---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: p\nspec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [80, 70000]\n"),
            &["port.yaml: document 2 (Profile \"p\"): spec.ingress[0].destination.ports[1]: port 70000 out of range"],
        ),
        (
            "tab.yaml",
            format!("{pool}---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n\tname: p\nspec: {{}}\n"),
            &["tab.yaml: document 2: YAML syntax error", "line 11 column 1"],
        ),
        (
            "list.json",
            r#"{"apiVersion":"projectcalico.org/v3","kind":"List","items":[
                {"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"ok"},"spec":{}},
                {"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"g"},"spec":{"order":"first"}}]}"#.to_owned(),
            &["list.json: document 1, item 2 (GlobalNetworkPolicy \"g\"): spec.order"],
        ),
    ];
    for (name, text, expected) in cases {
        let path = write_file(&dir, name, &text);
        for verb in ["apply", "create"] {
            let err = ctl.fails(&[verb, "-f", &path], 1);
            for needle in expected {
                assert!(err.contains(needle), "{name}: expected {needle:?} in:\n{err}");
            }
            assert!(err.contains("nothing was written"), "{err}");
            assert_eq!(ctl.keys(), Vec::<String>::new(), "{name}: something was written");
        }
    }
}

#[test]
fn kinds_and_names_are_checked() {
    let ctl = Ctl::new();
    let err = ctl.fails(&["get", "widgets"], 1);
    assert!(
        err.contains("unknown resource kind \"widgets\"") && err.contains("ippool, profile"),
        "{err}"
    );
    let err = ctl.fails(&["delete", "widgets", "x"], 1);
    assert!(err.contains("unknown resource kind"), "{err}");
    let err = ctl.fails(&["get", "profile", "nope"], 1);
    assert!(err.contains("Profile \"nope\" not found"), "{err}");
    let err = ctl.fails(&["delete", "gnp", "nope"], 1);
    assert!(err.contains("GlobalNetworkPolicy \"nope\" not found"), "{err}");
    ctl.fails(&["frobnicate"], 2);
    ctl.fails(&["get"], 2);
    assert_eq!(ctl.ok(&["get", "profiles"]), "NAME\n");
    assert_eq!(ctl.ok(&["get", "networkpolicy", "-A"]), "NAMESPACE   NAME\n");
}

#[test]
fn runbook_through_the_binary_matches_the_golden_files_and_the_examples() {
    let ctl = Ctl::new();
    for (i, (command, stdin)) in runbook::RUNBOOK.iter().enumerate() {
        let args: Vec<&str> = command.split_whitespace().collect();
        let stdout = ctl.ok_with(&args, *stdin);
        let golden: Value = serde_json::from_str(
            &std::fs::read_to_string(runbook::golden_file(i + 1, command)).unwrap(),
        )
        .unwrap();
        assert_eq!(stdout, golden["stdout"].as_str().unwrap(), "step {} `{command}`", i + 1);
        if let Some(name) = golden["profile"]["metadata"]["name"].as_str() {
            let stored: Value =
                serde_json::from_str(&ctl.ok(&["get", "profile", name, "-o", "json"])).unwrap();
            assert_eq!(
                without_server_metadata(stored),
                golden["profile"],
                "step {} `{command}`",
                i + 1
            );
        }
    }
    let examples = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/profiles.yaml"),
    )
    .unwrap();
    for doc in yaml_docs(&examples) {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let stored: Value =
            serde_yaml_ng::from_str(&ctl.ok(&["get", "profile", name, "-o", "yaml"])).unwrap();
        assert_eq!(without_server_metadata(stored), doc, "profile {name}");
    }
    assert_eq!(ctl.ok(&["profile", "show"]), "NAME\napp\ndb-users\nmysqldb\nweb\n");
    assert_eq!(ctl.ok(&["profile", "add", "web"]), "Profile web already exists.\n");
    // rule json | rule update is the identity, even for the rule with no v1 form.
    let json = ctl.ok(&["profile", "mysqldb", "rule", "json"]);
    let before = ctl.ok(&["get", "profile", "mysqldb", "-o", "json"]);
    ctl.ok_with(&["profile", "mysqldb", "rule", "update"], Some(&json));
    let after = ctl.ok(&["get", "profile", "mysqldb", "-o", "json"]);
    let spec = |t: &str| serde_json::from_str::<Value>(t).unwrap()["spec"].clone();
    assert_eq!(spec(&before), spec(&after));
}

#[test]
fn profile_errors() {
    let ctl = Ctl::new();
    ctl.ok(&["profile", "add", "web"]);
    let before = ctl.ok(&["get", "profile", "web", "-o", "json"]);
    let err = ctl.fails(&["profile", "web", "rule", "remove", "inbound", "5"], 1);
    assert!(
        err.contains(
            "inbound rule position 5 is out of range: profile \"web\" has 1 inbound rule(s)"
        ),
        "{err}"
    );
    let err = ctl.fails(&["profile", "web", "rule", "add", "outbound", "--at=4", "deny"], 1);
    assert!(err.contains("position 4 is out of range"), "{err}");
    let err = ctl.fails(
        &["profile", "web", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "65536"],
        1,
    );
    assert!(err.contains("to ports: port 65536 out of range: ports are 1-65535"), "{err}");
    let err = ctl.fails(&["profile", "web", "rule", "add", "inbound", "permit"], 2);
    assert!(err.contains("a rule starts with allow or deny") && err.contains("Usage:"), "{err}");
    let err = ctl.fails(&["profile", "ghost", "tag", "add", "x"], 1);
    assert!(err.contains("profile \"ghost\" not found"), "{err}");
    let err = ctl.fails(&["profile", "web", "tag", "remove", "nope"], 1);
    assert!(err.contains("tag \"nope\" is not on profile \"web\""), "{err}");
    let out = ctl.run(&["profile", "web", "rule", "update"], Some(r#"{"id":"web","inbound_rules":[{"action":"allow","protocol":"tcp","dst_ports":[0]}],"outbound_rules":[]}"#));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inbound_rules[0].dst_ports[0]: port 0 out of range"), "{err}");
    let out = ctl.run(
        &["profile", "web", "rule", "update"],
        Some(r#"{"id":"app","inbound_rules":[],"outbound_rules":[]}"#),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match profile name"),
        "{out:?}"
    );
    assert_eq!(
        ctl.ok(&["get", "profile", "web", "-o", "json"]),
        before,
        "a refused command changed the profile"
    );
    // Global flags may follow the v1 words.
    let out = ctl.run(
        &["profile", "web", "rule", "show", "--etcd-prefix", "/tt/elsewhere-nothing-here"],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("profile \"web\" not found"), "{out:?}");
}

const ENDPOINT: &str = r"apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: host--1-cni-0123456789ab-eth0
  namespace: default
spec:
  orchestrator: cni
  node: host-1
  containerID: 0123456789ab
  endpoint: eth0
  ipNetworks: [10.65.0.5/32]
  profiles: [web]
  interfaceName: cali0123456789a
  mac: ee:ee:ee:ee:ee:ee
";

#[test]
fn node_status_and_endpoints() {
    let ctl = Ctl::new();
    let dir = tempfile::tempdir().unwrap();
    let node =
        examples().into_iter().find(|p| p.ends_with("node.yaml")).unwrap().display().to_string();
    ctl.ok(&["apply", "-f", &node]);
    ctl.ok(&["profile", "add", "web"]);
    ctl.ok(&["apply", "-f", &write_file(&dir, "wep.yaml", ENDPOINT)]);
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    ctl.put(
        "/felix/v2/no-region/host/host-1/status",
        &format!(r#"{{"time":"{now}","uptime":3725.5,"first_update":false,"version":"0.1.0","endpoints":1}}"#),
    );
    ctl.put("/ipam/v2/host/host-1/ipv4/block/10.65.0.0-26", r#"{"state":"confirmed"}"#);
    ctl.put("/ipam/v2/host/host-2/ipv4/block/10.65.0.64-26", r#"{"state":"confirmed"}"#);

    let status = ctl.ok(&["node", "status"]);
    let lines: Vec<&str> = status.lines().collect();
    assert!(
        lines[0].split_whitespace().eq([
            "NODE",
            "ADDRESS",
            "AGENT",
            "HEARTBEAT",
            "UPTIME",
            "VERSION",
            "BLOCKS",
            "ENDPOINTS"
        ]),
        "{status}"
    );
    let host1: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(host1[..3], ["host-1", "192.0.2.10", "up"], "{status}");
    assert!(host1[3].ends_with('s') && host1[4] == "ago", "{status}");
    assert_eq!(host1[5..], ["1h", "2m", "5s", "0.1.0", "1", "1"], "{status}");
    let host2: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(host2, ["host-2", "down", "none", "1", "0"], "{status}");
    assert!(status.contains("BGP: not configured"), "{status}");
    assert!(status.contains("No Node resource for: host-2"), "{status}");

    let json: Value = serde_json::from_str(&ctl.ok(&["node", "status", "-o", "json"])).unwrap();
    assert_eq!(json["nodes"][0]["blocks"], serde_json::json!(["10.65.0.0/26"]));
    assert_eq!(json["nodes"][0]["endpoints"], 1);
    assert!(json["nodes"][0]["heartbeatAgeSeconds"].as_u64().is_some_and(|s| s < 60), "{json}");

    let bgp = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.0.2.1\n  asNumber: 64513\n";
    ctl.ok(&["apply", "-f", &write_file(&dir, "bgp.yaml", bgp)]);
    assert!(ctl.ok(&["node", "status"]).contains("BGP: configured (1 peer(s)"));

    let eps = ctl.ok(&["endpoint", "ls"]);
    assert!(
        eps.lines().next().unwrap().split_whitespace().eq([
            "NODE",
            "NAMESPACE",
            "WORKLOAD",
            "INTERFACE",
            "ADDRESSES",
            "PROFILES"
        ]),
        "{eps}"
    );
    assert!(
        eps.lines().nth(1).unwrap().split_whitespace().eq([
            "host-1",
            "default",
            "0123456789ab",
            "cali0123456789a",
            "10.65.0.5/32",
            "web"
        ]),
        "{eps}"
    );
    assert_eq!(ctl.ok(&["endpoint", "ls", "--node", "host-2"]), "No workload endpoints found.\n");
    let listed: Value =
        serde_yaml_ng::from_str(&ctl.ok(&["endpoint", "ls", "--node", "host-1", "-o", "yaml"]))
            .unwrap();
    assert_eq!(listed["items"][0]["metadata"]["name"], "host--1-cni-0123456789ab-eth0");

    // A profile in use is not removed unless asked.
    let err = ctl.fails(&["profile", "remove", "web"], 1);
    assert!(
        err.contains("default/host--1-cni-0123456789ab-eth0") && err.contains("--no-check"),
        "{err}"
    );
    let detailed = ctl.ok(&["profile", "show", "--detailed"]);
    assert!(detailed.contains("host-1") && detailed.contains("0123456789ab"), "{detailed}");
    assert_eq!(ctl.ok(&["profile", "remove", "web", "--no-check"]), "Deleted profile web\n");
    ctl.fails(&["profile", "remove", "web"], 1);
}

#[test]
fn completions_man_page_and_version() {
    let ctl = Ctl::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = ctl.ok(&["completion", shell]);
        assert!(script.contains("tabbyctl") && script.contains("apply"), "{shell}");
    }
    let man = ctl.ok(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH tabbyctl"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("etcd\\-endpoints") || man.contains("etcd-endpoints"));
    assert_eq!(ctl.ok(&["version"]), format!("tabbyctl {}\n", env!("CARGO_PKG_VERSION")));
    ctl.fails(&["completion", "tcsh"], 2);
}

#[test]
fn unreachable_etcd_is_an_error_not_a_hang() {
    let out = Command::new(env!("CARGO_BIN_EXE_tabbyctl"))
        .args(["--etcd-endpoints", "http://127.0.0.1:9", "get", "profiles"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to etcd") && err.contains("retried"), "{err}");
}
