//! Pool and IPAM-config management for `ipamctl`: every change validated first (CIDR, block
//! size, selector, overlap with existing pools), then written with compare-and-swap.

use datastore::client::{Client, Cmp, Error as StoreError, Read};
use datastore::keys::{KeyLayout, Kind};
use datastore::model::ipam::IpamConfig;
use datastore::model::{IpPool, IpPoolSpec, Resource};
use serde::Serialize;

use crate::allocator::decode_config;
use crate::error::{IpamError, Result};
use crate::pool::{find_overlap, Pool};
use crate::store::{decode_block, delete, put_json, unchanged};

/// A pool as stored: the validated view, the resource itself and its revision.
#[derive(Debug, Clone)]
pub struct StoredPool {
    pub pool: Pool,
    pub resource: IpPool,
    pub mod_revision: i64,
}

/// Every pool, valid ones decoded; invalid ones are returned as (key, reason).
pub async fn list_pools(
    client: &Client,
    keys: &KeyLayout,
) -> Result<(Vec<StoredPool>, Vec<(String, String)>)> {
    let listing = client
        .list(&keys.resources_prefix(Kind::IpPool))
        .await
        .map_err(|e| IpamError::store("list pools", e))?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for kv in &listing.kvs {
        let parsed = Resource::<IpPoolSpec>::from_json(&kv.value)
            .map_err(|e| e.to_string())
            .and_then(|r| Pool::from_resource(&r).map(|p| (p, r)).map_err(|e| e.to_string()));
        match parsed {
            Ok((pool, resource)) => {
                good.push(StoredPool { pool, resource, mod_revision: kv.mod_revision });
            }
            Err(reason) => bad.push((kv.key.clone(), reason)),
        }
    }
    Ok((good, bad))
}

/// Creates a pool after validating it and checking it overlaps no existing pool.
pub async fn create_pool(client: &Client, keys: &KeyLayout, resource: &IpPool) -> Result<Pool> {
    let mut resource = resource.clone();
    if resource.metadata.creation_timestamp.is_none() {
        resource.metadata.creation_timestamp = Some(crate::time::now_rfc3339());
    }
    let pool = Pool::from_resource(&resource)?;
    let (existing, _) = list_pools(client, keys).await?;
    let pools: Vec<Pool> = existing.iter().map(|s| s.pool.clone()).collect();
    if let Some(other) = find_overlap(&pools, &pool.name, pool.cidr) {
        return Err(IpamError::PoolOverlap {
            name: pool.name.clone(),
            cidr: pool.cidr,
            other: other.name.clone(),
            other_cidr: other.cidr,
        });
    }
    let key = keys.resource(Kind::IpPool, None, &pool.name);
    // Compare every pool read, so a concurrent add of an overlapping pool fails one of us.
    let mut cmps: Vec<Cmp> = existing
        .iter()
        .map(|s| unchanged(&keys.resource(Kind::IpPool, None, &s.pool.name), s.mod_revision))
        .collect();
    cmps.push(Cmp::Absent(key.clone()));
    let out = client
        .txn(cmps, vec![put_json(&key, &resource)?])
        .await
        .map_err(|e| IpamError::store("create pool", e))?;
    if !out.succeeded {
        if out.current.iter().any(|kv| kv.key == key) {
            return Err(IpamError::InvalidPool {
                name: pool.name.clone(),
                field: "metadata.name".into(),
                reason: "a pool with this name already exists".into(),
            });
        }
        return Err(IpamError::Conflict { op: "create pool", attempts: 1 });
    }
    tracing::info!(name = %pool.name, cidr = %pool.cidr, "created IP pool");
    Ok(pool)
}

/// Enables or disables a pool (a disabled pool hands out no new addresses; existing ones stay).
pub async fn set_pool_disabled(
    client: &Client,
    keys: &KeyLayout,
    name: &str,
    disabled: bool,
) -> Result<Pool> {
    let key = keys.resource(Kind::IpPool, None, name);
    let kv = client
        .get(&key)
        .await
        .map_err(|e| IpamError::store("read pool", e))?
        .ok_or_else(|| IpamError::PoolNotFound { name: name.to_string() })?;
    let mut resource =
        Resource::<IpPoolSpec>::from_json(&kv.value).map_err(|e| IpamError::InvalidPool {
            name: name.to_string(),
            field: e.field().to_string(),
            reason: e.to_string(),
        })?;
    resource.spec.disabled = disabled;
    let pool = Pool::from_resource(&resource)?;
    match client.update(&key, encode(&key, &resource)?, kv.mod_revision).await {
        Ok(_) => Ok(pool),
        Err(StoreError::Conflict { .. }) => {
            Err(IpamError::Conflict { op: "update pool", attempts: 1 })
        }
        Err(e) => Err(IpamError::store("update pool", e)),
    }
}

/// What [`delete_pool`] did besides deleting the pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolDeletion {
    /// Empty blocks of the pool deleted with their affinities.
    pub blocks_deleted: Vec<ipnet::IpNet>,
}

/// Deletes a pool. Refused while addresses of the pool are allocated unless `force`; the
/// pool's empty blocks and their affinities go with it.
pub async fn delete_pool(
    client: &Client,
    keys: &KeyLayout,
    name: &str,
    force: bool,
) -> Result<PoolDeletion> {
    let key = keys.resource(Kind::IpPool, None, name);
    let (pools, _) = list_pools(client, keys).await?;
    let Some(stored) = pools.iter().find(|p| p.pool.name == name) else {
        return match client.get(&key).await.map_err(|e| IpamError::store("read pool", e))? {
            // An invalid pool can always be deleted.
            Some(kv) => {
                client
                    .delete(&key, Some(kv.mod_revision))
                    .await
                    .map_err(|e| IpamError::store("delete pool", e))?;
                Ok(PoolDeletion::default())
            }
            None => Err(IpamError::PoolNotFound { name: name.to_string() }),
        };
    };
    let family = stored.pool.family();
    let listing = client
        .list(&keys.blocks_prefix(family))
        .await
        .map_err(|e| IpamError::store("list blocks", e))?;
    let blocks: Vec<_> = listing
        .kvs
        .iter()
        .filter_map(|kv| decode_block(keys, kv))
        .filter(|b| stored.pool.cidr.contains(&b.cidr))
        .collect();
    let in_use: u64 =
        blocks.iter().filter_map(|b| b.block.as_ref().ok()).map(|b| b.used_count() as u64).sum();
    if in_use > 0 && !force {
        return Err(IpamError::PoolInUse { name: name.to_string(), in_use });
    }
    let out = client
        .txn(vec![unchanged(&key, stored.mod_revision)], vec![delete(&key)])
        .await
        .map_err(|e| IpamError::store("delete pool", e))?;
    if !out.succeeded {
        return Err(IpamError::Conflict { op: "delete pool", attempts: 1 });
    }
    let mut report = PoolDeletion::default();
    for sb in blocks {
        let Ok(block) = &sb.block else { continue };
        if !block.is_empty() {
            continue;
        }
        let mut cmps = vec![unchanged(&sb.key, sb.mod_revision)];
        let mut ops = vec![delete(&sb.key)];
        if let Some(host) = block.affine_host() {
            let aff = keys.affinity(host, sb.cidr);
            cmps.push(Cmp::Exists(aff.clone()));
            ops.push(delete(&aff));
        }
        let done =
            client.txn(cmps.clone(), ops).await.map_err(|e| IpamError::store("delete block", e))?;
        if !done.succeeded && cmps.len() > 1 {
            // The affinity was already gone: delete the block alone.
            let done = client
                .txn(vec![cmps[0].clone()], vec![delete(&sb.key)])
                .await
                .map_err(|e| IpamError::store("delete block", e))?;
            if !done.succeeded {
                continue;
            }
        } else if !done.succeeded {
            continue;
        }
        report.blocks_deleted.push(sb.cidr);
    }
    tracing::info!(name, ?report, "deleted IP pool");
    Ok(report)
}

/// The IPAM config in force (defaults when none is stored).
pub async fn get_config(client: &Client, keys: &KeyLayout) -> Result<IpamConfig> {
    let listings = client
        .get_many(&[Read::Key(keys.ipam_config())])
        .await
        .map_err(|e| IpamError::store("read IPAM config", e))?;
    decode_config(keys, listings.first().and_then(|l| l.kvs.first()))
}

/// Validates and stores the IPAM config (Calico's rules: see [`IpamConfig::validate`]).
pub async fn set_config(client: &Client, keys: &KeyLayout, config: &IpamConfig) -> Result<()> {
    config.validate().map_err(|e| IpamError::invalid(e.field().to_string(), e.to_string()))?;
    client
        .put(&keys.ipam_config(), encode(&keys.ipam_config(), config)?, None)
        .await
        .map_err(|e| IpamError::store("write IPAM config", e))?;
    Ok(())
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| IpamError::CorruptRecord { key: key.to_string(), reason: e.to_string() })
}
