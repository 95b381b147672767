//! Policy rules shared by profiles and policies: action, protocol, ICMP, source and
//! destination matches, with Calico's JSON shape and Calico's validation.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::validate::{check_selector, is_valid_port_name, parse_cidr_or_ip};
use super::ModelError;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    /// Skip the rest of this policy's tier (or go to profiles).
    Pass,
}

/// An IP protocol: one of Calico's names, or a number. Names are read case-insensitively and
/// written in Calico's spelling; a numeric string (`"6"`) reads as a number, as in Calico.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    IcmpV6,
    Sctp,
    UdpLite,
    Number(u8),
}

impl Protocol {
    const NAMED: [Protocol; 6] = [
        Protocol::Tcp,
        Protocol::Udp,
        Protocol::Icmp,
        Protocol::IcmpV6,
        Protocol::Sctp,
        Protocol::UdpLite,
    ];

    /// Calico's spelling, for named protocols.
    pub const fn name(self) -> Option<&'static str> {
        match self {
            Protocol::Tcp => Some("TCP"),
            Protocol::Udp => Some("UDP"),
            Protocol::Icmp => Some("ICMP"),
            Protocol::IcmpV6 => Some("ICMPv6"),
            Protocol::Sctp => Some("SCTP"),
            Protocol::UdpLite => Some("UDPLite"),
            Protocol::Number(_) => None,
        }
    }

    /// The IANA protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::IcmpV6 => 58,
            Protocol::Sctp => 132,
            Protocol::UdpLite => 136,
            Protocol::Number(n) => n,
        }
    }

    /// Whether port matches make sense (TCP, UDP, SCTP, by name or number).
    pub const fn supports_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132)
    }

    pub const fn is_icmp(self) -> bool {
        self.number() == 1
    }

    pub const fn is_icmpv6(self) -> bool {
        self.number() == 58
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.number()),
        }
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<u8>() {
            return Ok(Protocol::Number(n));
        }
        Protocol::NAMED
            .into_iter()
            .find(|p| p.name().is_some_and(|n| n.eq_ignore_ascii_case(s)))
            .ok_or_else(|| {
                format!(
                    "unknown protocol {s:?}: expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite \
                     or a number 0-255"
                )
            })
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => serializer.serialize_str(name),
            None => serializer.serialize_u8(self.number()),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProtocolVisitor;
        impl Visitor<'_> for ProtocolVisitor {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a protocol name or a number 0-255")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} out of range 0-255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} out of range 0-255")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(ProtocolVisitor)
    }
}

/// A port match: one port, an inclusive range, or the name of a port a workload declares.
/// Written as Calico writes it: a number, `"first:last"`, or the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Port {
    Single(u16),
    Range { first: u16, last: u16 },
    Named(String),
}

impl Port {
    /// The ports `first` to `last`. A one-port range is that port, as in Calico (whose port
    /// type has no separate single form), so `80:80` and `80` compare equal and a rule
    /// survives being written (as `80`) and read back.
    pub fn range(first: u16, last: u16) -> Port {
        if first == last {
            Port::Single(first)
        } else {
            Port::Range { first, last }
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Single(p) => write!(f, "{p}"),
            Port::Range { first, last } if first == last => write!(f, "{first}"),
            Port::Range { first, last } => write!(f, "{first}:{last}"),
            Port::Named(name) => f.write_str(name),
        }
    }
}

impl FromStr for Port {
    type Err = String;

    /// Calico's `PortFromString`: digits are a port, `digits:digits` a range, anything else
    /// of `[A-Za-z0-9_.-]{1,128}` a named port.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let number = |t: &str| {
            t.parse::<u16>()
                .map_err(|_| format!("port {t} out of range in {s:?}: ports are 1-65535"))
        };
        if all_digits(s) {
            return number(s).map(Port::Single);
        }
        if let Some((a, b)) = s.split_once(':') {
            if all_digits(a) && all_digits(b) {
                return Ok(Port::range(number(a)?, number(b)?));
            }
        }
        if (1..=128).contains(&s.len())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Ok(Port::Named(s.to_owned()));
        }
        Err(format!("invalid port {s:?}: expected a number, \"first:last\" or a port name"))
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Single(p) => serializer.serialize_u16(*p),
            // Calico writes a one-port range as the bare number.
            Port::Range { first, last } if first == last => serializer.serialize_u16(*first),
            Port::Range { .. } => serializer.collect_str(self),
            Port::Named(name) => serializer.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, a \"first:last\" range or a port name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::Single)
                    .map_err(|_| E::custom(format!("port {v} out of range: ports are 1-65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::Single)
                    .map_err(|_| E::custom(format!("port {v} out of range: ports are 1-65535")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

/// ICMP type and code to match (`icmp` / `notICMP`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IcmpFields {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Service accounts to match (`serviceAccounts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The match criteria for one end of a connection (`source` or `destination`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRule {
    /// CIDRs (or bare addresses); kept as text because Calico accepts both forms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EntityRule {
    /// True when it matches everything (and so is omitted from JSON, as Calico omits it).
    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

/// One HTTP path match: exactly one of `exact` and `prefix`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpPath {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// HTTP request matches (application-layer policy; tabby stores them but has no L7 engine).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<HttpPath>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Free-form annotations on a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A policy or profile rule. All match criteria must hold for the action to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(rename = "notICMP", skip_serializing_if = "Option::is_none")]
    pub not_icmp: Option<IcmpFields>,
    /// Omitted when empty; an explicit `{}` (older Calico wrote one) reads as empty too.
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Rule {
    /// A rule with `action` and no match criteria: it matches every packet.
    pub fn new(action: Action) -> Self {
        Rule {
            action,
            ip_version: None,
            protocol: None,
            icmp: None,
            not_protocol: None,
            not_icmp: None,
            source: EntityRule::default(),
            destination: EntityRule::default(),
            http: None,
            metadata: None,
            extra: Map::new(),
        }
    }

    /// Checks the rule as Calico does; `path` is the rule's own path (`spec.ingress[1]`).
    pub fn validate(&self, path: &str) -> Result<(), ModelError> {
        if let Some(v) = self.ip_version {
            if v != 4 && v != 6 {
                return Err(ModelError::invalid(
                    format!("{path}.ipVersion"),
                    format!("{v} is not an IP version: expected 4 or 6"),
                ));
            }
        }
        for (field, protocol) in [("protocol", self.protocol), ("notProtocol", self.not_protocol)] {
            let Some(protocol) = protocol else { continue };
            if protocol.number() == 0 {
                return Err(ModelError::invalid(
                    format!("{path}.{field}"),
                    "protocol number 0 is not valid: expected 1-255 or a name",
                ));
            }
            if protocol.is_icmp() && self.ip_version == Some(6) {
                return Err(ModelError::invalid(
                    format!("{path}.ipVersion"),
                    format!("{field} ICMP needs ipVersion 4"),
                ));
            }
            if protocol.is_icmpv6() && self.ip_version == Some(4) {
                return Err(ModelError::invalid(
                    format!("{path}.ipVersion"),
                    format!("{field} ICMPv6 needs ipVersion 6"),
                ));
            }
        }
        for (field, icmp) in [("icmp", &self.icmp), ("notICMP", &self.not_icmp)] {
            let Some(icmp) = icmp else { continue };
            let field = format!("{path}.{field}");
            if !self.protocol.is_some_and(|p| p.is_icmp() || p.is_icmpv6()) {
                return Err(ModelError::invalid(
                    field,
                    "ICMP type and code need protocol ICMP or ICMPv6",
                ));
            }
            validate_icmp(&field, icmp)?;
        }
        let ports_ok = self.protocol.is_some_and(Protocol::supports_ports);
        for (end, entity) in [("source", &self.source), ("destination", &self.destination)] {
            let end_path = format!("{path}.{end}");
            entity.validate(&end_path)?;
            for (field, ports) in [("ports", &entity.ports), ("notPorts", &entity.not_ports)] {
                if !ports.is_empty() && !ports_ok {
                    return Err(ModelError::invalid(
                        format!("{end_path}.{field}"),
                        "rules that match ports must set protocol to TCP, UDP or SCTP",
                    ));
                }
            }
        }
        self.validate_net_versions(path)?;
        if let Some(http) = &self.http {
            validate_http(&format!("{path}.http"), http, self)?;
        }
        Ok(())
    }

    /// A rule's nets must all be of one family, and of `ipVersion` when that is set.
    fn validate_net_versions(&self, path: &str) -> Result<(), ModelError> {
        let mut seen: Option<(u8, String)> = None;
        let lists = [
            ("source.nets", &self.source.nets),
            ("source.notNets", &self.source.not_nets),
            ("destination.nets", &self.destination.nets),
            ("destination.notNets", &self.destination.not_nets),
        ];
        for (field, nets) in lists {
            for (i, net) in nets.iter().enumerate() {
                let here = format!("{path}.{field}[{i}]");
                let (_, parsed) = parse_cidr_or_ip(net).ok_or_else(|| {
                    ModelError::invalid(&here, format!("{net:?} is not a valid CIDR or IP address"))
                })?;
                let version = if parsed.addr().is_ipv4() { 4 } else { 6 };
                if let Some(want) = self.ip_version {
                    if want != version {
                        return Err(ModelError::invalid(
                            here,
                            format!("{net} is IPv{version} but the rule has ipVersion {want}"),
                        ));
                    }
                }
                match &seen {
                    Some((v, other)) if *v != version => {
                        return Err(ModelError::invalid(
                            here,
                            format!("{net} is IPv{version} but {other} in the same rule is IPv{v}"),
                        ));
                    }
                    Some(_) => {}
                    None => seen = Some((version, net.clone())),
                }
            }
        }
        Ok(())
    }
}

impl EntityRule {
    /// Checks selectors and port values; `path` is `…source` or `…destination`.
    pub fn validate(&self, path: &str) -> Result<(), ModelError> {
        check_selector(&format!("{path}.selector"), self.selector.as_ref())?;
        check_selector(&format!("{path}.notSelector"), self.not_selector.as_ref())?;
        check_selector(&format!("{path}.namespaceSelector"), self.namespace_selector.as_ref())?;
        if let Some(sa) = &self.service_accounts {
            check_selector(&format!("{path}.serviceAccounts.selector"), sa.selector.as_ref())?;
        }
        for (field, ports) in [("ports", &self.ports), ("notPorts", &self.not_ports)] {
            for (i, port) in ports.iter().enumerate() {
                validate_port(&format!("{path}.{field}[{i}]"), port)?;
            }
        }
        Ok(())
    }
}

fn validate_port(field: &str, port: &Port) -> Result<(), ModelError> {
    match port {
        Port::Single(0) | Port::Range { first: 0, .. } => {
            Err(ModelError::invalid(field, "port 0 is not valid: port numbers are 1-65535"))
        }
        Port::Range { first, last } if first > last => Err(ModelError::invalid(
            field,
            format!(
                "port range {first}:{last} is backwards: the first port must not exceed the last"
            ),
        )),
        Port::Named(name) if !is_valid_port_name(name) => Err(ModelError::invalid(
            field,
            format!("{name:?} is not a valid port name (1-15 of [a-z0-9-] with a letter)"),
        )),
        _ => Ok(()),
    }
}

fn validate_icmp(field: &str, icmp: &IcmpFields) -> Result<(), ModelError> {
    if icmp.icmp_type == Some(255) {
        return Err(ModelError::invalid(
            format!("{field}.type"),
            "ICMP type 255 is not valid: types are 0-254",
        ));
    }
    if icmp.code.is_some() && icmp.icmp_type.is_none() {
        return Err(ModelError::invalid(
            format!("{field}.code"),
            "an ICMP code needs an ICMP type",
        ));
    }
    Ok(())
}

fn validate_http(field: &str, http: &HttpMatch, rule: &Rule) -> Result<(), ModelError> {
    if rule.action != Action::Allow {
        return Err(ModelError::invalid(field, "HTTP matches are only valid on Allow rules"));
    }
    if rule.protocol.is_some_and(|p| p != Protocol::Tcp) {
        return Err(ModelError::invalid(field, "HTTP matches need protocol TCP (or none)"));
    }
    for (i, method) in http.methods.iter().enumerate() {
        if http.methods[..i].contains(method) {
            return Err(ModelError::invalid(
                format!("{field}.methods[{i}]"),
                format!("method {method:?} is listed twice"),
            ));
        }
    }
    for (i, path) in http.paths.iter().enumerate() {
        let here = format!("{field}.paths[{i}]");
        let ((Some(value), None) | (None, Some(value))) = (&path.exact, &path.prefix) else {
            return Err(ModelError::invalid(here, "set exactly one of exact and prefix"));
        };
        if !value.starts_with('/') || value.contains(['?', ' ', '#']) {
            return Err(ModelError::invalid(
                here,
                format!("{value:?} must start with '/' and contain no '?', '#' or space"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
