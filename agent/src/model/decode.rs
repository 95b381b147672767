//! One etcd key-value to one typed record of the cluster model, or the reason it is refused.
//!
//! A record is accepted only if it decodes, passes the datastore's `validate()` (which also
//! parses every selector) and agrees with its key; anything else is refused with a reason that
//! names the field, and the model treats it as absent.

use datastore::client::Kv;
use datastore::keys::{KeyLayout, Kind, ParsedKey};
use datastore::model::{
    AllocationBlock, BgpConfiguration, BgpPeer, BlockAffinity, GlobalNetworkPolicy, IpPool,
    NetworkPolicy, Node, Profile, Resource, Spec, WorkloadEndpoint,
};
use ipnet::IpNet;

/// A host's claim on a block, as read from `.../ipam/v2/host/<host>/<family>/block/<cidr>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityRecord {
    /// The host named in the key.
    pub host: String,
    /// The block named in the key.
    pub cidr: IpNet,
    pub affinity: BlockAffinity,
}

/// A record the model keeps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Pool(IpPool),
    Profile(Profile),
    Policy(NetworkPolicy),
    GlobalPolicy(GlobalNetworkPolicy),
    Endpoint(WorkloadEndpoint),
    Node(Node),
    BgpPeer(BgpPeer),
    BgpConfig(BgpConfiguration),
    Block(AllocationBlock),
    Affinity(AffinityRecord),
}

/// What a key-value means to the model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decoded {
    Record(Box<Record>),
    /// Not something the agent uses (another Calico record, a handle).
    Ignored,
    /// Meant for the model but unusable; the reason names the field.
    Invalid(String),
}

/// The map a key belongs in, from the key alone (for deletes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Pool,
    Profile,
    Policy,
    GlobalPolicy,
    Endpoint,
    Node,
    BgpPeer,
    BgpConfig,
    Block,
    Affinity,
}

pub(crate) fn slot_of(parsed: &ParsedKey) -> Option<Slot> {
    Some(match parsed {
        ParsedKey::Resource { kind, .. } => match kind {
            Kind::IpPool => Slot::Pool,
            Kind::Profile => Slot::Profile,
            Kind::NetworkPolicy => Slot::Policy,
            Kind::GlobalNetworkPolicy => Slot::GlobalPolicy,
            Kind::WorkloadEndpoint => Slot::Endpoint,
            Kind::Node => Slot::Node,
            Kind::BgpPeer => Slot::BgpPeer,
            Kind::BgpConfiguration => Slot::BgpConfig,
        },
        ParsedKey::Block { .. } => Slot::Block,
        ParsedKey::Affinity { .. } => Slot::Affinity,
        ParsedKey::Handle { .. } | ParsedKey::IpamConfig | ParsedKey::AgentStatus { .. } => {
            return None
        }
    })
}

pub(crate) fn decode(layout: &KeyLayout, kv: &Kv) -> Decoded {
    let Some(parsed) = layout.parse(&kv.key) else { return Decoded::Ignored };
    let Some(slot) = slot_of(&parsed) else { return Decoded::Ignored };
    let record = match (&parsed, slot) {
        (ParsedKey::Resource { namespace, name, .. }, slot) => {
            let (ns, name) = (namespace.as_deref(), name.as_str());
            match slot {
                Slot::Pool => resource(kv, ns, name).map(Record::Pool),
                Slot::Profile => resource(kv, ns, name).map(Record::Profile),
                Slot::Policy => resource(kv, ns, name).map(Record::Policy),
                Slot::GlobalPolicy => resource(kv, ns, name).map(Record::GlobalPolicy),
                Slot::Endpoint => resource(kv, ns, name).map(Record::Endpoint),
                Slot::Node => resource(kv, ns, name).map(Record::Node),
                Slot::BgpPeer => resource(kv, ns, name).map(Record::BgpPeer),
                Slot::BgpConfig => resource(kv, ns, name).map(Record::BgpConfig),
                Slot::Block | Slot::Affinity => return Decoded::Ignored,
            }
        }
        (ParsedKey::Block { cidr }, _) => block(kv, *cidr).map(Record::Block),
        (ParsedKey::Affinity { host, cidr }, _) => {
            serde_json::from_slice::<BlockAffinity>(&kv.value)
                .map_err(|e| format!("not a block affinity: {e}"))
                .map(|affinity| {
                    Record::Affinity(AffinityRecord { host: host.clone(), cidr: *cidr, affinity })
                })
        }
        _ => return Decoded::Ignored,
    };
    match record {
        Ok(record) => Decoded::Record(Box::new(record)),
        Err(reason) => Decoded::Invalid(reason),
    }
}

/// Decodes and validates a v3 resource. The key is authoritative for name and namespace:
/// a document without them gets the key's, one that disagrees is refused.
fn resource<S: Spec>(kv: &Kv, namespace: Option<&str>, name: &str) -> Result<Resource<S>, String> {
    let mut resource = Resource::<S>::from_json(&kv.value).map_err(|e| e.to_string())?;
    let meta = &mut resource.metadata;
    if meta.name.is_empty() {
        meta.name = name.to_string();
    } else if meta.name != name {
        return Err(format!(
            "metadata.name: {:?} does not match the name in the key ({name:?})",
            meta.name
        ));
    }
    if let Some(ns) = namespace {
        match meta.namespace.as_deref() {
            None | Some("") => meta.namespace = Some(ns.to_string()),
            Some(found) if found != ns => {
                return Err(format!(
                    "metadata.namespace: {found:?} does not match the namespace in the key ({ns:?})"
                ))
            }
            Some(_) => {}
        }
    }
    resource.validate().map_err(|e| e.to_string())?;
    Ok(resource)
}

fn block(kv: &Kv, cidr: IpNet) -> Result<AllocationBlock, String> {
    let block: AllocationBlock =
        serde_json::from_slice(&kv.value).map_err(|e| format!("not an allocation block: {e}"))?;
    block.validate().map_err(|e| e.to_string())?;
    if block.cidr != cidr {
        return Err(format!("cidr: {} does not match the block in the key ({cidr})", block.cidr));
    }
    Ok(block)
}
