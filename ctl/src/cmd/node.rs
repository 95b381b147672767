//! `node status`: every node the datastore knows of (Node resources, agent heartbeats, block
//! affinities, workload endpoints), with its agent's heartbeat age, address, blocks and
//! endpoint count; then the BGP state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

use datastore::keys::{Kind, ParsedKey};
use datastore::model::{AgentStatus, AnyResource};
use serde::Serialize;

use crate::error::CtlError;
use crate::output::{to_json, to_yaml, Format, Table};
use crate::store::Store;

/// One node's row.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    /// Whether a Node resource exists for it.
    pub registered: bool,
    pub address: Option<String>,
    /// The agent's last heartbeat, if its status key exists (it lives on a lease, so it goes
    /// when the agent stops renewing it).
    pub agent: Option<AgentStatus>,
    /// Seconds since the heartbeat's `time`, when it parses.
    pub heartbeat_age_seconds: Option<u64>,
    pub blocks: Vec<String>,
    pub endpoints: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    nodes: Vec<NodeStatus>,
    bgp: String,
    problems: Vec<String>,
}

pub async fn status(store: &Store, format: Format) -> Result<String, CtlError> {
    let layout = &store.layout;
    let list = |prefix: String| async move {
        store.client.list(&prefix).await.map_err(CtlError::etcd(format!("cannot list {prefix}")))
    };
    let mut nodes: BTreeMap<String, NodeStatus> = BTreeMap::new();
    let mut problems = Vec::new();
    let entry = |nodes: &mut BTreeMap<String, NodeStatus>, name: &str| {
        nodes
            .entry(name.to_owned())
            .or_insert_with(|| NodeStatus { name: name.to_owned(), ..NodeStatus::default() })
            .name
            .clone()
    };

    let (resources, _, bad) = store.list_resources(&layout.resources_prefix(Kind::Node)).await?;
    problems.extend(bad);
    for r in resources {
        if let AnyResource::Node(n) = r {
            let name = entry(&mut nodes, n.name());
            if let Some(s) = nodes.get_mut(&name) {
                s.registered = true;
                s.address = n
                    .spec
                    .host_address(true)
                    .or_else(|| n.spec.host_address(false))
                    .map(|a| a.to_string());
            }
        }
    }

    let now = SystemTime::now();
    for kv in list(layout.agent_statuses_prefix()).await?.kvs {
        let Some(ParsedKey::AgentStatus { node }) = layout.parse(&kv.key) else { continue };
        let name = entry(&mut nodes, &node);
        let Some(s) = nodes.get_mut(&name) else { continue };
        match kv.json::<AgentStatus>() {
            Ok(agent) => {
                s.heartbeat_age_seconds = humantime::parse_rfc3339_weak(&agent.time)
                    .ok()
                    .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO).as_secs());
                if s.address.is_none() {
                    s.address.clone_from(&agent.address);
                }
                s.agent = Some(agent);
            }
            Err(e) => problems.push(e.to_string()),
        }
    }

    for kv in list(layout.all_hosts_prefix()).await?.kvs {
        if let Some(ParsedKey::Affinity { host, cidr }) = layout.parse(&kv.key) {
            let name = entry(&mut nodes, &host);
            if let Some(s) = nodes.get_mut(&name) {
                s.blocks.push(cidr.to_string());
            }
        }
    }

    let (endpoints, _, bad) =
        store.list_resources(&layout.resources_prefix(Kind::WorkloadEndpoint)).await?;
    problems.extend(bad);
    for r in endpoints {
        if let AnyResource::WorkloadEndpoint(w) = r {
            if let Some(node) = w.spec.node.as_deref() {
                let name = entry(&mut nodes, node);
                if let Some(s) = nodes.get_mut(&name) {
                    s.endpoints += 1;
                }
            }
        }
    }

    let peers = list(layout.resources_prefix(Kind::BgpPeer)).await?.kvs.len();
    let configs = list(layout.resources_prefix(Kind::BgpConfiguration)).await?.kvs.len();
    let bgp = if peers == 0 && configs == 0 {
        "BGP: not configured".to_owned()
    } else {
        // TODO(issue 8): the BIRD session table, once the agent runs BIRD and reports sessions.
        format!(
            "BGP: configured ({peers} peer(s), {configs} BGP configuration(s)); session table not available yet (TODO: issue 8)"
        )
    };

    let report = Report { nodes: nodes.into_values().collect(), bgp, problems };
    match format {
        Format::Json => to_json(&report),
        Format::Yaml => to_yaml(&report),
        format => Ok(render(&report, format == Format::Wide)),
    }
}

fn render(report: &Report, wide: bool) -> String {
    let mut headers =
        vec!["NODE", "ADDRESS", "AGENT", "HEARTBEAT", "UPTIME", "VERSION", "BLOCKS", "ENDPOINTS"];
    if wide {
        headers.push("BLOCK CIDRS");
    }
    let mut t = Table::new(&headers);
    for n in &report.nodes {
        let (state, heartbeat, uptime, version) = match &n.agent {
            None => ("down".to_owned(), "none".to_owned(), String::new(), String::new()),
            Some(a) => (
                "up".to_owned(),
                n.heartbeat_age_seconds.map_or_else(
                    || format!("unreadable time {:?}", a.time),
                    |s| format!("{} ago", humantime::format_duration(Duration::from_secs(s))),
                ),
                humantime::format_duration(Duration::from_secs(a.uptime.max(0.0) as u64))
                    .to_string(),
                a.version.clone(),
            ),
        };
        let mut row = vec![
            n.name.clone(),
            n.address.clone().unwrap_or_default(),
            state,
            heartbeat,
            uptime,
            version,
            n.blocks.len().to_string(),
            n.endpoints.to_string(),
        ];
        if wide {
            row.push(n.blocks.join(","));
        }
        t.push(row);
    }
    let mut out = if report.nodes.is_empty() { "No nodes found.\n".to_owned() } else { t.render() };
    out.push('\n');
    out.push_str(&report.bgp);
    out.push('\n');
    let unregistered: BTreeSet<&str> =
        report.nodes.iter().filter(|n| !n.registered).map(|n| n.name.as_str()).collect();
    if !unregistered.is_empty() {
        let names: Vec<&str> = unregistered.into_iter().collect();
        let _ = writeln!(out, "\nNo Node resource for: {}", names.join(", "));
    }
    for p in &report.problems {
        let _ = writeln!(out, "warning: {p}");
    }
    out
}
