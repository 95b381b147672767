//! `apply`, `create` and `replace`: every document validated first, then all written in one
//! etcd transaction whose compare-and-swap guards make a concurrent change a conflict rather
//! than half a write.

use std::collections::HashMap;

use datastore::client::{Cmp, Kv, Op, Read};
use serde_json::Value;

use crate::error::CtlError;
use crate::input::Document;
use crate::store::{new_uid, now_rfc3339, Store, MAX_TXN_OPS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Create what is missing, replace what exists.
    Apply,
    /// Refuse any resource that exists.
    Create,
    /// Refuse any resource that is missing or changed since `resourceVersion`.
    Replace,
}

impl WriteMode {
    fn past_tense(self) -> &'static str {
        match self {
            WriteMode::Apply => "applied",
            WriteMode::Create => "created",
            WriteMode::Replace => "replaced",
        }
    }
}

/// What one document's write expects to find.
struct Planned {
    key: String,
    expect: Cmp,
}

/// Writes `docs` all or nothing; returns the success message.
pub async fn write(store: &Store, mode: WriteMode, docs: &[Document]) -> Result<String, CtlError> {
    if docs.len() > MAX_TXN_OPS {
        return Err(CtlError::Invalid(format!(
            "{} resources given; one all-or-nothing write holds at most {MAX_TXN_OPS} (etcd's transaction limit): split the file",
            docs.len()
        )));
    }
    let keys: Vec<String> = docs.iter().map(|d| store.key_of(&d.resource)).collect();
    let mut refused = duplicates(docs, &keys);
    if !refused.is_empty() {
        return Err(CtlError::Refused(refused));
    }
    let reads: Vec<Read> = keys.iter().map(|k| Read::Key(k.clone())).collect();
    let current = store
        .client
        .get_many(&reads)
        .await
        .map_err(CtlError::etcd("cannot read the current resources"))?;

    let now = now_rfc3339();
    let mut conflicts = Vec::new();
    let mut planned = Vec::with_capacity(docs.len());
    let mut ops = Vec::with_capacity(docs.len());
    for ((doc, key), listing) in docs.iter().zip(&keys).zip(current) {
        let stored = listing.kvs.into_iter().next();
        let mut resource = doc.resource.clone();
        let what = format!("{} ({})", doc.origin, doc.describe());
        let given = resource.metadata().resource_version.as_deref().map(str::trim);
        let wanted = match given.filter(|rv| !rv.is_empty()).map(|rv| (rv, rv.parse::<i64>())) {
            None => None,
            Some((_, Ok(rv))) => Some(rv),
            Some((rv, Err(_))) => {
                refused.push(format!(
                    "{what}: metadata.resourceVersion: {rv:?} is not a revision number"
                ));
                continue;
            }
        };
        let expect = match (mode, &stored, wanted) {
            (WriteMode::Create, Some(_), _) => {
                refused.push(format!("{what}: already exists"));
                continue;
            }
            (WriteMode::Replace, None, _) => {
                refused.push(format!("{what}: does not exist"));
                continue;
            }
            (WriteMode::Apply, None, Some(rv)) => {
                conflicts.push(format!(
                    "{what}: metadata.resourceVersion is {rv} but the resource no longer exists"
                ));
                continue;
            }
            (_, Some(kv), Some(rv)) if rv != kv.mod_revision => {
                conflicts.push(format!(
                    "{what}: stale metadata.resourceVersion {rv}: the resource was modified since (now at {})",
                    kv.mod_revision
                ));
                continue;
            }
            (_, None, _) => {
                let meta = resource.metadata_mut();
                meta.uid = Some(new_uid());
                meta.creation_timestamp = Some(now.clone());
                Cmp::Absent(key.clone())
            }
            (_, Some(kv), _) => {
                keep_server_metadata(&mut resource, kv);
                Cmp::ModRevision(key.clone(), kv.mod_revision)
            }
        };
        resource.metadata_mut().resource_version = None;
        let value = resource.to_json().map_err(|e| CtlError::Invalid(format!("{what}: {e}")))?;
        ops.push(Op::Put { key: key.clone(), value, lease: None });
        planned.push(Planned { key: key.clone(), expect });
    }
    if !conflicts.is_empty() {
        conflicts.extend(refused);
        return Err(CtlError::Conflict(conflicts));
    }
    if !refused.is_empty() {
        return Err(CtlError::Refused(refused));
    }

    let cmps: Vec<Cmp> = planned.iter().map(|p| p.expect.clone()).collect();
    let outcome =
        store.client.txn(cmps, ops).await.map_err(CtlError::etcd("cannot write the resources"))?;
    if !outcome.succeeded {
        return Err(CtlError::Conflict(lost_races(docs, &planned, &outcome.current)));
    }
    let names: Vec<String> =
        docs.iter().map(|d| format!("{}({})", d.resource.kind(), d.resource.name())).collect();
    Ok(format!(
        "Successfully {} {} resource(s): {}\n",
        mode.past_tense(),
        docs.len(),
        names.join(", ")
    ))
}

/// Two documents for one key would make the transaction ambiguous (and etcd refuses it).
fn duplicates(docs: &[Document], keys: &[String]) -> Vec<String> {
    let mut first: HashMap<&str, &Document> = HashMap::new();
    let mut out = Vec::new();
    for (doc, key) in docs.iter().zip(keys) {
        if let Some(earlier) = first.insert(key, doc) {
            out.push(format!(
                "{} ({}): the same resource is also in {}",
                doc.origin,
                doc.describe(),
                earlier.origin
            ));
        }
    }
    out
}

/// An update keeps what the server set at create (`uid`, `creationTimestamp`), as Calico does.
fn keep_server_metadata(resource: &mut datastore::model::AnyResource, stored: &Kv) {
    let stored: Value = serde_json::from_slice(&stored.value).unwrap_or(Value::Null);
    let field = |name: &str| {
        stored.pointer(&format!("/metadata/{name}")).and_then(Value::as_str).map(str::to_owned)
    };
    let meta = resource.metadata_mut();
    meta.uid = field("uid").or_else(|| Some(new_uid()));
    meta.creation_timestamp = field("creationTimestamp").or_else(|| meta.creation_timestamp.take());
}

/// Which resources changed between our read and our write.
fn lost_races(docs: &[Document], planned: &[Planned], current: &[Kv]) -> Vec<String> {
    let now: HashMap<&str, i64> =
        current.iter().map(|kv| (kv.key.as_str(), kv.mod_revision)).collect();
    let mut out = Vec::new();
    for (doc, plan) in docs.iter().zip(planned) {
        let found = now.get(plan.key.as_str()).copied();
        let changed = match (&plan.expect, found) {
            (Cmp::Absent(_), Some(_)) => Some("was created concurrently".to_owned()),
            (Cmp::ModRevision(_, rev), Some(now)) if *rev != now => {
                Some(format!("was modified concurrently (now at revision {now})"))
            }
            (Cmp::ModRevision(..), None) => Some("was deleted concurrently".to_owned()),
            _ => None,
        };
        if let Some(changed) = changed {
            out.push(format!("{} ({}): {changed}", doc.origin, doc.describe()));
        }
    }
    if out.is_empty() {
        out.push("a resource changed while it was being written".to_owned());
    }
    out
}
