//! Calico's label selector language: parsed once into a normalised tree, matched against label
//! sets, and printed in a canonical form that the agent uses as the identity of an address set.
//!
//! The grammar and the matching rules are Calico's (`libcalico-go/lib/selector`): `all()`,
//! `has(k)`, `k == 'v'`, `k != 'v'`, `k in {..}`, `k not in {..}`, `k contains 'v'`,
//! `k starts with 'v'`, `k ends with 'v'`, `!`, `&&` (binds tighter than `||`), `||` and
//! parentheses. An empty selector means `all()`. String literals take single or double quotes and
//! have no escapes.
//!
//! The tree is normalised while it is built, so that two spellings of one selector compare equal
//! and print the same: `&&`/`||` chains are flattened, double negations cancel, redundant
//! parentheses vanish, and set literals are sorted and de-duplicated.

mod eval;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

pub use eval::{Labels, Layered};

/// Longest selector text accepted, in bytes. Selectors come from resources anyone with write
/// access to etcd can create, and the agent parses every one of them.
pub const MAX_SELECTOR_LEN: usize = 64 * 1024;

/// Deepest nesting of parentheses accepted. The parser recurses once per level, so this bound
/// is what keeps hostile input from overflowing the stack.
pub const MAX_NESTING_DEPTH: usize = 100;

/// A selector that failed to parse, with the byte offset of the offending token.
///
/// Retrying cannot help: the same text always fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at position {position}: {message}")]
pub struct SelectorError {
    /// 0-based byte offset into the selector text.
    pub position: usize,
    pub message: String,
}

impl SelectorError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        Self { position, message: message.into() }
    }
}

/// A parsed, normalised label selector.
///
/// Equality and hashing are structural on the normalised tree, so `a in {'y', "x"}` equals
/// `a in {"x", "y"}`, but semantically equal yet differently shaped selectors (`a != 'x'` versus
/// `!a == 'x'`) are distinct, as in Calico.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    expr: Expr,
}

/// Invariants the parser and the combinators keep, which make `Display` re-parse to an equal
/// tree: `And`/`Or` hold at least two children and never a child of their own kind, and `Not`
/// never wraps another `Not`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Expr {
    All,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn negate(self) -> Expr {
        match self {
            Expr::Not(inner) => *inner,
            other => Expr::Not(Box::new(other)),
        }
    }

    /// Conjunction of `parts`, flattening nested conjunctions.
    fn all_of(parts: Vec<Expr>) -> Expr {
        Self::flatten(parts, |e| matches!(e, Expr::And(_)), Expr::And)
    }

    /// Disjunction of `parts`, flattening nested disjunctions.
    fn any_of(parts: Vec<Expr>) -> Expr {
        Self::flatten(parts, |e| matches!(e, Expr::Or(_)), Expr::Or)
    }

    fn flatten(
        parts: Vec<Expr>,
        same_kind: fn(&Expr) -> bool,
        make: fn(Vec<Expr>) -> Expr,
    ) -> Expr {
        let mut flat = Vec::with_capacity(parts.len());
        for part in parts {
            if same_kind(&part) {
                if let Expr::And(children) | Expr::Or(children) = part {
                    flat.extend(children);
                }
            } else {
                flat.push(part);
            }
        }
        if flat.len() == 1 {
            if let Some(only) = flat.pop() {
                return only;
            }
        }
        make(flat)
    }
}

impl Selector {
    /// Parses selector text. Empty or whitespace-only text is `all()`, as in Calico.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        parser::parse(text).map(|expr| Self { expr })
    }

    /// The selector that matches everything.
    pub fn all() -> Self {
        Self { expr: Expr::All }
    }

    /// Whether this is exactly `all()` (not merely something equivalent to it).
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }

    /// `has(key)`: how a Calico v1 tag `key` is selected in v3.
    ///
    /// Fails when `key` holds a character the selector grammar cannot express (anything outside
    /// `[a-zA-Z0-9_./-]`) or is empty; the error position is a byte offset into `key`.
    pub fn has_label(key: &str) -> Result<Self, SelectorError> {
        if key.is_empty() {
            return Err(SelectorError::new(0, "label key is empty"));
        }
        if let Some((position, bad)) = key.char_indices().find(|&(_, c)| !lexer::is_key_char(c)) {
            return Err(SelectorError::new(
                position,
                format!(
                    "label key {key:?} contains {bad:?}; selector label keys are [a-zA-Z0-9_./-]"
                ),
            ));
        }
        Ok(Self { expr: Expr::Has(key.to_owned()) })
    }

    /// Both selectors must match. `all()` on either side is dropped, so extending an
    /// unrestricted rule with a condition yields just that condition.
    #[must_use]
    pub fn and(self, other: Selector) -> Self {
        let expr = match (self.expr, other.expr) {
            (Expr::All, e) | (e, Expr::All) => e,
            (a, b) => Expr::all_of(vec![a, b]),
        };
        Self { expr }
    }

    /// Either selector may match. `all()` on either side absorbs the other.
    #[must_use]
    pub fn or(self, other: Selector) -> Self {
        let expr = match (self.expr, other.expr) {
            (Expr::All, _) | (_, Expr::All) => Expr::All,
            (a, b) => Expr::any_of(vec![a, b]),
        };
        Self { expr }
    }

    /// Whether `labels` satisfy this selector, with Calico's semantics for absent labels:
    /// `k != 'v'` and `k not in {..}` match when `k` is absent; every other comparison needs `k`.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.matches(labels)
    }
}

/// True when `key` can be named in a selector: non-empty and only `[a-zA-Z0-9_./-]`.
pub fn is_valid_label_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(lexer::is_key_char)
}

impl Default for Selector {
    /// `all()`, as Calico reads a missing selector.
    fn default() -> Self {
        Self::all()
    }
}

impl std::ops::Not for Selector {
    type Output = Selector;

    /// Negation; `!!s` is `s` again.
    fn not(self) -> Selector {
        Self { expr: self.expr.negate() }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for Selector {
    /// The canonical form: Calico's spelling, double quotes unless the value holds one, and
    /// parentheses only where precedence needs them. It re-parses to an equal `Selector`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Has(key) => write!(f, "has({key})"),
            Expr::Eq(key, value) => write!(f, "{key} == {}", Quoted(value)),
            Expr::Ne(key, value) => write!(f, "{key} != {}", Quoted(value)),
            Expr::Contains(key, value) => write!(f, "{key} contains {}", Quoted(value)),
            Expr::StartsWith(key, value) => write!(f, "{key} starts with {}", Quoted(value)),
            Expr::EndsWith(key, value) => write!(f, "{key} ends with {}", Quoted(value)),
            Expr::In(key, set) => write!(f, "{key} in {}", SetLiteral(set)),
            Expr::NotIn(key, set) => write!(f, "{key} not in {}", SetLiteral(set)),
            Expr::Not(inner) => match **inner {
                Expr::And(_) | Expr::Or(_) => write!(f, "!({inner})"),
                _ => write!(f, "!{inner}"),
            },
            Expr::And(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" && ")?;
                    }
                    if matches!(part, Expr::Or(_)) {
                        write!(f, "({part})")?;
                    } else {
                        write!(f, "{part}")?;
                    }
                }
                Ok(())
            }
            Expr::Or(parts) => {
                // `&&` binds tighter and nested `||` was flattened, so no child needs parentheses.
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" || ")?;
                    }
                    write!(f, "{part}")?;
                }
                Ok(())
            }
        }
    }
}

/// A string literal in the quote that cannot clash with its content. Literals have no escapes,
/// so a parsed value never holds both kinds of quote.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains('"') {
            write!(f, "'{}'", self.0)
        } else {
            write!(f, "\"{}\"", self.0)
        }
    }
}

struct SetLiteral<'a>(&'a BTreeSet<String>);

impl fmt::Display for SetLiteral<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, value) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Quoted(value))?;
        }
        f.write_str("}")
    }
}

impl serde::Serialize for Selector {
    /// As the canonical text.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    /// From selector text; a parse error fails deserialisation with its position.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}
