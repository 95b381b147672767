//! Resource documents from a file or stdin: YAML (one or many, `---` separated) or JSON (one
//! value, several, or a list), `kind: List` / `kind: <Kind>List` wrappers unwrapped. Every
//! document is decoded and validated before the caller writes anything, and every error names
//! the file, the document and the field.

use std::fmt;
use std::io::Read;

use datastore::keys::Kind;
use datastore::model::{parse_resource, AnyResource};
use serde::Deserialize;
use serde_json::Value;

use crate::error::CtlError;

/// Where a resource came from: `pools.yaml: document 2, item 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file name as given, or `<stdin>`.
    pub source: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// 1-based position inside a list document.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        Ok(())
    }
}

/// One decoded (and, if asked, validated) resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub origin: Origin,
    pub resource: AnyResource,
}

impl Document {
    /// `Profile "web"` or `NetworkPolicy "default/allow-web"`.
    pub fn describe(&self) -> String {
        describe(&self.resource)
    }
}

pub fn describe(resource: &AnyResource) -> String {
    match resource.namespace() {
        Some(ns) if resource.kind().namespaced() => {
            format!("{} \"{ns}/{}\"", resource.kind(), resource.name())
        }
        _ => format!("{} {:?}", resource.kind(), resource.name()),
    }
}

/// One document that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub origin: Origin,
    /// `Profile "web"`, when the document got far enough to say.
    pub what: Option<String>,
    /// The problem, starting with the field at fault where there is one.
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(what) = &self.what {
            write!(f, " ({what})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every document that failed, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputErrors(pub Vec<InputError>);

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        write!(f, "\nnothing was written")
    }
}

/// Reads `path` (`-` for stdin) and decodes every resource in it. With `validate`, each is
/// also checked as Calico would check it. Namespaced resources without a namespace get
/// `default_namespace`. Fails, listing every bad document, if any document is bad or if the
/// input holds no resource at all.
pub fn read_documents(
    path: &str,
    default_namespace: &str,
    validate: bool,
) -> Result<Vec<Document>, CtlError> {
    let (source, text) = if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CtlError::Read { path: "<stdin>".into(), reason: e.to_string() })?;
        ("<stdin>".to_owned(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CtlError::Read { path: path.to_owned(), reason: e.to_string() })?;
        (path.to_owned(), text)
    };
    let docs =
        parse_documents(&source, &text, default_namespace, validate).map_err(CtlError::Input)?;
    if docs.is_empty() {
        return Err(CtlError::Invalid(format!("{source}: no resources found")));
    }
    Ok(docs)
}

/// [`read_documents`] on text already read; `source` names it in errors.
pub fn parse_documents(
    source: &str,
    text: &str,
    default_namespace: &str,
    validate: bool,
) -> Result<Vec<Document>, InputErrors> {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    let origin =
        |document: usize, item: Option<usize>| Origin { source: source.to_owned(), document, item };
    for (index, raw) in split_documents(text).into_iter().enumerate() {
        let document = index + 1;
        let value = match raw {
            Ok(value) => value,
            Err(message) => {
                errors.push(InputError { origin: origin(document, None), what: None, message });
                // The parser cannot find document boundaries after a syntax error.
                break;
            }
        };
        match value {
            Value::Null => {}
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    decode(item, origin(document, Some(i + 1)), default_namespace, validate)
                        .map_or_else(|e| errors.push(e), |d| docs.push(d));
                }
            }
            Value::Object(ref map) if is_list(map) => {
                let Some(Value::Array(items)) = map.get("items") else { continue };
                for (i, item) in items.iter().enumerate() {
                    decode(
                        item.clone(),
                        origin(document, Some(i + 1)),
                        default_namespace,
                        validate,
                    )
                    .map_or_else(|e| errors.push(e), |d| docs.push(d));
                }
            }
            other => decode(other, origin(document, None), default_namespace, validate)
                .map_or_else(|e| errors.push(e), |d| docs.push(d)),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(InputErrors(errors))
    }
}

/// `kind: List` or `kind: <Kind>List` with an `items` list.
fn is_list(map: &serde_json::Map<String, Value>) -> bool {
    let kind_is_list = map.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"));
    kind_is_list && map.get("items").is_some_and(Value::is_array)
}

/// The documents of a file: JSON values when it starts like JSON, YAML documents otherwise.
/// A syntax error ends the list (as an `Err` entry) with its line and column.
fn split_documents(text: &str) -> Vec<Result<Value, String>> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::Deserializer::from_str(trimmed)
            .into_iter::<Value>()
            .map(|r| r.map_err(|e| format!("JSON syntax error: {e}")))
            .collect();
    }
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        match Value::deserialize(doc) {
            Ok(value) => out.push(Ok(value)),
            Err(e) => {
                out.push(Err(format!("YAML syntax error: {e}")));
                break;
            }
        }
    }
    out
}

/// One resource: default the namespace, decode (errors name the JSON field), validate.
fn decode(
    mut value: Value,
    origin: Origin,
    default_namespace: &str,
    validate: bool,
) -> Result<Document, InputError> {
    let kind_name = value.get("kind").and_then(Value::as_str).map(str::to_owned);
    let name = value.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned);
    let what = match (&kind_name, &name) {
        (Some(k), Some(n)) => Some(format!("{k} {n:?}")),
        _ => None,
    };
    let fail = |message: String| InputError { origin: origin.clone(), what: what.clone(), message };
    if !value.is_object() {
        return Err(fail(
            "expected a resource (a mapping with kind, apiVersion, metadata and spec)".into(),
        ));
    }
    if let Some(kind) = kind_name.as_deref().and_then(Kind::from_kind_name) {
        if kind.namespaced() {
            default_namespace_of(&mut value, default_namespace);
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| fail(e.to_string()))?;
    let resource = parse_resource(&bytes).map_err(|e| {
        let mut message = without_json_position(&e.to_string());
        if matches!(e, datastore::model::ModelError::UnknownKind { .. }) {
            message = format!("{message} (expected one of: {})", kind_names());
        }
        fail(message)
    })?;
    if validate {
        resource.validate().map_err(|e| fail(e.to_string()))?;
    }
    Ok(Document { origin, resource })
}

/// Positions in the JSON tabbyctl re-encoded the document to mean nothing to the operator
/// (their YAML has other lines); the field path says where the problem is.
fn without_json_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(at) if message.ends_with(')') && message[at..].contains(", column ") => {
            message[..at].to_owned()
        }
        _ => message.to_owned(),
    }
}

fn default_namespace_of(value: &mut Value, namespace: &str) {
    let Some(object) = value.as_object_mut() else { return };
    let metadata =
        object.entry("metadata").or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(meta) = metadata.as_object_mut() {
        let missing = meta.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty);
        if missing {
            meta.insert("namespace".into(), Value::String(namespace.to_owned()));
        }
    }
}

/// The kind names a document may use, for error messages.
pub fn kind_names() -> String {
    Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const POOL: &str = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.65.0.0/16\n";

    #[test]
    fn yaml_documents_and_lists() {
        let text = format!(
            "{POOL}---\n---\napiVersion: projectcalico.org/v3\nkind: List\nitems:\n- {}\n",
            r#"{"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"web"},"spec":{}}"#
        );
        let docs = parse_documents("f.yaml", &text, "default", true).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].origin.to_string(), "f.yaml: document 3, item 1");
        assert_eq!(docs[1].describe(), "Profile \"web\"");
    }

    #[test]
    fn json_stream_and_array() {
        let text = r#"[{"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"a"},"spec":{}}]
        {"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{"name":"b"},"spec":{}}"#;
        let docs = parse_documents("f.json", text, "default", true).unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.resource.name().to_owned()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(docs[1].origin.document, 2);
    }

    #[test]
    fn tab_is_a_yaml_error_with_position() {
        let text = format!("{POOL}---\nkind: Profile\nmetadata:\n\tname: x\n");
        let err = parse_documents("bad.yaml", &text, "default", true).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("bad.yaml: document 2: YAML syntax error"), "{text}");
        assert!(text.contains("line 10"), "{text}");
    }

    #[test]
    fn every_bad_document_is_reported_with_its_field() {
        let text = format!(
            "{POOL}---\n{}---\n{}",
            POOL.replace("10.65.0.0/16", "10.65.0.1/16"),
            POOL.replace("IPPool", "IPPol")
        );
        let err = parse_documents("p.yaml", &text, "default", true).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(
            err.0[0].to_string().starts_with("p.yaml: document 2 (IPPool \"p\"): spec.cidr"),
            "{err}"
        );
        assert!(err.0[1].message.contains("IPPol") && err.0[1].message.contains("IPPool"), "{err}");
    }

    #[test]
    fn namespaced_kinds_get_the_default_namespace() {
        let text = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: np\nspec:\n  selector: all()\n";
        let docs = parse_documents("np.yaml", text, "prod", true).unwrap();
        assert_eq!(docs[0].resource.namespace(), Some("prod"));
    }
}
