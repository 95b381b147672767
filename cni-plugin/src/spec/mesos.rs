//! What Mesos's CNI isolator injects (`args["org.apache.mesos"].network_info`), and Calico's
//! rule for turning Mesos labels into selector-safe labels.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
pub(super) struct RawMesos {
    pub(super) network_info: Option<RawNetworkInfo>,
}

/// Mesos's `NetworkInfo` protobuf in its JSON form (snake_case field names).
#[derive(Deserialize)]
pub(super) struct RawNetworkInfo {
    name: Option<String>,
    labels: Option<RawLabels>,
    #[serde(default)]
    ip_addresses: Vec<RawMesosIp>,
    #[serde(default)]
    port_mappings: Vec<Value>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
struct RawLabels {
    #[serde(default)]
    labels: Vec<RawLabel>,
}

#[derive(Deserialize)]
struct RawLabel {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct RawMesosIp {
    #[allow(dead_code, reason = "read for completeness; the address itself says the family")]
    protocol: Option<String>,
    ip_address: Option<IpAddr>,
}

/// What Mesos injects as `args["org.apache.mesos"].network_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MesosNetworkInfo {
    pub name: Option<String>,
    /// Labels as given, in order, before sanitising.
    pub raw_labels: Vec<(String, String)>,
    /// Addresses Mesos asks for (`ip_addresses[].ip_address`).
    pub ip_addresses: Vec<IpAddr>,
    pub port_mappings: Vec<Value>,
    pub groups: Vec<String>,
}

impl MesosNetworkInfo {
    /// Labels made valid for selectors, as Calico's `SanitizeMesosLabel` does to key and
    /// value. Later duplicates win.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.raw_labels
            .iter()
            .map(|(k, v)| (sanitize_mesos_label(k), sanitize_mesos_label(v)))
            .collect()
    }
}

pub(super) fn mesos_info(raw: RawNetworkInfo) -> MesosNetworkInfo {
    MesosNetworkInfo {
        name: raw.name,
        raw_labels: raw
            .labels
            .map(|l| l.labels.into_iter().map(|l| (l.key, l.value)).collect())
            .unwrap_or_default(),
        ip_addresses: raw.ip_addresses.into_iter().filter_map(|ip| ip.ip_address).collect(),
        port_mappings: raw.port_mappings,
        groups: raw.groups,
    }
}

/// Calico's `SanitizeMesosLabel`: `/` becomes `.`, runs of other characters outside
/// `[-_.a-zA-Z0-9]` become `-`, runs of `.`/`-` holding a `.` collapse to `.`, and leading
/// or trailing `.`/`-` are dropped.
pub fn sanitize_mesos_label(s: &str) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut replaced = String::with_capacity(s.len());
    let mut in_invalid_run = false;
    for c in s.chars().map(|c| if c == '/' { '.' } else { c }) {
        if valid(c) {
            replaced.push(c);
            in_invalid_run = false;
        } else if !in_invalid_run {
            replaced.push('-');
            in_invalid_run = true;
        }
    }
    let mut collapsed = String::with_capacity(replaced.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.contains('.') {
            out.push('.');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in replaced.chars() {
        if c == '.' || c == '-' {
            run.push(c);
        } else {
            flush(&mut run, &mut collapsed);
            collapsed.push(c);
        }
    }
    flush(&mut run, &mut collapsed);
    collapsed.trim_matches(|c| c == '.' || c == '-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_label_sanitising_matches_calico() {
        let cases = [
            ("simple", "simple"),
            ("a/b", "a.b"),
            ("a b  c", "a-b-c"),
            ("a/-/b", "a.b"),
            ("--a--", "a"),
            ("..a..", "a"),
            ("é!x", "x"),
            ("a.-.b", "a.b"),
            ("a--b", "a--b"),
            ("under_score", "under_score"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_mesos_label(input), want, "{input:?}");
        }
    }
}
