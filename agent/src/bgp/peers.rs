//! What this node's BIRD must do, from the cluster model (pure): its identity, its BGP
//! sessions (mesh, route reflection, explicit `BGPPeer`s), the blocks it originates and the
//! pools whose routes it carries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use datastore::model::{AsNumber, BgpPeer, EncapMode, Node};
use datastore::selector::Selector;
use ipnet::{IpNet, Ipv4Net};

use crate::host::HostInfo;
use crate::model::ClusterModel;
use crate::routes::block_owners;

/// Why a session exists; names its BIRD protocol (`Mesh_…`, `Node_…`, `Global_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerKind {
    /// A `BGPPeer` naming this node (`node` or a matching `nodeSelector`).
    Node,
    /// A `BGPPeer` for every node.
    Global,
    /// The node-to-node mesh.
    Mesh,
}

impl PeerKind {
    fn prefix(self) -> &'static str {
        match self {
            PeerKind::Node => "Node",
            PeerKind::Global => "Global",
            PeerKind::Mesh => "Mesh",
        }
    }
}

/// One BGP session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub kind: PeerKind,
    pub address: IpAddr,
    /// `None`: BGP's port, 179.
    pub port: Option<u16>,
    pub as_number: AsNumber,
    /// Wait for the peer to connect (the mesh: only one side of a pair initiates).
    pub passive: bool,
    /// This node reflects routes to the peer (it is a reflector, the peer a node that is not
    /// one of its cluster).
    pub rr_client: bool,
    /// What the session is for, for the config's comments (`node host-b`, `BGPPeer tor`).
    pub why: String,
}

impl Session {
    /// The BIRD protocol name: `Mesh_10_0_0_2`, `Node_192_0_2_1_1179`.
    pub fn protocol_name(&self) -> String {
        let name = match self.port {
            Some(port) => format!("{}_{}_{port}", self.kind.prefix(), self.address),
            None => format!("{}_{}", self.kind.prefix(), self.address),
        };
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
    }
}

/// A pool as BIRD's filters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRoutes {
    pub cidr: Ipv4Net,
    pub block_size: u8,
    /// The agent routes this pool's blocks itself (through `tunl0`): BIRD keeps them out of
    /// the kernel.
    pub ipip: bool,
    /// `disableBGPExport`: its blocks are not advertised.
    pub no_export: bool,
}

/// Everything the BIRD config says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdPlan {
    pub nodename: String,
    pub router_id: Ipv4Addr,
    pub as_number: AsNumber,
    /// Set when this node is a route reflector.
    pub rr_cluster_id: Option<Ipv4Addr>,
    pub sessions: Vec<Session>,
    /// This node's blocks, advertised whole and blackholed (IPv4 only: BIRD runs `ipv4`).
    pub local_blocks: Vec<Ipv4Net>,
    pub pools: Vec<PoolRoutes>,
    /// Peers left out, with the reason (logged by the caller).
    pub notes: Vec<String>,
}

/// Why no config can be made for this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("this host has no IPv4 address to use as BGP router id and session source")]
    NoAddress,
}

/// This node's BIRD plan; `default_as` applies when neither its Node nor the `default`
/// `BGPConfiguration` names an AS number.
pub fn plan(
    model: &ClusterModel,
    host: &HostInfo,
    default_as: AsNumber,
) -> Result<BirdPlan, PlanError> {
    let me = host.ipv4.ok_or(PlanError::NoAddress)?.addr();
    let config = model.bgp_config().map(|c| &c.spec);
    let cluster_as = config.and_then(|c| c.as_number).unwrap_or(default_as);
    let mesh = config.is_none_or(datastore::model::BgpConfigurationSpec::effective_mesh_enabled);
    let nodes: Vec<NodeView<'_>> =
        model.nodes().values().filter_map(|n| NodeView::of(n, cluster_as)).collect();
    let this = nodes.iter().find(|n| n.name == host.nodename);
    let empty = BTreeMap::new();
    let my_labels = this.map_or(&empty, |n| n.labels);
    let rr_cluster_id = this.and_then(|n| n.rr_cluster_id);
    let mut builder = Builder { me, rr_cluster_id, sessions: BTreeMap::new(), notes: Vec::new() };

    for peer in model.bgp_peers().values() {
        builder.explicit(peer, &host.nodename, my_labels, &nodes);
    }
    if mesh {
        for node in nodes.iter().filter(|n| n.name != host.nodename) {
            // Calico: the side with the lower address waits for the other to connect.
            let passive = node.address.to_string() > me.to_string();
            builder.add(node.session(PeerKind::Mesh, passive, rr_cluster_id));
        }
    }

    let owners = block_owners(model);
    let local_blocks: Vec<Ipv4Net> = owners
        .iter()
        .filter(|(_, owner)| **owner == Some(host.nodename.as_str()))
        .filter_map(|(cidr, _)| match cidr {
            IpNet::V4(net) => Some(*net),
            IpNet::V6(_) => None,
        })
        .collect();
    let pools: Vec<PoolRoutes> = model
        .pools()
        .values()
        .filter_map(|p| match p.spec.cidr {
            IpNet::V4(cidr) => Some(PoolRoutes {
                cidr,
                block_size: p.spec.block_size.unwrap_or(26),
                ipip: p.spec.effective_ipip_mode() != EncapMode::Never,
                no_export: p.spec.disable_bgp_export,
            }),
            IpNet::V6(_) => None,
        })
        .collect();
    let local_blocks = local_blocks
        .into_iter()
        .filter(|b| !pools.iter().any(|p| p.no_export && p.cidr.contains(b)))
        .collect();
    let this_as = this.map_or(cluster_as, |n| n.as_number);
    let mut notes = builder.notes;
    notes.sort();
    notes.dedup();
    Ok(BirdPlan {
        nodename: host.nodename.clone(),
        router_id: me,
        as_number: this_as,
        rr_cluster_id,
        sessions: builder.sessions.into_values().collect(),
        local_blocks,
        pools,
        notes,
    })
}

/// A node with an IPv4 address, as BGP sees it.
struct NodeView<'a> {
    name: &'a str,
    address: Ipv4Addr,
    as_number: AsNumber,
    rr_cluster_id: Option<Ipv4Addr>,
    labels: &'a BTreeMap<String, String>,
}

impl<'a> NodeView<'a> {
    fn of(node: &'a Node, cluster_as: AsNumber) -> Option<Self> {
        let IpAddr::V4(address) = node.spec.host_address(true)? else { return None };
        let bgp = node.spec.bgp.as_ref();
        Some(NodeView {
            name: node.name(),
            address,
            as_number: bgp.and_then(|b| b.as_number).unwrap_or(cluster_as),
            rr_cluster_id: bgp
                .and_then(|b| b.route_reflector_cluster_id.as_deref())
                .and_then(|id| id.parse().ok()),
            labels: &node.metadata.labels,
        })
    }

    /// A session to this node from a node whose reflector cluster is `my_cluster`.
    fn session(&self, kind: PeerKind, passive: bool, my_cluster: Option<Ipv4Addr>) -> Session {
        Session {
            kind,
            address: IpAddr::V4(self.address),
            port: None,
            as_number: self.as_number,
            passive,
            rr_client: my_cluster.is_some() && self.rr_cluster_id != my_cluster,
            why: format!("node {}", self.name),
        }
    }
}

struct Builder {
    me: Ipv4Addr,
    rr_cluster_id: Option<Ipv4Addr>,
    /// One session per peer address and port: the first reason found wins (node-specific
    /// peers, then global ones, then the mesh).
    sessions: BTreeMap<(IpAddr, Option<u16>), Session>,
    notes: Vec<String>,
}

impl Builder {
    fn add(&mut self, session: Session) {
        if session.address == IpAddr::V4(self.me) {
            return;
        }
        self.sessions.entry((session.address, session.port)).or_insert(session);
    }

    /// The sessions `BGPPeer` `peer` gives this node: to its `peerIP`, or to the nodes its
    /// `peerSelector` selects when it applies to this node, and — so that one resource
    /// describes both ends — to the nodes it applies to when this node is among the selected.
    fn explicit(
        &mut self,
        peer: &BgpPeer,
        nodename: &str,
        my_labels: &BTreeMap<String, String>,
        nodes: &[NodeView<'_>],
    ) {
        let name = peer.name();
        let spec = &peer.spec;
        let node_selector = match parse(spec.node_selector.as_deref()) {
            Ok(s) => s,
            Err(e) => return self.notes.push(format!("BGPPeer {name}: spec.nodeSelector: {e}")),
        };
        let applies_to =
            |node: &str, labels: &BTreeMap<String, String>| match (&spec.node, &node_selector) {
                (Some(n), _) => n == node,
                (None, Some(sel)) => sel.matches(labels),
                (None, None) => true,
            };
        let kind = if spec.node.is_some() || node_selector.is_some() {
            PeerKind::Node
        } else {
            PeerKind::Global
        };
        if let Some((address, port)) = spec.peer_addr() {
            if !applies_to(nodename, my_labels) {
                return;
            }
            let Some(as_number) = spec.as_number else {
                return self.notes.push(format!("BGPPeer {name}: peerIP needs spec.asNumber"));
            };
            return self.add(Session {
                kind,
                address,
                port,
                as_number,
                passive: false,
                rr_client: false,
                why: format!("BGPPeer {name}"),
            });
        }
        let peer_selector = match parse(spec.peer_selector.as_deref()) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => return self.notes.push(format!("BGPPeer {name}: spec.peerSelector: {e}")),
        };
        let mut wanted: BTreeSet<&str> = BTreeSet::new();
        if applies_to(nodename, my_labels) {
            wanted.extend(nodes.iter().filter(|n| peer_selector.matches(n.labels)).map(|n| n.name));
        }
        if peer_selector.matches(my_labels) {
            wanted.extend(nodes.iter().filter(|n| applies_to(n.name, n.labels)).map(|n| n.name));
        }
        for node in nodes.iter().filter(|n| n.name != nodename && wanted.contains(n.name)) {
            let mut session = node.session(kind, false, self.rr_cluster_id);
            session.why = format!("node {} (BGPPeer {name})", node.name);
            self.add(session);
        }
    }
}

fn parse(text: Option<&str>) -> Result<Option<Selector>, String> {
    text.map(|t| Selector::parse(t).map_err(|e| e.to_string())).transpose()
}
