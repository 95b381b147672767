//! The one error type a CNI invocation can end in, with its spec error code and JSON form.

use serde::Serialize;

use super::CniVersion;
use crate::dataplane::Error as DataplaneError;

/// Any error the plugin reports to the runtime. Each variant maps to one CNI error code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Code 1: the config asks for a spec version tabby does not speak.
    #[error("incompatible CNI version {requested:?}; supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0")]
    IncompatibleVersion { requested: String },

    /// Code 1: the verb does not exist in the config's version (CHECK before 0.4.0, GC and
    /// STATUS before 1.1.0).
    #[error("{verb} is not defined for cniVersion {version}")]
    VerbNeedsNewerVersion { verb: &'static str, version: CniVersion },

    /// Code 2: a field tabby understands but cannot honour with this value.
    #[error("unsupported value {value:?} for field {field}")]
    UnsupportedField { field: String, value: String },

    /// Code 3: the container (its network namespace) does not exist.
    #[error("container unknown: {reason}")]
    UnknownContainer { reason: String },

    /// Code 4: a `CNI_*` environment variable is missing or malformed.
    #[error("invalid environment variable {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },

    /// Code 5: an I/O operation outside the kernel network stack failed.
    #[error("I/O failure: {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// Code 6: stdin is not the JSON it should be.
    #[error("failed to decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },

    /// Code 7: the network config is well-formed JSON but a field value is invalid.
    #[error("invalid network config field {field}: {reason}")]
    InvalidConfig { field: String, reason: String },

    /// Code 11: a transient failure (datastore unreachable, contention); retrying can help.
    #[error("try again later: {what}")]
    TryAgainLater {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// Code 50: STATUS says the plugin cannot serve ADD now.
    #[error("plugin not available: {reason}")]
    NotAvailable { reason: String },

    /// Code 51: STATUS says the plugin cannot serve ADD and existing containers may have
    /// limited connectivity.
    #[error("plugin not available, existing containers may have limited connectivity: {reason}")]
    LimitedConnectivity { reason: String },

    /// A delegated plugin (IPAM) failed; its own code and message are passed on unchanged.
    #[error("{plugin}: {msg}")]
    Delegate { plugin: String, code: u32, msg: String, details: String },

    /// A kernel operation on the attachment failed; the code depends on the cause (3 for
    /// a missing namespace, 4 for a path that is not one, 11 when the kernel was busy).
    #[error(transparent)]
    Dataplane(#[from] crate::dataplane::Error),

    /// Code 999: CHECK found the attachment different from what ADD made.
    #[error("attachment does not match its configuration: {}", .drift.join("; "))]
    CheckFailed { drift: Vec<String> },

    /// Code 999: anything else (kernel refusals, broken invariants), with the failing step.
    #[error("{what}")]
    Internal {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// The CNI error code of this error.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } | Error::VerbNeedsNewerVersion { .. } => 1,
            Error::UnsupportedField { .. } => 2,
            Error::UnknownContainer { .. } => 3,
            Error::InvalidEnv { .. } => 4,
            Error::Io { .. } => 5,
            Error::Decode { .. } => 6,
            Error::InvalidConfig { .. } => 7,
            Error::TryAgainLater { .. } => 11,
            Error::NotAvailable { .. } => 50,
            Error::LimitedConnectivity { .. } => 51,
            Error::Delegate { code, .. } => *code,
            Error::Dataplane(e) => match e {
                DataplaneError::NetnsMissing { .. } => 3,
                DataplaneError::NotANetns { .. } | DataplaneError::SameNetns { .. } => 4,
                e if e.is_retryable() => 11,
                _ => 999,
            },
            Error::CheckFailed { .. } | Error::Internal { .. } => 999,
        }
    }

    /// Whether the same invocation may succeed if the runtime retries it later.
    pub fn is_retryable(&self) -> bool {
        self.code() == 11
    }

    /// A code-999 error for a failed step, keeping its cause.
    pub fn internal(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Internal { what: what.into(), source: Some(source.into()) }
    }

    /// A code-7 error naming the field.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidConfig { field: field.into(), reason: reason.into() }
    }

    /// The error JSON (`{cniVersion, code, msg, details}`) the runtime reads from stdout.
    pub fn to_reply(&self, version: CniVersion) -> ErrorReply {
        let (msg, details) = match self {
            Error::Delegate { plugin, msg, details, .. } => {
                (format!("{plugin}: {msg}"), details.clone())
            }
            other => (other.to_string(), cause_chain(other)),
        };
        ErrorReply { cni_version: version.as_str(), code: self.code(), msg, details }
    }
}

/// The causes below an error, outermost first, joined with ": " (empty when there are none).
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut next = err.source();
    while let Some(cause) = next {
        parts.push(cause.to_string());
        next = cause.source();
    }
    parts.join(": ")
}

/// The CNI error object, identical in every spec version.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ErrorReply {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec_table() {
        let io = || std::io::Error::other("disk");
        let cases: Vec<(Error, u32)> = vec![
            (Error::IncompatibleVersion { requested: "9".into() }, 1),
            (Error::UnsupportedField { field: "a".into(), value: "b".into() }, 2),
            (Error::UnknownContainer { reason: "gone".into() }, 3),
            (Error::InvalidEnv { var: "CNI_IFNAME", reason: "missing".into() }, 4),
            (Error::Io { what: "x".into(), source: io() }, 5),
            (Error::Decode { what: "stdin", reason: "eof".into() }, 6),
            (Error::config("mtu", "too small"), 7),
            (Error::TryAgainLater { what: "etcd".into(), source: None }, 11),
            (Error::NotAvailable { reason: "r".into() }, 50),
            (Error::LimitedConnectivity { reason: "r".into() }, 51),
            (Error::internal("netlink", io()), 999),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
            assert_eq!(err.is_retryable(), code == 11);
        }
    }

    #[test]
    fn reply_names_the_variable_and_carries_the_cause() {
        let err = Error::InvalidEnv { var: "CNI_CONTAINERID", reason: "not set".into() };
        let json = serde_json::to_value(err.to_reply(CniVersion::V0_2_0)).unwrap();
        assert_eq!(json["cniVersion"], "0.2.0");
        assert_eq!(json["code"], 4);
        assert!(json["msg"].as_str().unwrap().contains("CNI_CONTAINERID"));
        assert!(json.get("details").is_none(), "empty details are omitted");

        let err = Error::internal("create veth", std::io::Error::other("EBUSY"));
        let reply = err.to_reply(CniVersion::V1_0_0);
        assert_eq!(reply.details, "EBUSY");
    }

    #[test]
    fn dataplane_errors_map_to_codes_by_cause() {
        use crate::dataplane::NetlinkError;
        let netlink = |errno| DataplaneError::Netlink {
            op: "add route".into(),
            source: NetlinkError::Kernel(std::io::Error::from_raw_os_error(errno)),
        };
        let cases = [
            (DataplaneError::NetnsMissing { path: "/x".into() }, 3),
            (DataplaneError::NotANetns { path: "/etc/hostname".into() }, 4),
            (DataplaneError::SameNetns { path: "/proc/1/ns/net".into() }, 4),
            (netlink(libc::EBUSY), 11),
            (netlink(libc::EPERM), 999),
        ];
        for (err, code) in cases {
            let err = Error::from(err);
            assert_eq!(err.code(), code, "{err}");
        }
        let reply = Error::from(netlink(libc::EPERM)).to_reply(CniVersion::V1_0_0);
        assert_eq!(reply.msg, "add route");
        assert!(reply.details.starts_with("kernel refused: "), "{}", reply.details);
    }

    #[test]
    fn delegate_errors_keep_their_code() {
        let err = Error::Delegate {
            plugin: "host-local".into(),
            code: 11,
            msg: "busy".into(),
            details: "lock".into(),
        };
        let reply = err.to_reply(CniVersion::V1_0_0);
        assert_eq!((reply.code, reply.details.as_str()), (11, "lock"));
        assert!(err.is_retryable());
    }
}
