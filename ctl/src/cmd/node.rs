//! `node status`: every node the datastore knows of (Node resources, agent heartbeats, block
//! affinities, workload endpoints), with its agent's heartbeat age, address, blocks and
//! endpoint count; then the BGP state, with the sessions of the local BIRD when its control
//! socket answers (`birdc show protocols`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::PathBuf;
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
    /// The local BIRD's BGP sessions; absent when no BIRD answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    bgp_sessions: Option<Vec<BirdSession>>,
    problems: Vec<String>,
}

/// Where the local BIRD is asked for its sessions.
#[derive(Debug, Clone)]
pub struct Bird {
    pub socket: PathBuf,
    pub birdc: PathBuf,
}

/// One BGP protocol of `birdc show protocols`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BirdSession {
    pub name: String,
    /// `up`, `start`, `down`…
    pub state: String,
    pub since: String,
    /// `Established`, `Active  Socket: Connection refused`…
    pub info: String,
}

/// The BGP rows of `birdc show protocols` output (other protocols and the banner skipped).
pub fn parse_protocols(text: &str) -> Vec<BirdSession> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [name, "BGP", _table, state, since, info @ ..] => Some(BirdSession {
                    name: (*name).to_owned(),
                    state: (*state).to_owned(),
                    since: (*since).to_owned(),
                    info: info.join(" "),
                }),
                _ => None,
            }
        })
        .collect()
}

/// The local BIRD's sessions, or `None` when its socket is absent or it does not answer.
fn bird_sessions(bird: &Bird, problems: &mut Vec<String>) -> Option<Vec<BirdSession>> {
    if !bird.socket.exists() {
        return None;
    }
    let out = std::process::Command::new(&bird.birdc)
        .arg("-s")
        .arg(&bird.socket)
        .args(["show", "protocols"])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            Some(parse_protocols(&String::from_utf8_lossy(&out.stdout)))
        }
        Ok(out) => {
            problems.push(format!(
                "BIRD at {} did not answer: {}{}",
                bird.socket.display(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            None
        }
        Err(e) => {
            problems.push(format!("cannot run {}: {e}", bird.birdc.display()));
            None
        }
    }
}

pub async fn status(store: &Store, format: Format, bird: &Bird) -> Result<String, CtlError> {
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
        "BGP: not configured (no BGPPeer or BGPConfiguration: the node-to-node mesh when agents run BGP)".to_owned()
    } else {
        format!("BGP: configured ({peers} peer(s), {configs} BGP configuration(s))")
    };
    let bgp_sessions = bird_sessions(bird, &mut problems);

    let report = Report { nodes: nodes.into_values().collect(), bgp, bgp_sessions, problems };
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
    match &report.bgp_sessions {
        None => out.push_str("No local BIRD answered: BGP sessions unknown.\n"),
        Some(sessions) if sessions.is_empty() => out.push_str("BIRD has no BGP sessions.\n"),
        Some(sessions) => {
            let mut t = Table::new(&["PEER", "STATE", "SINCE", "INFO"]);
            for s in sessions {
                t.push(vec![s.name.clone(), s.state.clone(), s.since.clone(), s.info.clone()]);
            }
            out.push_str("\nBGP sessions of the local BIRD:\n");
            out.push_str(&t.render());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgp_rows_of_show_protocols() {
        let text = "BIRD 2.0.12 ready.\n\
            Name       Proto      Table      State  Since         Info\n\
            device1    Device     ---        up     06:14:58.622  \n\
            tabby_blocks Static   master4    up     06:14:58.622  \n\
            Mesh_10_250_1_12 BGP  ---        up     06:15:01.100  Established   \n\
            Node_192_0_2_1_1179 BGP ---      start  06:15:00.000  Active        Socket: Connection refused\n";
        let rows = parse_protocols(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            BirdSession {
                name: "Mesh_10_250_1_12".into(),
                state: "up".into(),
                since: "06:15:01.100".into(),
                info: "Established".into()
            }
        );
        assert_eq!(rows[1].state, "start");
        assert_eq!(rows[1].info, "Active Socket: Connection refused");
    }
}
