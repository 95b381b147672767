//! Scenario set-up: a key prefix and a pool per scenario, allocators with their own lock
//! files and connections, and blocks pre-claimed by other hosts.

use std::path::PathBuf;

use datastore::client::{Client, EtcdConfig, Op};
use datastore::keys::{KeyLayout, Kind};
use datastore::model::ipam::{AffinityState, BlockAffinity};
use datastore::model::{IpPoolSpec, Resource};
use ipam::{Allocator, AllocatorOptions, AssignRequest, Block};
use ipnet::IpNet;
use testkit::Etcd;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// One scenario's corner of the datastore.
#[derive(Debug)]
pub struct Scenario {
    pub endpoint: String,
    pub client: Client,
    pub keys: KeyLayout,
    locks: tempfile::TempDir,
}

impl Scenario {
    /// A fresh prefix `/bench-<name>` holding one pool `cidr` (blocks of 26).
    pub async fn new(etcd: &Etcd, name: &str, cidr: &str) -> Result<Scenario> {
        let endpoint = etcd.endpoint();
        let client = connect(&endpoint).await?;
        let keys = KeyLayout::new(format!("/bench-{name}"));
        let pool = Resource::new("pool", IpPoolSpec::new(cidr.parse()?));
        ipam::admin::create_pool(&client, &keys, &pool).await?;
        Ok(Scenario { endpoint, client, keys, locks: tempfile::tempdir()? })
    }

    /// A new connection with its own round-trip counter (one simulated host process).
    pub async fn connect(&self) -> Result<Client> {
        connect(&self.endpoint).await
    }

    /// The allocator of `node`, with its own host lock file.
    pub fn allocator(&self, client: Client, node: &str) -> Result<Allocator> {
        self.allocator_with(client, node, &AllocatorOptions::default())
    }

    /// The allocator of `node` with `opts` (its lock file set here).
    pub fn allocator_with(
        &self,
        client: Client,
        node: &str,
        opts: &AllocatorOptions,
    ) -> Result<Allocator> {
        let opts = AllocatorOptions { lock_file: Some(self.lock_file(node)), ..opts.clone() };
        Ok(Allocator::new(client, self.keys.clone(), node, opts)?)
    }

    fn lock_file(&self, node: &str) -> PathBuf {
        self.locks.path().join(format!("{node}.lock"))
    }

    /// Writes the Node resource `name` (the allocators and the Calico model read it).
    pub async fn put_node(&self, name: &str) -> Result<()> {
        let node = serde_json::json!({
            "kind": "Node", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name}, "spec": {}
        });
        let key = self.keys.resource(Kind::Node, None, name);
        self.client.put(&key, node.to_string(), None).await?;
        Ok(())
    }

    /// Writes `blocks` as confirmed claims of hosts `other-0..99`, 64 blocks per transaction.
    pub async fn preclaim(&self, blocks: &[IpNet]) -> Result<()> {
        let affinity = serde_json::to_vec(&BlockAffinity {
            state: AffinityState::Confirmed,
            ..BlockAffinity::default()
        })?;
        for (n, chunk) in blocks.chunks(64).enumerate() {
            let mut ops = Vec::with_capacity(chunk.len() * 2);
            for (i, cidr) in chunk.iter().enumerate() {
                let host = format!("other-{}", (n * 64 + i) % 100);
                let block = Block::new(*cidr, Some(&host), 1)?;
                ops.push(Op::Put {
                    key: self.keys.block(*cidr),
                    value: serde_json::to_vec(block.record())?,
                    lease: None,
                });
                ops.push(Op::Put {
                    key: self.keys.affinity(&host, *cidr),
                    value: affinity.clone(),
                    lease: None,
                });
            }
            if !self.client.txn(vec![], ops).await?.succeeded {
                return Err("pre-claim transaction failed".into());
            }
        }
        Ok(())
    }
}

pub async fn connect(endpoint: &str) -> Result<Client> {
    Ok(Client::connect(&EtcdConfig::new(vec![endpoint.to_string()])).await?)
}

/// A request for one IPv4 address.
pub fn one_v4(handle: String) -> AssignRequest {
    AssignRequest { handle, num_v4: 1, ..AssignRequest::default() }
}
