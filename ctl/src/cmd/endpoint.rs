//! `endpoint ls`: workload endpoints with their node, workload, interface, addresses and
//! profiles.

use datastore::keys::Kind;
use datastore::model::AnyResource;

use crate::error::CtlError;
use crate::output::{list_document, to_json, to_yaml, Format, Table};
use crate::store::Store;

pub struct Listed {
    pub text: String,
    pub bad: Vec<String>,
}

pub async fn ls(store: &Store, node: Option<&str>, format: Format) -> Result<Listed, CtlError> {
    let prefix = store.layout.resources_prefix(Kind::WorkloadEndpoint);
    let (resources, revision, bad) = store.list_resources(&prefix).await?;
    let endpoints: Vec<AnyResource> = resources
        .into_iter()
        .filter(|r| match (r, node) {
            (AnyResource::WorkloadEndpoint(w), Some(node)) => w.spec.node.as_deref() == Some(node),
            (AnyResource::WorkloadEndpoint(_), None) => true,
            _ => false,
        })
        .collect();
    let text = match format {
        Format::Yaml | Format::Json => {
            let items = endpoints
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CtlError::Output(e.to_string()))?;
            let doc = list_document(Kind::WorkloadEndpoint, &items, revision);
            if format == Format::Yaml {
                to_yaml(&doc)?
            } else {
                to_json(&doc)?
            }
        }
        format => table(&endpoints, format == Format::Wide),
    };
    Ok(Listed { text, bad })
}

fn table(endpoints: &[AnyResource], wide: bool) -> String {
    let mut headers = vec!["NODE", "NAMESPACE", "WORKLOAD", "INTERFACE", "ADDRESSES", "PROFILES"];
    if wide {
        headers.extend(["NAME", "CONTAINER", "MAC"]);
    }
    let mut t = Table::new(&headers);
    for r in endpoints {
        let AnyResource::WorkloadEndpoint(w) = r else { continue };
        let s = &w.spec;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let addresses: Vec<String> = s.ip_networks.iter().map(ToString::to_string).collect();
        let mut row = vec![
            text(&s.node),
            w.namespace().unwrap_or_default().to_owned(),
            s.workload.clone().or_else(|| s.container_id.clone()).unwrap_or_default(),
            text(&s.interface_name),
            addresses.join(","),
            s.profiles.join(","),
        ];
        if wide {
            row.extend([w.name().to_owned(), text(&s.container_id), text(&s.mac)]);
        }
        t.push(row);
    }
    if endpoints.is_empty() {
        return "No workload endpoints found.\n".to_owned();
    }
    t.render()
}
