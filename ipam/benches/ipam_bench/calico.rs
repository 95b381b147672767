//! Calico-equivalent request sequence (modelled).
//!
//! None of Calico's code is re-implemented here. This issues, against the same etcd and the
//! same records, the sequence of etcd requests that Calico's `AutoAssign` and
//! `ReleaseByHandle` are documented to make (reference/calico-ipam-cni.md §1.3), one request
//! per round trip, so their cost can be compared with tabby's on equal terms:
//!
//! - assign: config GET, IPReservations LIST, Node GET, IPPools LIST, this host's affinities
//!   LIST; per affine block an affinity GET and a block GET until one has room; handle GET,
//!   handle create (or CAS); block CAS. About 10 round trips with one affine block.
//! - with a claim (no affine block has room): LIST of every block (values decoded, as the
//!   Go backend does), a walk of the host's candidate order to the first free CIDR, affinity
//!   create (pending), block create, affinity CAS (confirmed), then handle GET, handle create,
//!   block CAS.
//! - release by handle: handle GET; per block a GET and a CAS; handle delete (CAS).
//!
//! The CNI plugin's own requests around IPAM (ClusterInformation GET, endpoint LIST and
//! CREATE, profile GET; about 4 more) are not part of the model.

use std::collections::HashSet;
use std::net::IpAddr;

use datastore::client::{Client, Cmp, Kv, Op};
use datastore::keys::{IpFamily, KeyLayout, Kind, ParsedKey};
use datastore::model::ipam::{AffinityState, AllocationBlock, BlockAffinity, IpamHandle};
use datastore::model::{IpPoolSpec, Resource};
use ipam::candidates::Candidates;
use ipam::{Attrs, Block, Pool};
use ipnet::IpNet;

use crate::setup::Result;

#[derive(Debug)]
pub struct CalicoModel<'a> {
    pub client: &'a Client,
    pub keys: &'a KeyLayout,
}

impl CalicoModel<'_> {
    /// One address for `handle` on `host`.
    pub async fn assign(&self, host: &str, handle: &str, attrs: &Attrs) -> Result<IpAddr> {
        let keys = self.keys;
        // 1. GetIPAMConfig.
        let _config = self.client.get(&keys.ipam_config()).await?;
        // 2. getReservedIPs.
        let reservations =
            format!("{}/resources/v3/projectcalico.org/ipreservations/", keys.prefix());
        let _reserved = self.client.list(&reservations).await?;
        // 3. The Node, for pool selectors; 4. the pools.
        let _node = self.client.get(&keys.resource(Kind::Node, None, host)).await?;
        let listing = self.client.list(&keys.resources_prefix(Kind::IpPool)).await?;
        let pools: Vec<Pool> = listing
            .kvs
            .iter()
            .filter_map(|kv| Resource::<IpPoolSpec>::from_json(&kv.value).ok())
            .filter_map(|r| Pool::from_resource(&r).ok())
            .collect();
        let pool = pools.first().ok_or("no pool")?;
        // 5. This host's affinities; 6-7. per affine block: the affinity, then the block.
        let affinities = self.client.list(&keys.host_affinities_prefix(host, IpFamily::V4)).await?;
        for aff in &affinities.kvs {
            let Some(ParsedKey::Affinity { cidr, .. }) = keys.parse(&aff.key) else { continue };
            let _aff = self.client.get(&aff.key).await?;
            let Some(kv) = self.client.get(&keys.block(cidr)).await? else { continue };
            let block = Block::from_record(serde_json::from_slice(&kv.value)?)?;
            if block.free_count() > 0 {
                return self.assign_from(block, &kv, handle, attrs).await;
            }
        }
        let (block, kv) = self.claim(host, pool).await?;
        self.assign_from(block, &kv, handle, attrs).await
    }

    /// 8-10: handle GET, handle create or CAS, block CAS.
    async fn assign_from(
        &self,
        mut block: Block,
        block_kv: &Kv,
        handle: &str,
        attrs: &Attrs,
    ) -> Result<IpAddr> {
        let ip = *block.assign(1, handle, attrs).first().ok_or("block is full")?;
        let handle_key = self.keys.handle(handle);
        let cidr = block.cidr().to_string();
        let (cmp, mut record) = match self.client.get(&handle_key).await? {
            None => (Cmp::Absent(handle_key.clone()), IpamHandle::default()),
            Some(kv) => (Cmp::ModRevision(handle_key.clone(), kv.mod_revision), kv.json()?),
        };
        *record.block.entry(cidr).or_insert(0) += 1;
        let put = Op::Put { key: handle_key, value: serde_json::to_vec(&record)?, lease: None };
        if !self.client.txn(vec![cmp], vec![put]).await?.succeeded {
            return Err("handle CAS lost".into());
        }
        let put = Op::Put {
            key: block_kv.key.clone(),
            value: serde_json::to_vec(block.record())?,
            lease: None,
        };
        let cmp = Cmp::ModRevision(block_kv.key.clone(), block_kv.mod_revision);
        if !self.client.txn(vec![cmp], vec![put]).await?.succeeded {
            return Err("block CAS lost".into());
        }
        Ok(ip)
    }

    /// findUsableBlock and claimAffineBlock: list every block, walk this host's order to the
    /// first CIDR without a block, then pending affinity, block create, confirmed affinity.
    async fn claim(&self, host: &str, pool: &Pool) -> Result<(Block, Kv)> {
        let listing = self.client.list(&self.keys.blocks_prefix(IpFamily::V4)).await?;
        let mut existing = HashSet::with_capacity(listing.kvs.len());
        for kv in &listing.kvs {
            // The Go backend decodes every listed block into its struct.
            let record: AllocationBlock = serde_json::from_slice(&kv.value)?;
            existing.insert(record.cidr);
        }
        let cidr: IpNet = Candidates::new(pool.cidr, pool.block_size, host)
            .find(|c| !existing.contains(c))
            .ok_or("pool is full")?;
        let aff_key = self.keys.affinity(host, cidr);
        let affinity =
            |state| serde_json::to_vec(&BlockAffinity { state, ..BlockAffinity::default() });
        let put =
            Op::Put { key: aff_key.clone(), value: affinity(AffinityState::Pending)?, lease: None };
        let created = self.client.txn(vec![Cmp::Absent(aff_key.clone())], vec![put]).await?;
        if !created.succeeded {
            return Err("affinity create lost".into());
        }
        let block = Block::new(cidr, Some(host), ipam::time::now_nanos())?;
        let key = self.keys.block(cidr);
        let put =
            Op::Put { key: key.clone(), value: serde_json::to_vec(block.record())?, lease: None };
        let made = self.client.txn(vec![Cmp::Absent(key.clone())], vec![put]).await?;
        if !made.succeeded {
            return Err("block create lost".into());
        }
        let put = Op::Put {
            key: aff_key.clone(),
            value: affinity(AffinityState::Confirmed)?,
            lease: None,
        };
        let cmp = Cmp::ModRevision(aff_key, created.revision);
        if !self.client.txn(vec![cmp], vec![put]).await?.succeeded {
            return Err("affinity confirm lost".into());
        }
        let kv = Kv {
            key,
            value: Vec::new(),
            mod_revision: made.revision,
            create_revision: made.revision,
            version: 1,
        };
        Ok((block, kv))
    }

    /// ReleaseByHandle: handle GET, per block GET + CAS, handle delete (CAS). Returns the
    /// number of addresses freed.
    pub async fn release(&self, handle: &str) -> Result<usize> {
        let handle_key = self.keys.handle(handle);
        let Some(hkv) = self.client.get(&handle_key).await? else { return Ok(0) };
        let record: IpamHandle = hkv.json()?;
        let mut freed = 0;
        for cidr in record.block.keys() {
            let cidr: IpNet = cidr.parse()?;
            let Some(kv) = self.client.get(&self.keys.block(cidr)).await? else { continue };
            let mut block = Block::from_record(serde_json::from_slice(&kv.value)?)?;
            freed += block.release_by_handle(handle).len();
            let put = Op::Put {
                key: kv.key.clone(),
                value: serde_json::to_vec(block.record())?,
                lease: None,
            };
            let cmp = Cmp::ModRevision(kv.key.clone(), kv.mod_revision);
            if !self.client.txn(vec![cmp], vec![put]).await?.succeeded {
                return Err("block CAS lost".into());
            }
        }
        let cmp = Cmp::ModRevision(handle_key.clone(), hkv.mod_revision);
        let del = Op::Delete { key: handle_key };
        if !self.client.txn(vec![cmp], vec![del]).await?.succeeded {
            return Err("handle delete lost".into());
        }
        Ok(freed)
    }
}
