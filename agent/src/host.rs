//! What the planners know about the host they plan for: its node name, its addresses and the
//! host-level policy knobs. Built once at start (config + address discovery), then read-only.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// What happens to traffic from a workload to the host itself (Felix's
/// `DefaultEndpointToHostAction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndpointToHostAction {
    /// Dropped: a workload cannot reach the host (the default, fail closed).
    #[default]
    Drop,
    /// Accepted once the workload's egress policy allowed it.
    Accept,
    /// Handed back to the host's own input rules.
    Return,
}

impl EndpointToHostAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointToHostAction::Drop => "Drop",
            EndpointToHostAction::Accept => "Accept",
            EndpointToHostAction::Return => "Return",
        }
    }
}

impl fmt::Display for EndpointToHostAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EndpointToHostAction {
    type Err = String;

    /// Case-insensitive, so Felix's `DROP`/`ACCEPT`/`RETURN` work too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "drop" => Ok(EndpointToHostAction::Drop),
            "accept" => Ok(EndpointToHostAction::Accept),
            "return" => Ok(EndpointToHostAction::Return),
            _ => Err(format!("{s:?} is not an action (expected Drop, Accept or Return)")),
        }
    }
}

/// This host as the planners see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The node name: keys this host's affinities, endpoints and Node resource.
    pub nodename: String,
    /// The host's IPv4 address with the prefix of its subnet (`192.0.2.10/24`), when known.
    /// Remote blocks are routed directly only via nodes inside that subnet.
    #[serde(default)]
    pub ipv4: Option<Ipv4Net>,
    /// The host's IPv6 address with its prefix, when known.
    #[serde(default)]
    pub ipv6: Option<Ipv6Net>,
    #[serde(default)]
    pub endpoint_to_host_action: EndpointToHostAction,
    /// BGP is on: BIRD programs the routes to remote blocks of pools without IPIP, so the
    /// route planner leaves them out.
    #[serde(default)]
    pub bgp: bool,
}

impl HostInfo {
    /// A host named `nodename` with no known addresses and default knobs.
    pub fn new(nodename: impl Into<String>) -> Self {
        HostInfo {
            nodename: nodename.into(),
            ipv4: None,
            ipv6: None,
            endpoint_to_host_action: EndpointToHostAction::default(),
            bgp: false,
        }
    }

    /// The host's own address of `addr`'s family, with its subnet.
    pub fn subnet_for(&self, addr: IpAddr) -> Option<IpNet> {
        match addr {
            IpAddr::V4(_) => self.ipv4.map(IpNet::V4),
            IpAddr::V6(_) => self.ipv6.map(IpNet::V6),
        }
    }

    /// Whether `addr` is one of this host's own addresses.
    pub fn is_own_address(&self, addr: IpAddr) -> bool {
        self.subnet_for(addr).is_some_and(|net| net.addr() == addr)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn action_parses_felix_spellings() {
        assert_eq!("DROP".parse::<EndpointToHostAction>().unwrap(), EndpointToHostAction::Drop);
        assert_eq!("Accept".parse::<EndpointToHostAction>().unwrap(), EndpointToHostAction::Accept);
        assert_eq!(
            " return ".parse::<EndpointToHostAction>().unwrap(),
            EndpointToHostAction::Return
        );
        assert!("allow".parse::<EndpointToHostAction>().unwrap_err().contains("allow"));
    }

    #[test]
    fn host_json_defaults() {
        let host: HostInfo =
            serde_json::from_str(r#"{"nodename":"a","ipv4":"192.0.2.1/24"}"#).unwrap();
        assert_eq!(host.endpoint_to_host_action, EndpointToHostAction::Drop);
        assert!(host.is_own_address("192.0.2.1".parse().unwrap()));
        assert!(!host.is_own_address("192.0.2.2".parse().unwrap()));
        assert_eq!(host.subnet_for("fd00::1".parse().unwrap()), None);
    }
}
