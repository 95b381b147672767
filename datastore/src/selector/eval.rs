//! Matching a selector against a set of labels, including an endpoint's labels layered over the
//! labels its profiles apply.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

use super::Expr;

/// Read access to a set of labels, so a selector can match any label store without copying it.
pub trait Labels {
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl<S: BuildHasher> Labels for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

/// Two label sets seen as one, the first winning on a shared key: an endpoint's own labels
/// (`.0`) over the labels inherited from its profiles' `labelsToApply` (`.1`), as Felix's
/// inherit index does.
pub struct Layered<'a, A: ?Sized, B: ?Sized>(pub &'a A, pub &'a B);

impl<A: Labels + ?Sized, B: Labels + ?Sized> Labels for Layered<'_, A, B> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).or_else(|| self.1.get(key))
    }
}

// Written out because derives would demand `A: Clone` and `A: Debug` of the referents.
impl<A: ?Sized, B: ?Sized> Clone for Layered<'_, A, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: ?Sized, B: ?Sized> Copy for Layered<'_, A, B> {}

impl<A: fmt::Debug + ?Sized, B: fmt::Debug + ?Sized> fmt::Debug for Layered<'_, A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Layered").field(&self.0).field(&self.1).finish()
    }
}

impl Expr {
    pub(super) fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All => true,
            Expr::Has(key) => labels.get(key).is_some(),
            Expr::Eq(key, value) => labels.get(key) == Some(value.as_str()),
            // Calico: an absent label is "not equal" and "not in" any set.
            Expr::Ne(key, value) => labels.get(key) != Some(value.as_str()),
            Expr::In(key, set) => labels.get(key).is_some_and(|v| set.contains(v)),
            Expr::NotIn(key, set) => !labels.get(key).is_some_and(|v| set.contains(v)),
            Expr::Contains(key, part) => labels.get(key).is_some_and(|v| v.contains(part.as_str())),
            Expr::StartsWith(key, prefix) => {
                labels.get(key).is_some_and(|v| v.starts_with(prefix.as_str()))
            }
            Expr::EndsWith(key, suffix) => {
                labels.get(key).is_some_and(|v| v.ends_with(suffix.as_str()))
            }
            Expr::Not(inner) => !inner.matches(labels),
            Expr::And(parts) => parts.iter().all(|p| p.matches(labels)),
            Expr::Or(parts) => parts.iter().any(|p| p.matches(labels)),
        }
    }
}
