//! VERSION: which spec versions tabby speaks, answered in the version asked about.

use serde_json::Value;

use crate::spec::{CniVersion, VersionReply};

pub fn version(asked: CniVersion) -> Value {
    serde_json::to_value(VersionReply::new(asked)).unwrap_or(Value::Null)
}
