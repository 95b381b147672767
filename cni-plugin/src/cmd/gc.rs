//! GC (spec 1.1.0): removes what belongs to attachments the runtime no longer knows.
//!
//! With a delegate, GC is forwarded as the spec asks. With the in-process allocator, every
//! allocation of this network made on this node whose `(containerID, interface)` is not in
//! `cni.dev/valid-attachments` is released, and (for `tabby`, not for the bare IPAM plugin)
//! its workload endpoint and host veth are removed. One failure does not stop the rest.

use std::collections::{BTreeMap, BTreeSet};

use datastore::keys::Kind;
use datastore::model::WorkloadEndpoint;
use ipam::attr;
use ipam::inventory::Inventory;

use crate::dataplane::{self, host_veth_name, Netns};
use crate::ipam::{handle_for, Backend, InProcess};
use crate::spec::{Error, Maintenance};
use crate::store::endpoint::{self, ORCHESTRATOR};
use crate::store::store_error;

/// What GC removes besides addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Addresses only (the `tabby-ipam` plugin: the interfaces belong to its caller).
    Addresses,
    /// Addresses, workload endpoints and host veths (`tabby`).
    Attachments,
}

pub async fn gc(req: &Maintenance, backend: Option<&Backend>, scope: Scope) -> Result<(), Error> {
    let valid = req.conf.valid_attachments.as_ref().map_or(0, Vec::len);
    tracing::info!(valid_attachments = valid, "GC");
    match backend {
        None => Ok(()),
        Some(Backend::Delegate(d)) => d.gc(req),
        Some(Backend::InProcess(p)) => collect(req, p, scope).await,
    }
}

/// One attachment GC found stale.
#[derive(Debug, Default)]
struct Stale {
    handle: Option<String>,
    endpoint_keys: Vec<String>,
}

async fn collect(req: &Maintenance, p: &InProcess, scope: Scope) -> Result<(), Error> {
    let Some(valid) = &req.conf.valid_attachments else {
        // Without the list every attachment would look stale: refuse rather than wipe.
        return Err(Error::config(
            "cni.dev/valid-attachments",
            "required for GC (the runtime's list of live attachments)",
        ));
    };
    let valid: BTreeSet<(&str, &str)> =
        valid.iter().map(|a| (a.container_id.as_str(), a.ifname.as_str())).collect();
    let session = p.session();
    let (network, node) = (req.conf.name.as_str(), session.node());
    let client = session.client().await?;
    let keys = session.keys();
    let (inventory, endpoints) = session
        .bounded("read allocations", async {
            let endpoints = async {
                if scope == Scope::Addresses {
                    return Ok(Vec::new());
                }
                let prefix = keys.resources_prefix(Kind::WorkloadEndpoint);
                client
                    .list(&prefix)
                    .await
                    .map(|l| l.kvs)
                    .map_err(|e| store_error("list endpoints", &e))
            };
            let inventory = async {
                Inventory::load(client, keys)
                    .await
                    .map_err(|e| crate::ipam::inprocess::ipam_error("read allocations", &e))
            };
            let (inventory, endpoints) = tokio::join!(inventory, endpoints);
            Ok((inventory?, endpoints?))
        })
        .await?;

    let mut stale: BTreeMap<(String, String), Stale> = BTreeMap::new();
    for block in inventory.blocks.iter().filter_map(|b| b.block.as_ref().ok()) {
        for a in block.allocations() {
            let (Some(handle), Some(cid), Some(ifname)) =
                (a.handle, a.attrs.get(attr::CONTAINER_ID), a.attrs.get(attr::INTERFACE))
            else {
                continue;
            };
            // Only this network's allocations made here, recognised by their attributes and
            // by the handle they must then have (a network "a" must not collect "a.b").
            let ours = a.attrs.get(attr::NETWORK).map(String::as_str) == Some(network)
                && a.attrs.get(attr::NODE).map(String::as_str) == Some(node)
                && handle == handle_for(network, cid, ifname);
            if ours && !valid.contains(&(cid.as_str(), ifname.as_str())) {
                stale.entry((cid.clone(), ifname.clone())).or_default().handle = Some(handle);
            }
        }
    }
    for kv in &endpoints {
        let Ok(wep) = WorkloadEndpoint::from_json(&kv.value) else { continue };
        let spec = &wep.spec;
        let (Some(cid), Some(ifname)) = (&spec.container_id, &spec.endpoint) else { continue };
        let ours = spec.node.as_deref() == Some(node)
            && spec.orchestrator.as_deref() == Some(ORCHESTRATOR)
            && spec.profiles.iter().any(|p| p == network);
        if ours && !valid.contains(&(cid.as_str(), ifname.as_str())) {
            stale
                .entry((cid.clone(), ifname.clone()))
                .or_default()
                .endpoint_keys
                .push(kv.key.clone());
        }
    }

    let mut first_error = None;
    let mut note = |what: &str, e: Error| {
        tracing::warn!(error = %e, "GC: {what} failed; continuing");
        first_error.get_or_insert(e);
    };
    let host = Netns::current();
    for ((cid, ifname), s) in &stale {
        tracing::info!(container = %cid, %ifname, handle = ?s.handle, "GC: removing stale attachment");
        if let Some(handle) = &s.handle {
            match p.allocator().await {
                Ok(a) => {
                    if let Err(e) = Box::pin(a.release_by_handle(handle)).await {
                        note("release", crate::ipam::inprocess::ipam_error("release", &e));
                    }
                }
                Err(e) => note("release", e),
            }
        }
        if scope == Scope::Attachments {
            for key in &s.endpoint_keys {
                if let Err(e) = endpoint::delete(client, key, None).await {
                    note("endpoint removal", e);
                }
            }
            if let Err(e) = dataplane::teardown(&host, &host_veth_name(cid, ifname)) {
                note("veth removal", e.into());
            }
        }
    }
    tracing::info!(removed = stale.len(), "GC done");
    first_error.map_or(Ok(()), Err)
}
