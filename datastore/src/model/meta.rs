//! The envelope every v3 resource shares: `kind`, `apiVersion`, `metadata`, `spec`.
//!
//! Unknown fields at every level land in an `extra` map and are written back unchanged, so a
//! read-modify-write by tabby never drops what a newer Calico (or an operator) put there.

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::validate::{check_annotations, check_labels, check_resource_name, is_dns1123_label};
use super::{AnyResource, ModelError};
use crate::keys::Kind;

/// The only `apiVersion` tabby reads or writes.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// Kubernetes-style object metadata, as Calico stores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// RFC 3339. Go writes `null` for an unset time; that reads back as `None` and is then
    /// omitted, which Calico reads the same way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ObjectMeta {
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta { name: name.into(), ..ObjectMeta::default() }
    }
}

/// The spec of one resource kind: ties a spec type to its kind and its validation.
pub trait Spec: Serialize + DeserializeOwned + Clone + Debug + PartialEq {
    const KIND: Kind;

    /// Semantic checks of the spec; `meta` is there for rules that span both (a workload
    /// endpoint's name must match its identifiers).
    fn validate(&self, meta: &ObjectMeta) -> Result<(), ModelError>;

    /// Checks the name beyond Calico's default DNS-subdomain rule (policies are stricter).
    fn check_name(name: &str) -> Result<(), ModelError> {
        check_resource_name("metadata.name", name)
    }

    /// Wraps a resource of this kind into [`AnyResource`].
    fn into_any(resource: Resource<Self>) -> AnyResource;
}

/// A Calico v3 resource: `{"kind", "apiVersion", "metadata", "spec"}` plus whatever else the
/// document holds (a node's `status`, say), kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: DeserializeOwned"))]
pub struct Resource<S> {
    pub kind: Kind,
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: S,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl<S: Spec> Resource<S> {
    /// A new cluster-scoped resource named `name`.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Resource {
            kind: S::KIND,
            api_version: API_VERSION.to_owned(),
            metadata: ObjectMeta::named(name),
            spec,
            extra: Map::new(),
        }
    }

    /// A new resource named `name` in `namespace` (for namespaced kinds).
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>, spec: S) -> Self {
        let mut resource = Resource::new(name, spec);
        resource.metadata.namespace = Some(namespace.into());
        resource
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }

    /// Decodes a resource of kind `S::KIND`. Checks `kind` and `apiVersion` first so a wrong
    /// document is named as such rather than as a pile of field errors; type errors name the
    /// JSON path of the field. Does not run [`Resource::validate`].
    pub fn from_json(json: &[u8]) -> Result<Self, ModelError> {
        let kind = read_header(json)?;
        if kind != S::KIND {
            return Err(ModelError::KindMismatch { expected: S::KIND, found: kind.to_string() });
        }
        decode(json)
    }

    /// The JSON tabby stores in etcd.
    pub fn to_json(&self) -> Result<Vec<u8>, ModelError> {
        serde_json::to_vec(self).map_err(|e| ModelError::Encode {
            field: format!("{}/{}", S::KIND, self.metadata.name),
            reason: e.to_string(),
        })
    }

    /// Checks everything Calico's validator checks for this kind that tabby relies on: the
    /// envelope, the metadata and the spec. The error names the first field at fault.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.kind != S::KIND {
            return Err(ModelError::KindMismatch {
                expected: S::KIND,
                found: self.kind.to_string(),
            });
        }
        if self.api_version != API_VERSION {
            return Err(ModelError::WrongApiVersion { found: self.api_version.clone() });
        }
        S::check_name(&self.metadata.name)?;
        match (&self.metadata.namespace, S::KIND.namespaced()) {
            (None, true) => {
                return Err(ModelError::invalid(
                    "metadata.namespace",
                    format!("a {} must have a namespace", S::KIND),
                ));
            }
            (Some(ns), true) if !is_dns1123_label(ns) => {
                return Err(ModelError::invalid(
                    "metadata.namespace",
                    format!("{ns:?} is not a valid namespace (a DNS-1123 label)"),
                ));
            }
            (Some(ns), false) if !ns.is_empty() => {
                return Err(ModelError::invalid(
                    "metadata.namespace",
                    format!("a {} is cluster-wide and takes no namespace (found {ns:?})", S::KIND),
                ));
            }
            _ => {}
        }
        check_labels("metadata.labels", &self.metadata.labels)?;
        check_annotations("metadata.annotations", &self.metadata.annotations)?;
        self.spec.validate(&self.metadata)
    }
}

/// Just enough of a document to know what it claims to be.
#[derive(Deserialize)]
struct Header {
    kind: Option<String>,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
}

/// Reads and checks `kind` and `apiVersion`.
pub(crate) fn read_header(json: &[u8]) -> Result<Kind, ModelError> {
    let header: Header = decode(json)?;
    let kind = header.kind.ok_or_else(|| ModelError::invalid("kind", "missing field `kind`"))?;
    let kind = Kind::from_kind_name(&kind).ok_or(ModelError::UnknownKind { kind })?;
    match header.api_version {
        Some(v) if v == API_VERSION => Ok(kind),
        Some(found) => Err(ModelError::WrongApiVersion { found }),
        None => Err(ModelError::invalid("apiVersion", "missing field `apiVersion`")),
    }
}

/// serde_json with the failing field's path in the error.
pub(crate) fn decode<T: DeserializeOwned>(json: &[u8]) -> Result<T, ModelError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let value =
        serde_path_to_error::deserialize(&mut de).map_err(|e| ModelError::from_path_error(&e))?;
    de.end().map_err(|e| ModelError::Decode { field: ".".to_owned(), reason: e.to_string() })?;
    Ok(value)
}

/// `skip_serializing_if` for the Go `bool,omitempty` fields.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde hands the field by reference
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
