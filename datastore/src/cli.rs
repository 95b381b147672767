//! The etcd flags every tabby command-line tool takes (`--etcd-endpoints`, TLS files,
//! `--etcd-prefix`, with Calico's environment names), and their one translation into an
//! [`EtcdConfig`] and a [`KeyLayout`], so the tools agree on names, defaults and errors.

use std::path::PathBuf;

use clap::Args;

use crate::client::{endpoint_list, Error, EtcdConfig};
use crate::keys::KeyLayout;

/// Where etcd is: the flags every tabby binary takes, with Calico's environment names.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "etcd options")]
#[allow(clippy::struct_field_names)] // the fields are the flags: --etcd-endpoints, --etcd-prefix
pub struct EtcdArgs {
    /// etcd client URLs, comma separated [default: http://127.0.0.1:2379]
    #[arg(long, env = "ETCD_ENDPOINTS", global = true, value_name = "URLS")]
    pub etcd_endpoints: Option<String>,
    /// CA certificate that signed etcd's certificate (for https endpoints)
    #[arg(long, env = "ETCD_CA_CERT_FILE", global = true, value_name = "FILE")]
    pub etcd_ca_cert_file: Option<PathBuf>,
    /// Client certificate for etcd
    #[arg(long, env = "ETCD_CERT_FILE", global = true, value_name = "FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// Key of the client certificate
    #[arg(long, env = "ETCD_KEY_FILE", global = true, value_name = "FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// Key prefix of tabby's data in etcd
    #[arg(
        long,
        env = "TABBY_ETCD_PREFIX",
        global = true,
        default_value = "/calico",
        value_name = "PREFIX"
    )]
    pub etcd_prefix: String,
}

/// A flag whose value cannot be used; names the flag as the user typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} {value:?}: {reason}")]
pub struct EtcdArgsError {
    pub flag: &'static str,
    pub value: String,
    pub reason: String,
}

impl EtcdArgs {
    /// The validated client configuration these flags describe.
    pub fn config(&self) -> Result<EtcdConfig, EtcdArgsError> {
        let endpoints = endpoint_list(self.etcd_endpoints.as_deref());
        let config = EtcdConfig {
            ca_file: self.etcd_ca_cert_file.clone(),
            cert_file: self.etcd_cert_file.clone(),
            key_file: self.etcd_key_file.clone(),
            ..EtcdConfig::new(endpoints)
        };
        config.validate().map_err(|e| {
            let path = |p: Option<&PathBuf>| p.map(|p| p.display().to_string()).unwrap_or_default();
            let (flag, value, reason) = match e {
                Error::Config { field, reason } => match field.as_str() {
                    "ca_file" => {
                        ("--etcd-ca-cert-file", path(self.etcd_ca_cert_file.as_ref()), reason)
                    }
                    "cert_file" => ("--etcd-cert-file", path(self.etcd_cert_file.as_ref()), reason),
                    "key_file" => ("--etcd-key-file", path(self.etcd_key_file.as_ref()), reason),
                    _ => (
                        "--etcd-endpoints",
                        self.etcd_endpoints.clone().unwrap_or_default(),
                        reason,
                    ),
                },
                other => (
                    "--etcd-endpoints",
                    self.etcd_endpoints.clone().unwrap_or_default(),
                    other.to_string(),
                ),
            };
            EtcdArgsError { flag, value, reason }
        })?;
        Ok(config)
    }

    /// The key layout under `--etcd-prefix`, which must be an absolute key prefix.
    pub fn key_layout(&self) -> Result<KeyLayout, EtcdArgsError> {
        let prefix = &self.etcd_prefix;
        if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
            return Err(EtcdArgsError {
                flag: "--etcd-prefix",
                value: prefix.clone(),
                reason: "must be an absolute key prefix such as /calico".to_string(),
            });
        }
        Ok(KeyLayout::new(prefix.clone()))
    }
}

/// Writes a command's output to stdout. A closed pipe (`tabbyctl get … | head`) is not an
/// error: the reader has all it wanted.
pub fn emit_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::DEFAULT_ENDPOINT;

    fn args(endpoints: Option<&str>, prefix: &str) -> EtcdArgs {
        EtcdArgs {
            etcd_endpoints: endpoints.map(str::to_string),
            etcd_ca_cert_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_prefix: prefix.to_string(),
        }
    }

    #[test]
    fn endpoints_default_and_split_on_commas() {
        assert_eq!(args(None, "/calico").config().unwrap().endpoints, vec![DEFAULT_ENDPOINT]);
        let cfg = args(Some("http://a:1, http://b:2,"), "/calico").config().unwrap();
        assert_eq!(cfg.endpoints, vec!["http://a:1", "http://b:2"]);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = args(Some("not a url"), "/calico").config().unwrap_err();
        assert_eq!(err.flag, "--etcd-endpoints");
        let mut a = args(None, "/calico");
        a.etcd_cert_file = Some("/c.pem".into());
        assert!(a.config().unwrap_err().flag.starts_with("--etcd-"));
        assert_eq!(args(None, "calico").key_layout().unwrap_err().flag, "--etcd-prefix");
        assert!(args(None, "/").key_layout().is_err());
        assert_eq!(args(None, "/t/").key_layout().unwrap().prefix(), "/t");
    }
}
