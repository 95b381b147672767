//! The agent's heartbeat: what each host's agent writes (on a lease) under
//! `/calico/felix/v2/no-region/host/<node>/status`, and what `tabbyctl node status` reads.
//!
//! Felix writes `{"time", "uptime", "first_update"}` there; tabby keeps those names and adds
//! what an operator wants to see next to them. Unknown fields are kept, as everywhere.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One agent heartbeat, in Felix's snake_case JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// When the agent wrote this report, RFC 3339 in UTC (`2024-05-01T12:00:00Z`).
    pub time: String,
    /// Seconds since the agent started.
    pub uptime: f64,
    /// True on the first report after the agent started (Felix's meaning).
    #[serde(default)]
    pub first_update: bool,
    /// The agent's version string.
    #[serde(default)]
    pub version: String,
    /// The address the agent uses for this host, when it knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Workload endpoints the agent has programmed on this host.
    #[serde(default)]
    pub endpoints: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_felix_report_and_keeps_unknown_fields() {
        let felix = r#"{"time":"2024-05-01T12:00:00Z","uptime":12.5,"first_update":true,"x":1}"#;
        let status: AgentStatus = serde_json::from_str(felix).unwrap();
        assert_eq!(status.time, "2024-05-01T12:00:00Z");
        assert!(status.first_update);
        assert_eq!(status.endpoints, 0);
        assert_eq!(status.address, None);
        let back: Value = serde_json::to_value(&status).unwrap();
        assert_eq!(back["x"], 1);
        assert_eq!(back["uptime"], 12.5);
        assert!(back.get("address").is_none());
    }
}
