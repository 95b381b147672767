//! What can go wrong talking to etcd, classified by what the caller can do about it.

use std::path::PathBuf;
use std::time::Duration;

use super::Kv;

/// An etcd client error. [`Error::is_retryable`] says whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No endpoint answered, or the connection broke.
    #[error("etcd unavailable at {endpoints}: {reason}")]
    Unavailable { endpoints: String, reason: String },
    /// A request did not complete in time.
    #[error("etcd {op} timed out after {after:?}")]
    Timeout { op: String, after: Duration },
    /// A create found the key already there; `current` is its value at that moment.
    #[error("{key} already exists (mod revision {})", current.mod_revision)]
    AlreadyExists { key: String, current: Box<Kv> },
    /// A compare-and-swap lost: the key changed since it was read; `current` is its value now.
    #[error("{key} was modified concurrently (now at mod revision {})", current.mod_revision)]
    Conflict { key: String, current: Box<Kv> },
    /// The key (or lease) does not exist.
    #[error("{key} does not exist")]
    NotFound { key: String },
    /// A TLS file is unusable, or the TLS handshake was refused (`path` is `None`).
    #[error("TLS error{}: {reason}", path.as_ref().map(|p| format!(" with {}", p.display())).unwrap_or_default())]
    Tls { path: Option<PathBuf>, reason: String },
    /// The configuration is invalid; `field` names the setting (or environment variable).
    #[error("invalid etcd setting {field}: {reason}")]
    Config { field: String, reason: String },
    /// A stored value or key could not be decoded (or a value encoded).
    #[error("cannot decode {key}: {reason}")]
    Decode { key: String, reason: String },
    /// The requested revision has been compacted away; re-read at the latest revision.
    #[error("etcd revision {revision} has been compacted")]
    Compacted { revision: i64 },
    /// etcd refused the request for another reason.
    #[error("etcd refused the request: {reason}")]
    Server { reason: String },
}

impl Error {
    /// Whether the same operation may succeed if tried again (after re-reading, for a
    /// conflict): true for unavailable, timeout and conflict.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. } | Error::Conflict { .. })
    }
}

/// Words that mark a transport failure as a TLS problem rather than plain unreachability.
const TLS_MARKERS: [&str; 7] =
    ["certificate", "tls", "handshake", "alert", "unknownissuer", "invalidcertificate", "x509"];

/// The request an `etcd_client` error belongs to, for [`classify`].
pub(crate) struct Context<'a> {
    /// The endpoints, for messages.
    pub(crate) endpoints: &'a str,
    /// What was being done, e.g. `get /calico/ipam/v2/config`.
    pub(crate) op: &'a str,
    /// The request timeout, reported if etcd's deadline passed.
    pub(crate) after: Duration,
    /// The revision asked for, reported if etcd says it was compacted.
    pub(crate) revision: i64,
}

/// Turns an `etcd_client` error into ours.
pub(crate) fn classify(err: etcd_client::Error, ctx: &Context<'_>) -> Error {
    let endpoints = ctx.endpoints;
    use etcd_client::Error as E;
    let unavailable = |reason: String| {
        if TLS_MARKERS.iter().any(|m| reason.to_ascii_lowercase().contains(m)) {
            Error::Tls { path: None, reason }
        } else {
            Error::Unavailable { endpoints: endpoints.to_string(), reason }
        }
    };
    match err {
        E::GRpcStatus(status) => {
            let reason = status_text(status.message(), &status);
            match status.code() as i32 {
                tonic_code::UNAVAILABLE | tonic_code::UNKNOWN | tonic_code::CANCELLED
                    if is_transport(&reason) =>
                {
                    unavailable(reason)
                }
                tonic_code::UNAVAILABLE => {
                    Error::Unavailable { endpoints: endpoints.to_string(), reason }
                }
                tonic_code::DEADLINE_EXCEEDED => {
                    Error::Timeout { op: ctx.op.to_string(), after: ctx.after }
                }
                _ if reason.contains("required revision has been compacted") => {
                    Error::Compacted { revision: ctx.revision }
                }
                _ => Error::Server { reason },
            }
        }
        E::TransportError(e) => unavailable(chain(&e)),
        E::IoError(e) => unavailable(chain(&e)),
        E::InvalidUri(e) => Error::Config { field: "endpoints".into(), reason: e.to_string() },
        E::InvalidArgs(reason) => Error::Config { field: "endpoints".into(), reason },
        E::WatchError(reason) | E::LeaseKeepAliveError(reason) => {
            Error::Unavailable { endpoints: endpoints.to_string(), reason }
        }
        other => Error::Server { reason: other.to_string() },
    }
}

/// gRPC status codes we branch on, as the numbers `tonic::Code` converts to.
mod tonic_code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const UNAVAILABLE: i32 = 14;
}

/// Whether the error is the connection's fault (the endpoint is down, unreachable, or
/// dropped the connection) rather than etcd's answer.
pub(crate) fn is_connection_failure(err: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match err {
        E::GRpcStatus(status) => {
            matches!(
                status.code() as i32,
                tonic_code::UNAVAILABLE | tonic_code::UNKNOWN | tonic_code::CANCELLED
            ) && is_transport(&status_text(status.message(), status))
        }
        E::TransportError(_) | E::IoError(_) => true,
        _ => false,
    }
}

/// Whether the request provably never reached etcd: the connection could not be made.
pub(crate) fn was_not_sent(err: &etcd_client::Error) -> bool {
    is_connection_failure(err) && {
        let debug = format!("{err:?}");
        debug.contains("ConnectError") || debug.contains("tcp connect error")
    }
}

/// Whether a status message comes from the connection rather than from etcd itself.
fn is_transport(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    ["transport", "connect", "connection", "broken pipe", "tls", "certificate", "alert", "h2"]
        .iter()
        .any(|m| reason.contains(m))
}

/// A gRPC status as its message followed by its sources (where tonic keeps the real cause,
/// e.g. "received fatal alert: BadCertificate").
fn status_text(message: &str, status: &dyn std::error::Error) -> String {
    let mut text = message.to_string();
    append_sources(&mut text, status.source());
    text
}

/// An error and all its sources, joined with ": ".
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    append_sources(&mut text, err.source());
    text
}

fn append_sources(text: &mut String, mut source: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = inner.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> Kv {
        Kv { key: "/k".into(), value: vec![], mod_revision: 7, create_revision: 1, version: 2 }
    }

    #[test]
    fn retryable_kinds() {
        let unavailable = Error::Unavailable { endpoints: "e".into(), reason: "r".into() };
        let timeout = Error::Timeout { op: "get".into(), after: Duration::from_secs(1) };
        let conflict = Error::Conflict { key: "/k".into(), current: Box::new(kv()) };
        assert!(unavailable.is_retryable() && timeout.is_retryable() && conflict.is_retryable());
        for error in [
            Error::AlreadyExists { key: "/k".into(), current: Box::new(kv()) },
            Error::NotFound { key: "/k".into() },
            Error::Tls { path: None, reason: "r".into() },
            Error::Config { field: "endpoints".into(), reason: "r".into() },
            Error::Decode { key: "/k".into(), reason: "r".into() },
            Error::Compacted { revision: 3 },
            Error::Server { reason: "r".into() },
        ] {
            assert!(!error.is_retryable(), "{error:?}");
        }
    }

    #[test]
    fn messages_name_what_failed() {
        let tls = Error::Tls { path: Some("/etc/ca.pem".into()), reason: "cannot read".into() };
        assert_eq!(tls.to_string(), "TLS error with /etc/ca.pem: cannot read");
        let conflict = Error::Conflict { key: "/k".into(), current: Box::new(kv()) };
        assert_eq!(conflict.to_string(), "/k was modified concurrently (now at mod revision 7)");
        let config = Error::Config { field: "ETCD_ENDPOINTS".into(), reason: "empty".into() };
        assert!(config.to_string().contains("ETCD_ENDPOINTS"));
    }

    #[test]
    fn transport_words_are_recognised() {
        assert!(is_transport("transport error: Connection refused"));
        assert!(!is_transport("etcdserver: mvcc: required revision has been compacted"));
    }
}
