//! Where every record lives in etcd: Calico's v3 key layout, built and parsed in one place.
//!
//! The layout is Calico's own (`libcalico-go/lib/backend/model`), so `etcdctl get --prefix
//! /calico` reads the same to an operator whether tabby or Calico wrote it. Builders and
//! [`KeyLayout::parse`] are inverses; the agent's watcher relies on that to route events.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::ModelError;

/// The prefix Calico uses when none is configured.
pub const DEFAULT_PREFIX: &str = "/calico";

/// The API group in v3 resource keys and in every resource's `apiVersion`.
pub const API_GROUP: &str = "projectcalico.org";

/// Felix's status reports live under a region; Calico's default region name.
const STATUS_REGION: &str = "no-region";

/// The resource kinds tabby stores, with Calico's names for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    IpPool,
    Profile,
    NetworkPolicy,
    GlobalNetworkPolicy,
    WorkloadEndpoint,
    Node,
    BgpPeer,
    BgpConfiguration,
}

impl Kind {
    /// Every kind, in the order `tabbyctl get all` would list them.
    pub const ALL: [Kind; 8] = [
        Kind::IpPool,
        Kind::Profile,
        Kind::GlobalNetworkPolicy,
        Kind::NetworkPolicy,
        Kind::WorkloadEndpoint,
        Kind::Node,
        Kind::BgpPeer,
        Kind::BgpConfiguration,
    ];

    /// Calico's kind name, as written in a resource's `kind` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::IpPool => "IPPool",
            Kind::Profile => "Profile",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
            Kind::Node => "Node",
            Kind::BgpPeer => "BGPPeer",
            Kind::BgpConfiguration => "BGPConfiguration",
        }
    }

    /// The lower-case plural used as the key segment.
    pub const fn plural(self) -> &'static str {
        match self {
            Kind::IpPool => "ippools",
            Kind::Profile => "profiles",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::GlobalNetworkPolicy => "globalnetworkpolicies",
            Kind::WorkloadEndpoint => "workloadendpoints",
            Kind::Node => "nodes",
            Kind::BgpPeer => "bgppeers",
            Kind::BgpConfiguration => "bgpconfigurations",
        }
    }

    /// Whether resources of this kind live in a namespace (and so have one in their key).
    pub const fn namespaced(self) -> bool {
        matches!(self, Kind::NetworkPolicy | Kind::WorkloadEndpoint)
    }

    /// The kind whose exact Calico name is `name` (what a resource's `kind` field must hold).
    pub fn from_kind_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind whose key segment is `plural`.
    pub fn from_plural(plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == plural)
    }

    /// Short names an operator may type, after calicoctl's.
    const fn aliases(self) -> &'static [&'static str] {
        match self {
            Kind::IpPool => &["ippool", "ippools", "ipp", "ipps", "pool", "pools"],
            Kind::Profile => &["profile", "profiles", "pro", "pros"],
            Kind::NetworkPolicy => &[
                "networkpolicy",
                "networkpolicies",
                "policy",
                "policies",
                "pol",
                "pols",
                "np",
                "nps",
                "netpol",
            ],
            Kind::GlobalNetworkPolicy => {
                &["globalnetworkpolicy", "globalnetworkpolicies", "globalpolicy", "gnp", "gnps"]
            }
            Kind::WorkloadEndpoint => {
                &["workloadendpoint", "workloadendpoints", "wep", "weps", "endpoint", "endpoints"]
            }
            Kind::Node => &["node", "nodes", "no", "nos"],
            Kind::BgpPeer => {
                &["bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps", "peer", "peers"]
            }
            Kind::BgpConfiguration => {
                &["bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"]
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Kind::from_str`]: the name matched no kind, plural or alias.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource kind {0:?} (expected one of: ippool, profile, globalnetworkpolicy, networkpolicy, workloadendpoint, node, bgppeer, bgpconfiguration)")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Accepts Calico kind names, plurals and short aliases, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| k.aliases().contains(&lower.as_str()))
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    /// Strict: a stored resource's `kind` must be Calico's exact name.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Kind::from_kind_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown resource kind {name:?}")))
    }
}

/// An IP address family, as it appears in IPAM keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The key segment: `ipv4` or `ipv6`.
    pub const fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }

    pub const fn of_net(net: &IpNet) -> IpFamily {
        match net {
            IpNet::V4(_) => IpFamily::V4,
            IpNet::V6(_) => IpFamily::V6,
        }
    }

    pub const fn of_addr(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    fn from_segment(s: &str) -> Option<IpFamily> {
        match s {
            "ipv4" => Some(IpFamily::V4),
            "ipv6" => Some(IpFamily::V6),
            _ => None,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key recognised by [`KeyLayout::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedKey {
    /// A v3 resource; `namespace` is `Some` exactly for namespaced kinds.
    Resource {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
    Block {
        cidr: IpNet,
    },
    Affinity {
        host: String,
        cidr: IpNet,
    },
    Handle {
        id: String,
    },
    IpamConfig,
    AgentStatus {
        node: String,
    },
}

/// The etcd key layout under one prefix (`/calico` in production, unique per test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout::new(DEFAULT_PREFIX)
    }
}

impl KeyLayout {
    /// A layout rooted at `prefix`; a trailing `/` is ignored so `/calico/` and `/calico` agree.
    pub fn new(prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        while prefix.ends_with('/') {
            prefix.pop();
        }
        KeyLayout { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Everything tabby stores, for a full list of the datastore.
    pub fn root_prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Key of one resource. For a namespaced kind a missing namespace means `default`, Calico's
    /// namespace for workloads outside Kubernetes; for a cluster-scoped kind it is ignored.
    pub fn resource(&self, kind: Kind, namespace: Option<&str>, name: &str) -> String {
        if kind.namespaced() {
            let ns = namespace.unwrap_or("default");
            format!("{}{ns}/{name}", self.resources_prefix(kind))
        } else {
            format!("{}{name}", self.resources_prefix(kind))
        }
    }

    /// Prefix of every resource of `kind` (ends in `/`).
    pub fn resources_prefix(&self, kind: Kind) -> String {
        format!("{}/resources/v3/{API_GROUP}/{}/", self.prefix, kind.plural())
    }

    /// Prefix of the resources of a namespaced `kind` in one namespace (ends in `/`).
    pub fn namespace_prefix(&self, kind: Kind, namespace: &str) -> String {
        format!("{}{namespace}/", self.resources_prefix(kind))
    }

    /// Prefix of every v3 resource of every kind (ends in `/`).
    pub fn all_resources_prefix(&self) -> String {
        format!("{}/resources/v3/{API_GROUP}/", self.prefix)
    }

    /// Key of the allocation block `cidr`, e.g. `/calico/ipam/v2/assignment/ipv4/block/10.65.79.0-26`.
    pub fn block(&self, cidr: IpNet) -> String {
        format!("{}{}", self.blocks_prefix(IpFamily::of_net(&cidr)), encode_cidr(cidr))
    }

    /// Prefix of every block of one family (ends in `/`).
    pub fn blocks_prefix(&self, family: IpFamily) -> String {
        format!("{}/ipam/v2/assignment/{family}/block/", self.prefix)
    }

    /// Key of `host`'s affinity to block `cidr`.
    pub fn affinity(&self, host: &str, cidr: IpNet) -> String {
        format!(
            "{}{}",
            self.host_affinities_prefix(host, IpFamily::of_net(&cidr)),
            encode_cidr(cidr)
        )
    }

    /// Prefix of `host`'s affinities of one family (ends in `/`).
    pub fn host_affinities_prefix(&self, host: &str, family: IpFamily) -> String {
        format!("{}{host}/{family}/block/", self.all_hosts_prefix())
    }

    /// Prefix of every host's affinities (ends in `/`).
    pub fn all_hosts_prefix(&self) -> String {
        format!("{}/ipam/v2/host/", self.prefix)
    }

    pub fn handle(&self, id: &str) -> String {
        format!("{}{id}", self.handles_prefix())
    }

    /// Prefix of every IPAM handle (ends in `/`).
    pub fn handles_prefix(&self) -> String {
        format!("{}/ipam/v2/handle/", self.prefix)
    }

    pub fn ipam_config(&self) -> String {
        format!("{}/ipam/v2/config", self.prefix)
    }

    /// Key of `node`'s agent heartbeat (written on a lease).
    pub fn agent_status(&self, node: &str) -> String {
        format!("{}{node}/status", self.agent_statuses_prefix())
    }

    /// Prefix under which every node's agent status lives (ends in `/`).
    pub fn agent_statuses_prefix(&self) -> String {
        format!("{}/felix/v2/{STATUS_REGION}/host/", self.prefix)
    }

    /// The record a key names, or `None` for keys outside this layout (other prefixes, other
    /// Calico records tabby does not use, malformed segments).
    pub fn parse(&self, key: &str) -> Option<ParsedKey> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["resources", "v3", group, plural, tail @ ..] if *group == API_GROUP => {
                let kind = Kind::from_plural(plural)?;
                match (kind.namespaced(), tail) {
                    (true, [ns, name]) if !ns.is_empty() && !name.is_empty() => {
                        Some(ParsedKey::Resource {
                            kind,
                            namespace: Some((*ns).to_owned()),
                            name: (*name).to_owned(),
                        })
                    }
                    (false, [name]) if !name.is_empty() => Some(ParsedKey::Resource {
                        kind,
                        namespace: None,
                        name: (*name).to_owned(),
                    }),
                    _ => None,
                }
            }
            ["ipam", "v2", "assignment", family, "block", cidr] => {
                let cidr = decode_cidr(cidr, IpFamily::from_segment(family)?)?;
                Some(ParsedKey::Block { cidr })
            }
            ["ipam", "v2", "host", host, family, "block", cidr] if !host.is_empty() => {
                let cidr = decode_cidr(cidr, IpFamily::from_segment(family)?)?;
                Some(ParsedKey::Affinity { host: (*host).to_owned(), cidr })
            }
            // A handle id is opaque to the layout: keep everything after `handle/`.
            ["ipam", "v2", "handle", _, ..] => {
                let id = rest.strip_prefix("ipam/v2/handle/")?;
                (!id.is_empty()).then(|| ParsedKey::Handle { id: id.to_owned() })
            }
            ["ipam", "v2", "config"] => Some(ParsedKey::IpamConfig),
            ["felix", "v2", region, "host", node, "status"]
                if *region == STATUS_REGION && !node.is_empty() =>
            {
                Some(ParsedKey::AgentStatus { node: (*node).to_owned() })
            }
            _ => None,
        }
    }
}

/// Calico writes a CIDR into a key with its `/` replaced by `-`.
fn encode_cidr(cidr: IpNet) -> String {
    format!("{}-{}", cidr.addr(), cidr.prefix_len())
}

fn decode_cidr(segment: &str, family: IpFamily) -> Option<IpNet> {
    // Addresses never contain `-`, so the last one separates the prefix length.
    let (addr, len) = segment.rsplit_once('-')?;
    let cidr: IpNet = format!("{addr}/{len}").parse().ok()?;
    (IpFamily::of_net(&cidr) == family).then_some(cidr)
}

/// Calico's name for a workload endpoint: `<node>-<orchestrator>-<workload>-<endpoint>`, with
/// every `-` inside a segment doubled so the four parts can be recovered. For CNI, pass
/// orchestrator `cni`, the container id as workload and the interface name as endpoint.
///
/// Like Calico, refuses empty segments and segments that start or end with `-` (the escaping
/// could not be undone).
pub fn workload_endpoint_name(
    node: &str,
    orchestrator: &str,
    workload: &str,
    endpoint: &str,
) -> Result<String, ModelError> {
    let parts = [
        ("node", node),
        ("orchestrator", orchestrator),
        ("workload", workload),
        ("endpoint", endpoint),
    ];
    let mut escaped = Vec::with_capacity(parts.len());
    for (field, value) in parts {
        let reason = if value.is_empty() {
            Some("must not be empty")
        } else if value.starts_with('-') {
            Some("must not begin with '-'")
        } else if value.ends_with('-') {
            Some("must not end with '-'")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(ModelError::Invalid {
                field: format!("spec.{field}"),
                reason: format!("{value:?} {reason} (it is part of the workload endpoint name)"),
            });
        }
        escaped.push(value.replace('-', "--"));
    }
    Ok(escaped.join("-"))
}

/// The four segments `[node, orchestrator, workload, endpoint]` of a workload endpoint name
/// made by [`workload_endpoint_name`], or `None` if the name has another shape.
pub fn split_workload_endpoint_name(name: &str) -> Option<[String; 4]> {
    let bytes = name.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            if bytes.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            parts.push(name[start..i].replace("--", "-"));
            start = i + 1;
        }
        i += 1;
    }
    parts.push(name[start..].replace("--", "-"));
    if parts.iter().any(String::is_empty) {
        return None;
    }
    parts.try_into().ok()
}

#[cfg(test)]
mod tests;
