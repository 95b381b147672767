//! A resource of any kind, decoded by its `kind` field: what the watcher and `tabbyctl apply`
//! get when they do not know in advance what a document holds.

use serde::{Serialize, Serializer};

use super::meta::{decode, read_header, ObjectMeta, Spec};
use super::{
    BgpConfiguration, BgpPeer, GlobalNetworkPolicy, IpPool, ModelError, NetworkPolicy, Node,
    Profile, WorkloadEndpoint,
};
use crate::keys::Kind;

#[derive(Debug, Clone, PartialEq)]
pub enum AnyResource {
    IpPool(IpPool),
    Profile(Profile),
    NetworkPolicy(NetworkPolicy),
    GlobalNetworkPolicy(GlobalNetworkPolicy),
    WorkloadEndpoint(WorkloadEndpoint),
    Node(Node),
    BgpPeer(BgpPeer),
    BgpConfiguration(BgpConfiguration),
}

/// Runs `$body` with `$r` bound to the inner resource, whatever its kind.
macro_rules! each {
    ($self:expr, $r:ident => $body:expr) => {
        match $self {
            AnyResource::IpPool($r) => $body,
            AnyResource::Profile($r) => $body,
            AnyResource::NetworkPolicy($r) => $body,
            AnyResource::GlobalNetworkPolicy($r) => $body,
            AnyResource::WorkloadEndpoint($r) => $body,
            AnyResource::Node($r) => $body,
            AnyResource::BgpPeer($r) => $body,
            AnyResource::BgpConfiguration($r) => $body,
        }
    };
}

impl AnyResource {
    pub fn kind(&self) -> Kind {
        each!(self, r => r.kind)
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each!(self, r => &r.metadata)
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each!(self, r => &mut r.metadata)
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        each!(self, r => r.validate())
    }

    pub fn to_json(&self) -> Result<Vec<u8>, ModelError> {
        each!(self, r => r.to_json())
    }
}

impl Serialize for AnyResource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        each!(self, r => r.serialize(serializer))
    }
}

impl<S: Spec> From<super::Resource<S>> for AnyResource {
    fn from(resource: super::Resource<S>) -> Self {
        S::into_any(resource)
    }
}

/// Decodes a resource of whatever kind its `kind` field names. Rejects unknown kinds (naming
/// the kind) and any `apiVersion` but `projectcalico.org/v3`; type errors name the JSON path
/// (`spec.blockSize: invalid type: string "x", expected u8`). Does not run `validate`.
pub fn parse_resource(json: &[u8]) -> Result<AnyResource, ModelError> {
    Ok(match read_header(json)? {
        Kind::IpPool => AnyResource::IpPool(decode(json)?),
        Kind::Profile => AnyResource::Profile(decode(json)?),
        Kind::NetworkPolicy => AnyResource::NetworkPolicy(decode(json)?),
        Kind::GlobalNetworkPolicy => AnyResource::GlobalNetworkPolicy(decode(json)?),
        Kind::WorkloadEndpoint => AnyResource::WorkloadEndpoint(decode(json)?),
        Kind::Node => AnyResource::Node(decode(json)?),
        Kind::BgpPeer => AnyResource::BgpPeer(decode(json)?),
        Kind::BgpConfiguration => AnyResource::BgpConfiguration(decode(json)?),
    })
}
