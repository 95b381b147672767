//! `get KIND [NAME]`: tables like calicoctl's (NAME plus kind-specific columns; `wide` adds
//! more), or the resources as YAML or JSON with their server-set metadata.

use datastore::keys::Kind;
use datastore::model::AnyResource;
use serde_json::Value;

use crate::cli::GetArgs;
use crate::error::CtlError;
use crate::output::{list_document, to_json, to_yaml, Format, Table};
use crate::store::{decode_stored, parse_kind, Store};

/// What `get` prints, and records it could not decode (reported after the output).
pub struct Shown {
    pub text: String,
    pub bad: Vec<String>,
}

pub async fn run(store: &Store, args: &GetArgs) -> Result<Shown, CtlError> {
    let kind = parse_kind(&args.kind)?;
    let namespace = kind.namespaced().then_some(args.namespace.as_str());
    if let Some(name) = &args.name {
        let key = store.layout.resource(kind, namespace, name);
        let kv = store
            .client
            .get(&key)
            .await
            .map_err(CtlError::etcd(format!("cannot read {key}")))?
            .ok_or_else(|| {
                let ns = namespace.map(|ns| format!(" in namespace {ns:?}")).unwrap_or_default();
                CtlError::NotFound(format!("{kind} {name:?}{ns} not found"))
            })?;
        let resource = decode_stored(&kv)?;
        let text = match args.output {
            Format::Yaml => to_yaml(&resource)?,
            Format::Json => to_json(&resource)?,
            format => table(kind, format == Format::Wide, std::slice::from_ref(&resource)).render(),
        };
        return Ok(Shown { text, bad: Vec::new() });
    }
    let prefix = match namespace {
        Some(ns) if !args.all_namespaces => store.layout.namespace_prefix(kind, ns),
        _ => store.layout.resources_prefix(kind),
    };
    let (resources, revision, bad) = store.list_resources(&prefix).await?;
    let text = render_list(kind, args.output, &resources, revision)?;
    Ok(Shown { text, bad })
}

/// Several resources in `format`.
pub fn render_list(
    kind: Kind,
    format: Format,
    resources: &[AnyResource],
    revision: i64,
) -> Result<String, CtlError> {
    let items = || {
        resources
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<Value>, _>>()
            .map_err(|e| CtlError::Output(e.to_string()))
    };
    Ok(match format {
        Format::Yaml => to_yaml(&list_document(kind, &items()?, revision))?,
        Format::Json => to_json(&list_document(kind, &items()?, revision))?,
        format => table(kind, format == Format::Wide, resources).render(),
    })
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn labels(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// calicoctl's columns for `kind`.
fn table(kind: Kind, wide: bool, resources: &[AnyResource]) -> Table {
    let headers: &[&str] = match (kind, wide) {
        (Kind::IpPool, false) => &["NAME", "CIDR", "SELECTOR"],
        (Kind::IpPool, true) => &[
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
        ],
        (Kind::Profile | Kind::GlobalNetworkPolicy | Kind::Node, false) => &["NAME"],
        (Kind::Profile, true) => &["NAME", "LABELSTOAPPLY", "INGRESS", "EGRESS"],
        (Kind::GlobalNetworkPolicy, true) => &["NAME", "ORDER", "SELECTOR"],
        (Kind::NetworkPolicy, false) => &["NAMESPACE", "NAME"],
        (Kind::NetworkPolicy, true) => &["NAMESPACE", "NAME", "ORDER", "SELECTOR"],
        (Kind::WorkloadEndpoint, false) => {
            &["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]
        }
        (Kind::WorkloadEndpoint, true) => {
            &["NAMESPACE", "NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES"]
        }
        (Kind::Node, true) => &["NAME", "ASN", "IPV4", "IPV6"],
        (Kind::BgpPeer, false) => &["NAME", "PEERIP", "NODE", "ASN"],
        (Kind::BgpPeer, true) => &["NAME", "PEERIP", "NODE", "ASN", "PEERSELECTOR", "NODESELECTOR"],
        (Kind::BgpConfiguration, _) => &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
    };
    let mut t = Table::new(headers);
    for resource in resources {
        let name = resource.name().to_owned();
        let ns = resource.namespace().unwrap_or_default().to_owned();
        let row = match resource {
            AnyResource::IpPool(p) => {
                let s = &p.spec;
                let selector = s.effective_node_selector().to_owned();
                if wide {
                    vec![
                        name,
                        s.cidr.to_string(),
                        s.nat_outgoing.to_string(),
                        format!("{:?}", s.effective_ipip_mode()),
                        format!("{:?}", s.effective_vxlan_mode()),
                        s.disabled.to_string(),
                        s.disable_bgp_export.to_string(),
                        selector,
                    ]
                } else {
                    vec![name, s.cidr.to_string(), selector]
                }
            }
            AnyResource::Profile(p) if wide => vec![
                name,
                labels(&p.spec.labels_to_apply),
                p.spec.ingress.len().to_string(),
                p.spec.egress.len().to_string(),
            ],
            AnyResource::GlobalNetworkPolicy(p) if wide => {
                vec![name, opt(p.spec.order), opt(p.spec.selector.clone())]
            }
            AnyResource::NetworkPolicy(p) if wide => {
                vec![ns, name, opt(p.spec.order), opt(p.spec.selector.clone())]
            }
            AnyResource::NetworkPolicy(_) => vec![ns, name],
            AnyResource::WorkloadEndpoint(w) => {
                let s = &w.spec;
                let workload =
                    s.workload.clone().or_else(|| s.container_id.clone()).unwrap_or_default();
                let nets: Vec<String> = s.ip_networks.iter().map(ToString::to_string).collect();
                let mut row = vec![ns];
                if wide {
                    row.push(name);
                }
                row.extend([
                    workload,
                    opt(s.node.clone()),
                    nets.join(","),
                    opt(s.interface_name.clone()),
                ]);
                if wide {
                    row.push(s.profiles.join(","));
                }
                row
            }
            AnyResource::Node(n) if wide => {
                let bgp = n.spec.bgp.as_ref();
                vec![
                    name,
                    opt(bgp.and_then(|b| b.as_number)),
                    opt(bgp.and_then(|b| b.ipv4_address.clone())),
                    opt(bgp.and_then(|b| b.ipv6_address.clone())),
                ]
            }
            AnyResource::BgpPeer(p) => {
                let s = &p.spec;
                let mut row = vec![
                    name,
                    opt(s.peer_ip.clone()),
                    s.node.clone().unwrap_or_else(|| "(global)".into()),
                    opt(s.as_number),
                ];
                if wide {
                    row.extend([opt(s.peer_selector.clone()), opt(s.node_selector.clone())]);
                }
                row
            }
            AnyResource::BgpConfiguration(c) => vec![
                name,
                opt(c.spec.log_severity_screen.clone()),
                opt(c.spec.node_to_node_mesh_enabled),
                opt(c.spec.as_number),
            ],
            _ => vec![name],
        };
        t.push(row);
    }
    t
}
