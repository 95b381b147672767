//! Private network namespaces for tests, with loopback up, deleted (processes and all) on drop.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counter that makes namespace names unique within this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Longest tag kept in a namespace name, so names stay short in `ip netns` listings.
const MAX_TAG: usize = 8;

/// A named network namespace (`/var/run/netns/<name>`), made by the test and deleted on drop.
///
/// Dropping it kills every process still inside (as listed by `ip netns pids`) and then runs
/// `ip netns del`, so links moved into it disappear with it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `tt-<tag>-<pid>-<n>` and brings its loopback up. Panics (with the reason)
    /// when not root or when `ip netns add` fails.
    pub fn new(tag: &str) -> Netns {
        crate::require_root();
        let tag: String = tag.chars().filter(char::is_ascii_alphanumeric).take(MAX_TAG).collect();
        let name =
            format!("tt-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        crate::must_succeed(
            &format!("ip netns add {name}"),
            &Command::new("ip").args(["netns", "add", &name]).output(),
        );
        // From here on, Drop cleans up even if bringing lo up fails.
        let netns = Netns { name };
        netns.ip_ok(["link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`: the bind mount to pass to `nsenter --net=` or a CNI runtime.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// A `Command` running `program` inside the namespace via `ip netns exec` (which also
    /// remounts `/sys` for the namespace).
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// A `Command` running `program` inside the namespace via `nsenter --net`, which keeps
    /// the host's `/sys` and cgroup mounts (needed by runc, podman and dockerd).
    pub fn nsenter_command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(self.path());
        let mut command = Command::new("nsenter");
        command.arg(net).arg("--").arg(program);
        command
    }

    /// Runs `cmd args…` inside the namespace and returns its output, whatever the status.
    pub fn run<I, S>(&self, cmd: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run {cmd} in netns {}: {e}", self.name))
    }

    /// Runs `f` on a scoped thread that entered this namespace and returns its result. Netlink
    /// sockets belong to the namespace of the thread that opens them, so this is how a test
    /// drives in-process kernel code here while its own threads stay where they are.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let file = std::fs::File::open(&path).expect("open the test namespace");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns into the test namespace");
                f()
            })
            .join()
            .expect("thread inside the test namespace panicked")
        })
    }

    /// Runs `program args…` inside the namespace with `input` on its stdin.
    pub fn run_with_stdin<I, S>(&self, program: &str, args: I, input: &[u8]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("[netns {}] cannot run {program}: {e}", self.name));
        child.stdin.take().expect("piped stdin").write_all(input).expect("write stdin");
        child.wait_with_output().expect("wait for the command")
    }

    /// Runs a `sh -c` script inside the namespace and returns its output.
    pub fn sh(&self, script: &str) -> Output {
        self.run("sh", ["-c", script])
    }

    /// Runs a `sh -c` script inside the namespace; panics with its stderr unless it exits 0;
    /// returns its stdout.
    pub fn sh_ok(&self, script: &str) -> String {
        crate::must_succeed(
            &format!("[netns {}] sh -c {script:?}", self.name),
            &Ok(self.sh(script)),
        )
    }

    /// Runs `ip -n <name> args…` and returns its output.
    pub fn ip<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run ip -n {}: {e}", self.name))
    }

    /// Runs `ip -n <name> args…`; panics with its stderr unless it exits 0; returns stdout.
    pub fn ip_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let shown: Vec<String> =
            args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
        crate::must_succeed(&format!("ip -n {} {}", self.name, shown.join(" ")), &Ok(self.ip(args)))
    }

    /// Pids of the processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip").args(["netns", "pids", &self.name]).output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A process left inside keeps the namespace (and its links and routes) alive after
        // `ip netns del`; kill them first, a few rounds in case they fork while dying.
        for _ in 0..10 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        match Command::new("ip").args(["netns", "del", &self.name]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "testkit: ip netns del {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("testkit: cannot run ip netns del {}: {e}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_lives_until_dropped() {
        crate::require_root();
        let ns = Netns::new("unit");
        let name = ns.name().to_string();
        assert!(ns.path().exists());
        let links = ns.ip_ok(["-o", "link", "show", "lo"]);
        assert!(links.contains("UP"), "lo is not up: {links}");
        // A process inside must not keep the namespace alive past drop.
        let mut sleeper = ns.command("sleep").arg("600").spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!ns.pids().is_empty());
        drop(ns);
        let _ = sleeper.wait();
        assert!(!PathBuf::from("/var/run/netns").join(&name).exists(), "{name} still exists");
        let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&listed.stdout).contains(&name));
    }

    #[test]
    fn commands_run_inside() {
        crate::require_root();
        let ns = Netns::new("run");
        ns.ip_ok(["link", "add", "tkbr0", "type", "bridge"]);
        assert!(ns.sh_ok("ip -o link show").contains("tkbr0"));
        let host = Command::new("ip").args(["-o", "link", "show", "tkbr0"]).output().unwrap();
        assert!(!host.status.success(), "tkbr0 leaked into the host namespace");
        let out = ns.nsenter_command("ip").args(["-o", "link", "show", "tkbr0"]).output().unwrap();
        assert!(out.status.success());
    }
}
