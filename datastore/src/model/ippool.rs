//! IP pools: the address ranges IPAM carves into per-host blocks.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::meta::{is_false, ObjectMeta, Resource, Spec};
use super::validate::check_selector;
use super::{AnyResource, ModelError};
use crate::keys::Kind;

/// Block size when a v4 pool names none (a /26: 64 addresses).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Block size when a v6 pool names none (a /122: 64 addresses).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

/// When traffic to a pool's addresses is encapsulated (`ipipMode`, `vxlanMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    /// Only towards hosts on another subnet.
    CrossSubnet,
}

/// What a pool's addresses may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// Whether IPAM picks a pool on its own or only when asked for it by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssignmentMode {
    #[default]
    Automatic,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(deserialize_with = "super::validate::deserialize_cidr")]
    pub cidr: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub disabled: bool,
    #[serde(rename = "disableBGPExport", default, skip_serializing_if = "is_false")]
    pub disable_bgp_export: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl IpPoolSpec {
    /// A pool of `cidr` with every other field at its default.
    pub fn new(cidr: IpNet) -> Self {
        IpPoolSpec {
            cidr,
            vxlan_mode: None,
            ipip_mode: None,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
            block_size: None,
            node_selector: None,
            namespace_selector: None,
            allowed_uses: Vec::new(),
            assignment_mode: None,
            extra: Map::new(),
        }
    }

    /// The block prefix length, defaulted per family as Calico does.
    pub fn effective_block_size(&self) -> u8 {
        self.block_size.unwrap_or(match self.cidr {
            IpNet::V4(_) => DEFAULT_BLOCK_SIZE_V4,
            IpNet::V6(_) => DEFAULT_BLOCK_SIZE_V6,
        })
    }

    pub fn effective_ipip_mode(&self) -> EncapMode {
        self.ipip_mode.unwrap_or_default()
    }

    pub fn effective_vxlan_mode(&self) -> EncapMode {
        self.vxlan_mode.unwrap_or_default()
    }

    /// The pool's uses; none listed means `[Tunnel, Workload]`, as in Calico.
    pub fn effective_allowed_uses(&self) -> Vec<AllowedUse> {
        if self.allowed_uses.is_empty() {
            vec![AllowedUse::Tunnel, AllowedUse::Workload]
        } else {
            self.allowed_uses.clone()
        }
    }

    pub fn allows(&self, usage: AllowedUse) -> bool {
        self.effective_allowed_uses().contains(&usage)
    }

    pub fn effective_assignment_mode(&self) -> AssignmentMode {
        self.assignment_mode.unwrap_or_default()
    }

    /// The node selector; none means every node (`all()`).
    pub fn effective_node_selector(&self) -> &str {
        match self.node_selector.as_deref() {
            None | Some("") => "all()",
            Some(s) => s,
        }
    }
}

impl Spec for IpPoolSpec {
    const KIND: Kind = Kind::IpPool;

    fn validate(&self, _meta: &ObjectMeta) -> Result<(), ModelError> {
        let cidr = self.cidr;
        if cidr != cidr.trunc() {
            return Err(ModelError::invalid(
                "spec.cidr",
                format!("{cidr} is not strictly masked (did you mean {}?)", cidr.trunc()),
            ));
        }
        let (link_local, range, family): (IpNet, _, _) = match cidr {
            IpNet::V4(_) => (LINK_LOCAL_V4, 20..=32, "IPv4"),
            IpNet::V6(_) => (LINK_LOCAL_V6, 116..=128, "IPv6"),
        };
        if cidr.contains(&link_local.network()) || link_local.contains(&cidr.network()) {
            return Err(ModelError::invalid(
                "spec.cidr",
                format!("{cidr} overlaps the link-local range {link_local}"),
            ));
        }
        if let Some(size) = self.block_size {
            if !range.contains(&size) {
                return Err(ModelError::invalid(
                    "spec.blockSize",
                    format!(
                        "{size} is out of range for an {family} pool: expected {}-{}",
                        range.start(),
                        range.end()
                    ),
                ));
            }
        }
        let block_size = self.effective_block_size();
        // A disabled pool is never carved into blocks, so Calico lets it be small.
        if !self.disabled && cidr.prefix_len() > block_size {
            return Err(ModelError::invalid(
                "spec.cidr",
                format!(
                    "{cidr} is smaller than one /{block_size} block: a pool must be at least \
                     as large as its blockSize"
                ),
            ));
        }
        if matches!(cidr, IpNet::V6(_)) && self.effective_ipip_mode() != EncapMode::Never {
            return Err(ModelError::invalid(
                "spec.ipipMode",
                "IPIP is not supported on an IPv6 pool",
            ));
        }
        if self.effective_ipip_mode() != EncapMode::Never
            && self.effective_vxlan_mode() != EncapMode::Never
        {
            return Err(ModelError::invalid(
                "spec.ipipMode",
                "ipipMode and vxlanMode cannot both be enabled on one pool",
            ));
        }
        let load_balancer = self.allowed_uses.contains(&AllowedUse::LoadBalancer);
        if load_balancer && self.allowed_uses.len() > 1 {
            return Err(ModelError::invalid(
                "spec.allowedUses",
                "LoadBalancer cannot be combined with other uses",
            ));
        }
        check_selector("spec.nodeSelector", self.node_selector.as_ref())?;
        check_selector("spec.namespaceSelector", self.namespace_selector.as_ref())?;
        Ok(())
    }

    fn into_any(resource: Resource<Self>) -> AnyResource {
        AnyResource::IpPool(resource)
    }
}

// Built at compile time, so the prefix lengths are checked there, not at run time.
const LINK_LOCAL_V4: IpNet =
    IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(169, 254, 0, 0), 16));
const LINK_LOCAL_V6: IpNet =
    IpNet::V6(ipnet::Ipv6Net::new_assert(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10));

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::IpPool;

    fn pool(cidr: &str) -> IpPool {
        IpPool::new("p", IpPoolSpec::new(cidr.parse().unwrap()))
    }

    fn field_of(p: &IpPool) -> String {
        p.validate().unwrap_err().field().to_owned()
    }

    #[test]
    fn defaults_follow_calico() {
        let p = pool("10.65.0.0/16");
        assert!(p.validate().is_ok());
        assert_eq!(p.spec.effective_block_size(), 26);
        assert_eq!(pool("fd00::/48").spec.effective_block_size(), 122);
        assert_eq!(p.spec.effective_allowed_uses(), vec![AllowedUse::Tunnel, AllowedUse::Workload]);
        assert_eq!(p.spec.effective_node_selector(), "all()");
        assert_eq!(p.spec.effective_assignment_mode(), AssignmentMode::Automatic);
    }

    #[test]
    fn cidr_rules() {
        assert_eq!(field_of(&pool("10.65.0.1/16")), "spec.cidr");
        assert_eq!(field_of(&pool("169.254.0.0/16")), "spec.cidr");
        assert_eq!(field_of(&pool("169.0.0.0/8")), "spec.cidr");
        assert_eq!(field_of(&pool("fe80::/64")), "spec.cidr");
        assert_eq!(field_of(&pool("10.0.0.0/27")), "spec.cidr");
        let mut small = pool("10.0.0.0/27");
        small.spec.disabled = true;
        assert!(small.validate().is_ok());
    }

    #[test]
    fn block_size_range() {
        for (cidr, size, ok) in [
            ("10.0.0.0/16", 20, true),
            ("10.0.0.0/16", 32, true),
            ("10.0.0.0/16", 19, false),
            ("10.0.0.0/16", 33, false),
            ("10.0.0.0/16", 122, false),
            ("fd00::/64", 116, true),
            ("fd00::/64", 128, true),
            ("fd00::/64", 115, false),
            ("fd00::/64", 26, false),
        ] {
            let mut p = pool(cidr);
            p.spec.block_size = Some(size);
            assert_eq!(p.validate().is_ok(), ok, "{cidr} {size}");
            if !ok {
                assert_eq!(field_of(&p), "spec.blockSize");
            }
        }
        // A block may not be larger than its pool.
        let mut p = pool("10.0.0.0/24");
        p.spec.block_size = Some(22);
        assert_eq!(field_of(&p), "spec.cidr");
    }

    #[test]
    fn encapsulation_rules() {
        let mut p = pool("fd00::/64");
        p.spec.ipip_mode = Some(EncapMode::Always);
        assert_eq!(field_of(&p), "spec.ipipMode");
        let mut p = pool("10.0.0.0/16");
        p.spec.ipip_mode = Some(EncapMode::CrossSubnet);
        assert!(p.validate().is_ok());
        p.spec.vxlan_mode = Some(EncapMode::Always);
        assert_eq!(field_of(&p), "spec.ipipMode");
    }

    #[test]
    fn allowed_uses() {
        let mut p = pool("10.0.0.0/16");
        p.spec.allowed_uses = vec![AllowedUse::LoadBalancer, AllowedUse::Workload];
        assert_eq!(field_of(&p), "spec.allowedUses");
        p.spec.allowed_uses = vec![AllowedUse::Workload];
        assert!(p.spec.allows(AllowedUse::Workload));
        assert!(!p.spec.allows(AllowedUse::Tunnel));
    }
}
