//! The Calico v1 profile commands operators have in their runbooks (`profile web rule add
//! inbound allow tcp to ports 80,443`), translated to and from v3 Profile resources.
//!
//! Everything here is pure: [`grammar`] turns words into a [`ProfileCommand`], [`rules`]
//! translates v1 rules (the words and calicoctl's v1 JSON) to v3 rules and back, and [`edit`]
//! applies one command to a profile. The etcd round trips live in `cmd::profile`.
//!
//! The mapping is Calico's own: a tag `X` is the label `X: ""` in `labelsToApply`,
//! `src_tag: X` is `source.selector: has(X)`, `!src_tag: X` is `source.notSelector: has(X)`,
//! inbound rules are `ingress`, outbound rules `egress`.

mod edit;
mod grammar;
mod rules;
mod show;
#[cfg(test)]
mod tests;

pub use edit::{edit, rule_json, rule_show, tag_show, Change, EditOp, Outcome};
pub use grammar::{parse_command, parse_ports, ProfileCommand, USAGE};
pub use rules::{
    parse_rules_json, to_v1, to_v3, V1Action, V1Protocol, V1Rule, V1RuleEntry, V1Rules,
};
pub use show::describe;

use std::fmt;

/// Which of a profile's two rule lists a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// v1 `inbound`, v3 `ingress`.
    Inbound,
    /// v1 `outbound`, v3 `egress`.
    Outbound,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// The v3 field the rules live in.
    pub const fn v3_field(self) -> &'static str {
        match self {
            Direction::Inbound => "ingress",
            Direction::Outbound => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can be wrong with a v1 command or v1 rules. Retrying never helps: the same input fails
/// the same way (except [`V1Error::ProfileNotFound`] once someone creates the profile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V1Error {
    /// The words do not follow the v1 grammar (exit status 2, like any usage error).
    #[error("{message}\n\n{USAGE}")]
    Usage { message: String },

    /// A value in the command or the JSON is invalid; `field` names it (`to ports`,
    /// `inbound_rules[1].dst_ports[0]`, `spec.ingress[0].source.selector`).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    #[error("profile {0:?} not found")]
    ProfileNotFound(String),

    /// A 1-based rule position outside the list.
    #[error("{direction} rule position {position} is out of range: profile {profile:?} has {count} {direction} rule(s){hint}")]
    PositionOutOfRange {
        profile: String,
        direction: Direction,
        position: usize,
        count: usize,
        /// Extra words for `rule add`, where one past the end appends.
        hint: String,
    },

    #[error("no such {direction} rule in profile {profile:?}: {rule}")]
    RuleNotFound { profile: String, direction: Direction, rule: String },

    #[error("tag {tag:?} is not on profile {profile:?}")]
    TagNotFound { profile: String, tag: String },
}

impl V1Error {
    /// Whether this is a usage error (exit status 2) rather than bad data (exit status 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, V1Error::Usage { .. })
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        V1Error::Usage { message: message.into() }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        V1Error::Invalid { field: field.into(), reason: reason.into() }
    }
}
