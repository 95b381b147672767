//! Selector-based policies: namespaced `NetworkPolicy` and cluster-wide `GlobalNetworkPolicy`.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::meta::{is_false, ObjectMeta, Resource, Spec};
use super::profile::validate_rules;
use super::rule::Rule;
use super::validate::{check_selector, is_global_network_policy_name, is_network_policy_name};
use super::{AnyResource, ModelError};
use crate::keys::Kind;

/// Which directions a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Lower orders apply first; none means after every ordered policy.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_order")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GlobalNetworkPolicySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Lower orders apply first; none means after every ordered policy.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_order")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub do_not_track: bool,
    #[serde(rename = "preDNAT", default, skip_serializing_if = "is_false")]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub apply_on_forward: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Calico's default for `types` when none are given: ingress, plus egress when there are
/// egress rules; egress alone when there are only egress rules.
fn effective_types(types: &[PolicyType], ingress: &[Rule], egress: &[Rule]) -> Vec<PolicyType> {
    if !types.is_empty() {
        return types.to_vec();
    }
    match (ingress.is_empty(), egress.is_empty()) {
        (true, false) => vec![PolicyType::Egress],
        (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
        (_, true) => vec![PolicyType::Ingress],
    }
}

impl NetworkPolicySpec {
    pub fn effective_types(&self) -> Vec<PolicyType> {
        effective_types(&self.types, &self.ingress, &self.egress)
    }
}

impl GlobalNetworkPolicySpec {
    pub fn effective_types(&self) -> Vec<PolicyType> {
        effective_types(&self.types, &self.ingress, &self.egress)
    }
}

fn check_types(types: &[PolicyType]) -> Result<(), ModelError> {
    for (i, t) in types.iter().enumerate() {
        if types[..i].contains(t) {
            return Err(ModelError::invalid(
                format!("spec.types[{i}]"),
                format!("{t:?} is listed more than once"),
            ));
        }
    }
    Ok(())
}

/// Both policy kinds word a bad name the same way; only the rule that accepts one differs.
fn check_policy_name(name: &str, valid: fn(&str) -> bool) -> Result<(), ModelError> {
    if valid(name) {
        Ok(())
    } else {
        Err(ModelError::invalid(
            "metadata.name",
            format!(
                "{name:?} is not a valid policy name: a DNS-1123 label, optionally prefixed by \
                 '<tier>.'"
            ),
        ))
    }
}

fn check_tier(tier: Option<&String>) -> Result<(), ModelError> {
    match tier {
        Some(t) if !super::validate::is_dns1123_label(t) => Err(ModelError::invalid(
            "spec.tier",
            format!("{t:?} is not a valid tier name (a DNS-1123 label)"),
        )),
        _ => Ok(()),
    }
}

impl Spec for NetworkPolicySpec {
    const KIND: Kind = Kind::NetworkPolicy;

    fn validate(&self, _meta: &ObjectMeta) -> Result<(), ModelError> {
        check_tier(self.tier.as_ref())?;
        check_selector("spec.selector", self.selector.as_ref())?;
        check_selector("spec.serviceAccountSelector", self.service_account_selector.as_ref())?;
        check_types(&self.types)?;
        validate_rules("spec", &self.ingress, &self.egress)
    }

    fn check_name(name: &str) -> Result<(), ModelError> {
        check_policy_name(name, is_network_policy_name)
    }

    fn into_any(resource: Resource<Self>) -> AnyResource {
        AnyResource::NetworkPolicy(resource)
    }
}

impl Spec for GlobalNetworkPolicySpec {
    const KIND: Kind = Kind::GlobalNetworkPolicy;

    fn validate(&self, _meta: &ObjectMeta) -> Result<(), ModelError> {
        check_tier(self.tier.as_ref())?;
        check_selector("spec.selector", self.selector.as_ref())?;
        check_selector("spec.namespaceSelector", self.namespace_selector.as_ref())?;
        check_selector("spec.serviceAccountSelector", self.service_account_selector.as_ref())?;
        check_types(&self.types)?;
        if self.do_not_track && self.pre_dnat {
            return Err(ModelError::invalid(
                "spec.preDNAT",
                "preDNAT and doNotTrack cannot both be true",
            ));
        }
        if self.pre_dnat && (!self.egress.is_empty() || self.types.contains(&PolicyType::Egress)) {
            return Err(ModelError::invalid(
                "spec.preDNAT",
                "a preDNAT policy cannot have egress rules or type Egress",
            ));
        }
        if (self.do_not_track || self.pre_dnat) && !self.apply_on_forward {
            return Err(ModelError::invalid(
                "spec.applyOnForward",
                "applyOnForward must be true when preDNAT or doNotTrack is",
            ));
        }
        validate_rules("spec", &self.ingress, &self.egress)
    }

    fn check_name(name: &str) -> Result<(), ModelError> {
        check_policy_name(name, is_global_network_policy_name)
    }

    fn into_any(resource: Resource<Self>) -> AnyResource {
        AnyResource::GlobalNetworkPolicy(resource)
    }
}

/// Go writes a whole float64 without a fraction (`100`, not `100.0`); do the same so the
/// stored JSON reads back identically in both.
#[allow(clippy::ref_option)] // serde hands the field by reference
fn serialize_order<S: Serializer>(order: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    const EXACT_INT: f64 = 9_007_199_254_740_992.0; // 2^53
    match *order {
        Some(v) if v.fract() == 0.0 && v.abs() < EXACT_INT => serializer.serialize_i64(v as i64),
        Some(v) => serializer.serialize_f64(v),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::GlobalNetworkPolicy;

    #[test]
    fn order_keeps_go_number_form() {
        let mut spec = GlobalNetworkPolicySpec { order: Some(100.0), ..Default::default() };
        assert_eq!(serde_json::to_string(&spec).unwrap(), r#"{"order":100}"#);
        spec.order = Some(10.5);
        assert_eq!(serde_json::to_string(&spec).unwrap(), r#"{"order":10.5}"#);
    }

    #[test]
    fn default_types() {
        let allow = || Rule::new(crate::model::Action::Allow);
        let mut spec = GlobalNetworkPolicySpec::default();
        assert_eq!(spec.effective_types(), vec![PolicyType::Ingress]);
        spec.egress = vec![allow()];
        assert_eq!(spec.effective_types(), vec![PolicyType::Egress]);
        spec.ingress = vec![allow()];
        assert_eq!(spec.effective_types(), vec![PolicyType::Ingress, PolicyType::Egress]);
        spec.types = vec![PolicyType::Ingress];
        assert_eq!(spec.effective_types(), vec![PolicyType::Ingress]);
    }

    #[test]
    fn untracked_and_pre_dnat_rules() {
        let gnp = |f: fn(&mut GlobalNetworkPolicySpec)| {
            let mut spec = GlobalNetworkPolicySpec::default();
            f(&mut spec);
            GlobalNetworkPolicy::new("p", spec).validate()
        };
        assert_eq!(gnp(|s| s.do_not_track = true).unwrap_err().field(), "spec.applyOnForward");
        assert!(gnp(|s| {
            s.do_not_track = true;
            s.apply_on_forward = true;
        })
        .is_ok());
        assert_eq!(
            gnp(|s| {
                s.pre_dnat = true;
                s.do_not_track = true;
                s.apply_on_forward = true;
            })
            .unwrap_err()
            .field(),
            "spec.preDNAT"
        );
        assert_eq!(
            gnp(|s| s.types = vec![PolicyType::Ingress, PolicyType::Ingress]).unwrap_err().field(),
            "spec.types[1]"
        );
    }

    #[test]
    fn policy_names() {
        assert!(NetworkPolicySpec::check_name("default.allow-db").is_ok());
        assert!(NetworkPolicySpec::check_name("a.b.c").is_err());
        assert!(GlobalNetworkPolicySpec::check_name("Allow").is_err());
    }
}
