//! One v1 profile command applied to one profile: pure, so the runbook's effect on the v3
//! resource can be checked against golden files without etcd.

use std::fmt::Write;

use datastore::model::{Profile, Rule};

use super::rules::{to_v3, V1RuleEntry, V1Rules};
use super::{describe, Direction, V1Error, V1Rule};

/// A change to one profile.
#[derive(Debug, Clone, PartialEq)]
pub enum EditOp {
    /// `profile add NAME`: create it with Calico's classic default rules and tag.
    Add,
    TagAdd(String),
    TagRemove(String),
    /// Insert before the 1-based `position` (append when `None`).
    RuleAdd {
        direction: Direction,
        position: Option<usize>,
        rule: V1Rule,
    },
    RuleRemoveAt {
        direction: Direction,
        position: usize,
    },
    RuleRemoveMatch {
        direction: Direction,
        rule: V1Rule,
    },
    /// Replace both rule lists (`rule update`).
    RuleUpdate(V1Rules),
}

impl EditOp {
    /// Whether the edit may be re-applied to a profile that changed since it was read. Edits
    /// that name a position may not: the position meant the rule the operator saw.
    pub fn safe_to_retry(&self) -> bool {
        match self {
            EditOp::RuleAdd { position, .. } => position.is_none(),
            EditOp::RuleRemoveAt { .. } | EditOp::RuleUpdate(_) => false,
            EditOp::Add
            | EditOp::TagAdd(_)
            | EditOp::TagRemove(_)
            | EditOp::RuleRemoveMatch { .. } => true,
        }
    }
}

/// What to write back.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Nothing to write.
    None,
    Create(Box<Profile>),
    Update(Box<Profile>),
}

/// The result of one edit: the change and what to tell the operator (calicoctl's words).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub change: Change,
    pub message: Option<String>,
}

impl Outcome {
    fn update(profile: Profile, message: Option<String>) -> Self {
        Outcome { change: Change::Update(Box::new(profile)), message }
    }
}

/// Applies `op` to the profile `name`, currently `current` (`None` if it does not exist).
/// The result is validated as a whole before it is returned.
pub fn edit(name: &str, current: Option<&Profile>, op: &EditOp) -> Result<Outcome, V1Error> {
    let outcome = match (op, current) {
        (EditOp::Add, Some(_)) => Outcome {
            change: Change::None,
            message: Some(format!("Profile {name} already exists.")),
        },
        (EditOp::Add, None) => {
            let profile = Profile::classic_default(name);
            check(&profile)?;
            return Ok(Outcome {
                change: Change::Create(Box::new(profile)),
                message: Some(format!("Created profile {name}")),
            });
        }
        (_, None) => return Err(V1Error::ProfileNotFound(name.to_owned())),
        (op, Some(profile)) => edit_existing(name, profile.clone(), op)?,
    };
    if let Change::Update(profile) = &outcome.change {
        check(profile)?;
    }
    Ok(outcome)
}

fn edit_existing(name: &str, mut profile: Profile, op: &EditOp) -> Result<Outcome, V1Error> {
    let labels = &mut profile.spec.labels_to_apply;
    Ok(match op {
        EditOp::Add => Outcome { change: Change::None, message: None },
        EditOp::TagAdd(tag) => {
            super::rules::check_tag("tag", tag)?;
            match labels.get(tag) {
                Some(value) if !value.is_empty() => {
                    return Err(V1Error::invalid(
                        "tag",
                        format!("profile {name:?} already sets label {tag}={value:?}; a tag is a label with an empty value"),
                    ));
                }
                Some(_) => Outcome {
                    change: Change::None,
                    message: Some(format!("Tag {tag} is already on profile {name}")),
                },
                None => {
                    labels.insert(tag.clone(), String::new());
                    Outcome::update(profile, Some(format!("Tag {tag} added to profile {name}")))
                }
            }
        }
        EditOp::TagRemove(tag) => {
            if labels.get(tag).is_none_or(|v| !v.is_empty()) {
                return Err(V1Error::TagNotFound { profile: name.to_owned(), tag: tag.clone() });
            }
            labels.remove(tag);
            Outcome::update(profile, Some(format!("Tag {tag} removed from profile {name}")))
        }
        EditOp::RuleAdd { direction, position, rule } => {
            let rule = to_v3(rule, "")?;
            let rules = rules_mut(&mut profile, *direction);
            let position = position.unwrap_or(rules.len() + 1);
            if !(1..=rules.len() + 1).contains(&position) {
                return Err(V1Error::PositionOutOfRange {
                    profile: name.to_owned(),
                    direction: *direction,
                    position,
                    count: rules.len(),
                    hint: format!("; give 1 to {} ({} appends)", rules.len() + 1, rules.len() + 1),
                });
            }
            if rules.contains(&rule) {
                return Ok(Outcome {
                    change: Change::None,
                    message: Some("Rule already present, skipping.".to_owned()),
                });
            }
            rules.insert(position - 1, rule);
            Outcome::update(profile, None)
        }
        EditOp::RuleRemoveAt { direction, position } => {
            let rules = rules_mut(&mut profile, *direction);
            if !(1..=rules.len()).contains(position) {
                return Err(V1Error::PositionOutOfRange {
                    profile: name.to_owned(),
                    direction: *direction,
                    position: *position,
                    count: rules.len(),
                    hint: String::new(),
                });
            }
            rules.remove(position - 1);
            Outcome::update(profile, None)
        }
        EditOp::RuleRemoveMatch { direction, rule } => {
            let rule = to_v3(rule, "")?;
            let rules = rules_mut(&mut profile, *direction);
            let Some(index) = rules.iter().position(|r| *r == rule) else {
                return Err(V1Error::RuleNotFound {
                    profile: name.to_owned(),
                    direction: *direction,
                    rule: describe(&rule),
                });
            };
            rules.remove(index);
            Outcome::update(profile, None)
        }
        EditOp::RuleUpdate(v1) => {
            if v1.id != name {
                return Err(V1Error::invalid(
                    "id",
                    format!("rules JSON \"id\" {:?} does not match profile name {name:?}", v1.id),
                ));
            }
            profile.spec.ingress = convert_all(&v1.inbound_rules, "inbound_rules")?;
            profile.spec.egress = convert_all(&v1.outbound_rules, "outbound_rules")?;
            Outcome::update(profile, Some(format!("Successfully updated rules on profile {name}")))
        }
    })
}

fn convert_all(entries: &[V1RuleEntry], list: &str) -> Result<Vec<Rule>, V1Error> {
    entries.iter().enumerate().map(|(i, entry)| entry.to_v3(&format!("{list}[{i}]"))).collect()
}

fn rules_mut(profile: &mut Profile, direction: Direction) -> &mut Vec<Rule> {
    match direction {
        Direction::Inbound => &mut profile.spec.ingress,
        Direction::Outbound => &mut profile.spec.egress,
    }
}

fn check(profile: &Profile) -> Result<(), V1Error> {
    profile.validate().map_err(|e| {
        let text = e.to_string();
        let reason = text.strip_prefix(&format!("{}: ", e.field())).unwrap_or(&text).to_owned();
        V1Error::Invalid { field: e.field().to_owned(), reason }
    })
}

/// `rule show`: calicoctl's numbered listing.
pub fn rule_show(profile: &Profile) -> String {
    let mut out = String::from("Inbound rules:\n");
    for (i, rule) in profile.spec.ingress.iter().enumerate() {
        let _ = writeln!(out, " {:>3} {}", i + 1, describe(rule));
    }
    out.push_str("Outbound rules:\n");
    for (i, rule) in profile.spec.egress.iter().enumerate() {
        let _ = writeln!(out, " {:>3} {}", i + 1, describe(rule));
    }
    out
}

/// `rule json`: the profile's rules as calicoctl's v1 JSON, indented by two.
pub fn rule_json(profile: &Profile) -> Result<String, V1Error> {
    let rules = V1Rules {
        id: profile.metadata.name.clone(),
        inbound_rules: profile.spec.ingress.iter().map(V1RuleEntry::from_v3).collect(),
        outbound_rules: profile.spec.egress.iter().map(V1RuleEntry::from_v3).collect(),
    };
    serde_json::to_string_pretty(&rules)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| V1Error::invalid("rules JSON", format!("cannot encode: {e}")))
}

/// `tag show`: one tag (a label with an empty value) per line.
pub fn tag_show(profile: &Profile) -> String {
    profile.spec.labels_to_apply.iter().filter(|(_, value)| value.is_empty()).fold(
        String::new(),
        |mut out, (tag, _)| {
            out.push_str(tag);
            out.push('\n');
            out
        },
    )
}
