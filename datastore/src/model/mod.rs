//! The Calico v3 resource model as serde types: what tabby reads from and writes to etcd.
//!
//! JSON field names and casing are Calico's, so either tool reads the other's data. Every
//! struct keeps the fields it does not know in `extra` and writes them back; optional fields
//! are omitted when unset, as Go's `omitempty` does, so re-serialising Calico's JSON gives the
//! same JSON. Decoding ([`parse_resource`], [`Resource::from_json`]) checks shape and types;
//! [`Resource::validate`] checks meaning. Both name the JSON field at fault.

mod any;
mod bgp;
mod endpoint;
mod error;
pub mod ipam;
mod ippool;
mod meta;
mod node;
mod policy;
mod profile;
mod rule;
pub mod status;
mod validate;

pub use any::{parse_resource, AnyResource};
pub use bgp::{AsNumber, BgpConfigurationSpec, BgpPeerSpec, ServiceIpBlock, DEFAULT_AS_NUMBER};
pub use endpoint::{EndpointPort, IpNat, WorkloadEndpointSpec};
pub use error::ModelError;
pub use ipam::*;
pub use ippool::{
    AllowedUse, AssignmentMode, EncapMode, IpPoolSpec, DEFAULT_BLOCK_SIZE_V4, DEFAULT_BLOCK_SIZE_V6,
};
pub use meta::{ObjectMeta, Resource, Spec, API_VERSION};
pub use node::{NodeAddress, NodeBgpSpec, NodeSpec, OrchRef};
pub use policy::{GlobalNetworkPolicySpec, NetworkPolicySpec, PolicyType};
pub use profile::ProfileSpec;
pub use rule::{
    Action, EntityRule, HttpMatch, HttpPath, IcmpFields, Port, Protocol, Rule, RuleMetadata,
    ServiceAccountMatch,
};
pub use status::*;
pub use validate::{
    is_dns1123_label, is_dns1123_subdomain, is_valid_label_key, is_valid_label_value,
    parse_cidr_or_ip,
};

pub use crate::keys::Kind;

pub type IpPool = Resource<IpPoolSpec>;
pub type Profile = Resource<ProfileSpec>;
pub type NetworkPolicy = Resource<NetworkPolicySpec>;
pub type GlobalNetworkPolicy = Resource<GlobalNetworkPolicySpec>;
pub type WorkloadEndpoint = Resource<WorkloadEndpointSpec>;
pub type Node = Resource<NodeSpec>;
pub type BgpPeer = Resource<BgpPeerSpec>;
pub type BgpConfiguration = Resource<BgpConfigurationSpec>;
