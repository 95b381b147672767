//! Nodes: the hosts of the cluster, their addresses (routes to their blocks go via them) and
//! their BGP identity. Labels on a node feed pools' `nodeSelector`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::bgp::{check_as_number, check_node_address, AsNumber};
use super::meta::{ObjectMeta, Resource, Spec};
use super::validate::parse_cidr_or_ip;
use super::{AnyResource, ModelError};
use crate::keys::Kind;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeBgpSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// The node's IPv4 address with its subnet, e.g. `192.0.2.10/24`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(rename = "ipv4IPIPTunnelAddr", skip_serializing_if = "Option::is_none")]
    pub ipv4_ipip_tunnel_addr: Option<String>,
    #[serde(rename = "routeReflectorClusterID", skip_serializing_if = "Option::is_none")]
    pub route_reflector_cluster_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An address the node can be reached at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAddress {
    pub address: String,
    /// `CalicoNodeIP`, `InternalIP` or `ExternalIP`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The node's name in an orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    pub orchestrator: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NodeSpec {
    /// The address other hosts route this node's blocks via, for one family: the BGP address
    /// if set, else the first listed address of that family.
    pub fn host_address(&self, v4: bool) -> Option<IpAddr> {
        let from_bgp = self.bgp.as_ref().and_then(|b| {
            if v4 {
                b.ipv4_address.as_deref()
            } else {
                b.ipv6_address.as_deref()
            }
        });
        from_bgp
            .into_iter()
            .chain(self.addresses.iter().map(|a| a.address.as_str()))
            .filter_map(|s| parse_cidr_or_ip(s).map(|(addr, _)| addr))
            .find(|addr| addr.is_ipv4() == v4)
    }
}

const ADDRESS_TYPES: [&str; 3] = ["CalicoNodeIP", "InternalIP", "ExternalIP"];

impl Spec for NodeSpec {
    const KIND: Kind = Kind::Node;

    fn validate(&self, _meta: &ObjectMeta) -> Result<(), ModelError> {
        if let Some(bgp) = &self.bgp {
            if *bgp == NodeBgpSpec::default() {
                return Err(ModelError::invalid("spec.bgp", "must not be empty when present"));
            }
            check_as_number("spec.bgp.asNumber", bgp.as_number)?;
            if let Some(a) = &bgp.ipv4_address {
                check_node_address("spec.bgp.ipv4Address", a, true)?;
            }
            if let Some(a) = &bgp.ipv6_address {
                check_node_address("spec.bgp.ipv6Address", a, false)?;
            }
            if let Some(a) = &bgp.ipv4_ipip_tunnel_addr {
                if !a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()) {
                    return Err(ModelError::invalid(
                        "spec.bgp.ipv4IPIPTunnelAddr",
                        format!("{a:?} is not an IPv4 address"),
                    ));
                }
            }
            if let Some(id) = &bgp.route_reflector_cluster_id {
                if !id.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()) {
                    return Err(ModelError::invalid(
                        "spec.bgp.routeReflectorClusterID",
                        format!("{id:?} is not valid: a cluster id is written as an IPv4 address"),
                    ));
                }
            }
        }
        for (i, address) in self.addresses.iter().enumerate() {
            if parse_cidr_or_ip(&address.address).is_none() {
                return Err(ModelError::invalid(
                    format!("spec.addresses[{i}].address"),
                    format!("{:?} is not an IP address or CIDR", address.address),
                ));
            }
            if let Some(t) = &address.address_type {
                if !ADDRESS_TYPES.contains(&t.as_str()) {
                    return Err(ModelError::invalid(
                        format!("spec.addresses[{i}].type"),
                        format!(
                            "{t:?} is not an address type: expected {}",
                            ADDRESS_TYPES.join(", ")
                        ),
                    ));
                }
            }
        }
        for (i, orch) in self.orch_refs.iter().enumerate() {
            if orch.orchestrator.is_empty() {
                return Err(ModelError::invalid(
                    format!("spec.orchRefs[{i}].orchestrator"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    fn into_any(resource: Resource<Self>) -> AnyResource {
        AnyResource::Node(resource)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::Node;

    #[test]
    fn host_address_prefers_bgp_then_addresses() {
        let mut spec = NodeSpec {
            addresses: vec![
                NodeAddress { address: "fd00::10".into(), address_type: None, extra: Map::new() },
                NodeAddress {
                    address: "192.0.2.10/24".into(),
                    address_type: None,
                    extra: Map::new(),
                },
            ],
            ..NodeSpec::default()
        };
        assert_eq!(spec.host_address(true), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(spec.host_address(false), Some("fd00::10".parse().unwrap()));
        spec.bgp = Some(NodeBgpSpec {
            ipv4_address: Some("198.51.100.7/24".into()),
            ..NodeBgpSpec::default()
        });
        assert_eq!(spec.host_address(true), Some("198.51.100.7".parse().unwrap()));
    }

    #[test]
    fn node_checks() {
        let node = |f: fn(&mut NodeSpec)| {
            let mut spec = NodeSpec::default();
            f(&mut spec);
            Node::new("host1", spec).validate()
        };
        assert!(node(|_| {}).is_ok());
        assert_eq!(node(|s| s.bgp = Some(NodeBgpSpec::default())).unwrap_err().field(), "spec.bgp");
        assert_eq!(
            node(|s| s.bgp = Some(NodeBgpSpec {
                ipv4_address: Some("fd00::1/64".into()),
                ..Default::default()
            }))
            .unwrap_err()
            .field(),
            "spec.bgp.ipv4Address"
        );
        assert_eq!(
            node(|s| s.addresses = vec![NodeAddress {
                address: "192.0.2.1".into(),
                address_type: Some("Public".into()),
                extra: Map::new()
            }])
            .unwrap_err()
            .field(),
            "spec.addresses[0].type"
        );
        assert!(Node::new("Host_1", NodeSpec::default()).validate().is_err());
    }
}
