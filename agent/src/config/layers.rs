//! The three layers of settings — TOML file, `TABBY_*` environment, flags — each read into the
//! same shape: raw text per setting, with where it came from. Typing happens later, once, in
//! `resolve`, so a value is checked the same way whichever layer gave it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Cli, ConfigError, Field, Source};

/// The raw text of each setting given so far, and where it came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Raw(BTreeMap<Field, (String, Source)>);

impl Raw {
    /// Sets `field`; an empty value counts as not given, so `TABBY_X=` in a systemd
    /// environment file does not wipe out the config file's value.
    fn set(&mut self, field: Field, value: &str, source: Source) {
        if !value.trim().is_empty() {
            self.0.insert(field, (value.trim().to_string(), source));
        }
    }

    /// Overrides this layer's settings with those of `later`.
    pub(crate) fn overlay(mut self, later: Raw) -> Raw {
        self.0.extend(later.0);
        self
    }

    pub(crate) fn get(&self, field: Field) -> Option<(&str, &Source)> {
        self.0.get(&field).map(|(value, source)| (value.as_str(), source))
    }
}

/// Reads the TOML file: top-level keys and the `[etcd]`, `[docker]` and `[bgp]` sections.
/// Unknown keys and sections are refused by name, so a typo is not silently ignored.
pub(crate) fn from_file(path: &Path, text: &str) -> Result<Raw, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let mut raw = Raw::default();
    walk(path, "", &table, &mut raw)?;
    Ok(raw)
}

fn walk(path: &Path, section: &str, table: &toml::Table, raw: &mut Raw) -> Result<(), ConfigError> {
    for (name, value) in table {
        let key = if section.is_empty() { name.clone() } else { format!("{section}.{name}") };
        let unknown = || ConfigError::UnknownKey { path: path.to_path_buf(), key: key.clone() };
        if let toml::Value::Table(inner) = value {
            let is_section = section.is_empty()
                && Field::ALL.iter().any(|f| f.key().starts_with(&format!("{key}.")));
            if !is_section {
                return Err(unknown());
            }
            walk(path, &key, inner, raw)?;
            continue;
        }
        let field = Field::from_key(&key).ok_or_else(unknown)?;
        let wrong_type = |expected: &str| ConfigError::WrongType {
            path: path.to_path_buf(),
            key: key.clone(),
            expected: expected.to_string(),
        };
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) if field.is_list() => {
                let mut parts = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        toml::Value::String(s) if !s.contains(',') => parts.push(s.clone()),
                        _ => return Err(wrong_type("an array of strings without commas")),
                    }
                }
                parts.join(",")
            }
            _ if field.is_list() => return Err(wrong_type("a string or an array of strings")),
            _ => return Err(wrong_type("a string, an integer or a boolean")),
        };
        raw.set(field, &text, Source::File(path.to_path_buf()));
    }
    Ok(())
}

/// Reads the `TABBY_*` variables. Returns the layer and a warning per `TABBY_*` variable that
/// names no setting (most likely a typo the operator wants to hear about).
pub(crate) fn from_env(env: &BTreeMap<String, String>) -> (Raw, Vec<String>) {
    let mut raw = Raw::default();
    let mut warnings = Vec::new();
    for (name, value) in env {
        match Field::from_env(name) {
            Some(field) => raw.set(field, value, Source::Env(field.env())),
            None if name == super::CONFIG_ENV => {}
            None if name.starts_with("TABBY_") => {
                warnings.push(format!("ignoring environment variable {name}: no such setting"));
            }
            None => {}
        }
    }
    (raw, warnings)
}

/// Reads the flags given on the command line.
pub(crate) fn from_flags(cli: &Cli) -> Raw {
    let mut raw = Raw::default();
    let flags: [(Field, &Option<String>); 24] = [
        (Field::Nodename, &cli.nodename),
        (Field::NodenameFile, &cli.nodename_file),
        (Field::NodeIp, &cli.node_ip),
        (Field::LogLevel, &cli.log_level),
        (Field::MetricsAddr, &cli.metrics_addr),
        (Field::ResyncInterval, &cli.resync_interval),
        (Field::RouteRefreshInterval, &cli.route_refresh_interval),
        (Field::StatusInterval, &cli.status_interval),
        (Field::DefaultEndpointToHostAction, &cli.default_endpoint_to_host_action),
        (Field::NftTable, &cli.nft_table),
        (Field::EtcdEndpoints, &cli.etcd_endpoints),
        (Field::EtcdCaFile, &cli.etcd_ca_file),
        (Field::EtcdCertFile, &cli.etcd_cert_file),
        (Field::EtcdKeyFile, &cli.etcd_key_file),
        (Field::EtcdPrefix, &cli.etcd_prefix),
        (Field::DockerEnabled, &cli.docker_enabled),
        (Field::DockerSocketDir, &cli.docker_socket_dir),
        (Field::DockerDriverName, &cli.docker_driver_name),
        (Field::DockerEngineSocket, &cli.docker_engine_socket),
        (Field::BgpEnabled, &cli.bgp_enabled),
        (Field::BgpBirdConfig, &cli.bgp_bird_config),
        (Field::BgpBirdSocket, &cli.bgp_bird_socket),
        (Field::BgpBirdc, &cli.bgp_birdc),
        (Field::BgpAsNumber, &cli.bgp_as_number),
    ];
    for (field, value) in flags {
        if let Some(value) = value {
            raw.set(field, value, Source::Flag(field.flag()));
        }
    }
    raw
}

/// Which file to read: `--config`, else `TABBY_CONFIG`, else the default path. Only the
/// default may be missing.
pub(crate) fn config_path(cli: &Cli, env: &BTreeMap<String, String>) -> (PathBuf, bool) {
    if let Some(path) = &cli.config {
        return (path.clone(), true);
    }
    match env.get(super::CONFIG_ENV).filter(|v| !v.trim().is_empty()) {
        Some(path) => (PathBuf::from(path.trim()), true),
        None => (PathBuf::from(super::DEFAULT_CONFIG_PATH), false),
    }
}
