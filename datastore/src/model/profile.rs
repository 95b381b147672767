//! Profiles: per-network rule sets every endpoint that names them inherits, plus the labels
//! they give those endpoints (the v3 form of Calico v1 tags).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::meta::{ObjectMeta, Resource, Spec};
use super::rule::{Action, EntityRule, Rule};
use super::validate::check_labels;
use super::{AnyResource, ModelError};
use crate::keys::Kind;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_to_apply: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Spec for ProfileSpec {
    const KIND: Kind = Kind::Profile;

    fn validate(&self, _meta: &ObjectMeta) -> Result<(), ModelError> {
        validate_rules("spec", &self.ingress, &self.egress)?;
        check_labels("spec.labelsToApply", &self.labels_to_apply)
    }

    fn into_any(resource: Resource<Self>) -> AnyResource {
        AnyResource::Profile(resource)
    }
}

impl Resource<ProfileSpec> {
    /// The profile Calico's CNI plugin (and its Docker driver) create for a network `name`
    /// that has none: members may talk to each other (ingress allowed from `has(<name>)`),
    /// may talk out to anything, and carry the label `<name>: ""` — the v1 tag `<name>`.
    pub fn classic_default(name: &str) -> Self {
        let mut ingress = Rule::new(Action::Allow);
        ingress.source =
            EntityRule { selector: Some(format!("has({name})")), ..EntityRule::default() };
        let spec = ProfileSpec {
            ingress: vec![ingress],
            egress: vec![Rule::new(Action::Allow)],
            labels_to_apply: BTreeMap::from([(name.to_owned(), String::new())]),
            extra: Map::new(),
        };
        Resource::new(name, spec)
    }
}

/// Validates ingress then egress rules, naming the failing one as `<spec>.ingress[i]`.
pub(crate) fn validate_rules(
    spec: &str,
    ingress: &[Rule],
    egress: &[Rule],
) -> Result<(), ModelError> {
    for (direction, rules) in [("ingress", ingress), ("egress", egress)] {
        for (i, rule) in rules.iter().enumerate() {
            rule.validate(&format!("{spec}.{direction}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::model::Profile;

    #[test]
    fn classic_default_profile_shape() {
        let p = Profile::classic_default("web");
        let json: Value = serde_json::from_slice(&p.to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "Profile",
                "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": "web"},
                "spec": {
                    "ingress": [{"action": "Allow", "source": {"selector": "has(web)"}}],
                    "egress": [{"action": "Allow"}],
                    "labelsToApply": {"web": ""}
                }
            })
        );
    }
}
