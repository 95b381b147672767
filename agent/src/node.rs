//! This node's identity in the cluster: its address (configured, or the one on the interface
//! holding the default route) and the Node resource other hosts route its blocks by.
//!
//! The Node resource is written with compare-and-swap, keeping every field the agent does
//! not own, so labels, orchestrator references and fields of newer Calico versions survive.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use datastore::client::{Client, Error as EtcdError};
use datastore::keys::{KeyLayout, Kind};
use datastore::model::{Node, NodeAddress, NodeBgpSpec, NodeSpec};
use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::AddressFamily;
use serde_json::Map;

use crate::config::AgentConfig;
use crate::host::HostInfo;
use crate::routes::{KernelRoute, KernelRouteKind, NetlinkRoutes, RouteError, RouteTable};

/// The address type Calico gives the node's own address in `spec.addresses`.
const CALICO_NODE_IP: &str = "CalicoNodeIP";
/// Compare-and-swap rounds before giving up on a contended Node resource.
const CAS_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot read this host's addresses: {0}")]
    Netlink(#[from] RouteError),
    #[error("cannot determine this node's address: {0}; set node_ip (TABBY_NODE_IP, --node-ip)")]
    NoAddress(String),
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdError),
    #[error("the Node resource at {key} is unreadable ({reason}); fix or delete it so the agent can publish this node's address")]
    Unreadable { key: String, reason: String },
    #[error("the Node resource at {key} kept changing under us ({CAS_ATTEMPTS} attempts)")]
    Contended { key: String },
}

impl NodeError {
    pub fn is_retryable(&self) -> bool {
        match self {
            NodeError::Netlink(e) => e.is_retryable(),
            NodeError::Etcd(e) => e.is_retryable(),
            NodeError::Contended { .. } => true,
            NodeError::NoAddress(_) | NodeError::Unreadable { .. } => false,
        }
    }
}

/// An IPv4 address of an interface, as found by [`interface_addresses`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub index: u32,
    pub net: Ipv4Net,
    /// Scope global (not link- or host-local).
    pub global: bool,
}

/// This host as the planners see it: the configured node name and action, and the node's
/// IPv4 address with its subnet.
///
/// The address is `node_ip` when configured (its prefix, if not given, is that of the
/// interface holding it), else the first global IPv4 address of the interface holding the
/// default route.
pub async fn discover_host(config: &AgentConfig) -> Result<HostInfo, NodeError> {
    let addresses = interface_addresses().await?;
    let ipv4 = if let Some(node_ip) = config.node_ip {
        with_prefix(node_ip.addr, node_ip.prefix_len, &addresses)
    } else {
        let mut routes = NetlinkRoutes::new()?;
        let routes = routes.dump().await?;
        let oif = default_route_interface(&routes)
            .ok_or_else(|| NodeError::NoAddress("there is no IPv4 default route".into()))?;
        let found = addresses.iter().find(|a| a.index == oif && a.global).ok_or_else(|| {
            NodeError::NoAddress(format!(
                "the default route's interface (index {oif}) has no global IPv4 address"
            ))
        })?;
        found.net
    };
    Ok(HostInfo {
        nodename: config.nodename.clone(),
        ipv4: Some(ipv4),
        ipv6: None,
        endpoint_to_host_action: config.default_endpoint_to_host_action,
        bgp: config.bgp.enabled,
    })
}

/// `addr` with `prefix_len`, or the prefix of the interface address that equals it; a host
/// prefix (/32: subnet unknown) with a warning when no interface holds it.
fn with_prefix(addr: Ipv4Addr, prefix_len: Option<u8>, addresses: &[InterfaceAddress]) -> Ipv4Net {
    let len = prefix_len
        .or_else(|| addresses.iter().find(|a| a.net.addr() == addr).map(|a| a.net.prefix_len()));
    let len = len.unwrap_or_else(|| {
        tracing::warn!(
            %addr,
            "node_ip is on no interface of this host; its subnet is unknown, so remote blocks \
             are routed via every node (give node_ip as address/prefix to fix)"
        );
        32
    });
    Ipv4Net::new(addr, len).unwrap_or_else(|_| Ipv4Net::from(addr))
}

/// The output interface of the best IPv4 default route of the main table.
pub fn default_route_interface(routes: &[KernelRoute]) -> Option<u32> {
    routes
        .iter()
        .filter(|r| r.dst == IpNet::V4(Ipv4Net::default()) && r.kind == KernelRouteKind::Unicast)
        .filter_map(|r| r.oif.map(|oif| (r.metric, oif)))
        .min()
        .map(|(_, oif)| oif)
}

/// Every IPv4 address of every interface of this network namespace.
pub async fn interface_addresses() -> Result<Vec<InterfaceAddress>, NodeError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Open)?;
    let task = tokio::spawn(connection);
    let messages: Result<Vec<_>, _> = handle.address().get().execute().try_collect().await;
    task.abort();
    let messages = messages.map_err(|e| RouteError::Netlink {
        op: "dump addresses".into(),
        errno: None,
        reason: e.to_string(),
    })?;
    Ok(messages
        .iter()
        .filter(|m| m.header.family == AddressFamily::Inet)
        .filter_map(|m| {
            // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
            // point-to-point links).
            let addr = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(v4)) => Some(*v4),
                    _ => None,
                })
                .or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(IpAddr::V4(v4)) => Some(*v4),
                        _ => None,
                    })
                })?;
            Some(InterfaceAddress {
                index: m.header.index,
                net: Ipv4Net::new(addr, m.header.prefix_len).ok()?,
                global: m.header.scope == AddressScope::Universe,
            })
        })
        .collect())
}

/// The Node resource as it should be: `existing` (or a new one) with this node's address in
/// `spec.bgp.ipv4Address` and as the `CalicoNodeIP` entry of `spec.addresses`; everything
/// else kept. `None` when `existing` already says so.
pub fn desired_node(existing: Option<&Node>, nodename: &str, ip: Ipv4Net) -> Option<Node> {
    let address = ip.to_string();
    let mut node = existing.cloned().unwrap_or_else(|| Node::new(nodename, NodeSpec::default()));
    let bgp = node.spec.bgp.get_or_insert_with(NodeBgpSpec::default);
    bgp.ipv4_address = Some(address.clone());
    let mut addresses: Vec<NodeAddress> = node
        .spec
        .addresses
        .iter()
        .filter(|a| a.address_type.as_deref() != Some(CALICO_NODE_IP))
        .cloned()
        .collect();
    addresses.insert(
        0,
        NodeAddress { address, address_type: Some(CALICO_NODE_IP.into()), extra: Map::new() },
    );
    node.spec.addresses = addresses;
    (existing != Some(&node)).then_some(node)
}

/// Makes the Node resource of `nodename` carry `ip`; returns whether it wrote anything.
pub async fn publish_node(
    client: &Client,
    layout: &KeyLayout,
    nodename: &str,
    ip: Ipv4Net,
) -> Result<bool, NodeError> {
    let key = layout.resource(Kind::Node, None, nodename);
    let encode = |node: &Node| {
        node.to_json()
            .map_err(|e| NodeError::Unreadable { key: key.clone(), reason: e.to_string() })
    };
    for _ in 0..CAS_ATTEMPTS {
        match client.get(&key).await? {
            None => {
                let Some(node) = desired_node(None, nodename, ip) else { return Ok(false) };
                match client.create(&key, encode(&node)?).await {
                    Ok(_) => return Ok(true),
                    Err(EtcdError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(kv) => {
                let existing = Node::from_json(&kv.value).map_err(|e| NodeError::Unreadable {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
                let Some(node) = desired_node(Some(&existing), nodename, ip) else {
                    return Ok(false);
                };
                if let Some(old) =
                    existing.spec.bgp.as_ref().and_then(|b| b.ipv4_address.as_deref())
                {
                    tracing::info!(node = nodename, old, new = %ip, "node address changed");
                }
                match client.update(&key, encode(&node)?, kv.mod_revision).await {
                    Ok(_) => return Ok(true),
                    Err(EtcdError::Conflict { .. } | EtcdError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(NodeError::Contended { key })
}

/// Publishes the node's address until it succeeds: in the background, so an etcd that is
/// down at start delays nothing else. Retryable failures back off up to 30 s; others are
/// logged and tried again every few minutes, in case the operator fixes the record.
pub async fn publish_until_done(
    client: Client,
    layout: KeyLayout,
    nodename: String,
    ip: Ipv4Net,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        match publish_node(&client, &layout, &nodename, ip).await {
            Ok(written) => {
                tracing::info!(node = %nodename, address = %ip, written, "node resource is up to date");
                return;
            }
            Err(e) => {
                metrics.errors.inc(["node"]);
                let wait = if e.is_retryable() { delay } else { Duration::from_mins(5) };
                tracing::warn!(node = %nodename, error = %e, retry_in = ?wait, "cannot publish the node resource");
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn new_node_carries_the_address() {
        let node = desired_node(None, "host-a", net("192.0.2.10/24")).unwrap();
        assert_eq!(node.metadata.name, "host-a");
        node.validate().unwrap();
        assert_eq!(node.spec.host_address(true), Some("192.0.2.10".parse().unwrap()));
        let json: serde_json::Value = serde_json::from_slice(&node.to_json().unwrap()).unwrap();
        assert_eq!(json["spec"]["bgp"]["ipv4Address"], "192.0.2.10/24");
        assert_eq!(
            json["spec"]["addresses"][0],
            json!({"address": "192.0.2.10/24", "type": "CalicoNodeIP"})
        );
    }

    #[test]
    fn update_keeps_what_it_does_not_own() {
        let existing: Node = serde_json::from_value(json!({
            "kind": "Node", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": "host-a", "labels": {"rack": "r1"}},
            "spec": {
                "bgp": {"ipv4Address": "192.0.2.9/24", "asNumber": 64512, "future": true},
                "addresses": [
                    {"address": "192.0.2.9/24", "type": "CalicoNodeIP"},
                    {"address": "203.0.113.5", "type": "ExternalIP"}
                ],
                "orchRefs": [{"orchestrator": "mesos", "nodeName": "agent-1"}]
            },
            "status": {"podCIDRs": []}
        }))
        .unwrap();
        let updated = desired_node(Some(&existing), "host-a", net("192.0.2.10/24")).unwrap();
        let json = serde_json::to_value(&updated).unwrap();
        assert_eq!(json["metadata"]["labels"]["rack"], "r1");
        assert_eq!(json["spec"]["bgp"]["asNumber"], 64512);
        assert_eq!(json["spec"]["bgp"]["future"], true);
        assert_eq!(json["spec"]["bgp"]["ipv4Address"], "192.0.2.10/24");
        assert_eq!(json["spec"]["addresses"].as_array().unwrap().len(), 2);
        assert_eq!(json["spec"]["addresses"][1]["type"], "ExternalIP");
        assert_eq!(json["spec"]["orchRefs"][0]["nodeName"], "agent-1");
        assert!(json["status"].is_object());
        // Already right: nothing to write.
        assert_eq!(desired_node(Some(&updated), "host-a", net("192.0.2.10/24")), None);
    }

    #[test]
    fn default_route_picks_lowest_metric() {
        let route = |dst: &str, oif, metric| KernelRoute {
            dst: dst.parse().unwrap(),
            protocol: 3,
            kind: KernelRouteKind::Unicast,
            gateway: Some("192.0.2.1".parse().unwrap()),
            oif: Some(oif),
            metric,
            onlink: false,
        };
        let routes =
            [route("10.0.0.0/8", 1, 0), route("0.0.0.0/0", 2, 200), route("0.0.0.0/0", 3, 100)];
        assert_eq!(default_route_interface(&routes), Some(3));
        assert_eq!(default_route_interface(&routes[..1]), None);
    }

    #[test]
    fn prefix_comes_from_the_interface() {
        let addrs = [InterfaceAddress { index: 2, net: net("192.0.2.10/24"), global: true }];
        let ip = "192.0.2.10".parse().unwrap();
        assert_eq!(with_prefix(ip, None, &addrs), net("192.0.2.10/24"));
        assert_eq!(with_prefix(ip, Some(16), &addrs), net("192.0.2.10/16"));
        assert_eq!(
            with_prefix("198.51.100.1".parse().unwrap(), None, &addrs),
            net("198.51.100.1/32")
        );
    }
}
