//! The etcd side of tabbyctl: the connection built from the global flags, where a resource's
//! key is, and reading stored resources back with Calico's server-set metadata.

use std::time::SystemTime;

use datastore::client::{Client, Kv};
use datastore::keys::{KeyLayout, Kind};
use datastore::model::{parse_resource, AnyResource};

use crate::cli::EtcdArgs;
use crate::error::CtlError;

/// etcd's default `--max-txn-ops`: the most resources one all-or-nothing write can hold.
pub const MAX_TXN_OPS: usize = 128;

/// A connected client and the key layout under the chosen prefix.
#[derive(Debug, Clone)]
pub struct Store {
    pub client: Client,
    pub layout: KeyLayout,
}

impl Store {
    /// Validates the flags (errors name the setting) and connects.
    pub async fn connect(args: &EtcdArgs) -> Result<Store, CtlError> {
        let config = args.config().map_err(|e| CtlError::Invalid(e.to_string()))?;
        let layout = args.key_layout().map_err(|e| CtlError::Invalid(e.to_string()))?;
        let client =
            Client::connect(&config).await.map_err(CtlError::etcd("cannot connect to etcd"))?;
        Ok(Store { client, layout })
    }

    /// The key `resource` is stored under.
    pub fn key_of(&self, resource: &AnyResource) -> String {
        self.layout.resource(resource.kind(), resource.namespace(), resource.name())
    }

    /// Every resource under `prefix`, decoded, and the revision of the listing. Records that
    /// do not decode are returned as messages naming their key rather than failing the list.
    pub async fn list_resources(
        &self,
        prefix: &str,
    ) -> Result<(Vec<AnyResource>, i64, Vec<String>), CtlError> {
        let listing = self
            .client
            .list(prefix)
            .await
            .map_err(CtlError::etcd(format!("cannot list {prefix}")))?;
        let mut resources = Vec::with_capacity(listing.kvs.len());
        let mut bad = Vec::new();
        for kv in &listing.kvs {
            match decode_stored(kv) {
                Ok(r) => resources.push(r),
                Err(e) => bad.push(e.to_string()),
            }
        }
        Ok((resources, listing.revision, bad))
    }
}

/// A stored resource with `metadata.resourceVersion` filled from the key's mod revision, as
/// Calico fills it.
pub fn decode_stored(kv: &Kv) -> Result<AnyResource, CtlError> {
    let mut resource = parse_resource(&kv.value).map_err(|e| {
        CtlError::Invalid(format!("stored value at {} does not decode: {e}", kv.key))
    })?;
    resource.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(resource)
}

/// A kind as typed by an operator (name, plural or alias, any case).
pub fn parse_kind(text: &str) -> Result<Kind, CtlError> {
    text.parse::<Kind>().map_err(|e| CtlError::Invalid(e.to_string()))
}

/// A random (version 4) UUID for `metadata.uid`, as Calico sets at create.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex_string(&b);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Now, as `creationTimestamp` holds it (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_is_a_v4_uuid() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.as_bytes()[14], b'4');
        assert!(matches!(uid.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(uid, new_uid());
    }
}
