//! A simulated host: a network namespace joined to the fabric, and the `tabby-agent` process
//! that runs in it with its own config file and log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::Netns;

use crate::netns::{http_get, nsenter};
use crate::process::{run, Ran};

/// Where every agent serves health and metrics, on its own host's loopback.
pub const METRICS_PORT: u16 = 9099;
/// The table the agent owns.
pub const NFT_TABLE: &str = "tabby";
/// How long an agent gets to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One simulated host.
#[derive(Debug)]
pub struct Host {
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    settings: BTreeMap<String, String>,
    agent: Option<Agent>,
    /// Dropped last: the agent must be gone first.
    netns: Netns,
}

/// A running `tabby-agent`.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    started: Instant,
}

impl Host {
    pub(crate) fn new(name: String, ip: Ipv4Addr, dir: PathBuf, netns: Netns) -> Host {
        Host { name, ip, dir, settings: BTreeMap::new(), agent: None, netns }
    }

    /// The node name (`host-a`, `host-b`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's address on the fabric (its node IP).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// A probe view of the host itself (network `host`): to probe host → workload or
    /// workload → host with the same matrix.
    pub fn endpoint(&self) -> crate::cluster::Endpoint {
        crate::cluster::Endpoint {
            name: self.name.clone(),
            network: "host".into(),
            host: self.name.clone(),
            ip: self.ip,
            netns: self.path(),
        }
    }

    /// The host's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// `/var/run/netns/<name>` of the host's namespace.
    pub fn path(&self) -> PathBuf {
        self.netns.path()
    }

    /// The agent's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    /// The agent's log (stdout and stderr of every run, appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the agent's log.
    pub fn agent_log_tail(&self, lines: usize) -> String {
        let log = self.agent_log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The agent settings (top-level TOML key → TOML value) written to its config file.
    pub fn settings(&self) -> &BTreeMap<String, String> {
        &self.settings
    }

    /// Sets one agent setting (`key = value` in TOML, value already in TOML syntax); takes
    /// effect at the next [`Host::start_agent`].
    pub fn set_setting(&mut self, key: &str, toml_value: &str) {
        self.settings.insert(key.to_string(), toml_value.to_string());
    }

    pub(crate) fn set_settings(&mut self, settings: BTreeMap<String, String>) {
        self.settings = settings;
    }

    fn write_config(&self) {
        let mut top = String::new();
        let mut sections: BTreeMap<&str, String> = BTreeMap::new();
        for (key, value) in &self.settings {
            match key.split_once('.') {
                Some((section, sub)) => {
                    let _ = writeln!(sections.entry(section).or_default(), "{sub} = {value}");
                }
                None => {
                    let _ = writeln!(top, "{key} = {value}");
                }
            }
        }
        for (section, body) in sections {
            let _ = write!(top, "\n[{section}]\n{body}");
        }
        std::fs::write(self.config_path(), top)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.config_path().display()));
    }

    /// The running agent, if any.
    pub fn agent(&mut self) -> Option<&mut Agent> {
        self.agent.as_mut()
    }

    /// Whether an agent process is running.
    pub fn agent_running(&mut self) -> bool {
        self.agent.as_mut().is_some_and(Agent::is_running)
    }

    /// Writes the config file and starts `tabby-agent --config <file>` in the host namespace
    /// (via `nsenter --net`). Panics if one is already running.
    pub fn start_agent(&mut self) {
        assert!(!self.agent_running(), "{}: an agent is already running", self.name);
        self.write_config();
        let mut command =
            self.daemon_command(crate::bins::bin(crate::bins::AGENT).as_os_str(), &self.log_path());
        command.arg("--config").arg(self.config_path());
        // Plain log lines: tests grep them for keys and levels.
        command.env("NO_COLOR", "1");
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start tabby-agent: {e}", self.name));
        self.agent = Some(Agent { child, started: Instant::now() });
    }

    /// A command running `program` in this host's namespace as a daemon of the harness, its
    /// stdout and stderr appended to `log`; add the program's arguments and spawn it.
    pub(crate) fn daemon_command(&self, program: &std::ffi::OsStr, log: &Path) -> Command {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("cannot dup the log file: {e}"));
        let mut net = std::ffi::OsString::from("--net=");
        net.push(self.path());
        // setpriv's parent-death signal kills the daemon if the harness dies without running
        // its destructors; nsenter and setpriv exec, so the child's pid is the daemon's.
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--", "nsenter"])
            .arg(net)
            .arg("--")
            .arg(program)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C meant for the demo must not kill it before the
            // demo's cleanup does.
            .process_group(0);
        command
    }

    /// Stops the agent with SIGTERM (SIGKILL after 5 s); returns how it exited.
    pub fn stop_agent(&mut self) -> Option<ExitStatus> {
        self.agent.take().and_then(|mut a| a.terminate(Signal::SIGTERM, STOP_GRACE))
    }

    /// Kills the agent with SIGKILL, like a crash.
    pub fn kill_agent(&mut self) -> Option<ExitStatus> {
        self.agent.take().and_then(|mut a| a.terminate(Signal::SIGKILL, STOP_GRACE))
    }

    /// Stops (SIGTERM) and starts the agent again with the current settings.
    pub fn restart_agent(&mut self) {
        self.stop_agent();
        self.start_agent();
    }

    /// Where the agent serves health and metrics, inside the host namespace.
    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, METRICS_PORT))
    }

    /// GET `path` from the agent's health and metrics server.
    pub fn http_get(&self, path: &str) -> io::Result<(u16, String)> {
        http_get(&self.path(), self.metrics_addr(), path, Duration::from_secs(2))
    }

    /// The agent's `/metrics` text; errors unless it answered 200.
    pub fn metrics(&self) -> io::Result<String> {
        match self.http_get("/metrics")? {
            (200, body) => Ok(body),
            (status, body) => Err(io::Error::other(format!("/metrics answered {status}: {body}"))),
        }
    }

    /// Runs `nft args…` in the host namespace.
    pub fn nft<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&self, args: I) -> Ran {
        run(nsenter(&self.path(), "nft").args(args), None, Duration::from_secs(10))
    }

    /// Whether table `inet tabby` exists in the host namespace.
    pub fn table_exists(&self) -> bool {
        self.nft(["list", "table", "inet", NFT_TABLE]).success()
    }

    /// `nft list table inet tabby` (empty when it does not exist).
    pub fn table(&self) -> String {
        self.nft(["list", "table", "inet", NFT_TABLE]).stdout
    }

    /// `table inet tabby` as comparable lines: counters and handles (which change by
    /// themselves) removed, sorted. Empty when the table does not exist.
    pub fn ruleset(&self) -> Vec<String> {
        normalized_ruleset(&self.table())
    }

    /// Runs a `sh -c` script in the host namespace.
    pub fn sh(&self, script: &str) -> Ran {
        run(nsenter(&self.path(), "sh").args(["-c", script]), None, Duration::from_secs(20))
    }

    /// The per-host directory (config, log, node name file).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `nft list` output minus counters and handles, as sorted non-empty lines.
pub fn normalized_ruleset(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let mut kept = Vec::with_capacity(words.len());
            let mut i = 0;
            while i < words.len() {
                match words[i] {
                    "packets" | "bytes"
                        if words.get(i + 1).is_some_and(|w| w.parse::<u64>().is_ok()) =>
                    {
                        i += 2;
                    }
                    "#" if words.get(i + 1) == Some(&"handle") => break,
                    word => {
                        kept.push(word);
                        i += 1;
                    }
                }
            }
            kept.join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

impl Agent {
    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How long ago it was started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How it exited, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn terminate(&mut self, signal: Signal, grace: Duration) -> Option<ExitStatus> {
        terminate(&mut self.child, signal, grace)
    }
}

/// Sends `signal` to `child` and waits up to `grace` for it to exit, then kills it; returns
/// how it exited.
pub(crate) fn terminate(child: &mut Child, signal: Signal, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate(Signal::SIGTERM, Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rulesets_compare_without_counters_and_handles() {
        let a = "table inet tabby { # handle 7\n  chain fw-x { # handle 3\n    counter packets 12 bytes 900 drop # handle 9\n  }\n}\n";
        let b = "table inet tabby { # handle 8\n  chain fw-x { # handle 4\n    counter packets 0 bytes 0 drop # handle 2\n  }\n}\n";
        assert_eq!(normalized_ruleset(a), normalized_ruleset(b));
        assert!(normalized_ruleset(a).contains(&"counter drop".to_string()));
        assert_ne!(normalized_ruleset(a), normalized_ruleset(&a.replace("drop", "accept")));
        assert!(normalized_ruleset("").is_empty());
    }
}
