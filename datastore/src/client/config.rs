//! How to reach etcd: endpoints, TLS files and timeouts, read from Calico's environment names
//! and validated before any connection is tried.

use std::path::PathBuf;
use std::time::Duration;

use super::Error;

/// Calico's default when `ETCD_ENDPOINTS` is unset.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// Where etcd is and how to talk to it.
///
/// Build one with [`EtcdConfig::new`] or [`EtcdConfig::from_env`]; [`super::Client::connect`]
/// validates it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs, `http://host:port` or `https://host:port`, all with the same scheme.
    pub endpoints: Vec<String>,
    /// CA bundle that signed etcd's serving certificate (required for `https`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for etcd's `--client-cert-auth` (given together with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Bound on establishing the connection and on the first round trip (default 5 s).
    pub connect_timeout: Duration,
    /// Bound on every request (default 5 s).
    pub request_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig::new(vec![DEFAULT_ENDPOINT.to_string()])
    }
}

/// An endpoint URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) tls: bool,
    /// `host:port`, as `TcpStream::connect` takes it (IPv6 hosts keep their brackets).
    pub(crate) authority: String,
}

impl EtcdConfig {
    /// A plain configuration for `endpoints` with default timeouts and no TLS files.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            ca_file: None,
            cert_file: None,
            key_file: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// Reads Calico's variables: `ETCD_ENDPOINTS` (comma-separated, default
    /// `http://127.0.0.1:2379`), `ETCD_CA_CERT_FILE`, `ETCD_CERT_FILE`, `ETCD_KEY_FILE`.
    /// Empty values count as unset. The result is validated; errors name the variable.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`EtcdConfig::from_env`] over any variable source (tests, config files).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let endpoints = endpoint_list(get("ETCD_ENDPOINTS").as_deref());
        let config = EtcdConfig {
            ca_file: get("ETCD_CA_CERT_FILE").map(PathBuf::from),
            cert_file: get("ETCD_CERT_FILE").map(PathBuf::from),
            key_file: get("ETCD_KEY_FILE").map(PathBuf::from),
            ..EtcdConfig::new(endpoints)
        };
        config.validate().map_err(|e| match e {
            Error::Config { field, reason } => Error::Config { field: env_name(&field), reason },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks the configuration without touching the network: at least one endpoint, every
    /// endpoint an `http://host:port` or `https://host:port` URL, one scheme for all,
    /// `https` with a CA file, certificate and key together and only with `https`, non-zero
    /// timeouts.
    pub fn validate(&self) -> Result<(), Error> {
        self.parsed_endpoints().map(|_| ())
    }

    /// The endpoints taken apart; the same checks as [`EtcdConfig::validate`].
    pub(crate) fn parsed_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        if self.endpoints.is_empty() {
            return Err(config_error("endpoints", "no etcd endpoint given"));
        }
        let endpoints =
            self.endpoints.iter().map(|e| parse_endpoint(e)).collect::<Result<Vec<_>, _>>()?;
        let tls = endpoints[0].tls;
        if endpoints.iter().any(|e| e.tls != tls) {
            return Err(config_error(
                "endpoints",
                "mixes http:// and https:// endpoints; use one scheme for all",
            ));
        }
        if tls && self.ca_file.is_none() {
            return Err(config_error("ca_file", "https endpoints need a CA certificate file"));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(config_error("key_file", "a client certificate needs its key file"))
            }
            (None, Some(_)) => {
                return Err(config_error("cert_file", "a client key needs its certificate file"))
            }
            _ => {}
        }
        if !tls {
            for (field, file) in [
                ("ca_file", &self.ca_file),
                ("cert_file", &self.cert_file),
                ("key_file", &self.key_file),
            ] {
                if file.is_some() {
                    return Err(config_error(
                        field,
                        "TLS files are given but the endpoints are http://; use https://",
                    ));
                }
            }
        }
        for (field, timeout) in
            [("connect_timeout", self.connect_timeout), ("request_timeout", self.request_timeout)]
        {
            if timeout.is_zero() {
                return Err(config_error(field, "must be greater than zero"));
            }
        }
        Ok(endpoints)
    }
}

/// Parses `http(s)://host:port[/]`.
fn parse_endpoint(url: &str) -> Result<Endpoint, Error> {
    let bad = |reason: &str| config_error("endpoints", &format!("{url:?}: {reason}"));
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(bad("must be scheme://host:port, without path, query or user"));
    }
    let port = if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) =
            v6.split_once("]:").ok_or_else(|| bad("needs a port, e.g. [::1]:2379"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("bracketed host is not an IPv6 address"));
        }
        port
    } else {
        let (host, port) =
            authority.rsplit_once(':').ok_or_else(|| bad("needs a port, e.g. 127.0.0.1:2379"))?;
        if host.is_empty() || host.contains(':') {
            return Err(bad("host is empty or malformed (IPv6 addresses go in brackets)"));
        }
        port
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("port is not a number from 1 to 65535")),
    }
    Ok(Endpoint { tls, authority: authority.to_string() })
}

fn config_error(field: &str, reason: &str) -> Error {
    Error::Config { field: field.to_string(), reason: reason.to_string() }
}

/// The environment variable behind a config field, for errors from [`EtcdConfig::from_env`].
fn env_name(field: &str) -> String {
    match field {
        "endpoints" => "ETCD_ENDPOINTS",
        "ca_file" => "ETCD_CA_CERT_FILE",
        "cert_file" => "ETCD_CERT_FILE",
        "key_file" => "ETCD_KEY_FILE",
        other => other,
    }
    .to_string()
}

/// The endpoints of a comma-separated list as flags and `ETCD_ENDPOINTS` give them (blanks
/// dropped); no list means the default endpoint.
pub fn endpoint_list(list: Option<&str>) -> Vec<String> {
    match list {
        Some(list) => {
            list.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_string).collect()
        }
        None => vec![DEFAULT_ENDPOINT.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<EtcdConfig, Error> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        EtcdConfig::from_lookup(|name| map.get(name).cloned())
    }

    fn field_of(result: Result<EtcdConfig, Error>) -> String {
        match result {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn env_defaults_to_local_etcd() {
        let config = env(&[]).unwrap();
        assert_eq!(config.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn env_reads_calico_names() {
        let config = env(&[
            ("ETCD_ENDPOINTS", " https://10.0.0.1:2379, https://[fd00::1]:2379/ ,"),
            ("ETCD_CA_CERT_FILE", "/etc/ca.pem"),
            ("ETCD_CERT_FILE", "/etc/c.pem"),
            ("ETCD_KEY_FILE", "/etc/k.pem"),
        ])
        .unwrap();
        assert_eq!(config.endpoints, vec!["https://10.0.0.1:2379", "https://[fd00::1]:2379/"]);
        assert_eq!(config.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(config.cert_file, Some(PathBuf::from("/etc/c.pem")));
        assert_eq!(config.key_file, Some(PathBuf::from("/etc/k.pem")));
    }

    #[test]
    fn env_errors_name_the_variable() {
        assert_eq!(field_of(env(&[("ETCD_ENDPOINTS", "etcd:2379")])), "ETCD_ENDPOINTS");
        assert_eq!(field_of(env(&[("ETCD_ENDPOINTS", "https://e:2379")])), "ETCD_CA_CERT_FILE");
        assert_eq!(
            field_of(env(&[
                ("ETCD_ENDPOINTS", "https://e:2379"),
                ("ETCD_CA_CERT_FILE", "/ca"),
                ("ETCD_CERT_FILE", "/c"),
            ])),
            "ETCD_KEY_FILE"
        );
        assert_eq!(field_of(env(&[("ETCD_KEY_FILE", "/k")])), "ETCD_CERT_FILE");
    }

    #[test]
    fn validate_rejects_bad_endpoints() {
        for bad in [
            "127.0.0.1:2379",
            "ftp://h:1",
            "http://h",
            "http://h:0",
            "http://h:99999",
            "http://:2379",
            "http://h:2379/v3",
            "http://u@h:2379",
            "http://fd00::1:2379",
            "http://[nothost]:2379",
        ] {
            let config = EtcdConfig::new(vec![bad.to_string()]);
            assert!(
                matches!(config.validate(), Err(Error::Config { ref field, .. }) if field == "endpoints"),
                "{bad} was accepted"
            );
        }
        assert!(EtcdConfig::new(vec![]).validate().is_err());
        let mixed = EtcdConfig {
            ca_file: Some("/ca".into()),
            ..EtcdConfig::new(vec!["http://a:1".into(), "https://b:1".into()])
        };
        assert!(mixed.validate().is_err());
    }

    #[test]
    fn validate_accepts_good_endpoints() {
        let config = EtcdConfig::new(vec![
            "http://127.0.0.1:2379".into(),
            "http://etcd-1.example.com:2379/".into(),
            "http://[::1]:2379".into(),
        ]);
        let parsed = config.parsed_endpoints().unwrap();
        assert_eq!(parsed[2].authority, "[::1]:2379");
        assert!(parsed.iter().all(|e| !e.tls));
    }

    #[test]
    fn validate_rejects_tls_files_on_http_and_zero_timeouts() {
        let config = EtcdConfig {
            ca_file: Some("/ca".into()),
            ..EtcdConfig::new(vec!["http://a:1".into()])
        };
        assert!(
            matches!(config.validate(), Err(Error::Config { field, .. }) if field == "ca_file")
        );
        let config = EtcdConfig { request_timeout: Duration::ZERO, ..EtcdConfig::default() };
        assert!(
            matches!(config.validate(), Err(Error::Config { field, .. }) if field == "request_timeout")
        );
    }
}
