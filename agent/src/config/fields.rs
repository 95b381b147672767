//! The agent's settings by name: one row per setting, naming its file key, its environment
//! variable and its flag, so every layer and every error speaks of a setting the same way.

use std::fmt;
use std::path::PathBuf;

/// One setting of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Nodename,
    NodenameFile,
    NodeIp,
    LogLevel,
    MetricsAddr,
    ResyncInterval,
    RouteRefreshInterval,
    StatusInterval,
    DefaultEndpointToHostAction,
    NftTable,
    EtcdEndpoints,
    EtcdCaFile,
    EtcdCertFile,
    EtcdKeyFile,
    EtcdPrefix,
    DockerEnabled,
    DockerSocketDir,
    DockerDriverName,
    DockerEngineSocket,
    BgpEnabled,
    BgpBirdConfig,
    BgpBirdSocket,
    BgpBirdc,
    BgpAsNumber,
}

impl Field {
    pub const ALL: [Field; 24] = [
        Field::Nodename,
        Field::NodenameFile,
        Field::NodeIp,
        Field::LogLevel,
        Field::MetricsAddr,
        Field::ResyncInterval,
        Field::RouteRefreshInterval,
        Field::StatusInterval,
        Field::DefaultEndpointToHostAction,
        Field::NftTable,
        Field::EtcdEndpoints,
        Field::EtcdCaFile,
        Field::EtcdCertFile,
        Field::EtcdKeyFile,
        Field::EtcdPrefix,
        Field::DockerEnabled,
        Field::DockerSocketDir,
        Field::DockerDriverName,
        Field::DockerEngineSocket,
        Field::BgpEnabled,
        Field::BgpBirdConfig,
        Field::BgpBirdSocket,
        Field::BgpBirdc,
        Field::BgpAsNumber,
    ];

    /// The key in the TOML file; a dotted key lives in a section (`etcd.endpoints` is
    /// `endpoints` under `[etcd]`).
    pub const fn key(self) -> &'static str {
        match self {
            Field::Nodename => "nodename",
            Field::NodenameFile => "nodename_file",
            Field::NodeIp => "node_ip",
            Field::LogLevel => "log_level",
            Field::MetricsAddr => "metrics_addr",
            Field::ResyncInterval => "resync_interval",
            Field::RouteRefreshInterval => "route_refresh_interval",
            Field::StatusInterval => "status_interval",
            Field::DefaultEndpointToHostAction => "default_endpoint_to_host_action",
            Field::NftTable => "nft_table",
            Field::EtcdEndpoints => "etcd.endpoints",
            Field::EtcdCaFile => "etcd.ca_file",
            Field::EtcdCertFile => "etcd.cert_file",
            Field::EtcdKeyFile => "etcd.key_file",
            Field::EtcdPrefix => "etcd.prefix",
            Field::DockerEnabled => "docker.enabled",
            Field::DockerSocketDir => "docker.socket_dir",
            Field::DockerDriverName => "docker.driver_name",
            Field::DockerEngineSocket => "docker.engine_socket",
            Field::BgpEnabled => "bgp.enabled",
            Field::BgpBirdConfig => "bgp.bird_config",
            Field::BgpBirdSocket => "bgp.bird_socket",
            Field::BgpBirdc => "bgp.birdc",
            Field::BgpAsNumber => "bgp.as_number",
        }
    }

    /// The environment variable that overrides the file.
    pub const fn env(self) -> &'static str {
        match self {
            Field::Nodename => "TABBY_NODENAME",
            Field::NodenameFile => "TABBY_NODENAME_FILE",
            Field::NodeIp => "TABBY_NODE_IP",
            Field::LogLevel => "TABBY_LOG_LEVEL",
            Field::MetricsAddr => "TABBY_METRICS_ADDR",
            Field::ResyncInterval => "TABBY_RESYNC_INTERVAL",
            Field::RouteRefreshInterval => "TABBY_ROUTE_REFRESH_INTERVAL",
            Field::StatusInterval => "TABBY_STATUS_INTERVAL",
            Field::DefaultEndpointToHostAction => "TABBY_DEFAULT_ENDPOINT_TO_HOST_ACTION",
            Field::NftTable => "TABBY_NFT_TABLE",
            Field::EtcdEndpoints => "TABBY_ETCD_ENDPOINTS",
            Field::EtcdCaFile => "TABBY_ETCD_CA_FILE",
            Field::EtcdCertFile => "TABBY_ETCD_CERT_FILE",
            Field::EtcdKeyFile => "TABBY_ETCD_KEY_FILE",
            Field::EtcdPrefix => "TABBY_ETCD_PREFIX",
            Field::DockerEnabled => "TABBY_DOCKER_ENABLED",
            Field::DockerSocketDir => "TABBY_DOCKER_SOCKET_DIR",
            Field::DockerDriverName => "TABBY_DOCKER_DRIVER_NAME",
            Field::DockerEngineSocket => "TABBY_DOCKER_ENGINE_SOCKET",
            Field::BgpEnabled => "TABBY_BGP_ENABLED",
            Field::BgpBirdConfig => "TABBY_BGP_BIRD_CONFIG",
            Field::BgpBirdSocket => "TABBY_BGP_BIRD_SOCKET",
            Field::BgpBirdc => "TABBY_BGP_BIRDC",
            Field::BgpAsNumber => "TABBY_BGP_AS_NUMBER",
        }
    }

    /// The command-line flag that overrides the environment.
    pub const fn flag(self) -> &'static str {
        match self {
            Field::Nodename => "--nodename",
            Field::NodenameFile => "--nodename-file",
            Field::NodeIp => "--node-ip",
            Field::LogLevel => "--log-level",
            Field::MetricsAddr => "--metrics-addr",
            Field::ResyncInterval => "--resync-interval",
            Field::RouteRefreshInterval => "--route-refresh-interval",
            Field::StatusInterval => "--status-interval",
            Field::DefaultEndpointToHostAction => "--default-endpoint-to-host-action",
            Field::NftTable => "--nft-table",
            Field::EtcdEndpoints => "--etcd-endpoints",
            Field::EtcdCaFile => "--etcd-ca-file",
            Field::EtcdCertFile => "--etcd-cert-file",
            Field::EtcdKeyFile => "--etcd-key-file",
            Field::EtcdPrefix => "--etcd-prefix",
            Field::DockerEnabled => "--docker-enabled",
            Field::DockerSocketDir => "--docker-socket-dir",
            Field::DockerDriverName => "--docker-driver-name",
            Field::DockerEngineSocket => "--docker-engine-socket",
            Field::BgpEnabled => "--bgp-enabled",
            Field::BgpBirdConfig => "--bgp-bird-config",
            Field::BgpBirdSocket => "--bgp-bird-socket",
            Field::BgpBirdc => "--bgp-birdc",
            Field::BgpAsNumber => "--bgp-as-number",
        }
    }

    /// Whether the TOML file may give this setting as an array of strings.
    pub const fn is_list(self) -> bool {
        matches!(self, Field::EtcdEndpoints)
    }

    /// The setting whose file key is `key`.
    pub fn from_key(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.key() == key)
    }

    /// The setting whose environment variable is `name`.
    pub fn from_env(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.env() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Where a setting's value came from, for errors and the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
    /// The node name file (node name only).
    NodenameFile(PathBuf),
    /// The kernel's host name (node name only).
    Hostname,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::NodenameFile(path) => write!(f, "node name file {}", path.display()),
            Source::Hostname => f.write_str("the host name"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_consistent() {
        let mut keys: Vec<_> = Field::ALL.iter().map(|f| f.key()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), Field::ALL.len());
        for field in Field::ALL {
            // The env var and the flag are derived from the key, so an operator can guess them.
            let derived = field.key().replace('.', "_").to_ascii_uppercase();
            assert_eq!(field.env(), format!("TABBY_{derived}"), "{field}");
            assert_eq!(field.flag(), format!("--{}", field.key().replace(['.', '_'], "-")));
            assert_eq!(Field::from_key(field.key()), Some(field));
            assert_eq!(Field::from_env(field.env()), Some(field));
        }
    }
}
