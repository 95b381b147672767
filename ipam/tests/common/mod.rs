//! Fixtures shared by the etcd-backed tests: one etcd per test binary, a unique key prefix
//! per test, pools, allocators with their own lock files.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;

use datastore::client::{Client, EtcdConfig};
use datastore::keys::{KeyLayout, Kind};
use datastore::model::{IpPool, IpPoolSpec, Resource};
use ipam::check::Report;
use ipam::{Allocator, AllocatorOptions, AssignRequest, Attrs};
use testkit::{unique_name, Etcd};

pub struct Env {
    pub client: Client,
    pub keys: KeyLayout,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub async fn new() -> Env {
        Env::with_etcd(Etcd::shared()).await
    }

    pub async fn with_etcd(etcd: &Etcd) -> Env {
        let client = Client::connect(&EtcdConfig::new(vec![etcd.endpoint()]))
            .await
            .expect("connect to the test etcd");
        let keys = KeyLayout::new(format!("/{}", unique_name("tipam", 40)));
        Env { client, keys, dir: tempfile::tempdir().expect("tempdir") }
    }

    /// A second client with its own round-trip counter (a simulated separate process).
    pub async fn fresh_client(&self, etcd: &Etcd) -> Client {
        Client::connect(&EtcdConfig::new(vec![etcd.endpoint()])).await.expect("connect")
    }

    pub fn lock_path(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.lock"))
    }

    pub fn options(&self, node: &str) -> AllocatorOptions {
        AllocatorOptions { lock_file: Some(self.lock_path(node)), ..AllocatorOptions::default() }
    }

    pub fn allocator(&self, node: &str) -> Allocator {
        self.allocator_with(self.client.clone(), node)
    }

    pub fn allocator_with(&self, client: Client, node: &str) -> Allocator {
        Allocator::new(client, self.keys.clone(), node, self.options(node)).expect("allocator")
    }

    pub async fn add_pool(&self, name: &str, cidr: &str, block_size: Option<u8>) -> IpPool {
        let mut spec = IpPoolSpec::new(cidr.parse().expect("cidr"));
        spec.block_size = block_size;
        let pool = Resource::new(name, spec);
        ipam::admin::create_pool(&self.client, &self.keys, &pool).await.expect("create pool");
        pool
    }

    pub async fn put_raw(&self, key: &str, value: &[u8]) {
        self.client.put(key, value.to_vec(), None).await.expect("put");
    }

    pub async fn put_node(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, serde_json::Value> =
            labels.iter().map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v))).collect();
        let node = serde_json::json!({
            "kind": "Node", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name, "labels": labels}, "spec": {}
        });
        let key = self.keys.resource(Kind::Node, None, name);
        self.put_raw(&key, node.to_string().as_bytes()).await;
    }

    pub async fn check(&self) -> Report {
        ipam::check::check(&self.client, &self.keys).await.expect("check")
    }
}

pub fn request(handle: &str, v4: usize, v6: usize) -> AssignRequest {
    AssignRequest {
        handle: handle.to_string(),
        attrs: Attrs::new(),
        num_v4: v4,
        num_v6: v6,
        ..AssignRequest::default()
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Every problem except "no endpoint accounts for this allocation" (tests allocate without
/// writing endpoints).
pub fn structural_problems(r: &Report) -> usize {
    r.problems() - r.leaked.len()
}
