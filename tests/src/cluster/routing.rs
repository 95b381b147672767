//! Routing beyond one L2 segment: a real BIRD per host (started in the host namespace with
//! the config its agent writes), an "outside" namespace beyond the hosts, and the pool's
//! routing knobs (`ipipMode`, `natOutgoing`).

use std::net::Ipv4Addr;
use std::process::{Child, Command};
use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::Netns;

use super::{Cluster, Host};
use crate::process::{run, Ran};

/// The BIRD daemon and its client, from Debian's `bird2`.
pub const BIRD: &str = "/usr/sbin/bird";
pub const BIRDC: &str = "/usr/sbin/birdc";
/// How long an agent may take to write its first BIRD config.
const CONFIG_WAIT: Duration = Duration::from_secs(20);

impl Host {
    /// The BIRD config the agent writes (with [`super::ClusterBuilder::bgp`]).
    pub fn bird_config_path(&self) -> std::path::PathBuf {
        self.dir().join("bird.conf")
    }

    /// The control socket of this host's BIRD.
    pub fn bird_socket_path(&self) -> std::path::PathBuf {
        self.dir().join("bird.ctl")
    }

    /// Runs `birdc -s <socket> args…` (from this process: the socket is a file).
    pub fn birdc(&self, args: &[&str]) -> Ran {
        run(
            Command::new(BIRDC).arg("-s").arg(self.bird_socket_path()).args(args),
            None,
            Duration::from_secs(10),
        )
    }

    /// `ip -4 route show proto bird` in the host namespace: the routes BIRD programmed.
    pub fn bird_routes(&self) -> String {
        self.sh("ip -4 route show proto bird").stdout
    }

    /// Starts BIRD in this host's namespace once the agent has written its config (panics
    /// after 20 s without one). Stopped when the returned handle drops.
    pub fn start_bird(&self) -> Bird {
        let config = self.bird_config_path();
        crate::wait::until(
            &format!("{}: the agent's BIRD config", self.name()),
            CONFIG_WAIT,
            || {
                if config.exists() {
                    Ok(())
                } else {
                    Err(format!("{} absent\n{}", config.display(), self.agent_log_tail(10)))
                }
            },
        );
        let log_path = self.dir().join("bird.log");
        let mut command = self.daemon_command(BIRD.as_ref(), &log_path);
        command.args(["-f", "-c"]).arg(&config).arg("-s").arg(self.bird_socket_path());
        command.arg("-P").arg(self.dir().join("bird.pid"));
        let child =
            command.spawn().unwrap_or_else(|e| panic!("{}: cannot start BIRD: {e}", self.name()));
        let bird = Bird { child, log: log_path };
        crate::wait::until(&format!("{}: BIRD's control socket", self.name()), CONFIG_WAIT, || {
            match self.birdc(&["show", "status"]) {
                ran if ran.success() => Ok(()),
                ran => Err(format!("{}\n{}", ran.describe(), bird.log_tail())),
            }
        });
        bird
    }
}

/// A running BIRD; SIGTERM (a clean shutdown: its peers hear it) when dropped.
#[derive(Debug)]
pub struct Bird {
    child: Child,
    log: std::path::PathBuf,
}

impl Bird {
    /// Stops BIRD with SIGTERM (SIGKILL after 5 s).
    pub fn stop(mut self) {
        self.terminate();
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn terminate(&mut self) {
        super::host::terminate(&mut self.child, Signal::SIGTERM, Duration::from_secs(5));
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A namespace beyond the hosts, on the fabric's bridge, that knows no route to any pool: a
/// workload reaches it only with its source rewritten to its host's address.
#[derive(Debug)]
pub struct Outside {
    pub ip: Ipv4Addr,
    pub netns: Netns,
}

impl Cluster {
    /// Re-applies the cluster's IP pool with these routing knobs.
    pub fn set_pool_routing(&self, ipip_mode: &str, nat_outgoing: bool) {
        self.apply(&serde_json::json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": { "name": self.pool_name() },
            "spec": {
                "cidr": self.pool,
                "blockSize": 26,
                "ipipMode": ipip_mode,
                "natOutgoing": nat_outgoing,
                "nodeSelector": "all()",
            },
        }));
    }

    /// The IP pool's name.
    pub fn pool_name(&self) -> String {
        format!("pool-{}", self.pool.split('.').nth(1).unwrap_or("0"))
    }

    /// Adds an [`Outside`] namespace at `10.250.N.200` on the fabric bridge.
    pub fn add_outside(&self) -> Outside {
        let octets = self.subnet.octets();
        let ip = Ipv4Addr::new(octets[0], octets[1], octets[2], 200);
        let netns = Netns::new("outside");
        super::plug_into_fabric(&self.fabric, "out0", &netns, ip);
        netns.ip_ok(["link", "set", "dev", "lo", "up"]);
        Outside { ip, netns }
    }
}
