//! The one error type of the resource model: what was wrong, and at which JSON field.

use crate::keys::Kind;

/// A resource that could not be decoded or failed validation. Every variant names the JSON
/// field at fault (`spec.cidr`, `spec.ingress[1].destination.ports[0]`), so an operator can
/// find it in the document they wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The bytes are not JSON, or a field has the wrong JSON type or an impossible value.
    #[error("{field}: {reason}")]
    Decode { field: String, reason: String },

    /// `kind` names no kind tabby stores.
    #[error("kind: unknown resource kind {kind:?}")]
    UnknownKind { kind: String },

    /// A typed decode found another kind than the one asked for.
    #[error("kind: expected {expected}, found {found:?}")]
    KindMismatch { expected: Kind, found: String },

    /// `apiVersion` is not `projectcalico.org/v3`.
    #[error("apiVersion: expected \"projectcalico.org/v3\", found {found:?}")]
    WrongApiVersion { found: String },

    /// A field decoded but breaks a rule of the model (range, format, consistency).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    /// A selector field does not parse; `position` is the byte offset of the error.
    #[error("{field}: invalid selector {selector:?} at position {position}: {message}")]
    Selector { field: String, selector: String, position: usize, message: String },

    /// Serialising a resource failed (only possible with hand-built `extra` maps).
    #[error("{field}: cannot encode: {reason}")]
    Encode { field: String, reason: String },
}

impl ModelError {
    /// The JSON path of the field at fault (`.` for the whole document).
    pub fn field(&self) -> &str {
        match self {
            ModelError::Decode { field, .. }
            | ModelError::Invalid { field, .. }
            | ModelError::Selector { field, .. }
            | ModelError::Encode { field, .. } => field,
            ModelError::UnknownKind { .. } | ModelError::KindMismatch { .. } => "kind",
            ModelError::WrongApiVersion { .. } => "apiVersion",
        }
    }

    /// Model errors describe the document itself: retrying with the same input cannot help.
    pub fn is_retryable(&self) -> bool {
        false
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Invalid { field: field.into(), reason: reason.into() }
    }

    pub(crate) fn from_path_error(err: &serde_path_to_error::Error<serde_json::Error>) -> Self {
        let inner = err.inner();
        let reason = if inner.line() == 0 {
            inner.to_string()
        } else {
            // serde_json appends the position to its message; keep the message alone and
            // put the position after it in our own words.
            let text = inner.to_string();
            let suffix = format!(" at line {} column {}", inner.line(), inner.column());
            let message = text.strip_suffix(&suffix).unwrap_or(&text);
            format!("{message} (line {}, column {})", inner.line(), inner.column())
        };
        ModelError::Decode { field: err.path().to_string(), reason }
    }
}
