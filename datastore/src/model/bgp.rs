//! BGP peers, the cluster's BGP configuration, and AS numbers — what the agent turns into
//! a BIRD config when BGP is on.

use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::meta::{is_false, ObjectMeta, Resource, Spec};
use super::validate::{check_masked_net, check_resource_name, check_selector, parse_cidr_or_ip};
use super::{AnyResource, ModelError};
use crate::keys::Kind;

/// A BGP AS number. Reads a number, a numeric string or the dotted `high.low` form as Calico
/// does; writes a number. Zero means "unset" in Calico and is rejected by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsNumber(pub u32);

impl AsNumber {
    fn parse(s: &str) -> Result<AsNumber, String> {
        if let Ok(n) = s.parse::<u32>() {
            return Ok(AsNumber(n));
        }
        let dotted = s.split_once('.').and_then(|(hi, lo)| {
            Some((u32::from(hi.parse::<u16>().ok()?) << 16) | u32::from(lo.parse::<u16>().ok()?))
        });
        dotted.map(AsNumber).ok_or_else(|| {
            format!("invalid AS number {s:?}: expected 1-4294967295 or the dotted form high.low")
        })
    }

    fn check(self, field: &str) -> Result<(), ModelError> {
        if self.0 == 0 {
            Err(ModelError::invalid(field, "AS number 0 is not valid: expected 1-4294967295"))
        } else {
            Ok(())
        }
    }
}

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AsVisitor;
        impl Visitor<'_> for AsVisitor {
            type Value = AsNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(format!("AS number {v} out of range 1-4294967295")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(format!("AS number {v} out of range 1-4294967295")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AsNumber, E> {
                AsNumber::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(AsVisitor)
    }
}

pub(crate) fn check_as_number(field: &str, asn: Option<AsNumber>) -> Result<(), ModelError> {
    asn.map_or(Ok(()), |a| a.check(field))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerSpec {
    /// The one node that peers; none (and no nodeSelector) means every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// `<ip>`, `<ipv4>:<port>` or `[<ipv6>]:<port>`.
    #[serde(rename = "peerIP", skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_original_next_hop: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl BgpPeerSpec {
    /// The peer address and port (`None` for BGP's default, 179), if `peerIP` is set and valid.
    pub fn peer_addr(&self) -> Option<(IpAddr, Option<u16>)> {
        parse_peer_ip(self.peer_ip.as_deref()?).ok()
    }
}

/// Calico's `IP:port` rule: a bare address, `<ipv4>:<port>` or `[<ipv6>]:<port>`, port ≥ 1.
fn parse_peer_ip(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok((addr, None));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not an IP address, <IPv4>:<port> or [<IPv6>]:<port>"))?;
    let addr = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6).ok(),
        None => host.parse::<std::net::Ipv4Addr>().map(IpAddr::V4).ok(),
    }
    .ok_or_else(|| format!("{s:?} is not an IP address, <IPv4>:<port> or [<IPv6>]:<port>"))?;
    match port.parse::<u16>() {
        Ok(p) if p >= 1 => Ok((addr, Some(p))),
        _ => Err(format!("{s:?} has an invalid port: expected 1-65535")),
    }
}

impl Spec for BgpPeerSpec {
    const KIND: Kind = Kind::BgpPeer;

    fn validate(&self, _meta: &ObjectMeta) -> Result<(), ModelError> {
        if let Some(node) = &self.node {
            check_resource_name("spec.node", node)?;
            if self.node_selector.is_some() {
                return Err(ModelError::invalid(
                    "spec.node",
                    "node must be empty when nodeSelector is set",
                ));
            }
        }
        if let Some(ip) = &self.peer_ip {
            parse_peer_ip(ip).map_err(|reason| ModelError::invalid("spec.peerIP", reason))?;
            if self.peer_selector.is_some() {
                return Err(ModelError::invalid(
                    "spec.peerIP",
                    "peerIP must be empty when peerSelector is set",
                ));
            }
        }
        check_as_number("spec.asNumber", self.as_number)?;
        if self.as_number.is_some() && self.peer_selector.is_some() {
            return Err(ModelError::invalid(
                "spec.asNumber",
                "asNumber must be empty when peerSelector is set (the peers' own AS numbers are used)",
            ));
        }
        check_selector("spec.nodeSelector", self.node_selector.as_ref())?;
        check_selector("spec.peerSelector", self.peer_selector.as_ref())?;
        Ok(())
    }

    fn into_any(resource: Resource<Self>) -> AnyResource {
        AnyResource::BgpPeer(resource)
    }
}

/// One CIDR to advertise (`serviceClusterIPs` and friends).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceIpBlock {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpConfigurationSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// Full mesh between all nodes; Calico's default is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// The AS of nodes that name none; Calico's default is 64512.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(rename = "serviceClusterIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub service_cluster_ips: Vec<ServiceIpBlock>,
    #[serde(rename = "serviceExternalIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub service_external_ips: Vec<ServiceIpBlock>,
    #[serde(rename = "serviceLoadBalancerIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub service_load_balancer_ips: Vec<ServiceIpBlock>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Calico's default AS number for nodes when nothing names one.
pub const DEFAULT_AS_NUMBER: AsNumber = AsNumber(64512);

impl BgpConfigurationSpec {
    pub fn effective_mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }

    pub fn effective_as_number(&self) -> AsNumber {
        self.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }

    pub fn effective_listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(179)
    }
}

const LOG_LEVELS: [&str; 6] = ["Trace", "Debug", "Info", "Warning", "Error", "Fatal"];

impl Spec for BgpConfigurationSpec {
    const KIND: Kind = Kind::BgpConfiguration;

    fn validate(&self, _meta: &ObjectMeta) -> Result<(), ModelError> {
        if let Some(level) = &self.log_severity_screen {
            if !LOG_LEVELS.contains(&level.as_str()) {
                return Err(ModelError::invalid(
                    "spec.logSeverityScreen",
                    format!(
                        "{level:?} is not a log level: expected one of {}",
                        LOG_LEVELS.join(", ")
                    ),
                ));
            }
        }
        check_as_number("spec.asNumber", self.as_number)?;
        if self.listen_port == Some(0) {
            return Err(ModelError::invalid("spec.listenPort", "port 0 is not valid: 1-65535"));
        }
        for (field, blocks) in [
            ("serviceClusterIPs", &self.service_cluster_ips),
            ("serviceExternalIPs", &self.service_external_ips),
            ("serviceLoadBalancerIPs", &self.service_load_balancer_ips),
        ] {
            for (i, block) in blocks.iter().enumerate() {
                if let Some(cidr) = &block.cidr {
                    check_masked_net(&format!("spec.{field}[{i}].cidr"), cidr)?;
                }
            }
        }
        Ok(())
    }

    fn into_any(resource: Resource<Self>) -> AnyResource {
        AnyResource::BgpConfiguration(resource)
    }
}

/// The checks a node's BGP addresses need; shared with `node.rs`.
pub(crate) fn check_node_address(field: &str, s: &str, v4: bool) -> Result<(), ModelError> {
    match parse_cidr_or_ip(s) {
        Some((addr, _)) if addr.is_ipv4() == v4 => Ok(()),
        _ => Err(ModelError::invalid(
            field,
            format!("{s:?} is not an IPv{} address or CIDR", if v4 { 4 } else { 6 }),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::BgpPeer;

    #[test]
    fn as_number_forms() {
        let a: AsNumber = serde_json::from_str("64512").unwrap();
        assert_eq!(a, AsNumber(64512));
        let a: AsNumber = serde_json::from_str("\"65000\"").unwrap();
        assert_eq!(a, AsNumber(65000));
        let a: AsNumber = serde_json::from_str("\"1.10\"").unwrap();
        assert_eq!(a, AsNumber(65546));
        assert_eq!(serde_json::to_string(&a).unwrap(), "65546");
        assert!(serde_json::from_str::<AsNumber>("4294967296").is_err());
        assert!(serde_json::from_str::<AsNumber>("\"x\"").is_err());
        assert_eq!(AsNumber(u32::MAX).check("f"), Ok(()));
        assert!(AsNumber(0).check("f").is_err());
    }

    #[test]
    fn peer_ip_forms() {
        assert_eq!(parse_peer_ip("192.0.2.1").unwrap(), ("192.0.2.1".parse().unwrap(), None));
        assert_eq!(
            parse_peer_ip("192.0.2.1:1179").unwrap(),
            ("192.0.2.1".parse().unwrap(), Some(1179))
        );
        assert_eq!(
            parse_peer_ip("[fd00::1]:179").unwrap(),
            ("fd00::1".parse().unwrap(), Some(179))
        );
        assert_eq!(parse_peer_ip("fd00::1").unwrap(), ("fd00::1".parse().unwrap(), None));
        for bad in
            ["192.0.2.1:0", "192.0.2.1:70000", "fd00::1:x", "[192.0.2.1]:179", "host:179", ""]
        {
            assert!(parse_peer_ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_rules() {
        let peer = |f: fn(&mut BgpPeerSpec)| {
            let mut spec = BgpPeerSpec {
                peer_ip: Some("192.0.2.1".into()),
                as_number: Some(AsNumber(64513)),
                ..Default::default()
            };
            f(&mut spec);
            BgpPeer::new("tor", spec).validate()
        };
        assert!(peer(|_| {}).is_ok());
        assert_eq!(peer(|s| s.as_number = Some(AsNumber(0))).unwrap_err().field(), "spec.asNumber");
        assert_eq!(peer(|s| s.peer_ip = Some("nope".into())).unwrap_err().field(), "spec.peerIP");
        assert_eq!(
            peer(|s| {
                s.node = Some("n1".into());
                s.node_selector = Some("all()".into());
            })
            .unwrap_err()
            .field(),
            "spec.node"
        );
    }
}
