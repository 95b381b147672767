//! The network driver's calls: each takes a validated request, does the CNI plugin's steps
//! (veth, host route, workload endpoint, profile) and undoes what it did when a later step
//! fails. A network not named with `-o network=` is named at its first endpoint, as Docker
//! names it (asked through [`Engine`]).

use std::net::{IpAddr, Ipv4Addr};

use cni_plugin::dataplane::{self, Netns, WorkloadLink, GATEWAY_V4};
use cni_plugin::spec::DEFAULT_MTU;
use cni_plugin::store::endpoint::{self, EndpointPlan, Prefetched};
use datastore::client::Client;
use datastore::keys::{KeyLayout, Kind};
use datastore::model::{ModelError, Profile};
use ipam::{Allocator, Pool};
use ipnet::{IpNet, Ipv4Net};
use serde_json::{json, Value};

use super::engine::{Engine, EngineError, NetworkInfo};
use super::protocol::{CreateEndpoint, CreateNetwork, EndpointRef, Invalid, NetworkRef, ObjectId};
use super::state::{NetworkRecord, Networks};
use super::{Role, REQUEST_TIMEOUT};

/// Prefix of the host end of a Docker endpoint's veth (as for CNI workloads).
pub const HOST_PREFIX: &str = dataplane::HOST_VETH_PREFIX;
/// Prefix of the end Docker moves into the sandbox; it never starts with `cali`, which the
/// agent's rules reserve for host ends.
pub const PEER_PREFIX: &str = "tmp";
/// Docker names the sandbox end `<prefix><n>`: `eth0`, `eth1`…
pub const SANDBOX_IFNAME_PREFIX: &str = "eth";

/// What a call answers: the JSON body, or the reason it was refused.
pub type Reply = Result<Value, DriverError>;

/// A refused or failed call; Docker shows the message to the operator.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{call} is not a call of tabby's {role} driver")]
    UnknownCall { call: String, role: &'static str },
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String, retryable: bool },
}

impl DriverError {
    pub fn failed(
        what: impl Into<String>,
        reason: impl std::fmt::Display,
        retryable: bool,
    ) -> Self {
        DriverError::Failed { what: what.into(), reason: reason.to_string(), retryable }
    }

    /// Whether Docker (or the operator) may succeed by retrying the same call.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DriverError::Failed { retryable: true, .. })
    }
}

/// Both drivers' shared context: etcd, this node, the allocator, the known networks and
/// Docker's own API.
#[derive(Debug)]
pub struct Driver {
    pub(super) client: Client,
    pub(super) keys: KeyLayout,
    pub(super) node: String,
    pub(super) allocator: Allocator,
    pub(super) networks: Networks,
    engine: Engine,
    /// Held while a network is named, so concurrent first endpoints agree on one name.
    naming: tokio::sync::Mutex<()>,
}

impl Driver {
    pub fn new(
        client: Client,
        keys: KeyLayout,
        node: String,
        allocator: Allocator,
        networks: Networks,
        engine: Engine,
    ) -> Driver {
        Driver {
            client,
            keys,
            node,
            allocator,
            networks,
            engine,
            naming: tokio::sync::Mutex::new(()),
        }
    }

    /// Answers one call that came in on the socket of `role`.
    pub async fn handle(&self, role: Role, call: &str, body: &[u8]) -> Reply {
        let work = async {
            match (role, call) {
                (Role::Network, "Plugin.Activate") => Ok(json!({"Implements": ["NetworkDriver"]})),
                (Role::Ipam, "Plugin.Activate") => Ok(json!({"Implements": ["IpamDriver"]})),
                (Role::Network, "NetworkDriver.GetCapabilities") => {
                    Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
                }
                (Role::Network, "NetworkDriver.CreateNetwork") => {
                    self.create_network(CreateNetwork::parse(body)?).await
                }
                (Role::Network, "NetworkDriver.DeleteNetwork") => {
                    self.delete_network(&NetworkRef::parse(body)?)
                }
                (Role::Network, "NetworkDriver.CreateEndpoint") => {
                    self.create_endpoint(CreateEndpoint::parse(body)?).await
                }
                (Role::Network, "NetworkDriver.Join") => {
                    self.join(&EndpointRef::parse(body)?).await
                }
                (Role::Network, "NetworkDriver.Leave") => {
                    EndpointRef::parse(body)?;
                    Ok(json!({}))
                }
                (Role::Network, "NetworkDriver.DeleteEndpoint") => {
                    self.delete_endpoint(&EndpointRef::parse(body)?).await
                }
                (Role::Network, "NetworkDriver.EndpointOperInfo") => {
                    let req = EndpointRef::parse(body)?;
                    Ok(json!({"Value": {"HostInterface": host_ifname(&req.endpoint)}}))
                }
                (Role::Network, "NetworkDriver.AllocateNetwork") => {
                    NetworkRef::parse(body)?;
                    Ok(json!({"Options": {}}))
                }
                (Role::Network, "NetworkDriver.FreeNetwork") => {
                    NetworkRef::parse(body)?;
                    Ok(json!({}))
                }
                (
                    Role::Network,
                    "NetworkDriver.DiscoverNew"
                    | "NetworkDriver.DiscoverDelete"
                    | "NetworkDriver.ProgramExternalConnectivity"
                    | "NetworkDriver.RevokeExternalConnectivity",
                ) => {
                    // Nothing to do for a layer-3 network; the body must still be JSON.
                    super::protocol::decode::<Value>(body)?;
                    Ok(json!({}))
                }
                (Role::Ipam, _) => self.handle_ipam(call, body).await,
                (Role::Network, _) => {
                    Err(DriverError::UnknownCall { call: call.to_owned(), role: "network" })
                }
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work).await.unwrap_or_else(|_| {
            Err(DriverError::failed(call, format!("no answer within {REQUEST_TIMEOUT:?}"), true))
        })
    }

    /// Records the network and, when `-o network=` named it, makes its classic default
    /// profile; the subnet must be a tabby pool or inside one. An unnamed network is named at
    /// its first endpoint: Docker does not know it yet while it calls this.
    async fn create_network(&self, req: CreateNetwork) -> Reply {
        check_profile_name(&req.name).map_err(|e| {
            Invalid::new(
                "Options.com.docker.network.generic.network",
                format!("{:?} cannot name a profile: {e}", req.name),
            )
        })?;
        let pools = self.pools().await?;
        pool_holding(&pools, req.subnet).ok_or_else(|| {
            Invalid::new(
                "IPv4Data[0].Pool",
                format!("{} is not inside any enabled tabby IP pool", req.subnet),
            )
        })?;
        let record = NetworkRecord {
            name: req.name.clone(),
            subnet: req.subnet,
            provisional: !req.name_given,
        };
        self.networks
            .insert(req.id.clone(), record)
            .map_err(|e| DriverError::failed("save the Docker network state", e, false))?;
        if req.name_given {
            if let Err(e) = self.ensure_profile(&req.name).await {
                let _ = self.networks.remove(&req.id);
                return Err(e);
            }
        }
        tracing::info!(
            network = %req.id, name = %req.name, named = req.name_given, subnet = %req.subnet,
            "Docker network created"
        );
        Ok(json!({}))
    }

    /// The classic default profile `name`, unless a profile of that name exists.
    async fn ensure_profile(&self, name: &str) -> Result<(), DriverError> {
        let key = self.keys.resource(Kind::Profile, None, name);
        endpoint::ensure_profile(&self.client, &key, name).await.map_err(|e| {
            DriverError::failed(format!("create profile {name}"), &e, e.is_retryable())
        })
    }

    /// Names a network that `-o network=` did not name, once: Docker's name for it (the
    /// id-based fallback when Docker cannot be asked), its profile made if missing, then
    /// remembered. A failure leaves it unnamed, so the next endpoint tries again.
    async fn name_network(&self, id: &ObjectId) -> Result<NetworkRecord, DriverError> {
        let _one_at_a_time = self.naming.lock().await;
        let mut record = self.network(id)?;
        if !record.provisional {
            return Ok(record);
        }
        record.name = settled_name(id, &record.name, self.engine.network(id).await)?;
        record.provisional = false;
        self.ensure_profile(&record.name).await?;
        self.networks
            .insert(id.clone(), record.clone())
            .map_err(|e| DriverError::failed("save the Docker network state", e, false))?;
        tracing::info!(network = %id, name = %record.name, "Docker network named");
        Ok(record)
    }

    /// Forgets the network; its profile stays (other hosts' containers may use it).
    fn delete_network(&self, req: &NetworkRef) -> Reply {
        self.networks
            .remove(&req.network)
            .map_err(|e| DriverError::failed("save the Docker network state", e, false))?;
        Ok(json!({}))
    }

    /// The veth (both ends on the host), the host route and the workload endpoint.
    async fn create_endpoint(&self, req: CreateEndpoint) -> Reply {
        let mut network = self.network(&req.network)?;
        if network.provisional {
            network = self.name_network(&req.network).await?;
        }
        if !network.subnet.contains(&req.address) {
            return Err(Invalid::new(
                "Interface.Address",
                format!("{} is outside the network's subnet {}", req.address, network.subnet),
            )
            .into());
        }
        let plan =
            EndpointPlan::libnetwork(&self.keys, &self.node, req.endpoint.as_str(), &network.name)
                .map_err(|e| DriverError::Invalid(Invalid::new("EndpointID", e.to_string())))?;
        let addresses = vec![IpAddr::V4(req.address)];
        let facts = Prefetched { profile_exists: None, pools: self.pools().await? };
        let link = WorkloadLink {
            host_ifname: host_ifname(&req.endpoint),
            container_ifname: peer_ifname(&req.endpoint),
            mtu: facts.mtu_for(&addresses).unwrap_or(DEFAULT_MTU),
            addresses,
        };
        let attached = {
            let made = link.clone();
            tokio::task::spawn_blocking(move || {
                dataplane::setup_host_side(&Netns::current(), &made)
            })
            .await
            .map_err(|e| DriverError::failed("create veth", e, false))?
            .map_err(|e| {
                let what = format!("create veth {}", link.host_ifname);
                DriverError::failed(what, error_chain(&e), e.is_retryable())
            })?
        };
        let mac = req.mac.clone().unwrap_or_else(|| attached.container_mac.clone());
        let record = plan.record(&[IpNet::from(IpAddr::V4(req.address))], &link.host_ifname, &mac);
        if let Err(e) = endpoint::write(&self.client, &plan, &record, None).await {
            // The write may have landed before it failed: remove both halves.
            let _ = endpoint::delete(&self.client, &plan.key, None).await;
            remove_veth(link.host_ifname.clone()).await;
            return Err(DriverError::failed("write workload endpoint", &e, e.is_retryable()));
        }
        tracing::info!(
            endpoint = %req.endpoint, address = %req.address, host_ifname = %link.host_ifname,
            network = %network.name, "Docker endpoint created"
        );
        Ok(match req.mac {
            Some(_) => json!({}),
            None => json!({"Interface": {"MacAddress": mac}}),
        })
    }

    /// Hands Docker the host-side peer to move into the sandbox, and the routes via the
    /// link-local gateway that every host veth answers for.
    async fn join(&self, req: &EndpointRef) -> Reply {
        self.network(&req.network)?;
        let peer = peer_ifname(&req.endpoint);
        let found = {
            let peer = peer.clone();
            tokio::task::spawn_blocking(move || dataplane::observe(&Netns::current(), &peer))
                .await
                .map_err(|e| DriverError::failed("look up the endpoint's veth", e, false))?
                .map_err(|e| {
                    DriverError::failed("look up the endpoint's veth", error_chain(&e), true)
                })?
        };
        if found.is_none() {
            return Err(Invalid::new(
                "EndpointID",
                format!(
                    "no veth {peer} for endpoint {}: was it created (and not joined already)?",
                    req.endpoint
                ),
            )
            .into());
        }
        Ok(join_reply(&peer))
    }

    /// Removes the veth (with its host route) and the workload endpoint; gone is done.
    async fn delete_endpoint(&self, req: &EndpointRef) -> Reply {
        let key = endpoint_key(&self.keys, &self.node, &req.endpoint)?;
        let host = host_ifname(&req.endpoint);
        let veth = {
            let host = host.clone();
            tokio::task::spawn_blocking(move || dataplane::teardown(&Netns::current(), &host))
        };
        let record = endpoint::delete(&self.client, &key, None);
        let (veth, record) = tokio::join!(veth, record);
        let veth = veth.map_err(|e| DriverError::failed(format!("delete {host}"), e, false))?;
        veth.map_err(|e| {
            DriverError::failed(format!("delete {host}"), error_chain(&e), e.is_retryable())
        })?;
        record
            .map_err(|e| DriverError::failed("delete workload endpoint", &e, e.is_retryable()))?;
        tracing::info!(endpoint = %req.endpoint, "Docker endpoint deleted");
        Ok(json!({}))
    }

    pub(super) fn network(&self, id: &ObjectId) -> Result<NetworkRecord, DriverError> {
        self.networks.get(id).ok_or_else(|| {
            Invalid::new(
                "NetworkID",
                format!("unknown network {id}: not created through tabby's driver on this host"),
            )
            .into()
        })
    }

    /// Every valid IP pool, read now.
    pub(super) async fn pools(&self) -> Result<Vec<Pool>, DriverError> {
        let listing = self
            .client
            .list(&self.keys.resources_prefix(Kind::IpPool))
            .await
            .map_err(|e| DriverError::failed("read IP pools", &e, e.is_retryable()))?;
        Ok(endpoint::decode_pools(&listing.kvs))
    }
}

/// Whether `name` can name a profile (and so a network).
pub(super) fn check_profile_name(name: &str) -> Result<(), ModelError> {
    Profile::classic_default(name).validate()
}

/// The name a network settles on from Docker's answer: Docker's name; the `fallback` (with
/// a warning) when Docker could not be asked; a refusal when Docker's name cannot name a
/// profile, since a silent id-based name would hide the operator's mistake.
pub(super) fn settled_name(
    id: &ObjectId,
    fallback: &str,
    looked_up: Result<NetworkInfo, EngineError>,
) -> Result<String, DriverError> {
    match looked_up {
        Ok(info) => Ok(info.name),
        Err(e @ EngineError::InvalidName { .. }) => {
            Err(DriverError::failed(format!("name network {id}"), e, false))
        }
        Err(e) => {
            tracing::warn!(
                network = %id, name = fallback, error = %e,
                "cannot ask Docker for the network's name: naming it after its id \
                 (docker network create -o network=<name> names it explicitly)"
            );
            Ok(fallback.to_owned())
        }
    }
}

/// The enabled IPv4 pool that holds all of `subnet`.
pub fn pool_holding(pools: &[Pool], subnet: Ipv4Net) -> Option<&Pool> {
    pools.iter().find(|p| {
        !p.disabled
            && matches!(p.cidr, IpNet::V4(cidr) if cidr.contains(&subnet.network()) && cidr.prefix_len() <= subnet.prefix_len())
    })
}

/// `cali` + the endpoint id's first 11 digits, as Calico's libnetwork plugin names it.
pub fn host_ifname(endpoint: &ObjectId) -> String {
    format!("{HOST_PREFIX}{}", endpoint.short())
}

/// The end Docker moves into the sandbox, until it renames it `ethN`.
pub fn peer_ifname(endpoint: &ObjectId) -> String {
    format!("{PEER_PREFIX}{}", endpoint.short())
}

/// Where the endpoint's record lives.
fn endpoint_key(keys: &KeyLayout, node: &str, endpoint: &ObjectId) -> Result<String, DriverError> {
    EndpointPlan::libnetwork_key(keys, node, endpoint.as_str())
        .map(|(_, key)| key)
        .map_err(|e| Invalid::new("EndpointID", e.to_string()).into())
}

/// `Join`'s answer: the interface to move, the gateway and its on-link route.
pub fn join_reply(peer: &str) -> Value {
    json!({
        "InterfaceName": {"SrcName": peer, "DstPrefix": SANDBOX_IFNAME_PREFIX},
        "Gateway": GATEWAY_V4.to_string(),
        "StaticRoutes": [{"Destination": format!("{GATEWAY_V4}/32"), "RouteType": 1}],
        "DisableGatewayService": true,
    })
}

/// Best-effort rollback of a veth made for a call that failed later.
async fn remove_veth(name: String) {
    let result =
        tokio::task::spawn_blocking(move || dataplane::teardown(&Netns::current(), &name)).await;
    if let Ok(Err(e)) = result {
        tracing::warn!(error = %e, "rollback: cannot delete veth");
    }
}

/// An error with its sources, for messages the operator reads in one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Unused addresses are `0.0.0.0`: libnetwork releases the dummy gateway like any address.
pub(super) fn is_dummy(ip: Ipv4Addr) -> bool {
    ip.is_unspecified()
}
