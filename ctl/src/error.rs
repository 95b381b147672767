//! tabbyctl's errors, and the exit status each maps to (1 for errors, 2 for usage).

use datastore::client;

use crate::input::InputErrors;
use crate::v1::V1Error;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line is wrong in a way clap could not see (exit status 2).
    #[error("{0}")]
    Usage(String),

    /// A v1 profile command failed (usage errors exit 2, the rest 1).
    #[error(transparent)]
    V1(#[from] V1Error),

    /// Input documents failed to parse or validate; nothing was written.
    #[error("{0}")]
    Input(InputErrors),

    /// Talking to etcd failed; `context` says what tabbyctl was doing.
    #[error("{context}: {source}")]
    Etcd { context: String, source: client::Error },

    #[error("{0}")]
    NotFound(String),

    /// The write was refused as a whole (one line per resource at fault); nothing was written.
    #[error("{}\nnothing was written", .0.join("\n"))]
    Refused(Vec<String>),

    /// A compare-and-swap lost to a concurrent writer; nothing was written.
    #[error("{}\nnothing was written; read the resources again and retry", .0.join("\n"))]
    Conflict(Vec<String>),

    /// Data that is wrong in some other way (a stored value that does not decode, say).
    #[error("{0}")]
    Invalid(String),

    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },

    #[error("cannot write output: {0}")]
    Output(String),
}

impl CtlError {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::V1(e) if e.is_usage() => 2,
            _ => 1,
        }
    }

    /// Whether running the same command again may succeed (etcd was unreachable, or another
    /// writer got there first).
    pub fn is_retryable(&self) -> bool {
        match self {
            CtlError::Etcd { source, .. } => source.is_retryable(),
            CtlError::Conflict(_) => true,
            _ => false,
        }
    }

    /// A closure for `map_err` that wraps an etcd error with what was being done.
    pub(crate) fn etcd(context: impl Into<String>) -> impl FnOnce(client::Error) -> CtlError {
        let context = context.into();
        move |source| CtlError::Etcd { context, source }
    }
}
