//! The kernel side of a workload attachment: a veth pair with its host end in the host
//! namespace and its other end in the workload's, a /32 (/128) behind a link-local gateway,
//! host sysctls and a host route.
//!
//! Nothing here knows CNI: callers pass namespace handles and plain values, so the Docker
//! driver can use the same functions.

mod detach;
mod inspect;
mod netlink;
mod netns;
pub mod sysctl;
mod veth;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use sha1::{Digest, Sha1};

pub use detach::{delete_detached, detach, teardown, Detached};
pub use inspect::{inspect, observe, Observed};
pub use netlink::NetlinkError;
pub use netns::Netns;
pub use veth::{create, set_pair_mtu, setup, setup_host_side, Created};

/// tabby's route protocol number (`proto 112` in `ip route`). The agent only ever removes
/// routes carrying it, so routes made by others are never touched.
pub const ROUTE_PROTOCOL: u8 = 112;

/// The MAC of every host-side veth: containers all see one gateway identity.
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// The IPv4 gateway containers route through. Nothing owns it: the host veth answers ARP
/// for it by proxy ARP.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The IPv6 gateway: the link-local address the kernel derives (EUI-64) from [`HOST_MAC`].
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

/// Prefix of host-side veth names; the agent recognises workload interfaces by it.
pub const HOST_VETH_PREFIX: &str = "cali";

/// Host-side veth name for an attachment: `cali` + the first 11 hex characters of
/// SHA-1(`<container id>.<ifname>`), 15 characters in all (the kernel's limit).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let digest = Sha1::digest(format!("{container_id}.{ifname}").as_bytes());
    let mut name = String::from(HOST_VETH_PREFIX);
    name.push_str(&hex::encode(digest)[..11]);
    name
}

/// A random unicast, locally administered MAC for a container end, what the kernel would
/// pick itself; choosing it up front lets the workload endpoint be written before the veth
/// exists.
pub fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// Formats a MAC address the way `ip link` prints it.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// What to build for one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadLink {
    /// Host-side veth name, normally [`host_veth_name`].
    pub host_ifname: String,
    /// Interface name inside the workload's namespace.
    pub container_ifname: String,
    pub mtu: u32,
    /// The workload's addresses; each becomes a /32 or /128.
    pub addresses: Vec<IpAddr>,
}

/// What [`setup`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub host_ifname: String,
    pub host_index: u32,
    pub container_ifname: String,
    pub container_index: u32,
    /// The container-side MAC the kernel chose, as `aa:bb:..`.
    pub container_mac: String,
}

/// A failed kernel operation, naming the step and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network namespace {path} does not exist")]
    NetnsMissing { path: PathBuf },
    #[error("{path} is not a network namespace")]
    NotANetns { path: PathBuf },
    #[error("workload namespace {path} is the plugin's own namespace")]
    SameNetns { path: PathBuf },
    #[error("cannot open network namespace {path}")]
    NetnsOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}")]
    NetnsEnter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The thread entered `path` and could not come back: it must do nothing more.
    #[error("cannot return from network namespace {path} to the plugin's own")]
    NetnsReturn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {ifname} already exists in {netns}")]
    InterfaceExists { ifname: String, netns: PathBuf },
    #[error("{ifname} exists but is not a veth; refusing to touch it")]
    NotAVeth { ifname: String },
    #[error("{op}")]
    Netlink {
        op: String,
        #[source]
        source: NetlinkError,
    },
    #[error("sysctl {key}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the same operation may succeed if retried (the kernel was busy).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Netlink { source, .. } => {
                matches!(source.errno(), Some(libc::EBUSY | libc::EAGAIN | libc::ENOBUFS))
            }
            _ => false,
        }
    }

    fn netlink(op: impl Into<String>) -> impl FnOnce(NetlinkError) -> Error {
        let op = op.into();
        move |source| Error::Netlink { op, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_15_chars_and_stable() {
        // Expected values computed independently: `printf 'abc.eth0' | sha1sum`.
        assert_eq!(host_veth_name("abc", "eth0"), "cali21144d1a26e");
        assert_ne!(host_veth_name("abc", "eth0"), host_veth_name("abc", "eth1"));
        // Mesos nested ids keep their dot: the formula is applied as stated.
        assert_eq!(host_veth_name("p.c", "eth0"), "cali52de442e3a8");
    }

    #[test]
    fn gateway_v6_is_the_eui64_of_the_host_mac() {
        let mut eui = [0u8; 8];
        eui[..3].copy_from_slice(&HOST_MAC[..3]);
        eui[3..5].copy_from_slice(&[0xff, 0xfe]);
        eui[5..].copy_from_slice(&HOST_MAC[3..]);
        eui[0] ^= 0x02;
        let mut octets = [0u8; 16];
        octets[..2].copy_from_slice(&[0xfe, 0x80]);
        octets[8..].copy_from_slice(&eui);
        assert_eq!(Ipv6Addr::from(octets), GATEWAY_V6);
    }

    #[test]
    fn random_macs_are_unicast_and_locally_administered() {
        let macs: Vec<[u8; 6]> = (0..64).map(|_| random_mac()).collect();
        assert!(macs.iter().all(|m| m[0] & 0x01 == 0 && m[0] & 0x02 == 0x02));
        assert!(macs.windows(2).any(|w| w[0] != w[1]), "not all the same");
    }

    #[test]
    fn macs_print_like_ip_link() {
        assert_eq!(format_mac(&HOST_MAC), "ee:ee:ee:ee:ee:ee");
        assert_eq!(format_mac(&[0x0a, 0, 1, 2, 3, 0xff]), "0a:00:01:02:03:ff");
    }
}
