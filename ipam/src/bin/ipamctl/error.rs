//! ipamctl's errors: a bad argument (named), an IPAM or etcd failure, or unwritable output.
//! All of them exit 1; clap's usage errors exit 2 before any of these can happen.

use ipam::IpamError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An argument that parsed as text but is not a valid value; nothing was done.
    #[error("invalid {arg} {value:?}: {reason}")]
    InvalidArg { arg: &'static str, value: String, reason: String },

    /// etcd cannot be reached or refused a request.
    #[error(transparent)]
    Etcd(#[from] datastore::client::Error),

    #[error(transparent)]
    Ipam(#[from] IpamError),

    /// A command that ran but could not do what was asked (say, an address held by another
    /// handle than the one named).
    #[error("{0}")]
    Refused(String),

    #[error("cannot write output: {0}")]
    Output(String),
}

impl CliError {
    pub fn invalid(arg: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        CliError::InvalidArg { arg, value: value.into(), reason: reason.into() }
    }

    /// Whether running the same command again may succeed (etcd unreachable, lost a race).
    pub fn is_retryable(&self) -> bool {
        match self {
            CliError::Etcd(e) => e.is_retryable(),
            CliError::Ipam(e) => e.is_retryable(),
            _ => false,
        }
    }
}
