//! A real single-member etcd for tests: free ports, a temporary data dir, optional TLS with
//! client certificates, optionally inside a network namespace; killed when dropped.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::spawner::spawn_tied;
use crate::tls::TlsFiles;

/// The etcd binary of the Debian `etcd-server` package.
const ETCD: &str = "/usr/bin/etcd";
/// The etcdctl binary of the Debian `etcd-client` package.
const ETCDCTL: &str = "/usr/bin/etcdctl";
/// How often a start is retried when a picked port turned out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// Options for starting an [`Etcd`]; get one from [`Etcd::builder`].
#[derive(Debug, Clone)]
pub struct EtcdBuilder {
    tls: bool,
    listen_ip: IpAddr,
    netns: Option<String>,
    start_timeout: Duration,
    dir_prefix: String,
}

impl Default for EtcdBuilder {
    fn default() -> Self {
        EtcdBuilder {
            tls: false,
            listen_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
            start_timeout: Duration::from_secs(15),
            dir_prefix: "tabby-etcd-".into(),
        }
    }
}

impl EtcdBuilder {
    /// Serves clients over TLS and requires a client certificate signed by a generated CA
    /// (`--client-cert-auth --trusted-ca-file`); see [`Etcd::tls_files`].
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Listens for clients and peers on `ip` instead of 127.0.0.1.
    ///
    /// The address must exist where etcd runs: in the host, or in the namespace given to
    /// [`EtcdBuilder::netns`].
    pub fn listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// Runs etcd (and [`Etcd::etcdctl`]) inside the named network namespace
    /// (`/var/run/netns/<name>`), entered with `nsenter --net` so `/sys` stays as it is.
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_string());
        self
    }

    /// How long to wait for etcd to report healthy before panicking (default 15 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts etcd and waits until it is healthy; panics with etcd's log tail if it is not.
    pub fn start(self) -> Etcd {
        let root = tempfile::Builder::new()
            .prefix(&self.dir_prefix)
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: cannot create a temp dir for etcd: {e}"));
        let tls = self.tls.then(|| TlsFiles::generate(&root.path().join("tls"), self.listen_ip));
        let mut etcd = Etcd {
            child: None,
            data_dir: root.path().join("data"),
            log_path: root.path().join("etcd.log"),
            client_port: 0,
            peer_port: 0,
            options: self,
            tls,
            _root: root,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            let (client_port, peer_port) = etcd.pick_ports();
            etcd.client_port = client_port;
            etcd.peer_port = peer_port;
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(log) if log.contains("address already in use") && attempt < PORT_ATTEMPTS => {
                    // Someone took a port between our probe and etcd's bind; pick others.
                    let _ = std::fs::remove_dir_all(&etcd.data_dir);
                }
                Err(log) => panic!("testkit: etcd did not come up:\n{log}"),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }
}

/// A running etcd, stopped and deleted (data dir, certificates, log) when dropped.
///
/// `Etcd::start()` gives a plain etcd on 127.0.0.1; [`Etcd::builder`] sets TLS, the listen
/// address and the namespace; [`Etcd::shared`] gives one etcd per test binary.
/// Auto-compaction is off, so history stays until a test compacts it.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    data_dir: PathBuf,
    log_path: PathBuf,
    client_port: u16,
    peer_port: u16,
    options: EtcdBuilder,
    tls: Option<TlsFiles>,
    /// Deleted last: holds the data dir, the log and the TLS files.
    _root: tempfile::TempDir,
}

impl Etcd {
    /// Starts a plain (no TLS) etcd on a free port of 127.0.0.1.
    pub fn start() -> Etcd {
        Etcd::builder().start()
    }

    /// Options for a non-default etcd.
    pub fn builder() -> EtcdBuilder {
        EtcdBuilder::default()
    }

    /// One plain etcd for the whole test binary, started on first use.
    ///
    /// Tests sharing it must use their own key prefix and must not compact, stop or restart
    /// it. It is never dropped; it dies with the test process (parent-death signal).
    pub fn shared() -> &'static Etcd {
        static SHARED: OnceLock<Etcd> = OnceLock::new();
        SHARED.get_or_init(|| {
            // Statics are never dropped, so the shared etcd's directory outlives its process;
            // the pid in its name lets a later run sweep the ones whose process is gone.
            sweep_dead_shared_dirs();
            let mut builder = Etcd::builder();
            builder.dir_prefix = format!("{SHARED_PREFIX}{}-", std::process::id());
            builder.start()
        })
    }

    /// The client URL, `http://ip:port` or `https://ip:port`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.options.listen_ip {
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{}", self.client_port),
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}", self.client_port),
        }
    }

    /// The generated certificates, when started with TLS.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The data directory (kept across [`Etcd::stop`] and [`Etcd::start_again`]).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The network namespace etcd runs in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.options.netns.as_deref()
    }

    /// Runs `etcdctl --endpoints=<endpoint> [TLS flags] args…` (API v3, in etcd's namespace)
    /// and returns its output, whatever the exit status.
    pub fn etcdctl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(ns) = &self.options.netns {
            argv.push("nsenter".into());
            argv.push(format!("--net=/var/run/netns/{ns}").into());
            argv.push("--".into());
        }
        argv.push(ETCDCTL.into());
        argv.push(format!("--endpoints={}", self.endpoint()).into());
        if let Some(tls) = &self.tls {
            argv.push(flag("--cacert", &tls.ca));
            argv.push(flag("--cert", &tls.client_cert));
            argv.push(flag("--key", &tls.client_key));
        }
        argv.extend(args.into_iter().map(Into::into));
        let (program, rest) = argv.split_first().expect("argv is never empty");
        Command::new(program)
            .args(rest)
            .env("ETCDCTL_API", "3")
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run etcdctl: {e}"))
    }

    /// The store's current revision (panics if etcdctl fails).
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(["endpoint", "status", "--write-out=json"]);
        let text = crate::must_succeed("etcdctl endpoint status", &Ok(out));
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("testkit: bad etcdctl status JSON ({e}): {text}"));
        json[0]["Status"]["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("testkit: no revision in etcdctl status: {text}"))
    }

    /// Compacts history up to `revision` (physically, so watchers see it at once); panics if
    /// etcdctl fails.
    pub fn compact(&self, revision: i64) {
        let out = self.etcdctl(["compact".to_string(), revision.to_string(), "--physical".into()]);
        crate::must_succeed("etcdctl compact", &Ok(out));
    }

    /// Compacts all history up to the current revision; returns that revision.
    pub fn compact_latest(&self) -> i64 {
        let revision = self.revision();
        self.compact(revision);
        revision
    }

    /// Whether the etcd process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops etcd (SIGTERM, then SIGKILL after 5 s) and waits for it; the data dir and ports
    /// are kept for [`Etcd::start_again`]. Does nothing if it is not running.
    pub fn stop(&mut self) {
        self.terminate(Signal::SIGTERM, Duration::from_secs(5));
    }

    /// Kills etcd with SIGKILL, like a crash; the data dir is kept.
    pub fn kill(&mut self) {
        self.terminate(Signal::SIGKILL, Duration::from_secs(5));
    }

    /// Freezes etcd (SIGSTOP): connections stay open but nothing answers, as with a hung
    /// server or a black-holed network. [`Etcd::thaw`] resumes it.
    pub fn freeze(&mut self) {
        self.signal(Signal::SIGSTOP);
        // SIGSTOP takes effect thread by thread; return only once no thread can answer.
        let pid = self.child.as_ref().map_or(0, Child::id);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "testkit: etcd did not stop on SIGSTOP");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Resumes an etcd frozen by [`Etcd::freeze`].
    pub fn thaw(&mut self) {
        self.signal(Signal::SIGCONT);
    }

    /// Starts etcd again on the same data dir and ports and waits until it is healthy;
    /// panics if it does not come up (e.g. a port was taken meanwhile).
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "testkit: start_again while etcd is still running");
        if let Err(log) = self.launch() {
            panic!("testkit: etcd did not come back:\n{log}");
        }
    }

    /// Picks a free client and peer port by binding port 0 and releasing it.
    fn pick_ports(&self) -> (u16, u16) {
        // Inside a namespace the listen address does not exist here; any free loopback port
        // will do, since the namespace's own port space is nearly empty.
        let ip = if self.options.netns.is_some() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.options.listen_ip
        };
        let bind = || {
            TcpListener::bind((ip, 0))
                .unwrap_or_else(|e| panic!("testkit: cannot bind {ip}:0 to find a free port: {e}"))
        };
        let (a, b) = (bind(), bind());
        let ports = (
            a.local_addr().expect("bound socket has an address").port(),
            b.local_addr().expect("bound socket has an address").port(),
        );
        drop((a, b));
        ports
    }

    /// Spawns etcd and waits for health. On failure returns the log tail (and leaves no
    /// process behind).
    fn launch(&mut self) -> Result<(), String> {
        let log =
            OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap_or_else(|e| {
                panic!("testkit: cannot open {}: {e}", self.log_path.display())
            });
        let log_start = log.metadata().map_or(0, |m| m.len());
        let child = spawn_tied(self.argv(), log)
            .unwrap_or_else(|e| panic!("testkit: cannot spawn {ETCD}: {e}"));
        self.child = Some(child);

        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            if !self.is_running() {
                let status = self.child.take().and_then(|mut c| c.wait().ok());
                return Err(format!(
                    "etcd exited ({}) while starting; log tail:\n{}",
                    status.map_or_else(|| "unknown status".into(), |s| s.to_string()),
                    self.log_tail(log_start)
                ));
            }
            let health = self.etcdctl(["--command-timeout=2s", "endpoint", "health"]);
            if health.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let last = String::from_utf8_lossy(&health.stderr).into_owned();
                self.kill();
                return Err(format!(
                    "etcd at {} not healthy after {:?} (last etcdctl: {last}); log tail:\n{}",
                    self.endpoint(),
                    self.options.start_timeout,
                    self.log_tail(log_start)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The etcd command line (with `nsenter` in front when it runs in a namespace).
    fn argv(&self) -> Vec<OsString> {
        let ip = match self.options.listen_ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let peer = format!("http://{ip}:{}", self.peer_port);
        let client = self.endpoint();
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(ns) = &self.options.netns {
            argv.push("nsenter".into());
            argv.push(format!("--net=/var/run/netns/{ns}").into());
            argv.push("--".into());
        }
        argv.push(ETCD.into());
        for arg in [
            "--name=tt".to_string(),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=tt={peer}"),
            "--initial-cluster-state=new".into(),
            format!("--initial-cluster-token=tt-{}-{}", std::process::id(), self.client_port),
            // Compaction happens only when a test asks for it.
            "--auto-compaction-retention=0".into(),
            // A single member elects itself after one election timeout: keep start-up short.
            "--heartbeat-interval=100".into(),
            "--election-timeout=500".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ] {
            argv.push(arg.into());
        }
        argv.push(flag("--data-dir", &self.data_dir));
        if let Some(tls) = &self.tls {
            argv.push(flag("--cert-file", &tls.server_cert));
            argv.push(flag("--key-file", &tls.server_key));
            argv.push(flag("--trusted-ca-file", &tls.ca));
            argv.push("--client-cert-auth".into());
        }
        argv
    }

    /// Sends `signal` and waits up to `grace` before SIGKILL; reaps the process.
    fn terminate(&mut self, signal: Signal, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // A frozen etcd cannot act on SIGTERM; wake it first.
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, signal);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn signal(&mut self, signal: Signal) {
        let child = self.child.as_ref().expect("testkit: etcd is not running");
        kill(Pid::from_raw(child.id() as i32), signal)
            .unwrap_or_else(|e| panic!("testkit: cannot send {signal} to etcd: {e}"));
    }

    /// The last lines etcd logged since byte `from` of its log.
    fn log_tail(&self, from: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.seek(SeekFrom::Start(from));
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.terminate(Signal::SIGKILL, Duration::from_secs(5));
    }
}

/// Whether every thread of `pid` is stopped (state `T` in `/proc/<pid>/task/*/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
            .unwrap_or(false)
    })
}

/// Directory-name prefix of shared etcds, followed by `<pid>-`.
const SHARED_PREFIX: &str = "tabby-etcd-shared-";

/// Deletes the directories of shared etcds whose test process no longer exists.
fn sweep_dead_shared_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(SHARED_PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `--name=path` as one argument.
fn flag(name: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(name);
    arg.push("=");
    arg.push(path);
    arg
}
