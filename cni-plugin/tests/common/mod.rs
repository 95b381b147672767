//! Fixtures for the kernel tests: a "host" and a "container" namespace made by the test, the
//! `tabby` binary run inside the host one as a runtime would run it, host-local IPAM with a
//! private data dir.

#![allow(dead_code, reason = "each test binary uses a different part of this module")]

pub mod store;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use testkit::Netns;

/// The `tabby` binary under test: the one cargo built, or the shipped (static) one when
/// `TABBY_PLUGIN_DIR` names it (see [`testkit::plugin`]).
pub fn tabby() -> PathBuf {
    testkit::plugin("tabby", env!("CARGO_BIN_EXE_tabby"))
}

/// The `tabby-ipam` binary under test, as [`tabby`].
pub fn tabby_ipam() -> PathBuf {
    testkit::plugin("tabby-ipam", env!("CARGO_BIN_EXE_tabby-ipam"))
}

/// What one plugin run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as the single JSON document it must be (empty stdout is `Null`).
    pub fn json(&self) -> Value {
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {:?}", self.stdout))
    }

    /// The CNI error code, panicking if the run succeeded.
    pub fn code(&self) -> u64 {
        assert!(!self.success, "expected a failure, got success: {}", self.stdout);
        self.json()["code"].as_u64().unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }

    pub fn msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or_default().to_owned()
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert!(self.success, "plugin failed: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

/// One simulated host with one container namespace and a host-local data dir.
pub struct Fixture {
    pub host: Netns,
    pub container: Netns,
    pub data_dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(tag: &str) -> Fixture {
        testkit::require_root();
        Fixture {
            host: Netns::new(&format!("{tag}h")),
            container: Netns::new(&format!("{tag}c")),
            data_dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A network config using host-local on `subnet` (and `subnet6` when given).
    pub fn conf(&self, version: Option<&str>, name: &str, subnet: &str) -> Value {
        let mut conf = json!({
            "name": name,
            "type": "tabby",
            "ipam": {"type": "host-local", "subnet": subnet,
                     "dataDir": self.data_dir.path().to_str().expect("utf-8 path")},
        });
        if let Some(v) = version {
            conf["cniVersion"] = json!(v);
        }
        conf
    }

    pub fn conf_dual(&self, version: &str, name: &str, subnet: &str, subnet6: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": name,
            "type": "tabby",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}], [{"subnet": subnet6}]],
                     "dataDir": self.data_dir.path().to_str().expect("utf-8 path")},
        })
    }

    /// Starts `program` inside the host namespace with exactly the given `CNI_*` variables and
    /// `stdin` written; the caller waits for (or kills) it. `nsenter` execs the program, so
    /// the child is the plugin itself.
    pub fn spawn_program(
        &self,
        program: &Path,
        env: &[(&str, &str)],
        stdin: &str,
    ) -> std::process::Child {
        let mut cmd = self.host.nsenter_command(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn plugin");
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(stdin.as_bytes()).expect("write stdin");
        }
        child
    }

    /// [`Fixture::spawn_program`] for `tabby`.
    pub fn spawn_env(&self, env: &[(&str, &str)], stdin: &str) -> std::process::Child {
        self.spawn_program(&tabby(), env, stdin)
    }

    /// Runs `program` to completion inside the host namespace.
    pub fn run_program(&self, program: &Path, env: &[(&str, &str)], stdin: &str) -> Run {
        let out = self.spawn_program(program, env, stdin).wait_with_output().expect("wait plugin");
        Run {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `tabby` inside the host namespace with exactly the given `CNI_*` variables.
    pub fn run_env(&self, env: &[(&str, &str)], stdin: &str) -> Run {
        self.run_program(&tabby(), env, stdin)
    }

    /// Runs a verb for `(container_id, ifname)` in this fixture's container.
    pub fn run(&self, command: &str, container_id: &str, ifname: &str, conf: &Value) -> Run {
        let netns = self.container.path();
        self.run_env(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container_id),
                ("CNI_NETNS", netns.to_str().expect("utf-8")),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/usr/lib/cni"),
            ],
            &conf.to_string(),
        )
    }

    /// Addresses host-local currently holds for network `name`.
    pub fn allocations(&self, name: &str) -> Vec<IpAddr> {
        let dir = self.data_dir.path().join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut out: Vec<IpAddr> =
            entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        out.sort();
        out
    }

    /// `ip -j <args>` in a namespace, parsed.
    pub fn ip_json(ns: &Netns, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = ns.ip_ok(full);
        if out.trim().is_empty() {
            return json!([]);
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
    }

    /// Names of the host's `cali*` links. DEL leaves the deletion of a pair it has cut off
    /// (link down) to a reaper process, which takes the kernel tens of milliseconds: such
    /// links are given ten seconds (a burst of hundreds) to go before they count.
    pub fn host_calis(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let links = Fixture::ip_json(&self.host, &["link", "show"]);
            let calis: Vec<&Value> = links
                .as_array()
                .expect("array")
                .iter()
                .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("cali")))
                .collect();
            let detached = calis
                .iter()
                .any(|l| !l["flags"].as_array().is_some_and(|f| f.iter().any(|f| f == "UP")));
            if !detached || std::time::Instant::now() >= deadline {
                return calis
                    .iter()
                    .filter_map(|l| l["ifname"].as_str())
                    .map(String::from)
                    .collect();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The host's routes with tabby's protocol, as `(dst, dev)`.
    pub fn host_tabby_routes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            for r in Fixture::ip_json(&self.host, &[fam, "route", "show", "proto", "112"])
                .as_array()
                .expect("array")
            {
                out.push((
                    r["dst"].as_str().unwrap_or_default().to_owned(),
                    r["dev"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        out
    }

    /// A sysctl in the host namespace.
    pub fn host_sysctl(&self, key: &str) -> String {
        sysctl_in(&self.host, key)
    }
}

/// Reads `/proc/sys/<key>` inside `ns`.
pub fn sysctl_in(ns: &Netns, key: &str) -> String {
    ns.sh_ok(&format!("cat /proc/sys/{key}")).trim().to_owned()
}

/// `cali` + 11 hex of SHA-1(`<id>.<ifname>`), computed with the system's `sha1sum` so the
/// test does not share code with the plugin.
pub fn expected_host_veth(container_id: &str, ifname: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s' '{container_id}.{ifname}' | sha1sum"))
        .output()
        .expect("sha1sum");
    format!("cali{}", &String::from_utf8_lossy(&out.stdout)[..11])
}

/// Path of a namespace that does not exist.
pub fn missing_netns() -> PathBuf {
    Path::new("/var/run/netns").join(testkit::unique_name("tabbygone", 15))
}
