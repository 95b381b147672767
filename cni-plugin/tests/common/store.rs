//! Fixtures for the datastore tests: a simulated host (a namespace of its own) running its
//! own etcd on its loopback, the plugin configured for in-process IPAM against it, and a
//! client that reaches that etcd from the test (from a thread inside the host namespace).

use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;

use datastore::client::{Client, EtcdConfig};
use datastore::keys::{KeyLayout, Kind};
use datastore::model::{EncapMode, IpPoolSpec, Resource};
use ipam::check::Report;
use serde_json::{json, Value};
use testkit::{Etcd, Netns};

use super::{Fixture, Run};

/// Where `tabby-ipam` lives: `CNI_PATH` needs the directory, ahead of the reference plugins.
pub fn tabby_ipam_dir() -> PathBuf {
    super::tabby_ipam().parent().expect("binary has a directory").to_owned()
}

/// A host with its etcd, one container namespace, and a unique key prefix and node name.
pub struct StoreHost {
    pub fx: Fixture,
    pub etcd: Etcd,
    pub prefix: String,
    pub node: String,
    pub lock_dir: tempfile::TempDir,
}

impl StoreHost {
    pub fn new(tag: &str) -> StoreHost {
        let fx = Fixture::new(tag);
        let etcd = Etcd::builder().netns(fx.host.name()).start();
        StoreHost {
            fx,
            etcd,
            prefix: format!("/{}", testkit::unique_name("tcni", 30)),
            node: format!("node-{tag}"),
            lock_dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn keys(&self) -> KeyLayout {
        KeyLayout::new(self.prefix.clone())
    }

    /// A `tabby` config with in-process IPAM against this host's etcd.
    pub fn conf(&self, version: Option<&str>, name: &str) -> Value {
        let mut conf = json!({
            "name": name,
            "type": "tabby",
            "etcd_endpoints": self.etcd.endpoint(),
            "etcd_prefix": self.prefix,
            "nodename": self.node,
            "log_level": "debug",
            "ipam": {"type": "tabby-ipam",
                     "ipam_lock_file": self.lock_dir.path().join("ipam.lock").to_str().expect("utf-8")},
        });
        if let Some(v) = version {
            conf["cniVersion"] = json!(v);
        }
        conf
    }

    /// Runs `work` with a client connected from inside the host namespace (where etcd
    /// listens), on a thread of its own so the test thread never changes namespace.
    pub fn with_client<T, F, Fut>(&self, work: F) -> T
    where
        F: FnOnce(Client, KeyLayout) -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        let path = self.fx.host.path();
        let endpoint = self.etcd.endpoint();
        let keys = self.keys();
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = File::open(&path).expect("open host netns");
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let client = Client::connect(&EtcdConfig::new(vec![endpoint]))
                        .await
                        .expect("connect to the host's etcd");
                    work(client, keys).await
                })
            })
            .join()
            .expect("client thread panicked")
        })
    }

    /// Creates a pool; `ipip` sets `ipipMode: Always`.
    pub fn add_pool(&self, name: &str, cidr: &str, block_size: Option<u8>, ipip: bool) {
        let mut spec = IpPoolSpec::new(cidr.parse().expect("cidr"));
        spec.block_size = block_size;
        if ipip {
            spec.ipip_mode = Some(EncapMode::Always);
        }
        let pool = Resource::new(name, spec);
        self.with_client(|c, k| async move {
            ipam::admin::create_pool(&c, &k, &pool).await.expect("create pool");
        });
    }

    /// The raw JSON at a resource key, if any.
    pub fn resource(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = self.keys().resource(kind, namespace, name);
        self.get_json(&key)
    }

    pub fn get_json(&self, key: &str) -> Option<Value> {
        let key = key.to_owned();
        self.with_client(|c, _| async move {
            let kv = c.get(&key).await.expect("get");
            kv.map(|kv| serde_json::from_slice(&kv.value).expect("stored JSON"))
        })
    }

    /// Every key under `<prefix>/resources/v3/projectcalico.org/workloadendpoints/`.
    pub fn endpoint_keys(&self) -> Vec<String> {
        self.with_client(|c, k| async move {
            let prefix = k.resources_prefix(Kind::WorkloadEndpoint);
            c.list(&prefix).await.expect("list").kvs.into_iter().map(|kv| kv.key).collect()
        })
    }

    /// `ipamctl check`'s report for this prefix.
    pub fn check(&self) -> Report {
        self.with_client(|c, k| async move { ipam::check::check(&c, &k).await.expect("check") })
    }

    /// Who holds `ip` in IPAM (the handle), if anyone.
    pub fn holder(&self, ip: IpAddr) -> Option<String> {
        self.with_client(|c, k| async move {
            let blocks = c.list(&k.blocks_prefix(datastore::keys::IpFamily::of_addr(&ip))).await;
            for kv in blocks.expect("list blocks").kvs {
                if let Some(sb) = ipam::store::decode_block(&k, &kv) {
                    if let Ok(block) = sb.block {
                        if let Some(a) = block.allocation(ip) {
                            return a.handle;
                        }
                    }
                }
            }
            None
        })
    }

    /// Number of allocated addresses under this prefix.
    pub fn allocated(&self) -> usize {
        self.check().counts.allocations
    }

    /// Runs a verb of `tabby` for `(id, ifname)` in `netns` (`None`: no `CNI_NETNS`).
    pub fn run_in(
        &self,
        command: &str,
        id: &str,
        ifname: &str,
        netns: Option<&Netns>,
        conf: &Value,
    ) -> Run {
        let path = netns.map(|n| n.path().to_str().expect("utf-8").to_owned());
        let mut env = vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        if let Some(p) = &path {
            env.push(("CNI_NETNS", p));
        }
        self.fx.run_env(&env, &conf.to_string())
    }

    /// Runs a verb in the fixture's own container namespace.
    pub fn run(&self, command: &str, id: &str, ifname: &str, conf: &Value) -> Run {
        self.run_in(command, id, ifname, Some(&self.fx.container), conf)
    }

    /// Asserts that nothing of any attachment is left (no veth, host route, endpoint,
    /// allocation or handle), allowing the one node-level trace a killed allocator may leave
    /// that is not an attachment's: a block claim still pending, which the node's next
    /// allocation confirms.
    #[track_caller]
    pub fn assert_attachments_gone(&self) {
        let report = self.assert_no_attachment();
        assert_eq!(report.problems(), report.pending_affinities.len(), "IPAM check: {report:?}");
    }

    /// Asserts that nothing of any attachment is left: no veth, no host route, no endpoint,
    /// no allocation, no IPAM inconsistency.
    #[track_caller]
    pub fn assert_nothing_left(&self) {
        let report = self.assert_no_attachment();
        assert!(report.is_clean(), "IPAM check: {report:?}");
    }

    /// No veth, host route, endpoint, allocation or handle; returns the IPAM check's report
    /// for the caller's verdict on node-level records.
    #[track_caller]
    fn assert_no_attachment(&self) -> Report {
        assert!(self.fx.host_calis().is_empty(), "veths left: {:?}", self.fx.host_calis());
        assert!(
            self.fx.host_tabby_routes().is_empty(),
            "routes left: {:?}",
            self.fx.host_tabby_routes()
        );
        assert!(self.endpoint_keys().is_empty(), "endpoints left: {:?}", self.endpoint_keys());
        let report = self.check();
        assert_eq!(report.counts.allocations, 0, "allocations left: {report:?}");
        assert_eq!(report.counts.handles, 0, "handles left: {report:?}");
        report
    }
}
