//! The agent's configuration: the TOML file (`/etc/tabby/agent.toml`, `--config`), then
//! `TABBY_*` environment variables, then flags, each overriding the one before. Every value
//! is checked once, whichever layer gave it, and an error names the setting and its source.

mod fields;
mod layers;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use datastore::client::EtcdConfig;
use datastore::keys::{KeyLayout, DEFAULT_PREFIX};

pub use fields::{Field, Source};
use layers::Raw;

use crate::host::EndpointToHostAction;

/// The file read when neither `--config` nor `TABBY_CONFIG` names one (may be absent).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tabby/agent.toml";
/// Names the config file, like `--config`.
pub const CONFIG_ENV: &str = "TABBY_CONFIG";
/// Where the node name is read from when none is configured, and written at start so the CNI
/// plugin and IPAM use the same name (they read this file).
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/tabby/nodename";
/// Health and metrics listen here unless configured (Felix's health port).
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9099";
/// Felix's route and IP set refresh interval.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(90);
/// How often the heartbeat is written (its lease lives three times as long).
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// The nftables table the agent owns (`inet tabby`).
pub const DEFAULT_NFT_TABLE: &str = "tabby";
/// Where Docker looks for plugin sockets.
pub const DEFAULT_DOCKER_SOCKET_DIR: &str = "/run/docker/plugins";
/// The BIRD config the agent writes when BGP is on (BIRD is started with `-c` pointing here).
pub const DEFAULT_BIRD_CONFIG: &str = "/etc/bird/bird.conf";
/// BIRD's control socket (Debian's default).
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// The Docker network driver's name (`docker network create --driver tabby`); the IPAM
/// driver is this name with `-ipam`.
pub const DEFAULT_DOCKER_DRIVER_NAME: &str = "tabby";
/// The Docker Engine API socket, asked for a network's name (Docker's own default).
pub const DEFAULT_DOCKER_ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// Command-line flags of `tabby-agent`. Setting flags take text and are checked with the other
/// layers, so an error names the flag.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "tabby-agent",
    version,
    about = "tabby's per-host agent: programs nftables ACLs and routes from etcd"
)]
pub struct Cli {
    /// TOML config file (default /etc/tabby/agent.toml, or $TABBY_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Sync with etcd, program the dataplane once, and exit.
    #[arg(long)]
    pub once: bool,
    /// This node's name (default: the node name file, then the host name).
    #[arg(long, value_name = "NAME")]
    pub nodename: Option<String>,
    /// File holding the node name; written at start for the CNI plugin.
    #[arg(long, value_name = "FILE")]
    pub nodename_file: Option<String>,
    /// This node's IPv4 address, optionally with its prefix (default: the address of the
    /// interface holding the default route).
    #[arg(long, value_name = "IP[/PREFIX]")]
    pub node_ip: Option<String>,
    /// Log filter: a level (info, debug…) or tracing directives.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Address of the health and metrics server (default 127.0.0.1:9099).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<String>,
    /// Period of the full dataplane resync (default 90s).
    #[arg(long, value_name = "DURATION")]
    pub resync_interval: Option<String>,
    /// Period of the route check that repairs routes changed by others (default 90s).
    #[arg(long, value_name = "DURATION")]
    pub route_refresh_interval: Option<String>,
    /// Period of the status heartbeat in etcd (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub status_interval: Option<String>,
    /// Workload-to-host traffic: Drop, Accept or Return (default Drop).
    #[arg(long, value_name = "ACTION")]
    pub default_endpoint_to_host_action: Option<String>,
    /// Name of the nftables table the agent owns (default tabby).
    #[arg(long, value_name = "NAME")]
    pub nft_table: Option<String>,
    /// etcd client URLs, comma-separated.
    #[arg(long, value_name = "URLS")]
    pub etcd_endpoints: Option<String>,
    /// CA bundle of etcd's serving certificate.
    #[arg(long, value_name = "FILE")]
    pub etcd_ca_file: Option<String>,
    /// Client certificate for etcd.
    #[arg(long, value_name = "FILE")]
    pub etcd_cert_file: Option<String>,
    /// Key of the client certificate.
    #[arg(long, value_name = "FILE")]
    pub etcd_key_file: Option<String>,
    /// Key prefix in etcd (default /calico).
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Serve the Docker network plugin (true/false).
    #[arg(long, value_name = "BOOL")]
    pub docker_enabled: Option<String>,
    /// Directory of the Docker plugin socket.
    #[arg(long, value_name = "DIR")]
    pub docker_socket_dir: Option<String>,
    /// Name of the Docker network driver (default tabby; the IPAM driver is `<name>-ipam`).
    #[arg(long, value_name = "NAME")]
    pub docker_driver_name: Option<String>,
    /// The Docker Engine API socket, asked for network names (default /var/run/docker.sock).
    #[arg(long, value_name = "FILE")]
    pub docker_engine_socket: Option<String>,
    /// Render a BIRD config instead of programming remote routes (true/false).
    #[arg(long, value_name = "BOOL")]
    pub bgp_enabled: Option<String>,
    /// The BIRD 2 config file the agent writes (with BGP on).
    #[arg(long, value_name = "FILE")]
    pub bgp_bird_config: Option<String>,
    /// BIRD's control socket, for `birdc -s` (with BGP on).
    #[arg(long, value_name = "FILE")]
    pub bgp_bird_socket: Option<String>,
    /// The `birdc` program (a path, or a name looked up on PATH).
    #[arg(long, value_name = "PROGRAM")]
    pub bgp_birdc: Option<String>,
    /// The AS number of nodes when neither the Node nor the BGPConfiguration names one.
    #[arg(long, value_name = "ASN")]
    pub bgp_as_number: Option<String>,
}

/// A configuration error. None is retryable: the operator has to change something.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("config file {}: unknown key `{key}`", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {}: `{key}` must be {expected}", path.display())]
    WrongType { path: PathBuf, key: String, expected: String },
    #[error("{field} (from {origin}): {reason}")]
    Invalid { field: Field, origin: Source, reason: String },
    #[error("no node name: set nodename, TABBY_NODENAME or --nodename (the node name file {} is absent and the host name is unavailable)", file.display())]
    NoNodename { file: PathBuf },
}

impl ConfigError {
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// This node's IPv4 address as configured; the prefix is learned from the interface when
/// not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIp {
    pub addr: Ipv4Addr,
    pub prefix_len: Option<u8>,
}

/// How to reach etcd and where tabby's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub prefix: String,
}

impl EtcdSettings {
    /// The client configuration (already validated by [`load`]).
    pub fn client_config(&self) -> EtcdConfig {
        EtcdConfig {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ..EtcdConfig::new(self.endpoints.clone())
        }
    }

    pub fn layout(&self) -> KeyLayout {
        KeyLayout::new(self.prefix.clone())
    }
}

/// The Docker network and IPAM drivers (`crate::docker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    pub enabled: bool,
    pub socket_dir: PathBuf,
    /// The network driver's name: its socket is `<socket_dir>/<name>.sock`, the IPAM
    /// driver's `<socket_dir>/<name>-ipam.sock`.
    pub driver_name: String,
    /// The Docker Engine API socket: a network created without `-o network=` is named
    /// after what Docker calls it, looked up here.
    pub engine_socket: PathBuf,
}

/// BGP via BIRD (`crate::bgp`): with `enabled`, the agent writes `bird_config` and asks the
/// BIRD behind `bird_socket` to reload it; BIRD, not the agent, programs routes to remote
/// blocks of pools without IPIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpSettings {
    pub enabled: bool,
    pub bird_config: PathBuf,
    pub bird_socket: PathBuf,
    pub birdc: PathBuf,
    /// The AS of nodes when neither their Node nor the `default` BGPConfiguration names one.
    pub as_number: datastore::model::AsNumber,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub nodename: String,
    /// Where the node name came from (logged at start).
    pub nodename_source: Source,
    pub nodename_file: PathBuf,
    pub node_ip: Option<NodeIp>,
    pub log_level: String,
    pub metrics_addr: SocketAddr,
    pub resync_interval: Duration,
    pub route_refresh_interval: Duration,
    pub status_interval: Duration,
    pub default_endpoint_to_host_action: EndpointToHostAction,
    pub nft_table: String,
    pub etcd: EtcdSettings,
    pub docker: DockerSettings,
    pub bgp: BgpSettings,
}

/// Everything [`load`] reads, injectable so tests never depend on the machine.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub cli: Cli,
    /// The process environment (only `TABBY_*` variables matter).
    pub env: BTreeMap<String, String>,
    /// The kernel's host name, the node name of last resort.
    pub hostname: Option<String>,
}

impl Inputs {
    /// The real environment and host name, with `cli` as parsed.
    pub fn from_process(cli: Cli) -> Self {
        Inputs {
            cli,
            env: std::env::vars().filter(|(k, _)| k.starts_with("TABBY_")).collect(),
            hostname: nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()),
        }
    }
}

/// A loaded configuration and what the operator should hear about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: AgentConfig,
    /// The file read, if one was.
    pub file: Option<PathBuf>,
    /// Non-fatal findings (unknown `TABBY_*` variables), to log once logging is set up.
    pub warnings: Vec<String>,
}

/// Reads and checks the configuration: file, then environment, then flags.
pub fn load(inputs: &Inputs) -> Result<Loaded, ConfigError> {
    let (path, required) = layers::config_path(&inputs.cli, &inputs.env);
    let (file_layer, file) = match std::fs::read_to_string(&path) {
        Ok(text) => (layers::from_file(&path, &text)?, Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => (Raw::default(), None),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let (env_layer, warnings) = layers::from_env(&inputs.env);
    let raw = file_layer.overlay(env_layer).overlay(layers::from_flags(&inputs.cli));
    let config = resolve(&raw, inputs.hostname.as_deref())?;
    Ok(Loaded { config, file, warnings })
}

/// Types and checks every setting.
fn resolve(raw: &Raw, hostname: Option<&str>) -> Result<AgentConfig, ConfigError> {
    let nodename_file = setting(raw, Field::NodenameFile, DEFAULT_NODENAME_FILE, parse_path)?;
    let (nodename, nodename_source) = resolve_nodename(raw, &nodename_file, hostname)?;
    let etcd = EtcdSettings {
        endpoints: setting(raw, Field::EtcdEndpoints, datastore::client::DEFAULT_ENDPOINT, |v| {
            Ok(v.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect())
        })?,
        ca_file: optional(raw, Field::EtcdCaFile, parse_existing_file)?,
        cert_file: optional(raw, Field::EtcdCertFile, parse_existing_file)?,
        key_file: optional(raw, Field::EtcdKeyFile, parse_existing_file)?,
        prefix: setting(raw, Field::EtcdPrefix, DEFAULT_PREFIX, parse_prefix)?,
    };
    check_etcd(raw, &etcd)?;
    Ok(AgentConfig {
        nodename,
        nodename_source,
        nodename_file,
        node_ip: optional(raw, Field::NodeIp, parse_node_ip)?,
        log_level: setting(raw, Field::LogLevel, "info", parse_log_level)?,
        metrics_addr: setting(raw, Field::MetricsAddr, DEFAULT_METRICS_ADDR, |v| {
            v.parse::<SocketAddr>().map_err(|_| format!("{v:?} is not an address:port"))
        })?,
        resync_interval: setting(raw, Field::ResyncInterval, "90s", parse_interval)?,
        route_refresh_interval: setting(raw, Field::RouteRefreshInterval, "90s", parse_interval)?,
        status_interval: setting(raw, Field::StatusInterval, "10s", |v| {
            let d = parse_interval(v)?;
            if d > Duration::from_hours(1) {
                return Err(
                    "must be at most 1h (the heartbeat's lease lives three times as long)".into()
                );
            }
            Ok(d)
        })?,
        default_endpoint_to_host_action: setting(
            raw,
            Field::DefaultEndpointToHostAction,
            "Drop",
            str::parse,
        )?,
        nft_table: setting(raw, Field::NftTable, DEFAULT_NFT_TABLE, parse_table_name)?,
        etcd,
        docker: DockerSettings {
            enabled: setting(raw, Field::DockerEnabled, "false", parse_bool)?,
            socket_dir: setting(raw, Field::DockerSocketDir, DEFAULT_DOCKER_SOCKET_DIR, |v| {
                let path = parse_path(v)?;
                if path.is_absolute() {
                    Ok(path)
                } else {
                    Err(format!("{v:?} is not an absolute path"))
                }
            })?,
            driver_name: setting(
                raw,
                Field::DockerDriverName,
                DEFAULT_DOCKER_DRIVER_NAME,
                parse_driver_name,
            )?,
            engine_socket: setting(
                raw,
                Field::DockerEngineSocket,
                DEFAULT_DOCKER_ENGINE_SOCKET,
                parse_absolute,
            )?,
        },
        bgp: BgpSettings {
            enabled: setting(raw, Field::BgpEnabled, "false", parse_bool)?,
            bird_config: setting(raw, Field::BgpBirdConfig, DEFAULT_BIRD_CONFIG, parse_absolute)?,
            bird_socket: setting(raw, Field::BgpBirdSocket, DEFAULT_BIRD_SOCKET, parse_absolute)?,
            birdc: setting(raw, Field::BgpBirdc, "birdc", parse_path)?,
            as_number: setting(raw, Field::BgpAsNumber, "64512", parse_as_number)?,
        },
    })
}

/// The value of `field` (or `default`), parsed; errors name the field and the source.
fn setting<T>(
    raw: &Raw,
    field: Field,
    default: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let (value, source) = raw.get(field).unwrap_or((default, &Source::Default));
    parse(value).map_err(|reason| ConfigError::Invalid { field, origin: source.clone(), reason })
}

/// The value of `field` parsed, if given.
fn optional<T>(
    raw: &Raw,
    field: Field,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    raw.get(field)
        .map(|(value, source)| {
            parse(value).map_err(|reason| ConfigError::Invalid {
                field,
                origin: source.clone(),
                reason,
            })
        })
        .transpose()
}

/// Configured name, else the node name file, else the host name. The name keys the Node
/// resource, so it must be a DNS-1123 subdomain; a host name is not changed to fit (the CNI
/// plugin uses it as it is), the operator is told to configure one instead.
fn resolve_nodename(
    raw: &Raw,
    file: &Path,
    hostname: Option<&str>,
) -> Result<(String, Source), ConfigError> {
    let (name, source) = if let Some((name, source)) = raw.get(Field::Nodename) {
        (name.to_string(), source.clone())
    } else if let Some(name) = read_nodename_file(file) {
        (name, Source::NodenameFile(file.to_path_buf()))
    } else if let Some(name) = hostname.map(str::trim).filter(|h| !h.is_empty()) {
        (name.to_string(), Source::Hostname)
    } else {
        return Err(ConfigError::NoNodename { file: file.to_path_buf() });
    };
    if !datastore::model::is_dns1123_subdomain(&name) {
        return Err(ConfigError::Invalid {
            field: Field::Nodename,
            origin: source,
            reason: format!(
                "{name:?} is not a valid node name (lower-case letters, digits, '-' and '.', \
                 at most 253 characters: it names this host's Node resource); set nodename"
            ),
        });
    }
    Ok((name, source))
}

fn read_nodename_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// Checks the etcd settings together, naming the setting at fault with its source.
fn check_etcd(raw: &Raw, etcd: &EtcdSettings) -> Result<(), ConfigError> {
    match etcd.client_config().validate() {
        Ok(()) => Ok(()),
        Err(datastore::client::Error::Config { field, reason }) => {
            let field = match field.as_str() {
                "ca_file" => Field::EtcdCaFile,
                "cert_file" => Field::EtcdCertFile,
                "key_file" => Field::EtcdKeyFile,
                _ => Field::EtcdEndpoints,
            };
            let source = raw.get(field).map_or(Source::Default, |(_, s)| s.clone());
            Err(ConfigError::Invalid { field, origin: source, reason })
        }
        Err(other) => Err(ConfigError::Invalid {
            field: Field::EtcdEndpoints,
            origin: raw.get(Field::EtcdEndpoints).map_or(Source::Default, |(_, s)| s.clone()),
            reason: other.to_string(),
        }),
    }
}

fn parse_path(v: &str) -> Result<PathBuf, String> {
    if v.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(PathBuf::from(v))
}

fn parse_existing_file(v: &str) -> Result<PathBuf, String> {
    let path = parse_path(v)?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{v:?} is not a readable file"))
    }
}

fn parse_prefix(v: &str) -> Result<String, String> {
    let trimmed = v.trim_end_matches('/');
    if !v.starts_with('/') || trimmed.is_empty() {
        return Err(format!("{v:?} must be an absolute key prefix such as /calico"));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{v:?} contains whitespace"));
    }
    Ok(trimmed.to_string())
}

fn parse_node_ip(v: &str) -> Result<NodeIp, String> {
    let (addr, prefix_len) = match v.split_once('/') {
        Some((addr, len)) => {
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| (1..=32).contains(l))
                .ok_or_else(|| format!("{v:?}: the prefix length must be 1 to 32"))?;
            (addr, Some(len))
        }
        None => (v, None),
    };
    let addr: Ipv4Addr = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a,
        Ok(IpAddr::V6(_)) => return Err(format!("{v:?} is not an IPv4 address")),
        Err(_) => return Err(format!("{v:?} is not an IP address")),
    };
    if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() || addr.is_broadcast() {
        return Err(format!(
            "{addr} cannot be a node address: other hosts route this node's workloads via it"
        ));
    }
    Ok(NodeIp { addr, prefix_len })
}

fn parse_log_level(v: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(v)
        .map(|_| v.to_string())
        .map_err(|e| format!("{v:?} is not a log filter: {e}"))
}

/// A duration of at least one second: `90s`, `1m30s`, or a bare number of seconds.
fn parse_interval(v: &str) -> Result<Duration, String> {
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(v)
            .map_err(|e| format!("{v:?} is not a duration such as 90s or 2m: {e}"))?,
    };
    if d < Duration::from_secs(1) {
        return Err(format!("{v:?} is too short: at least 1s"));
    }
    if d > Duration::from_hours(24) {
        return Err(format!("{v:?} is too long: at most 24h"));
    }
    Ok(d)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean (true or false)")),
    }
}

/// Docker finds a legacy plugin by its socket's file name, and `docker network create
/// --driver` takes it: lower-case letters, digits, `-`, `_` and `.`, a letter or digit first.
fn parse_driver_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "{v:?} is not a driver name (a lower-case letter or digit, then those or '-', '_', '.'; at most 64)"
        ))
    }
}

fn parse_absolute(v: &str) -> Result<PathBuf, String> {
    let path = parse_path(v)?;
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("{v:?} is not an absolute path"))
    }
}

/// 1-4294967295, or Calico's dotted `high.low`.
fn parse_as_number(v: &str) -> Result<datastore::model::AsNumber, String> {
    let asn: datastore::model::AsNumber =
        serde_json::from_value(serde_json::Value::String(v.to_string()))
            .map_err(|e| e.to_string())?;
    if asn.0 == 0 {
        return Err("AS number 0 is not valid: expected 1-4294967295".into());
    }
    Ok(asn)
}

/// nftables allows long names; tabby keeps them short and unquoted in `nft` output.
fn parse_table_name(v: &str) -> Result<String, String> {
    let ok = v.len() <= 64
        && v.starts_with(|c: char| c.is_ascii_alphabetic())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "{v:?} is not a table name (a letter, then letters, digits, '_' or '-'; at most 64)"
        ))
    }
}

#[cfg(test)]
mod tests;
