//! The cluster the agent benchmarks plan for: endpoints (some on this host), profiles and
//! policies generated from their index, turned into the key/values the watcher would deliver
//! and into a `ClusterModel`. Shared by `agent_scale` and `datapath`, so both measure the same
//! ruleset shape.

use std::cell::Cell;

use agent::model::ClusterModel;
use datastore::client::Kv;
use datastore::keys::KeyLayout;
use datastore::model::parse_resource;
use serde_json::{json, Value};

/// The node the benchmark plays.
pub const NODE: &str = "bench-host";
/// Remote endpoints are spread over this many other nodes.
const OTHER_NODES: usize = 39;

/// How big a cluster to generate.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub endpoints: usize,
    /// Endpoints `0..local` live on [`NODE`].
    pub local: usize,
    pub profiles: usize,
    pub policies: usize,
}

impl Scale {
    /// The scale issue #5 names: 10,000 endpoints (250 local), 1,000 profiles, 200 policies.
    pub const ISSUE: Scale =
        Scale { endpoints: 10_000, local: 250, profiles: 1_000, policies: 200 };

    /// `endpoints` endpoints with the issue's proportions (1/40 local, one profile per 10
    /// endpoints, one policy per 50), so 1,000 and 10,000 compare like for like.
    pub fn proportional(endpoints: usize) -> Scale {
        Scale {
            endpoints,
            local: (endpoints / 40).max(2),
            profiles: (endpoints / 10).max(2),
            policies: (endpoints / 50).max(1),
        }
    }

    /// Profile `i`: web ports from anyone, everything from its own members, a database port
    /// (5432) from the next profile's members, egress open; its members get label `prof-<i>`.
    pub fn profile(&self, i: usize, port: u16) -> Value {
        let next = (i + 1) % self.profiles;
        json!({"kind": "Profile", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": format!("prof-{i}")},
        "spec": {
            "ingress": [
                {"action": "Allow", "protocol": "TCP", "destination": {"ports": [port, 443]}},
                {"action": "Allow", "source": {"selector": format!("has(prof-{i})")}},
                {"action": "Allow", "protocol": "TCP",
                 "source": {"selector": format!("has(prof-{next})")},
                 "destination": {"ports": [5432]}}
            ],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {format!("prof-{i}"): ""}
        }})
    }

    /// Endpoint `j`: the first [`Scale::local`] on this host, the rest spread over other nodes.
    pub fn endpoint(&self, j: usize) -> Value {
        let node =
            if j < self.local { NODE.to_string() } else { format!("node-{}", j % OTHER_NODES) };
        self.endpoint_on(j, &node)
    }

    /// Endpoint `j` on `node`: address `10.64.0.0/10 + j` (and a v6 one for every tenth),
    /// profile `prof-<j mod profiles>`, labels `app: app-<j mod 500>` and a tier by `j mod 3`,
    /// interface `cali<j as 11 hex digits>`.
    pub fn endpoint_on(&self, j: usize, node: &str) -> Value {
        let id = format!("c{j}");
        let mut ips = vec![format!("10.{}.{}.{}/32", 64 + j / 65_536, (j / 256) % 256, j % 256)];
        if j.is_multiple_of(10) {
            ips.push(format!("fd00:64::{j:x}/128"));
        }
        let tier = ["web", "app", "db"][j % 3];
        json!({"kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": format!("{}-cni-{id}-eth0", node.replace('-', "--")),
                         "namespace": "default",
                         "labels": {"app": format!("app-{}", j % 500), "tier": tier}},
            "spec": {"orchestrator": "cni", "node": node, "containerID": id, "endpoint": "eth0",
                     "ipNetworks": ips, "profiles": [format!("prof-{}", j % self.profiles)],
                     "interfaceName": format!("cali{j:011x}"), "mac": "ee:ee:ee:ee:ee:ee"}})
    }
}

/// Policy `i`: applies to app `app-<2i>`, in order `i`.
pub fn policy(i: usize) -> Value {
    json!({"kind": "NetworkPolicy", "apiVersion": "projectcalico.org/v3",
    "metadata": {"name": format!("pol-{i}"), "namespace": "default"},
    "spec": {
        "order": i,
        "selector": format!("app == 'app-{}'", 2 * i),
        "types": ["Ingress", "Egress"],
        "ingress": [
            {"action": "Allow", "protocol": "TCP", "source": {"selector": "tier == 'web'"},
             "destination": {"ports": [8080, "9000:9100"]}},
            {"action": "Deny", "source": {"nets": [format!("10.99.{}.0/24", i % 256)]}},
            {"action": "Pass", "source": {"selector": format!("app == 'app-{}'", i + 1)}}
        ],
        "egress": [
            {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}},
            {"action": "Allow", "destination": {"selector": "tier == 'db'"}}
        ]
    }})
}

/// Turns resources into the key/values a watch delivers, with rising revisions.
#[derive(Debug)]
pub struct Kvs {
    pub layout: KeyLayout,
    revision: Cell<i64>,
}

impl Kvs {
    pub fn new() -> Kvs {
        Kvs { layout: KeyLayout::new("/calico"), revision: Cell::new(1) }
    }

    /// The last revision handed out.
    pub fn revision(&self) -> i64 {
        self.revision.get()
    }

    /// `value` as the next revision's key/value.
    pub fn kv(&self, value: &Value) -> Kv {
        let bytes = serde_json::to_vec(value).expect("json");
        let r = parse_resource(&bytes).expect("resource");
        self.revision.set(self.revision.get() + 1);
        Kv {
            key: self.layout.resource(r.kind(), r.namespace(), r.name()),
            value: bytes,
            mod_revision: self.revision.get(),
            create_revision: self.revision.get(),
            version: 1,
        }
    }

    /// The whole cluster at `scale` as a model; `patch` may rewrite endpoint `j` on the way
    /// (the datapath bench gives two of them real interfaces). Panics if any resource is
    /// invalid: the benchmark would otherwise measure a smaller ruleset than it claims.
    pub fn model(&self, scale: &Scale, mut patch: impl FnMut(usize, &mut Value)) -> ClusterModel {
        let mut kvs: Vec<Kv> =
            Vec::with_capacity(scale.endpoints + scale.profiles + scale.policies + 1);
        kvs.push(self.kv(&json!({"kind": "IPPool", "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": "pool"}, "spec": {"cidr": "10.64.0.0/10", "natOutgoing": true}})));
        kvs.extend((0..scale.profiles).map(|i| self.kv(&scale.profile(i, 80))));
        kvs.extend((0..scale.policies).map(|i| self.kv(&policy(i))));
        kvs.extend((0..scale.endpoints).map(|j| {
            let mut value = scale.endpoint(j);
            patch(j, &mut value);
            self.kv(&value)
        }));
        let model = ClusterModel::from_kvs(self.layout.clone(), &kvs, self.revision());
        assert!(model.invalid().is_empty(), "{:?}", model.invalid().iter().next());
        model
    }
}
