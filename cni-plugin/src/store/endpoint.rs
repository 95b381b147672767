//! The records an attachment owns in etcd: its workload endpoint (what the agent programs
//! policy and routes from) and, created once per network, the network's profile.
//!
//! [`EndpointPlan`] is built and validated before anything is touched; the writes are
//! compare-and-swap and keep fields other tools stored.

use std::collections::BTreeMap;
use std::net::IpAddr;

use datastore::client::{Client, Error as StoreError, Kv, Read};
use datastore::keys::{workload_endpoint_name, KeyLayout, Kind};
use datastore::model::{
    is_dns1123_label, is_valid_label_key, is_valid_label_value, EncapMode, IpPoolSpec, Profile,
    Resource, WorkloadEndpoint, WorkloadEndpointSpec,
};
use ipam::Pool;
use ipnet::IpNet;

use super::{store_error, Session};
use crate::spec::{sanitize_mesos_label, ContainerId, Error, IfName, NetConf};

/// The orchestrator name Calico gives endpoints made by a CNI plugin outside Kubernetes.
pub const ORCHESTRATOR: &str = "cni";
/// The orchestrator (and workload) name of endpoints made by a Docker network driver, as
/// Calico's libnetwork plugin names them.
pub const LIBNETWORK: &str = "libnetwork";
/// The Mesos label that chooses an endpoint's namespace (Calico cni-plugin PR #886).
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// The label naming the orchestrator, as Calico sets it on every endpoint.
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";
/// Namespace of endpoints that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// MTU inside an IPIP pool: 20 bytes of outer header less than Ethernet's 1500.
pub const IPIP_MTU: u32 = 1480;
/// MTU inside a VXLAN pool (50 bytes of encapsulation), as Calico uses.
pub const VXLAN_MTU: u32 = 1450;
/// Attempts at the endpoint's compare-and-swap when another writer keeps changing it.
const WRITE_ATTEMPTS: usize = 5;

/// Everything about an attachment's endpoint that is known before it has addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPlan {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// [`ORCHESTRATOR`] for CNI attachments, [`LIBNETWORK`] for Docker's.
    pub orchestrator: String,
    /// The container id (CNI), or the libnetwork endpoint id (Docker).
    pub container_id: String,
    /// The interface name in the container (CNI), or the libnetwork endpoint id (Docker).
    pub ifname: String,
    pub labels: BTreeMap<String, String>,
    /// The network's name: the endpoint's one profile.
    pub profile: String,
    pub profile_key: String,
}

impl EndpointPlan {
    /// Derives and validates the endpoint's identity, labels and profile. Errors are code 7
    /// and name the label or field at fault.
    pub fn new(
        session: &Session,
        conf: &NetConf,
        container_id: &ContainerId,
        ifname: &IfName,
    ) -> Result<EndpointPlan, Error> {
        let node = session.node().to_owned();
        let name =
            workload_endpoint_name(&node, ORCHESTRATOR, container_id.as_str(), ifname.as_str())
                .map_err(|e| Error::config("nodename", e.to_string()))?;
        let namespace = namespace_of(conf)?;
        let mut labels = BTreeMap::new();
        if let Some(mesos) = &conf.mesos {
            for (raw_key, raw_value) in &mesos.raw_labels {
                if raw_key == NAMESPACE_LABEL {
                    continue;
                }
                let (key, value) = (sanitize_mesos_label(raw_key), sanitize_mesos_label(raw_value));
                let field = format!("args.org.apache.mesos.network_info.labels[{raw_key:?}]");
                if !is_valid_label_key(&key) {
                    return Err(Error::config(
                        field,
                        format!("key {key:?} (sanitised) is not a valid label key"),
                    ));
                }
                if !is_valid_label_value(&value) {
                    return Err(Error::config(
                        field,
                        format!("value {value:?} (sanitised) is not a valid label value: at most 63 characters"),
                    ));
                }
                labels.insert(key, value);
            }
        }
        labels.insert(NAMESPACE_LABEL.to_owned(), namespace.clone());
        labels.insert(ORCHESTRATOR_LABEL.to_owned(), ORCHESTRATOR.to_owned());
        // The network's name becomes a profile name and a label key: refuse it here rather
        // than write records the agent would reject.
        Profile::classic_default(&conf.name).validate().map_err(|e| {
            Error::config("name", format!("{:?} cannot name a profile: {e}", conf.name))
        })?;
        let keys = session.keys();
        Ok(EndpointPlan {
            key: keys.resource(Kind::WorkloadEndpoint, Some(&namespace), &name),
            namespace,
            name,
            node,
            orchestrator: ORCHESTRATOR.to_owned(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            labels,
            profile: conf.name.clone(),
            profile_key: keys.resource(Kind::Profile, None, &conf.name),
        })
    }

    /// The endpoint of a Docker (libnetwork) attachment, named as Calico's libnetwork plugin
    /// names it: `<node>-libnetwork-libnetwork-<endpoint id>` in namespace `default`, with the
    /// network's name as its one profile. Errors name the field at fault.
    pub fn libnetwork(
        keys: &KeyLayout,
        node: &str,
        endpoint_id: &str,
        network: &str,
    ) -> Result<EndpointPlan, Error> {
        let (name, key) = Self::libnetwork_key(keys, node, endpoint_id)?;
        Profile::classic_default(network).validate().map_err(|e| {
            Error::config("network name", format!("{network:?} cannot name a profile: {e}"))
        })?;
        let namespace = DEFAULT_NAMESPACE.to_owned();
        let labels = BTreeMap::from([
            (NAMESPACE_LABEL.to_owned(), namespace.clone()),
            (ORCHESTRATOR_LABEL.to_owned(), LIBNETWORK.to_owned()),
        ]);
        Ok(EndpointPlan {
            key,
            namespace,
            name,
            node: node.to_owned(),
            orchestrator: LIBNETWORK.to_owned(),
            container_id: endpoint_id.to_owned(),
            ifname: endpoint_id.to_owned(),
            labels,
            profile: network.to_owned(),
            profile_key: keys.resource(Kind::Profile, None, network),
        })
    }

    /// The name and key of a Docker endpoint's record, without the network's name (which a
    /// late `DeleteEndpoint` may no longer know).
    pub fn libnetwork_key(
        keys: &KeyLayout,
        node: &str,
        endpoint_id: &str,
    ) -> Result<(String, String), Error> {
        let name = workload_endpoint_name(node, LIBNETWORK, LIBNETWORK, endpoint_id)
            .map_err(|e| Error::config("EndpointID", e.to_string()))?;
        let key = keys.resource(Kind::WorkloadEndpoint, Some(DEFAULT_NAMESPACE), &name);
        Ok((name, key))
    }

    /// Where the endpoint of an attachment lives, without validating anything else: what
    /// DEL needs to remove it even when the labels would not be accepted today.
    pub fn key_only(
        session: &Session,
        conf: &NetConf,
        container_id: &ContainerId,
        ifname: &IfName,
    ) -> Result<String, Error> {
        let name = workload_endpoint_name(
            session.node(),
            ORCHESTRATOR,
            container_id.as_str(),
            ifname.as_str(),
        )
        .map_err(|e| Error::config("nodename", e.to_string()))?;
        let namespace = namespace_of(conf).unwrap_or_else(|_| DEFAULT_NAMESPACE.to_owned());
        Ok(session.keys().resource(Kind::WorkloadEndpoint, Some(&namespace), &name))
    }

    /// The endpoint record for the attachment as made.
    pub fn record(&self, ips: &[IpNet], host_ifname: &str, mac: &str) -> WorkloadEndpoint {
        // libnetwork tells a driver nothing of the container: the endpoint id stands for it.
        let libnetwork = self.orchestrator == LIBNETWORK;
        let spec = WorkloadEndpointSpec {
            orchestrator: Some(self.orchestrator.clone()),
            workload: Some(if libnetwork { LIBNETWORK } else { &self.container_id }.to_owned()),
            node: Some(self.node.clone()),
            container_id: (!libnetwork).then(|| self.container_id.clone()),
            endpoint: Some(self.ifname.clone()),
            ip_networks: ips.to_vec(),
            profiles: vec![self.profile.clone()],
            interface_name: Some(host_ifname.to_owned()),
            mac: Some(mac.to_owned()),
            ..WorkloadEndpointSpec::default()
        };
        let mut wep = WorkloadEndpoint::namespaced(&self.namespace, &self.name, spec);
        wep.metadata.labels = self.labels.clone();
        wep
    }
}

/// The endpoint's namespace: the Mesos label `projectcalico.org/namespace` (sanitised), or
/// `default`.
fn namespace_of(conf: &NetConf) -> Result<String, Error> {
    let label =
        conf.mesos.iter().flat_map(|m| m.raw_labels.iter()).rfind(|(k, _)| k == NAMESPACE_LABEL);
    let Some((_, raw)) = label else { return Ok(DEFAULT_NAMESPACE.to_owned()) };
    let namespace = sanitize_mesos_label(raw);
    if is_dns1123_label(&namespace) {
        Ok(namespace)
    } else {
        Err(Error::config(
            format!("args.org.apache.mesos.network_info.labels[{NAMESPACE_LABEL:?}]"),
            format!("{namespace:?} is not a valid namespace (a DNS label)"),
        ))
    }
}

/// What ADD learns from etcd while IPAM runs: whether the profile exists and the pools
/// (for the MTU). Read in one round trip, in parallel with the allocation.
#[derive(Clone, Debug, Default)]
pub struct Prefetched {
    /// `None` when the read failed (the write then creates the profile if absent).
    pub profile_exists: Option<bool>,
    pub pools: Vec<Pool>,
}

impl Prefetched {
    /// The MTU a workload gets when the config sets none: smaller inside an encapsulating
    /// pool, so that encapsulated packets still fit the host's 1500.
    pub fn mtu_for(&self, ips: &[IpAddr]) -> Option<u32> {
        let pool = ips.iter().find_map(|ip| ipam::pool::containing(&self.pools, *ip))?;
        if pool.ipip_mode != EncapMode::Never {
            Some(IPIP_MTU)
        } else if pool.vxlan_mode != EncapMode::Never {
            Some(VXLAN_MTU)
        } else {
            None
        }
    }

    /// The pool holding `ip`, if any.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        ipam::pool::containing(&self.pools, ip)
    }
}

/// Reads the pools and, when given, whether `profile_key` exists: one round trip.
pub async fn prefetch(session: &Session, profile_key: Option<&str>) -> Result<Prefetched, Error> {
    let client = session.client().await?;
    let mut reads = vec![Read::Prefix(session.keys().resources_prefix(Kind::IpPool))];
    if let Some(key) = profile_key {
        reads.push(Read::Key(key.to_owned()));
    }
    let listings = client.get_many(&reads).await.map_err(|e| store_error("read pools", &e))?;
    let pools = listings.first().map(|l| decode_pools(&l.kvs)).unwrap_or_default();
    let profile_exists = profile_key.map(|_| listings.get(1).is_some_and(|l| !l.kvs.is_empty()));
    Ok(Prefetched { profile_exists, pools })
}

/// The stored endpoint at `key` and the pools, in one round trip (CHECK).
pub async fn read_with_pools(
    session: &Session,
    key: &str,
) -> Result<(Option<WorkloadEndpoint>, Prefetched), Error> {
    let client = session.client().await?;
    let reads =
        [Read::Key(key.to_owned()), Read::Prefix(session.keys().resources_prefix(Kind::IpPool))];
    let listings =
        client.get_many(&reads).await.map_err(|e| store_error("read workload endpoint", &e))?;
    let wep =
        match listings.first().and_then(|l| l.kvs.first()) {
            None => None,
            Some(kv) => Some(WorkloadEndpoint::from_json(&kv.value).map_err(|e| {
                Error::internal(format!("workload endpoint {key} does not decode"), e)
            })?),
        };
    let pools = listings.get(1).map(|l| decode_pools(&l.kvs)).unwrap_or_default();
    Ok((wep, Prefetched { profile_exists: None, pools }))
}

/// Valid pools; invalid ones are skipped with a log line (the allocator does the same).
pub fn decode_pools(kvs: &[Kv]) -> Vec<Pool> {
    kvs.iter()
        .filter_map(|kv| {
            let pool = Resource::<IpPoolSpec>::from_json(&kv.value)
                .map_err(|e| e.to_string())
                .and_then(|r| Pool::from_resource(&r).map_err(|e| e.to_string()));
            match pool {
                Ok(p) => Some(p),
                Err(reason) => {
                    tracing::warn!(key = %kv.key, %reason, "ignoring invalid IP pool");
                    None
                }
            }
        })
        .collect()
}

/// Writes the endpoint (create, or compare-and-swap over a stale one left by an earlier
/// attempt for the same attachment) and, unless it is known to exist, the network's
/// classic default profile, both at once. Returns the endpoint's new mod revision.
pub async fn write(
    client: &Client,
    plan: &EndpointPlan,
    wep: &WorkloadEndpoint,
    profile_exists: Option<bool>,
) -> Result<i64, Error> {
    // Boxed: the client's request futures are large, and this one is held across awaits.
    let endpoint = Box::pin(write_endpoint(client, &plan.key, wep));
    let profile = async {
        if profile_exists == Some(true) {
            return Ok(());
        }
        Box::pin(ensure_profile(client, &plan.profile_key, &plan.profile)).await
    };
    let (endpoint, profile) = tokio::join!(endpoint, profile);
    let revision = endpoint?;
    profile?;
    Ok(revision)
}

/// Creates the classic default profile for `name` when there is none; an existing profile,
/// however it reads, is left alone.
pub async fn ensure_profile(client: &Client, key: &str, name: &str) -> Result<(), Error> {
    let profile = Profile::classic_default(name);
    let json = profile.to_json().map_err(|e| Error::internal("encode profile", e))?;
    match client.create(key, json).await {
        Ok(_) => {
            tracing::info!(profile = name, "created the network's default profile");
            Ok(())
        }
        Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(store_error(&format!("create profile {name}"), &e)),
    }
}

async fn write_endpoint(client: &Client, key: &str, wep: &WorkloadEndpoint) -> Result<i64, Error> {
    let encode = |w: &WorkloadEndpoint| {
        w.to_json().map_err(|e| Error::internal(format!("encode workload endpoint {key}"), e))
    };
    let mut existing: Option<Kv> = None;
    for _ in 0..WRITE_ATTEMPTS {
        let result = match &existing {
            None => client.create(key, encode(wep)?).await,
            Some(kv) => {
                tracing::warn!(%key, "replacing a stale workload endpoint for this attachment");
                let merged = merge(kv, wep);
                client.update(key, encode(&merged)?, kv.mod_revision).await
            }
        };
        match result {
            Ok(revision) => return Ok(revision),
            Err(
                StoreError::AlreadyExists { current, .. } | StoreError::Conflict { current, .. },
            ) => {
                existing = Some(*current);
            }
            Err(StoreError::NotFound { .. }) => existing = None,
            Err(e) => return Err(store_error(&format!("write workload endpoint {key}"), &e)),
        }
    }
    Err(Error::TryAgainLater {
        what: format!("write workload endpoint {key}: changed concurrently {WRITE_ATTEMPTS} times"),
        source: None,
    })
}

/// Our endpoint over a stored one: our fields win; fields we do not know are kept.
fn merge(stored: &Kv, ours: &WorkloadEndpoint) -> WorkloadEndpoint {
    let Ok(old) = WorkloadEndpoint::from_json(&stored.value) else {
        return ours.clone();
    };
    let mut merged = ours.clone();
    merged.extra = old.extra;
    merged.metadata.extra = old.metadata.extra;
    merged.metadata.annotations = old.metadata.annotations;
    merged.spec.extra = old.spec.extra;
    merged
}

/// Deletes the endpoint at `key`; `expected` guards against removing a newer one. Returns
/// whether there was one; absence is success.
pub async fn delete(client: &Client, key: &str, expected: Option<i64>) -> Result<bool, Error> {
    match client.delete(key, expected).await {
        Ok(deleted) => Ok(deleted),
        Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(store_error(&format!("delete workload endpoint {key}"), &e)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conf(extra: &serde_json::Value) -> NetConf {
        let mut v = json!({"name": "web", "type": "tabby", "nodename": "host-1",
            "etcd_endpoints": "http://127.0.0.1:1", "etcd_prefix": "/t"});
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    fn plan(c: &NetConf) -> Result<EndpointPlan, Error> {
        let session = Session::for_conf(c, true).unwrap().unwrap();
        EndpointPlan::new(
            &session,
            c,
            &ContainerId::new("abc-1").unwrap(),
            &IfName::new("eth0").unwrap(),
        )
    }

    fn mesos(labels: &serde_json::Value) -> serde_json::Value {
        json!({"args": {"org.apache.mesos": {"network_info": {"name": "web", "labels": {"labels": labels}}}}})
    }

    #[test]
    fn plan_names_the_endpoint_like_calico() {
        let p = plan(&conf(&json!({}))).unwrap();
        assert_eq!(p.name, "host--1-cni-abc--1-eth0");
        assert_eq!(p.namespace, "default");
        assert_eq!(
            p.key,
            "/t/resources/v3/projectcalico.org/workloadendpoints/default/host--1-cni-abc--1-eth0"
        );
        assert_eq!(p.profile_key, "/t/resources/v3/projectcalico.org/profiles/web");
        assert_eq!(p.labels[ORCHESTRATOR_LABEL], "cni");
        assert_eq!(p.labels[NAMESPACE_LABEL], "default");
    }

    #[test]
    fn libnetwork_plans_name_the_endpoint_like_calicos_plugin() {
        let keys = KeyLayout::new("/t".to_owned());
        let id = "3f2a-b";
        let p = EndpointPlan::libnetwork(&keys, "host-1", id, "web").unwrap();
        assert_eq!(p.name, "host--1-libnetwork-libnetwork-3f2a--b");
        assert_eq!(
            p.key,
            "/t/resources/v3/projectcalico.org/workloadendpoints/default/host--1-libnetwork-libnetwork-3f2a--b"
        );
        let wep = p.record(&["10.0.0.5/32".parse().unwrap()], "cali3f2ab", "ee:ee:ee:ee:ee:01");
        wep.validate().unwrap();
        assert_eq!(wep.spec.orchestrator.as_deref(), Some("libnetwork"));
        assert_eq!(wep.spec.endpoint.as_deref(), Some(id));
        assert_eq!(wep.spec.container_id, None);
        assert_eq!(wep.spec.profiles, ["web"]);
        assert_eq!(wep.metadata.labels[ORCHESTRATOR_LABEL], "libnetwork");
        let err = EndpointPlan::libnetwork(&keys, "host-1", "-x", "web").unwrap_err();
        assert!(err.to_string().contains("EndpointID"), "{err}");
        let err = EndpointPlan::libnetwork(&keys, "host-1", id, "Bad_Net").unwrap_err();
        assert!(err.to_string().contains("network name"), "{err}");
    }

    #[test]
    fn mesos_labels_and_namespace() {
        let c = conf(&mesos(&json!([
            {"key": "app", "value": "front end"},
            {"key": "projectcalico.org/namespace", "value": "team-a"},
            {"key": "a/b", "value": "x"}
        ])));
        let p = plan(&c).unwrap();
        assert_eq!(p.namespace, "team-a");
        assert_eq!(p.labels["app"], "front-end");
        assert_eq!(p.labels["a.b"], "x");
        assert_eq!(p.labels[NAMESPACE_LABEL], "team-a");
        assert!(p.key.contains("/workloadendpoints/team-a/"));
        let wep =
            p.record(&["10.0.0.5/32".parse().unwrap()], "cali0123456789a", "0a:00:00:00:00:01");
        wep.validate().unwrap();
        assert_eq!(wep.spec.profiles, ["web"]);
        assert_eq!(wep.metadata.labels["app"], "front-end");
    }

    #[test]
    fn invalid_labels_and_names_are_config_errors() {
        let long = "x".repeat(64);
        let err = plan(&conf(&mesos(&json!([{"key": "k", "value": long}])))).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("labels[\"k\"]"), "{err}");
        let err = plan(&conf(&mesos(&json!([{"key": NAMESPACE_LABEL, "value": "A_b"}]))));
        assert_eq!(err.unwrap_err().code(), 7);
        let mut c = conf(&json!({}));
        c.name = "Web_Net".into();
        let err = plan(&c).unwrap_err();
        assert!(err.to_string().contains("profile"), "{err}");
    }
}
