//! A real `dockerd` (Debian's `docker.io`) inside a simulated host's namespace, with its own
//! data root, exec root, pidfile and socket, no iptables and no default bridge unless asked;
//! and a busybox image imported from `busybox-static`, so nothing comes from a registry.
//!
//! Dropping a [`Dockerd`] removes its containers, stops it and deletes its directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::nsenter;
use crate::process::{run, Ran};

/// Where dockerd looks for legacy plugin sockets (not configurable).
pub const PLUGIN_DIR: &str = "/run/docker/plugins";
/// The image every test container runs.
pub const IMAGE: &str = "tabby-busybox:1";
const DOCKER_TIMEOUT: Duration = Duration::from_mins(1);

/// One dockerd, running in a host namespace.
pub struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd in the namespace at `netns`, waits for its API and imports [`IMAGE`].
    /// `bridge`: keep Docker's default `bridge` network (the benchmark's baseline).
    pub fn start(netns: &Path, dir: &Path, bridge: bool) -> Dockerd {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let log = std::fs::File::create(dir.join("dockerd.log"))
            .unwrap_or_else(|e| panic!("create dockerd.log: {e}"));
        let mut cmd = nsenter(netns, "dockerd");
        cmd.arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", Dockerd::socket_in(dir).display()))
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .args(["--userland-proxy=false", "--ip-forward=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("dup log: {e}")))
            .stderr(log);
        if !bridge {
            cmd.arg("--bridge=none");
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start dockerd: {e}"));
        let d = Dockerd { dir: dir.to_owned(), child: Some(child) };
        let deadline = Instant::now() + Duration::from_mins(1);
        while !d.docker(&["version", "--format", "{{.Server.Version}}"]).success() {
            assert!(Instant::now() < deadline, "dockerd did not answer within 60s:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        d.import_busybox();
        d
    }

    /// The Engine API socket of the dockerd started in `dir`: known before it starts, so an
    /// agent started first can be pointed at it (`docker.engine_socket`).
    pub fn socket_in(dir: &Path) -> PathBuf {
        dir.join("docker.sock")
    }

    /// `docker <args>` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Ran {
        let mut cmd = Command::new("docker");
        cmd.arg("--host").arg(format!("unix://{}", Dockerd::socket_in(&self.dir).display()));
        cmd.args(args);
        run(&mut cmd, None, DOCKER_TIMEOUT)
    }

    /// `docker <args>`, which must succeed; returns stdout trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let ran = self.docker(args);
        assert!(
            ran.success(),
            "{}\n--- dockerd log tail ---\n{}",
            ran.describe(),
            self.log_tail(30)
        );
        ran.stdout.trim().to_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("mkdir rootfs: {e}"));
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .unwrap_or_else(|e| panic!("copy /bin/busybox (package busybox-static): {e}"));
        for applet in ["sh", "ping", "nc", "ip", "sleep", "cat", "echo", "true", "timeout"] {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
        let tar = self.dir.join("busybox.tar");
        let mut cmd = Command::new("tar");
        cmd.arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".");
        run(&mut cmd, None, DOCKER_TIMEOUT).ok();
        self.docker_ok(&["import", &tar.to_string_lossy(), IMAGE]);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]).stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Mounts dockerd may have left (a killed daemon) would make the removal fail.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
