//! The network config on stdin: decoded leniently (unknown fields tolerated), then validated
//! into [`NetConf`] with errors that name the offending field.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::mesos::{mesos_info, RawMesos};
use super::{CniResult, CniVersion, Error, MesosNetworkInfo};

/// Default MTU when the config sets none.
pub const DEFAULT_MTU: u32 = 1500;
/// Smallest MTU IPv4 allows (RFC 791); the kernel refuses less on a veth.
pub const MIN_MTU: u32 = 68;
/// Largest MTU a veth accepts.
pub const MAX_MTU: u32 = 65535;
/// Default etcd key prefix, as Calico's.
pub const DEFAULT_ETCD_PREFIX: &str = "/calico";
/// Default bound on everything one invocation does with etcd (`etcd_timeout`, seconds).
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `etcd_timeout` accepted: a runtime waiting longer than this is stuck anyway.
const MAX_ETCD_TIMEOUT_SECS: f64 = 300.0;

// ---- raw wire shape ------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawNetConf {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    #[serde(rename = "cniVersions")]
    cni_versions: Option<Vec<String>>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    ipam: Option<Map<String, Value>>,
    mtu: Option<i64>,
    log_level: Option<String>,
    log_file_path: Option<PathBuf>,
    etcd_endpoints: Option<StringOrList>,
    etcd_ca_cert_file: Option<PathBuf>,
    etcd_cert_file: Option<PathBuf>,
    etcd_key_file: Option<PathBuf>,
    etcd_prefix: Option<String>,
    etcd_timeout: Option<f64>,
    ipam_lock_file: Option<PathBuf>,
    nodename: Option<String>,
    nodename_file: Option<PathBuf>,
    args: Option<RawArgs>,
    #[serde(rename = "runtimeConfig")]
    runtime_config: Option<RawRuntimeConfig>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<GcAttachment>>,
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Vec<GcAttachment>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawArgs {
    #[serde(rename = "org.apache.mesos")]
    mesos: Option<RawMesos>,
    cni: Option<RawCniArgs>,
}

#[derive(Deserialize)]
struct RawCniArgs {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Deserialize)]
struct RawRuntimeConfig {
    #[serde(default)]
    ips: Vec<String>,
}

/// One live attachment in a GC request (`cni.dev/valid-attachments`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

// ---- validated config ----------------------------------------------------------------------

/// How verbose the plugin's log is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "error" | "fatal" | "panic" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "" | "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }
}

/// The `ipam` block: its plugin type plus everything else, kept opaque for the IPAM plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct IpamConf {
    pub plugin_type: String,
    pub rest: Map<String, Value>,
}

/// etcd connection settings (used by in-process IPAM and the endpoint record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConf {
    pub endpoints: Vec<String>,
    pub ca_cert_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub prefix: String,
    /// Bound on all etcd work of one invocation, connecting included.
    pub timeout: Duration,
}

impl EtcdConf {
    /// Whether the config names an etcd at all (`etcd_endpoints`).
    pub fn is_configured(&self) -> bool {
        !self.endpoints.is_empty()
    }
}

/// A validated network config.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    /// The version to answer in (after `cniVersion`/`cniVersions` negotiation).
    pub cni_version: CniVersion,
    /// The network name; a container's profile is named after it.
    pub name: String,
    pub plugin_type: String,
    pub ipam: Option<IpamConf>,
    /// MTU as configured; [`NetConf::mtu`] applies the default.
    pub mtu: Option<u32>,
    pub log_level: LogLevel,
    pub log_file_path: Option<PathBuf>,
    pub etcd: EtcdConf,
    pub nodename: Option<String>,
    pub nodename_file: Option<PathBuf>,
    /// Host-wide IPAM lock file given at the top level (Calico's place for it); the `ipam`
    /// block may name one too.
    pub ipam_lock_file: Option<PathBuf>,
    pub mesos: Option<MesosNetworkInfo>,
    /// Addresses asked for through `args.cni.ips` and the `ips` capability
    /// (`runtimeConfig.ips`), in that order; Mesos and `CNI_ARGS IP=` are kept apart.
    pub requested_ips: Vec<IpAddr>,
    pub prev_result: Option<CniResult>,
    /// Live attachments for GC (`cni.dev/valid-attachments`, or the older
    /// `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<GcAttachment>>,
}

impl NetConf {
    /// The MTU for both veth ends.
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(DEFAULT_MTU)
    }

    /// Decodes and validates stdin. Malformed JSON is code 6; a bad value is code 7 naming
    /// its path; an unsupported version is code 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, Error> {
        let raw = decode(stdin)?;
        let cni_version =
            CniVersion::negotiate(raw.cni_version.as_deref(), raw.cni_versions.as_deref())?;
        let name = required(raw.name, "name")?;
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(Error::config("name", format!("{name:?} may only contain [a-zA-Z0-9_.-]")));
        }
        let plugin_type = required(raw.plugin_type, "type")?;
        let ipam = raw.ipam.map(ipam_conf).transpose()?;
        let mtu = raw.mtu.map(validate_mtu).transpose()?;
        let log_level = match raw.log_level.as_deref() {
            None => LogLevel::Info,
            Some(s) => LogLevel::parse(s).ok_or_else(|| {
                Error::config("log_level", format!("{s:?} is not one of error, warn, info, debug"))
            })?,
        };
        let etcd = EtcdConf {
            endpoints: etcd_endpoints(raw.etcd_endpoints)?,
            ca_cert_file: raw.etcd_ca_cert_file,
            cert_file: raw.etcd_cert_file,
            key_file: raw.etcd_key_file,
            prefix: etcd_prefix(raw.etcd_prefix)?,
            timeout: etcd_timeout(raw.etcd_timeout)?,
        };
        if let Some(n) = raw.nodename.as_deref().filter(|n| n.is_empty() || n.contains('/')) {
            return Err(Error::config("nodename", format!("{n:?} is not a host name")));
        }
        let (mesos, cni_arg_ips) = match raw.args {
            None => (None, Vec::new()),
            Some(args) => (
                args.mesos.and_then(|m| m.network_info).map(mesos_info),
                args.cni.map(|c| c.ips).unwrap_or_default(),
            ),
        };
        let mut requested_ips = parse_ips(&cni_arg_ips, "args.cni.ips")?;
        let runtime_ips = raw.runtime_config.map(|r| r.ips).unwrap_or_default();
        for ip in parse_ips(&runtime_ips, "runtimeConfig.ips")? {
            if !requested_ips.contains(&ip) {
                requested_ips.push(ip);
            }
        }
        let prev_result = raw
            .prev_result
            .map(|v| CniResult::parse(v).map_err(|e| Error::config("prevResult", e.to_string())))
            .transpose()?;
        Ok(NetConf {
            cni_version,
            name,
            plugin_type,
            ipam,
            mtu,
            log_level,
            log_file_path: raw.log_file_path,
            etcd,
            nodename: raw.nodename,
            nodename_file: raw.nodename_file,
            ipam_lock_file: raw.ipam_lock_file,
            mesos,
            requested_ips,
            prev_result,
            valid_attachments: raw.valid_attachments.or(raw.attachments),
        })
    }
}

/// Best-effort read of the version a runtime wants its answer in, for error replies written
/// before (or instead of) a full parse. Falls back to the default (0.2.0) or, when the
/// version is unusable, to the newest.
pub fn reply_version(stdin: &[u8]) -> CniVersion {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "cniVersion")]
        cni_version: Option<Value>,
        #[serde(rename = "cniVersions")]
        cni_versions: Option<Vec<String>>,
    }
    let Ok(peek) = serde_json::from_slice::<Peek>(stdin) else {
        return CniVersion::LATEST;
    };
    let explicit = match peek.cni_version {
        Some(Value::String(s)) => Some(s),
        None => None,
        Some(_) => return CniVersion::LATEST,
    };
    CniVersion::negotiate(explicit.as_deref(), peek.cni_versions.as_deref())
        .unwrap_or(CniVersion::LATEST)
}

fn decode(stdin: &[u8]) -> Result<RawNetConf, Error> {
    // serde would read a JSON array as a struct's fields in order; a config is an object.
    if stdin.trim_ascii_start().first() != Some(&b'{') {
        return Err(Error::Decode {
            what: "network config on stdin",
            reason: "not a JSON object".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(stdin);
    let raw: RawNetConf = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A value of the wrong type in a known field is a config error naming the field; a
        // syntax error, or a document that is not an object at all, is undecodable.
        if inner.is_data() && path != "." {
            Error::config(path, inner.to_string())
        } else {
            Error::Decode { what: "network config on stdin", reason: inner.to_string() }
        }
    })?;
    de.end().map_err(|e| Error::Decode {
        what: "network config on stdin",
        reason: format!("trailing data: {e}"),
    })?;
    Ok(raw)
}

fn required(v: Option<String>, field: &str) -> Result<String, Error> {
    v.filter(|s| !s.is_empty()).ok_or_else(|| Error::config(field, "required"))
}

fn validate_mtu(mtu: i64) -> Result<u32, Error> {
    u32::try_from(mtu)
        .ok()
        .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
        .ok_or_else(|| Error::config("mtu", format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}")))
}

fn ipam_conf(mut map: Map<String, Value>) -> Result<IpamConf, Error> {
    let plugin_type = match map.remove("type") {
        Some(Value::String(t)) if !t.is_empty() => t,
        Some(other) => return Err(Error::config("ipam.type", format!("{other} is not a name"))),
        None => return Err(Error::config("ipam.type", "required when ipam is set")),
    };
    // The type names a binary looked up in CNI_PATH: a path here would escape it.
    if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(Error::config("ipam.type", format!("{plugin_type:?} is not a plugin name")));
    }
    Ok(IpamConf { plugin_type, rest: map })
}

fn etcd_endpoints(raw: Option<StringOrList>) -> Result<Vec<String>, Error> {
    let list = match raw {
        None => Vec::new(),
        // Calico's form: one comma-separated string.
        Some(StringOrList::One(s)) => {
            s.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect()
        }
        Some(StringOrList::Many(v)) => v,
    };
    if let Some(bad) =
        list.iter().find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
    {
        return Err(Error::config(
            "etcd_endpoints",
            format!("{bad:?} is not an http:// or https:// URL"),
        ));
    }
    Ok(list)
}

fn etcd_prefix(raw: Option<String>) -> Result<String, Error> {
    let prefix = raw.unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_owned());
    if !prefix.starts_with('/') || (prefix.len() > 1 && prefix.ends_with('/')) {
        return Err(Error::config(
            "etcd_prefix",
            format!("{prefix:?} must start with '/' and not end with one"),
        ));
    }
    Ok(prefix)
}

fn etcd_timeout(raw: Option<f64>) -> Result<Duration, Error> {
    match raw {
        None => Ok(DEFAULT_ETCD_TIMEOUT),
        Some(secs) if secs > 0.0 && secs <= MAX_ETCD_TIMEOUT_SECS => {
            Ok(Duration::from_secs_f64(secs))
        }
        Some(secs) => Err(Error::config(
            "etcd_timeout",
            format!("{secs} is not a number of seconds in (0, {MAX_ETCD_TIMEOUT_SECS}]"),
        )),
    }
}

/// Addresses given as `a.b.c.d` or `a.b.c.d/len` (the `ips` capability uses CIDR form).
fn parse_ips(items: &[String], field: &str) -> Result<Vec<IpAddr>, Error> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<IpAddr>().or_else(|_| s.parse::<IpNet>().map(|n| n.addr())).map_err(|_| {
                Error::config(format!("{field}[{i}]"), format!("{s:?} is not an IP address"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: &Value) -> Result<NetConf, Error> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn minimal() -> Value {
        json!({"name": "net1", "type": "tabby", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}})
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(&minimal()).unwrap();
        assert_eq!(c.cni_version, CniVersion::V0_2_0);
        assert_eq!(c.mtu(), 1500);
        assert_eq!(c.etcd.prefix, "/calico");
        assert_eq!(c.log_level, LogLevel::Info);
        let ipam = c.ipam.unwrap();
        assert_eq!(ipam.plugin_type, "host-local");
        assert_eq!(ipam.rest["subnet"], "10.1.0.0/24");
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut v = minimal();
        v["whatever"] = json!({"deep": [1, 2]});
        v["ipam"]["ipv4_pools"] = json!(["p1"]);
        parse(&v).unwrap();
    }

    #[test]
    fn malformed_json_is_code_6() {
        for bad in [&b"{"[..], b"", b"not json", b"[1,2]", b"{\"name\":\"a\"} trailing"] {
            let err = NetConf::parse(bad).unwrap_err();
            assert_eq!(err.code(), 6, "{}: {err}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn wrong_types_are_code_7_naming_the_field() {
        let cases = [
            (json!({"mtu": "big"}), "mtu"),
            (json!({"mtu": 67}), "mtu"),
            (json!({"mtu": 65536}), "mtu"),
            (json!({"name": 5}), "name"),
            (json!({"name": "a b"}), "name"),
            (json!({"type": null}), "type"),
            (json!({"ipam": {"subnet": "x"}}), "ipam.type"),
            (json!({"ipam": {"type": "../evil"}}), "ipam.type"),
            (json!({"log_level": "loud"}), "log_level"),
            (json!({"etcd_endpoints": "10.0.0.1:2379"}), "etcd_endpoints"),
            (json!({"etcd_prefix": "calico"}), "etcd_prefix"),
            (json!({"etcd_timeout": 0}), "etcd_timeout"),
            (json!({"etcd_timeout": "10s"}), "etcd_timeout"),
            (json!({"runtimeConfig": {"ips": ["x"]}}), "runtimeConfig.ips[0]"),
            (json!({"args": {"cni": {"ips": ["10.0.0.1", "y"]}}}), "args.cni.ips[1]"),
            (json!({"prevResult": {"ips": [{"address": 3}]}}), "prevResult"),
            (
                json!({"args": {"org.apache.mesos": {"network_info": {"ip_addresses": [{"ip_address": "bad"}]}}}}),
                "args.org.apache.mesos.network_info.ip_addresses[0].ip_address",
            ),
        ];
        for (patch, field) in cases {
            let mut v = minimal();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = parse(&v).unwrap_err();
            assert_eq!(err.code(), 7, "{patch}: {err}");
            assert!(err.to_string().contains(field), "{patch}: {err} should name {field}");
        }
    }

    #[test]
    fn missing_name_or_type_is_code_7() {
        let err = parse(&json!({"type": "tabby"})).unwrap_err();
        assert!((err.code(), err.to_string().contains("name")) == (7, true), "{err}");
        let err = parse(&json!({"name": "n"})).unwrap_err();
        assert!(err.to_string().contains("type"), "{err}");
    }

    #[test]
    fn version_negotiation() {
        let mut v = minimal();
        v["cniVersion"] = json!("7.0.0");
        assert_eq!(parse(&v).unwrap_err().code(), 1);
        let mut v = minimal();
        v["cniVersions"] = json!(["0.4.0", "1.0.0", "3.0.0"]);
        assert_eq!(parse(&v).unwrap().cni_version, CniVersion::V1_0_0);
    }

    #[test]
    fn etcd_fields() {
        let mut v = minimal();
        v["etcd_endpoints"] = json!("http://127.0.0.1:2379, https://10.0.0.1:2379");
        v["etcd_prefix"] = json!("/t/abc");
        v["etcd_ca_cert_file"] = json!("/ca.pem");
        let c = parse(&v).unwrap();
        assert_eq!(c.etcd.endpoints, ["http://127.0.0.1:2379", "https://10.0.0.1:2379"]);
        assert_eq!(c.etcd.prefix, "/t/abc");
        assert_eq!(c.etcd.ca_cert_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.etcd.timeout, DEFAULT_ETCD_TIMEOUT);
        v["etcd_timeout"] = json!(2.5);
        assert_eq!(parse(&v).unwrap().etcd.timeout, Duration::from_millis(2500));
        v["etcd_endpoints"] = json!(["http://a:1"]);
        assert_eq!(parse(&v).unwrap().etcd.endpoints, ["http://a:1"]);
    }

    #[test]
    fn mesos_network_info() {
        let mut v = minimal();
        v["args"] = json!({"org.apache.mesos": {"network_info": {
            "name": "net1",
            "labels": {"labels": [{"key": "app", "value": "web/front end"}, {"key": "k"}]},
            "ip_addresses": [{"protocol": "IPv4", "ip_address": "10.1.0.9"}, {"protocol": "IPv6"}],
            "port_mappings": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"}],
            "groups": ["g1"]
        }}});
        let c = parse(&v).unwrap();
        let m = c.mesos.unwrap();
        assert_eq!(m.ip_addresses, ["10.1.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(m.groups, ["g1"]);
        assert_eq!(m.port_mappings.len(), 1);
        let labels = m.labels();
        assert_eq!(labels["app"], "web.front-end");
        assert_eq!(labels["k"], "");
        assert!(c.requested_ips.is_empty(), "Mesos addresses are kept apart");
    }

    #[test]
    fn requested_ips_from_args_and_runtime_config() {
        let mut v = minimal();
        v["args"] = json!({"cni": {"ips": ["10.1.0.7"]}});
        v["runtimeConfig"] = json!({"ips": ["10.1.0.7/24", "fd00::7/64"]});
        let c = parse(&v).unwrap();
        let want: Vec<IpAddr> = vec!["10.1.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        assert_eq!(c.requested_ips, want);
    }

    #[test]
    fn gc_attachments_either_key() {
        let mut v = minimal();
        v["cni.dev/attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        let c = parse(&v).unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "c1");
        v["cni.dev/valid-attachments"] = json!([]);
        assert_eq!(parse(&v).unwrap().valid_attachments, Some(vec![]));
    }

    #[test]
    fn prev_result_any_version() {
        let mut v = minimal();
        v["prevResult"] = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}});
        assert_eq!(parse(&v).unwrap().prev_result.unwrap().ips.len(), 1);
    }

    #[test]
    fn reply_version_sniffs() {
        assert_eq!(reply_version(br#"{"cniVersion":"0.3.1"}"#), CniVersion::V0_3_1);
        assert_eq!(reply_version(br#"{"name":"x"}"#), CniVersion::V0_2_0);
        assert_eq!(reply_version(b"garbage"), CniVersion::LATEST);
        assert_eq!(reply_version(br#"{"cniVersion":"9.9.9"}"#), CniVersion::LATEST);
    }
}
