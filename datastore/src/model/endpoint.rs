//! Workload endpoints: one per container interface, written by the CNI plugin or the Docker
//! driver, read by the agent to program that interface's policy and routes.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::meta::{ObjectMeta, Resource, Spec};
use super::rule::Protocol;
use super::validate::{
    check_resource_name, is_valid_container_id, is_valid_interface_name, is_valid_mac,
    is_valid_port_name, parse_cidr_or_ip,
};
use super::{AnyResource, ModelError};
use crate::keys::{workload_endpoint_name, Kind};

/// A 1:1 NAT of an external address onto one of the endpoint's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpNat {
    #[serde(rename = "internalIP")]
    pub internal_ip: IpAddr,
    #[serde(rename = "externalIP")]
    pub external_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A port the workload declares, by name (for named-port rules) and/or mapped to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEndpointSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orchestrator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The endpoint's addresses, each a host prefix (/32 or /128).
    #[serde(default, rename = "ipNetworks", skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<IpNet>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<IpAddr>,
    /// Profiles applied in order, after any policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// The host side of the veth (`cali…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// The container side's MAC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl WorkloadEndpointSpec {
    /// The name Calico derives from the identifiers (see
    /// [`workload_endpoint_name`]), or `None` while any of them is missing. CNI endpoints use
    /// the container id as the workload segment.
    pub fn expected_name(&self) -> Option<Result<String, ModelError>> {
        let orchestrator = self.orchestrator.as_deref()?;
        let workload = match orchestrator {
            "cni" => self.container_id.as_deref()?,
            "k8s" => self.pod.as_deref()?,
            "libnetwork" => "libnetwork",
            _ => self.workload.as_deref()?,
        };
        Some(workload_endpoint_name(
            self.node.as_deref()?,
            orchestrator,
            workload,
            self.endpoint.as_deref()?,
        ))
    }
}

impl Spec for WorkloadEndpointSpec {
    const KIND: Kind = Kind::WorkloadEndpoint;

    fn validate(&self, meta: &ObjectMeta) -> Result<(), ModelError> {
        for (field, value) in [
            ("spec.orchestrator", &self.orchestrator),
            ("spec.node", &self.node),
            ("spec.pod", &self.pod),
            ("spec.endpoint", &self.endpoint),
        ] {
            if let Some(value) = value {
                check_resource_name(field, value)?;
            }
        }
        for (field, value) in
            [("spec.containerID", &self.container_id), ("spec.workload", &self.workload)]
        {
            match value {
                Some(v) if !is_valid_container_id(v) => {
                    return Err(ModelError::invalid(
                        field,
                        format!("{v:?} is not valid: alphanumeric first, then [A-Za-z0-9_.-]"),
                    ));
                }
                _ => {}
            }
        }
        if let Some(expected) = self.expected_name() {
            let expected = expected?;
            if meta.name != expected {
                return Err(ModelError::invalid(
                    "metadata.name",
                    format!(
                        "{:?} does not match the endpoint's identifiers: expected {expected:?}",
                        meta.name
                    ),
                ));
            }
        }
        for (i, net) in self.ip_networks.iter().enumerate() {
            if net.prefix_len() != net.max_prefix_len() {
                return Err(ModelError::invalid(
                    format!("spec.ipNetworks[{i}]"),
                    format!("{net} holds more than one address: expected /32 or /128"),
                ));
            }
        }
        for (i, nat) in self.ip_nats.iter().enumerate() {
            let field = format!("spec.ipNATs[{i}]");
            if nat.internal_ip.is_ipv4() != nat.external_ip.is_ipv4() {
                return Err(ModelError::invalid(
                    field,
                    "internalIP and externalIP are of different IP versions",
                ));
            }
            if !self.ip_networks.iter().any(|n| n.contains(&nat.internal_ip)) {
                return Err(ModelError::invalid(
                    format!("{field}.internalIP"),
                    format!("{} is not one of the endpoint's ipNetworks", nat.internal_ip),
                ));
            }
        }
        if self.ipv4_gateway.is_some_and(|g| !g.is_ipv4()) {
            return Err(ModelError::invalid("spec.ipv4Gateway", "not an IPv4 address"));
        }
        if self.ipv6_gateway.is_some_and(|g| !g.is_ipv6()) {
            return Err(ModelError::invalid("spec.ipv6Gateway", "not an IPv6 address"));
        }
        for (i, profile) in self.profiles.iter().enumerate() {
            check_resource_name(&format!("spec.profiles[{i}]"), profile)?;
        }
        if let Some(name) = &self.interface_name {
            if !is_valid_interface_name(name) {
                return Err(ModelError::invalid(
                    "spec.interfaceName",
                    format!("{name:?} is not a valid interface name (1-15 of [A-Za-z0-9_.-])"),
                ));
            }
        }
        if let Some(mac) = &self.mac {
            if !is_valid_mac(mac) {
                return Err(ModelError::invalid(
                    "spec.mac",
                    format!("{mac:?} is not a MAC address"),
                ));
            }
        }
        for (i, port) in self.ports.iter().enumerate() {
            validate_endpoint_port(&format!("spec.ports[{i}]"), port)?;
        }
        for (i, prefix) in self.allow_spoofed_source_prefixes.iter().enumerate() {
            if parse_cidr_or_ip(prefix).is_none() {
                return Err(ModelError::invalid(
                    format!("spec.allowSpoofedSourcePrefixes[{i}]"),
                    format!("{prefix:?} is not a valid CIDR or IP address"),
                ));
            }
        }
        Ok(())
    }

    fn into_any(resource: Resource<Self>) -> AnyResource {
        AnyResource::WorkloadEndpoint(resource)
    }
}

fn validate_endpoint_port(field: &str, port: &EndpointPort) -> Result<(), ModelError> {
    if !port.protocol.supports_ports() {
        return Err(ModelError::invalid(
            format!("{field}.protocol"),
            format!("{} has no ports: expected TCP, UDP or SCTP", port.protocol),
        ));
    }
    if port.port == 0 {
        return Err(ModelError::invalid(format!("{field}.port"), "port 0 is not valid: 1-65535"));
    }
    match port.name.as_deref() {
        Some(name) if !name.is_empty() && !is_valid_port_name(name) => Err(ModelError::invalid(
            format!("{field}.name"),
            format!("{name:?} is not a valid port name (1-15 of [a-z0-9-] with a letter)"),
        )),
        None | Some("") if port.host_port.unwrap_or(0) == 0 => Err(ModelError::invalid(
            format!("{field}.name"),
            "a port needs a name unless it maps a hostPort",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::WorkloadEndpoint;

    fn wep() -> WorkloadEndpoint {
        let spec = WorkloadEndpointSpec {
            orchestrator: Some("cni".into()),
            node: Some("host-1".into()),
            container_id: Some("abc123".into()),
            endpoint: Some("eth0".into()),
            ip_networks: vec!["10.65.79.5/32".parse().unwrap()],
            profiles: vec!["web".into()],
            interface_name: Some("cali0123456789a".into()),
            mac: Some("ee:ee:ee:ee:ee:ee".into()),
            ..WorkloadEndpointSpec::default()
        };
        WorkloadEndpoint::namespaced("default", "host--1-cni-abc123-eth0", spec)
    }

    #[test]
    fn valid_cni_endpoint() {
        let w = wep();
        w.validate().unwrap();
        assert_eq!(w.spec.expected_name().unwrap().unwrap(), "host--1-cni-abc123-eth0");
    }

    #[test]
    fn name_must_match_identifiers() {
        let mut w = wep();
        w.metadata.name = "host-1-cni-abc123-eth0".into();
        assert_eq!(w.validate().unwrap_err().field(), "metadata.name");
    }

    #[test]
    fn field_checks() {
        type Mutation = fn(&mut WorkloadEndpoint);
        let cases: [(Mutation, &str); 6] = [
            (|w| w.spec.ip_networks = vec!["10.65.79.0/26".parse().unwrap()], "spec.ipNetworks[0]"),
            (|w| w.spec.mac = Some("ee:ee".into()), "spec.mac"),
            (|w| w.spec.interface_name = Some("cali0123456789abcdef".into()), "spec.interfaceName"),
            (|w| w.metadata.namespace = None, "metadata.namespace"),
            (|w| w.spec.profiles.push("Bad_Profile".into()), "spec.profiles[1]"),
            (
                |w| {
                    w.spec.ip_nats = vec![IpNat {
                        internal_ip: "10.0.0.9".parse().unwrap(),
                        external_ip: "192.0.2.1".parse().unwrap(),
                        source: None,
                        extra: Map::new(),
                    }];
                },
                "spec.ipNATs[0].internalIP",
            ),
        ];
        for (mutate, field) in cases {
            let mut w = wep();
            mutate(&mut w);
            assert_eq!(w.validate().unwrap_err().field(), field);
        }
    }

    #[test]
    fn endpoint_ports() {
        let port = |name: Option<&str>, protocol, port, host_port| EndpointPort {
            name: name.map(str::to_owned),
            protocol,
            port,
            host_port,
            host_ip: None,
            extra: Map::new(),
        };
        assert!(validate_endpoint_port("p", &port(Some("http"), Protocol::Tcp, 80, None)).is_ok());
        assert!(validate_endpoint_port("p", &port(None, Protocol::Tcp, 80, Some(8080))).is_ok());
        assert!(validate_endpoint_port("p", &port(None, Protocol::Tcp, 80, None)).is_err());
        assert!(validate_endpoint_port("p", &port(Some("x"), Protocol::Icmp, 80, None)).is_err());
        assert!(validate_endpoint_port("p", &port(Some("x"), Protocol::Udp, 0, None)).is_err());
    }
}
