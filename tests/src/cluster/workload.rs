//! Workloads: a container namespace attached by the real CNI plugin (`tabby`, run in the host
//! namespace as a runtime would), with echo servers answering probes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use testkit::Netns;

use crate::netns::nsenter;
use crate::probe::EchoServer;
use crate::process::{run, Ran};

/// The interface name inside every container.
pub const IFNAME: &str = "eth0";
/// How long one CNI call may take.
const CNI_TIMEOUT: Duration = Duration::from_secs(30);

/// What a probe needs to know about a workload; cheap to clone and free of kernel resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The harness's name for it (`web-a`).
    pub name: String,
    /// The CNI network (and so the profile) it is attached to.
    pub network: String,
    /// The node it runs on.
    pub host: String,
    pub ip: Ipv4Addr,
    /// `/var/run/netns/<name>` of its container namespace.
    pub netns: PathBuf,
}

/// A container attached through CNI ADD; detached (CNI DEL) by [`crate::Cluster`].
#[derive(Debug)]
pub struct Workload {
    pub(crate) endpoint: Endpoint,
    pub(crate) host_index: usize,
    container_id: String,
    host_ifname: String,
    result: Value,
    /// Stopped before the namespace goes: its sockets would keep the namespace alive.
    server: Option<EchoServer>,
    netns: Netns,
}

/// Everything a CNI call needs besides the container.
#[derive(Debug, Clone)]
pub(crate) struct CniContext {
    pub host_netns: PathBuf,
    pub nodename: String,
    pub etcd_endpoint: String,
    pub etcd_prefix: String,
    pub log_file: PathBuf,
    /// The host-wide IPAM lock; one per simulated host, as on real hosts.
    pub lock_file: PathBuf,
}

impl CniContext {
    /// The network config the runtime hands the plugin on stdin.
    fn netconf(&self, network: &str) -> Value {
        json!({
            "cniVersion": "0.3.1",
            "name": network,
            "type": crate::bins::CNI_PLUGIN,
            "etcd_endpoints": self.etcd_endpoint,
            "etcd_prefix": self.etcd_prefix,
            "nodename": self.nodename,
            "log_level": "debug",
            "log_file_path": self.log_file,
            "ipam": { "type": "tabby-ipam", "ipam_lock_file": self.lock_file },
        })
    }

    /// Runs the plugin with `CNI_COMMAND=<command>` in the host namespace.
    pub fn call(&self, command: &str, container_id: &str, netns: &Path, network: &str) -> Ran {
        let bin_dir = crate::bins::bin_dir();
        let cni_path = std::env::join_paths([bin_dir.as_path(), Path::new("/usr/lib/cni")])
            .unwrap_or_else(|e| panic!("bad CNI_PATH: {e}"));
        let conf = self.netconf(network).to_string();
        run(
            nsenter(&self.host_netns, crate::bins::bin(crate::bins::CNI_PLUGIN))
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", container_id)
                .env("CNI_NETNS", netns)
                .env("CNI_IFNAME", IFNAME)
                .env("CNI_PATH", cni_path),
            Some(conf.as_bytes()),
            CNI_TIMEOUT,
        )
    }
}

impl Workload {
    /// Creates the container namespace, runs CNI ADD and starts echo servers on `ports`.
    /// Panics with the plugin's reply if the ADD fails.
    pub(crate) fn attach(
        ctx: &CniContext,
        host_index: usize,
        name: &str,
        network: &str,
        ports: &[u16],
    ) -> Workload {
        let netns = Netns::new(name);
        let container_id = testkit::unique_name(&format!("{}-", name.replace('-', "")), 40);
        let ran = ctx.call("ADD", &container_id, &netns.path(), network);
        assert!(ran.success(), "CNI ADD of {name} on {} failed: {}", ctx.nodename, ran.describe());
        let result: Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| {
            panic!("CNI ADD of {name} printed no JSON result ({e}): {}", ran.describe())
        });
        let ip = first_ipv4(&result)
            .unwrap_or_else(|| panic!("CNI ADD of {name} returned no IPv4 address: {result}"));
        let host_ifname = result["interfaces"]
            .as_array()
            .and_then(|ifs| ifs.iter().find(|i| i["sandbox"].as_str().is_none_or(str::is_empty)))
            .and_then(|i| i["name"].as_str())
            .unwrap_or_default()
            .to_string();
        let mut workload = Workload {
            endpoint: Endpoint {
                name: name.to_string(),
                network: network.to_string(),
                host: ctx.nodename.clone(),
                ip,
                netns: netns.path(),
            },
            host_index,
            container_id,
            host_ifname,
            result,
            server: None,
            netns,
        };
        if !ports.is_empty() {
            workload.server = Some(
                EchoServer::start(&workload.netns.path(), ports)
                    .unwrap_or_else(|e| panic!("cannot start echo servers in {name}: {e}")),
            );
        }
        workload
    }

    /// Stops the servers and runs CNI DEL; returns the plugin's run.
    pub(crate) fn detach(&mut self, ctx: &CniContext) -> Ran {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
        ctx.call("DEL", &self.container_id, &self.netns.path(), &self.endpoint.network)
    }

    /// The probe view of this workload.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    pub fn name(&self) -> &str {
        &self.endpoint.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.endpoint.ip
    }

    pub fn network(&self) -> &str {
        &self.endpoint.network
    }

    /// The node name of its host.
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    /// Index of its host in [`crate::Cluster::hosts`].
    pub fn host_index(&self) -> usize {
        self.host_index
    }

    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The host side of its veth (`cali…`), as the plugin reported it.
    pub fn host_ifname(&self) -> &str {
        &self.host_ifname
    }

    /// The CNI result the plugin printed.
    pub fn cni_result(&self) -> &Value {
        &self.result
    }

    /// Its container namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The MAC address of its `eth0`.
    pub fn mac(&self) -> String {
        let link = self.sh(&format!("ip -o link show dev {IFNAME}")).ok();
        link.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("{}: no MAC in {link:?}", self.name()))
            .to_string()
    }

    /// Gives its `eth0` another MAC address, keeping its routes (a workload spoofing its MAC).
    pub fn set_mac(&self, mac: &str) {
        // veth takes a new address while up on current kernels; otherwise take the link down,
        // which drops the routes, and put them back.
        self.sh(&format!(
            "ip link set dev {IFNAME} address {mac} 2>/dev/null || {{ \
             ip link set {IFNAME} down && ip link set dev {IFNAME} address {mac} && \
             ip link set {IFNAME} up && ip route replace 169.254.1.1 dev {IFNAME} scope link && \
             ip route replace default via 169.254.1.1 dev {IFNAME}; }}"
        ))
        .ok();
    }

    /// Runs a `sh -c` script in the container namespace (via `nsenter --net`).
    pub fn sh(&self, script: &str) -> Ran {
        run(nsenter(&self.netns.path(), "sh").args(["-c", script]), None, Duration::from_secs(20))
    }
}

/// The first IPv4 address in a CNI result's `ips` (any spec version), without its prefix.
fn first_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let address = ip["address"].as_str()?;
        address.split('/').next()?.parse::<Ipv4Addr>().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_ipv4_skips_v6_and_strips_the_prefix() {
        let result = json!({"ips": [
            {"version": "6", "address": "fd00::5/128"},
            {"version": "4", "address": "10.65.0.5/32"},
        ]});
        assert_eq!(first_ipv4(&result), Some(Ipv4Addr::new(10, 65, 0, 5)));
        assert_eq!(first_ipv4(&json!({"ips": []})), None);
        assert_eq!(first_ipv4(&json!({})), None);
    }
}
