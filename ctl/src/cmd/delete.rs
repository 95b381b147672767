//! `delete KIND NAME` and `delete -f FILE` (all named resources or none).

use datastore::client::{Cmp, Op, Read};

use crate::error::CtlError;
use crate::input::Document;
use crate::store::{parse_kind, Store, MAX_TXN_OPS};

/// Deletes one resource by kind and name.
pub async fn by_name(
    store: &Store,
    kind: &str,
    name: &str,
    namespace: &str,
) -> Result<String, CtlError> {
    let kind = parse_kind(kind)?;
    let namespace = kind.namespaced().then_some(namespace);
    let key = store.layout.resource(kind, namespace, name);
    let deleted = store
        .client
        .delete(&key, None)
        .await
        .map_err(CtlError::etcd(format!("cannot delete {key}")))?;
    if !deleted {
        let ns = namespace.map(|ns| format!(" in namespace {ns:?}")).unwrap_or_default();
        return Err(CtlError::NotFound(format!("{kind} {name:?}{ns} not found")));
    }
    Ok(format!("Successfully deleted 1 resource(s): {kind}({name})\n"))
}

/// Deletes every resource the documents name, in one transaction: if any is missing (or,
/// with `resourceVersion`, changed), none is deleted.
pub async fn documents(store: &Store, docs: &[Document]) -> Result<String, CtlError> {
    if docs.len() > MAX_TXN_OPS {
        return Err(CtlError::Invalid(format!(
            "{} resources given; one all-or-nothing delete holds at most {MAX_TXN_OPS}",
            docs.len()
        )));
    }
    let keys: Vec<String> = docs.iter().map(|d| store.key_of(&d.resource)).collect();
    let reads: Vec<Read> = keys.iter().map(|k| Read::Key(k.clone())).collect();
    let current = store
        .client
        .get_many(&reads)
        .await
        .map_err(CtlError::etcd("cannot read the resources to delete"))?;
    let mut refused = Vec::new();
    let mut cmps = Vec::new();
    let mut ops = Vec::new();
    for ((doc, key), listing) in docs.iter().zip(&keys).zip(current) {
        let what = format!("{} ({})", doc.origin, doc.describe());
        let Some(kv) = listing.kvs.into_iter().next() else {
            refused.push(format!("{what}: does not exist"));
            continue;
        };
        let wanted = doc
            .resource
            .metadata()
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse::<i64>().ok());
        if let Some(rv) = wanted.filter(|rv| *rv != kv.mod_revision) {
            refused.push(format!(
                "{what}: stale metadata.resourceVersion {rv}: modified since (now at {})",
                kv.mod_revision
            ));
            continue;
        }
        if !cmps.iter().any(|c: &Cmp| c.key() == key) {
            cmps.push(Cmp::ModRevision(key.clone(), kv.mod_revision));
            ops.push(Op::Delete { key: key.clone() });
        }
    }
    if !refused.is_empty() {
        return Err(CtlError::Refused(refused));
    }
    let outcome =
        store.client.txn(cmps, ops).await.map_err(CtlError::etcd("cannot delete the resources"))?;
    if !outcome.succeeded {
        return Err(CtlError::Conflict(vec![
            "a resource changed or was deleted between reading and deleting it".to_owned(),
        ]));
    }
    let names: Vec<String> =
        docs.iter().map(|d| format!("{}({})", d.resource.kind(), d.resource.name())).collect();
    Ok(format!("Successfully deleted {} resource(s): {}\n", docs.len(), names.join(", ")))
}
