//! What tabbyctl prints: aligned tables (like calicoctl's), YAML and JSON, and the `List`
//! wrapper for several resources.

use clap::ValueEnum;
use datastore::keys::Kind;
use datastore::model::API_VERSION;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::CtlError;

/// `-o` of `get`, `endpoint ls` and `node status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Wide,
    Yaml,
    Json,
}

/// Rows under upper-case headers, columns padded to line up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        Table { headers: headers.iter().map(|h| h.as_ref().to_owned()).collect(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table with three spaces between columns and no trailing blanks.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths.get(i).copied().unwrap_or(0) - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

pub fn to_yaml<T: Serialize + ?Sized>(value: &T) -> Result<String, CtlError> {
    serde_yaml_ng::to_string(value).map_err(|e| CtlError::Output(format!("YAML: {e}")))
}

pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, CtlError> {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| CtlError::Output(format!("JSON: {e}")))
}

/// Several resources as one document, as calicoctl prints them: `kind: <Kind>List`, `items`,
/// and the revision the listing reflects. `apply` reads it back.
pub fn list_document(kind: Kind, items: &[Value], revision: i64) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": items,
    })
}

/// Writes to stdout. A closed pipe (`tabbyctl get … | head`) is not an error.
pub fn emit(text: &str) -> Result<(), CtlError> {
    datastore::cli::emit_stdout(text).map_err(|e| CtlError::Output(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims() {
        let mut t = Table::new(&["NAME", "CIDR"]);
        t.push(vec!["default-pool".into(), "10.65.0.0/16".into()]);
        t.push(vec!["p".into(), String::new()]);
        assert_eq!(t.render(), "NAME           CIDR\ndefault-pool   10.65.0.0/16\np\n");
    }
}
