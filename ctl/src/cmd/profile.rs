//! The v1 profile commands against etcd: read the profile, apply the pure edit from
//! [`crate::v1`], write it back by compare-and-swap on its mod revision.

use datastore::client::{Error as EtcdError, Kv};
use datastore::keys::Kind;
use datastore::model::{AnyResource, Profile};

use crate::error::CtlError;
use crate::output::Table;
use crate::store::{new_uid, now_rfc3339, Store};
use crate::v1::{self, Change, EditOp, ProfileCommand, V1Error};

/// How often an edit that is safe to re-apply is retried after losing a race.
const ATTEMPTS: usize = 5;

/// Runs a parsed profile command; returns what to print. `RuleUpdate` must already have been
/// turned into an [`EditOp::RuleUpdate`] edit by the caller (it reads stdin).
pub async fn run(store: &Store, command: ProfileCommand) -> Result<String, CtlError> {
    match command {
        ProfileCommand::Show { detailed } => show(store, detailed).await,
        ProfileCommand::Remove { name, no_check } => remove(store, &name, no_check).await,
        ProfileCommand::Edit { name, op } => edit(store, &name, &op).await,
        ProfileCommand::TagShow { name } => Ok(v1::tag_show(&load(store, &name).await?.0)),
        ProfileCommand::RuleShow { name } => Ok(v1::rule_show(&load(store, &name).await?.0)),
        ProfileCommand::RuleJson { name } => Ok(v1::rule_json(&load(store, &name).await?.0)?),
        ProfileCommand::RuleUpdate { .. } => Err(CtlError::Usage(
            "rule update reads its rules from stdin; none were read".to_owned(),
        )),
    }
}

fn key(store: &Store, name: &str) -> String {
    store.layout.resource(Kind::Profile, None, name)
}

async fn read(store: &Store, name: &str) -> Result<Option<(Profile, Kv)>, CtlError> {
    let key = key(store, name);
    let Some(kv) =
        store.client.get(&key).await.map_err(CtlError::etcd(format!("cannot read {key}")))?
    else {
        return Ok(None);
    };
    let profile = Profile::from_json(&kv.value)
        .map_err(|e| CtlError::Invalid(format!("stored profile at {key} does not decode: {e}")))?;
    Ok(Some((profile, kv)))
}

async fn load(store: &Store, name: &str) -> Result<(Profile, Kv), CtlError> {
    read(store, name).await?.ok_or_else(|| V1Error::ProfileNotFound(name.to_owned()).into())
}

async fn edit(store: &Store, name: &str, op: &EditOp) -> Result<String, CtlError> {
    let key = key(store, name);
    let attempts = if op.safe_to_retry() { ATTEMPTS } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = read(store, name).await?;
        let outcome = v1::edit(name, current.as_ref().map(|(p, _)| p), op)?;
        let message = outcome.message.map(|m| m + "\n").unwrap_or_default();
        let written = match outcome.change {
            Change::None => return Ok(message),
            Change::Create(mut profile) => {
                profile.metadata.uid = Some(new_uid());
                profile.metadata.creation_timestamp = Some(now_rfc3339());
                profile.metadata.resource_version = None;
                let json = encode(&profile)?;
                store.client.create(&key, json).await
            }
            Change::Update(mut profile) => {
                profile.metadata.resource_version = None;
                let json = encode(&profile)?;
                let revision = current.as_ref().map_or(0, |(_, kv)| kv.mod_revision);
                store.client.update(&key, json, revision).await
            }
        };
        match written {
            Ok(_) => return Ok(message),
            Err(
                EtcdError::Conflict { .. }
                | EtcdError::AlreadyExists { .. }
                | EtcdError::NotFound { .. },
            ) if attempt < attempts => {
                tracing::debug!(profile = name, attempt, "profile changed concurrently; retrying");
            }
            Err(EtcdError::Conflict { current, .. }) => {
                return Err(CtlError::Conflict(vec![format!(
                    "profile {name:?} was modified while it was being edited (now at revision {})",
                    current.mod_revision
                )]))
            }
            Err(EtcdError::AlreadyExists { .. }) => {
                return Err(CtlError::Conflict(vec![format!(
                    "profile {name:?} was created concurrently"
                )]))
            }
            Err(EtcdError::NotFound { .. }) => {
                return Err(V1Error::ProfileNotFound(name.to_owned()).into())
            }
            Err(e) => {
                return Err(CtlError::Etcd { context: format!("cannot write {key}"), source: e })
            }
        }
    }
}

fn encode(profile: &Profile) -> Result<Vec<u8>, CtlError> {
    profile.to_json().map_err(|e| CtlError::Invalid(e.to_string()))
}

async fn endpoints(store: &Store) -> Result<Vec<datastore::model::WorkloadEndpoint>, CtlError> {
    let prefix = store.layout.resources_prefix(Kind::WorkloadEndpoint);
    let (resources, _, bad) = store.list_resources(&prefix).await?;
    for b in bad {
        tracing::warn!("{b}");
    }
    Ok(resources
        .into_iter()
        .filter_map(|r| match r {
            AnyResource::WorkloadEndpoint(w) => Some(w),
            _ => None,
        })
        .collect())
}

async fn remove(store: &Store, name: &str, no_check: bool) -> Result<String, CtlError> {
    let (_, kv) = load(store, name).await?;
    if !no_check {
        let users: Vec<String> = endpoints(store)
            .await?
            .into_iter()
            .filter(|w| w.spec.profiles.iter().any(|p| p == name))
            .map(|w| format!("{}/{}", w.namespace().unwrap_or_default(), w.name()))
            .collect();
        if !users.is_empty() {
            return Err(CtlError::Refused(vec![format!(
                "cannot remove profile {name:?}: {} workload endpoint(s) use it ({}); use --no-check to remove it anyway",
                users.len(),
                users.join(", ")
            )]));
        }
    }
    let key = key(store, name);
    match store.client.delete(&key, Some(kv.mod_revision)).await {
        Ok(_) => Ok(format!("Deleted profile {name}\n")),
        Err(EtcdError::Conflict { .. }) => Err(CtlError::Conflict(vec![format!(
            "profile {name:?} was modified while it was being removed"
        )])),
        Err(EtcdError::NotFound { .. }) => Err(V1Error::ProfileNotFound(name.to_owned()).into()),
        Err(e) => Err(CtlError::Etcd { context: format!("cannot delete {key}"), source: e }),
    }
}

async fn show(store: &Store, detailed: bool) -> Result<String, CtlError> {
    let prefix = store.layout.resources_prefix(Kind::Profile);
    let (profiles, _, bad) = store.list_resources(&prefix).await?;
    for b in bad {
        tracing::warn!("{b}");
    }
    let names: Vec<String> = profiles.iter().map(|p| p.name().to_owned()).collect();
    if !detailed {
        let mut t = Table::new(&["NAME"]);
        for name in names {
            t.push(vec![name]);
        }
        return Ok(t.render());
    }
    let endpoints = endpoints(store).await?;
    let mut t = Table::new(&["NAME", "NODE", "ORCHESTRATOR", "WORKLOAD", "INTERFACE"]);
    for name in names {
        let members: Vec<_> =
            endpoints.iter().filter(|w| w.spec.profiles.contains(&name)).collect();
        if members.is_empty() {
            t.push(vec![name.clone(), "None".into(), "None".into(), "None".into(), "None".into()]);
        }
        for w in members {
            let s = &w.spec;
            let field = |v: &Option<String>| v.clone().unwrap_or_default();
            t.push(vec![
                name.clone(),
                field(&s.node),
                field(&s.orchestrator),
                s.workload.clone().or_else(|| s.container_id.clone()).unwrap_or_default(),
                field(&s.interface_name),
            ]);
        }
    }
    Ok(t.render())
}
