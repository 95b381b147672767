//! Which node this process allocates for: the name that keys affinities and attributes.
//!
//! Order, as Calico's CNI plugin: an explicit value (netconf `nodename`), `TABBY_NODENAME`, the
//! file written by the agent (default `/var/lib/tabby/nodename`), then the hostname. Each input
//! is injectable so tests never depend on the machine they run on.

use std::path::{Path, PathBuf};

/// Default path of the node-name file the agent writes at start.
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/tabby/nodename";

/// Environment variable overriding the node name.
pub const NODENAME_ENV: &str = "TABBY_NODENAME";

/// Where the name came from (logged, so an operator can see why a host got its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodenameSource {
    Explicit,
    Env,
    File,
    Hostname,
}

#[derive(Debug, thiserror::Error)]
pub enum NodenameError {
    #[error("node name from {from:?} is invalid: {reason}")]
    Invalid { from: NodenameSource, reason: String },
    #[error("no node name: none given, {NODENAME_ENV} unset, {} unreadable and the hostname is unavailable", file.display())]
    Missing { file: PathBuf },
}

/// The inputs of the resolution; `Default` reads the real environment.
#[derive(Debug, Clone, Default)]
pub struct NodenameInputs {
    pub explicit: Option<String>,
    /// `None` means: read `TABBY_NODENAME` from the process environment.
    pub env: Option<Option<String>>,
    /// `None` means the default file.
    pub file: Option<PathBuf>,
    /// `None` means: ask the kernel.
    pub hostname: Option<Option<String>>,
}

/// Resolves the node name; the first non-empty source wins.
pub fn resolve(inputs: &NodenameInputs) -> Result<(String, NodenameSource), NodenameError> {
    if let Some(name) = non_empty(inputs.explicit.clone()) {
        return validated(name, NodenameSource::Explicit);
    }
    let env = match &inputs.env {
        Some(v) => v.clone(),
        None => std::env::var(NODENAME_ENV).ok(),
    };
    if let Some(name) = non_empty(env) {
        return validated(name, NodenameSource::Env);
    }
    let file = inputs.file.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_NODENAME_FILE));
    if let Some(name) = non_empty(read_file(&file)) {
        return validated(name, NodenameSource::File);
    }
    let hostname = match &inputs.hostname {
        Some(h) => h.clone(),
        None => nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()),
    };
    if let Some(name) = non_empty(hostname) {
        return validated(name, NodenameSource::Hostname);
    }
    Err(NodenameError::Missing { file })
}

fn read_file(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot read node name file");
            }
            None
        }
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A node name becomes an etcd key segment: no `/`, no whitespace, no control characters.
fn validated(
    name: String,
    source: NodenameSource,
) -> Result<(String, NodenameSource), NodenameError> {
    if name.len() > 253 {
        return Err(NodenameError::Invalid {
            from: source,
            reason: "longer than 253 characters".into(),
        });
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_whitespace() || c.is_control()) {
        return Err(NodenameError::Invalid {
            from: source,
            reason: format!("{name:?} contains {c:?}; node names are key segments"),
        });
    }
    Ok((name, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(dir: &tempfile::TempDir) -> NodenameInputs {
        NodenameInputs {
            explicit: None,
            env: Some(None),
            file: Some(dir.path().join("nodename")),
            hostname: Some(Some("from-hostname".into())),
        }
    }

    #[test]
    fn order_is_explicit_env_file_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = inputs(&dir);
        assert_eq!(resolve(&i).unwrap(), ("from-hostname".into(), NodenameSource::Hostname));
        std::fs::write(dir.path().join("nodename"), "from-file\n").unwrap();
        assert_eq!(resolve(&i).unwrap(), ("from-file".into(), NodenameSource::File));
        i.env = Some(Some("from-env".into()));
        assert_eq!(resolve(&i).unwrap(), ("from-env".into(), NodenameSource::Env));
        i.explicit = Some("from-netconf".into());
        assert_eq!(resolve(&i).unwrap(), ("from-netconf".into(), NodenameSource::Explicit));
    }

    #[test]
    fn empty_values_fall_through() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nodename"), "  \n").unwrap();
        let mut i = inputs(&dir);
        i.explicit = Some(String::new());
        i.env = Some(Some(" ".into()));
        assert_eq!(resolve(&i).unwrap().1, NodenameSource::Hostname);
        i.hostname = Some(None);
        assert!(matches!(resolve(&i), Err(NodenameError::Missing { .. })));
    }

    #[test]
    fn names_that_cannot_be_key_segments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = inputs(&dir);
        i.explicit = Some("a/b".into());
        let err = resolve(&i).unwrap_err().to_string();
        assert!(err.contains("Explicit") && err.contains("a/b"), "{err}");
    }
}
