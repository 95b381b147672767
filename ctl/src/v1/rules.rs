//! v1 rules (calicoctl 0.x/1.x and Felix v1 JSON) to v3 rules and back.
//!
//! The v1 JSON keys are the ones libcalico's v1 model knew: `action`, `ip_version`,
//! `protocol`, `icmp_type`, `icmp_code`, `src_tag`, `src_selector`, `src_net`, `src_nets`,
//! `src_ports`, the `dst_` twins, and a `!`-prefixed negation of each. A v3 rule that uses
//! something v1 never had (HTTP matches, service accounts, namespace selectors, fields tabby
//! does not know) has no v1 form: it travels as `{"v3_rule": {...}}` so `rule json` followed by
//! `rule update` never loses it.

use datastore::model::{
    is_valid_label_key, parse_cidr_or_ip, Action, EntityRule, IcmpFields, Port, Protocol, Rule,
};
use datastore::selector::Selector;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::V1Error;

/// A v1 rule's action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum V1Action {
    /// Felix v1 read a rule without an action as `allow`.
    #[default]
    Allow,
    Deny,
    /// v3 `Pass`.
    NextTier,
    Log,
}

impl V1Action {
    fn to_v3(self) -> Action {
        match self {
            V1Action::Allow => Action::Allow,
            V1Action::Deny => Action::Deny,
            V1Action::NextTier => Action::Pass,
            V1Action::Log => Action::Log,
        }
    }

    fn from_v3(action: Action) -> Self {
        match action {
            Action::Allow => V1Action::Allow,
            Action::Deny => V1Action::Deny,
            Action::Pass => V1Action::NextTier,
            Action::Log => V1Action::Log,
        }
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            V1Action::Allow => "allow",
            V1Action::Deny => "deny",
            V1Action::NextTier => "next-tier",
            V1Action::Log => "log",
        }
    }
}

/// A protocol as v1 wrote it: lower-case names (`tcp`, `icmpv6`) or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Protocol(pub Protocol);

impl V1Protocol {
    pub(crate) fn word(self) -> String {
        match self.0.name() {
            Some(name) => name.to_ascii_lowercase(),
            None => self.0.number().to_string(),
        }
    }
}

impl Serialize for V1Protocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.name() {
            Some(name) => serializer.serialize_str(&name.to_ascii_lowercase()),
            None => serializer.serialize_u8(self.0.number()),
        }
    }
}

impl<'de> Deserialize<'de> for V1Protocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Protocol::deserialize(deserializer).map(V1Protocol)
    }
}

/// One v1 rule, field for field as calicoctl's `rule json` printed it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V1Rule {
    #[serde(default)]
    pub action: V1Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<V1Protocol>,
    #[serde(rename = "!protocol", default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<V1Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    #[serde(rename = "!icmp_type", default, skip_serializing_if = "Option::is_none")]
    pub not_icmp_type: Option<u8>,
    #[serde(rename = "!icmp_code", default, skip_serializing_if = "Option::is_none")]
    pub not_icmp_code: Option<u8>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_net: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_nets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_ports: Vec<Port>,
    #[serde(rename = "!src_tag", default, skip_serializing_if = "Option::is_none")]
    pub not_src_tag: Option<String>,
    #[serde(rename = "!src_selector", default, skip_serializing_if = "Option::is_none")]
    pub not_src_selector: Option<String>,
    #[serde(rename = "!src_net", default, skip_serializing_if = "Option::is_none")]
    pub not_src_net: Option<String>,
    #[serde(rename = "!src_nets", default, skip_serializing_if = "Vec::is_empty")]
    pub not_src_nets: Vec<String>,
    #[serde(rename = "!src_ports", default, skip_serializing_if = "Vec::is_empty")]
    pub not_src_ports: Vec<Port>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_net: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_nets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<Port>,
    #[serde(rename = "!dst_tag", default, skip_serializing_if = "Option::is_none")]
    pub not_dst_tag: Option<String>,
    #[serde(rename = "!dst_selector", default, skip_serializing_if = "Option::is_none")]
    pub not_dst_selector: Option<String>,
    #[serde(rename = "!dst_net", default, skip_serializing_if = "Option::is_none")]
    pub not_dst_net: Option<String>,
    #[serde(rename = "!dst_nets", default, skip_serializing_if = "Vec::is_empty")]
    pub not_dst_nets: Vec<String>,
    #[serde(rename = "!dst_ports", default, skip_serializing_if = "Vec::is_empty")]
    pub not_dst_ports: Vec<Port>,
}

/// The source or destination half of a v1 rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Src,
    Dst,
}

/// One side's fields, positive or negated, borrowed out of a [`V1Rule`].
pub(crate) struct Side<'a> {
    /// Key prefix in the JSON: `src_`, `!src_`, `dst_`, `!dst_`.
    pub(crate) prefix: &'static str,
    pub(crate) tag: &'a mut Option<String>,
    pub(crate) selector: &'a mut Option<String>,
    pub(crate) net: &'a mut Option<String>,
    pub(crate) nets: &'a mut Vec<String>,
    pub(crate) ports: &'a mut Vec<Port>,
}

impl Side<'_> {
    pub(crate) fn is_empty(&self) -> bool {
        self.tag.is_none()
            && self.selector.is_none()
            && self.net.is_none()
            && self.nets.is_empty()
            && self.ports.is_empty()
    }
}

impl V1Rule {
    /// A rule with `action` and no match criteria.
    pub fn new(action: V1Action) -> Self {
        V1Rule { action, ..V1Rule::default() }
    }

    pub(crate) fn side(&mut self, end: End, negated: bool) -> Side<'_> {
        match (end, negated) {
            (End::Src, false) => Side {
                prefix: "src_",
                tag: &mut self.src_tag,
                selector: &mut self.src_selector,
                net: &mut self.src_net,
                nets: &mut self.src_nets,
                ports: &mut self.src_ports,
            },
            (End::Src, true) => Side {
                prefix: "!src_",
                tag: &mut self.not_src_tag,
                selector: &mut self.not_src_selector,
                net: &mut self.not_src_net,
                nets: &mut self.not_src_nets,
                ports: &mut self.not_src_ports,
            },
            (End::Dst, false) => Side {
                prefix: "dst_",
                tag: &mut self.dst_tag,
                selector: &mut self.dst_selector,
                net: &mut self.dst_net,
                nets: &mut self.dst_nets,
                ports: &mut self.dst_ports,
            },
            (End::Dst, true) => Side {
                prefix: "!dst_",
                tag: &mut self.not_dst_tag,
                selector: &mut self.not_dst_selector,
                net: &mut self.not_dst_net,
                nets: &mut self.not_dst_nets,
                ports: &mut self.not_dst_ports,
            },
        }
    }

    /// Sets a tag on one end (used by the grammar).
    pub(crate) fn set_tag(&mut self, end: End, tag: String) {
        *self.side(end, false).tag = Some(tag);
    }

    pub(crate) fn set_net(&mut self, end: End, net: String) {
        *self.side(end, false).net = Some(net);
    }

    pub(crate) fn set_ports(&mut self, end: End, ports: Vec<Port>) {
        *self.side(end, false).ports = ports;
    }
}

/// A rule in v1 JSON: a v1 rule, or a v3 rule that has no v1 form.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a profile holds a handful of these, briefly
pub enum V1RuleEntry {
    V1(V1Rule),
    /// Written as `{"v3_rule": {...}}`.
    V3(Rule),
}

impl Serialize for V1RuleEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            V1RuleEntry::V1(rule) => rule.serialize(serializer),
            V1RuleEntry::V3(rule) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("v3_rule", rule)?;
                map.end()
            }
        }
    }
}

impl V1RuleEntry {
    /// The v1 form of a v3 rule if it has one, else the v3 rule itself.
    pub fn from_v3(rule: &Rule) -> Self {
        match to_v1(rule) {
            Some(v1) => V1RuleEntry::V1(v1),
            None => V1RuleEntry::V3(rule.clone()),
        }
    }

    /// The validated v3 rule; `path` names the entry in errors (`inbound_rules[2]`).
    pub fn to_v3(&self, path: &str) -> Result<Rule, V1Error> {
        match self {
            V1RuleEntry::V1(rule) => to_v3(rule, path),
            V1RuleEntry::V3(rule) => {
                let here = at(path, "v3_rule");
                rule.validate(&here)
                    .map_err(|e| V1Error::invalid(e.field().to_owned(), model_reason(&e)))?;
                Ok(rule.clone())
            }
        }
    }
}

/// The rules of one profile in v1 JSON: `{"id", "inbound_rules", "outbound_rules"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V1Rules {
    /// The profile's name; `rule update` refuses rules whose `id` names another profile.
    pub id: String,
    pub inbound_rules: Vec<V1RuleEntry>,
    pub outbound_rules: Vec<V1RuleEntry>,
}

/// Reads the JSON `rule update` takes on stdin. Errors name the field
/// (`inbound_rules[1].dst_ports[0]`).
pub fn parse_rules_json(text: &str) -> Result<V1Rules, V1Error> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| V1Error::invalid("rules JSON", format!("not valid JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(V1Error::invalid(
            "rules JSON",
            "expected an object with id, inbound_rules and outbound_rules",
        ));
    };
    if let Some(unknown) =
        top.keys().find(|k| !matches!(k.as_str(), "id" | "inbound_rules" | "outbound_rules"))
    {
        return Err(V1Error::invalid(
            unknown.clone(),
            "unknown field: expected id, inbound_rules and outbound_rules",
        ));
    }
    let id = match top.remove("id") {
        Some(Value::String(id)) => id,
        Some(_) => return Err(V1Error::invalid("id", "must be a string (the profile name)")),
        None => return Err(V1Error::invalid("id", "missing: it must name the profile")),
    };
    let mut lists = Vec::with_capacity(2);
    for name in ["inbound_rules", "outbound_rules"] {
        let Some(Value::Array(items)) = top.remove(name) else {
            return Err(V1Error::invalid(name, "missing or not a list of rules"));
        };
        let entries = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| entry_from_value(item, &format!("{name}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        lists.push(entries);
    }
    let outbound_rules = lists.pop().unwrap_or_default();
    let inbound_rules = lists.pop().unwrap_or_default();
    Ok(V1Rules { id, inbound_rules, outbound_rules })
}

fn entry_from_value(value: Value, path: &str) -> Result<V1RuleEntry, V1Error> {
    let v3 = match &value {
        Value::Object(map) => map.len() == 1 && map.contains_key("v3_rule"),
        _ => return Err(V1Error::invalid(path, "expected a rule (a JSON object)")),
    };
    if v3 {
        let inner = match value {
            Value::Object(mut map) => map.remove("v3_rule").unwrap_or(Value::Null),
            other => other,
        };
        decode(inner, &at(path, "v3_rule")).map(V1RuleEntry::V3)
    } else {
        decode(value, path).map(V1RuleEntry::V1)
    }
}

/// Deserialises `value`, naming the failing field under `path`.
fn decode<T: serde::de::DeserializeOwned>(value: Value, path: &str) -> Result<T, V1Error> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = if inner == "." { path.to_owned() } else { at(path, &inner) };
        V1Error::invalid(field, e.into_inner().to_string())
    })
}

/// `path.name`, or `name` alone at the top.
pub(crate) fn at(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A model error's reason without its field (the caller names the field its own way).
fn model_reason(e: &datastore::model::ModelError) -> String {
    let text = e.to_string();
    match text.strip_prefix(&format!("{}: ", e.field())) {
        Some(reason) => reason.to_owned(),
        None => text,
    }
}

/// Checks that `tag` can be a label key and be selected with `has(tag)`.
pub(crate) fn check_tag(field: &str, tag: &str) -> Result<(), V1Error> {
    if let Err(e) = Selector::has_label(tag) {
        return Err(V1Error::invalid(field, format!("{tag:?} cannot be a tag: {}", e.message)));
    }
    if !is_valid_label_key(tag) {
        return Err(V1Error::invalid(
            field,
            format!("{tag:?} cannot be a tag: not a valid label key (at most 63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric)"),
        ));
    }
    Ok(())
}

/// A CIDR or bare address, written back as a CIDR (`10.0.0.1` becomes `10.0.0.1/32`).
pub(crate) fn normalize_net(field: &str, net: &str) -> Result<String, V1Error> {
    parse_cidr_or_ip(net)
        .map(|(_, parsed)| parsed.to_string())
        .ok_or_else(|| V1Error::invalid(field, format!("{net:?} is not a CIDR or IP address")))
}

fn check_ports(field: &str, ports: &[Port]) -> Result<(), V1Error> {
    for (i, port) in ports.iter().enumerate() {
        let here = format!("{field}[{i}]");
        match port {
            Port::Single(0) | Port::Range { first: 0, .. } => {
                return Err(V1Error::invalid(here, "port 0 out of range: ports are 1-65535"));
            }
            Port::Range { first, last } if first > last => {
                return Err(V1Error::invalid(
                    here,
                    format!("port range {first}:{last} is backwards"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_selector(field: &str, text: &str) -> Result<Selector, V1Error> {
    Selector::parse(text).map_err(|e| {
        V1Error::invalid(
            field,
            format!("invalid selector {text:?} at position {}: {}", e.position, e.message),
        )
    })
}

/// Translates one v1 rule to v3, as Felix folded tags into selectors, and validates the result.
/// `path` prefixes field names in errors (empty for a rule from the command line).
pub fn to_v3(rule: &V1Rule, path: &str) -> Result<Rule, V1Error> {
    let mut rule = rule.clone();
    let mut out = Rule::new(rule.action.to_v3());
    out.ip_version = rule.ip_version;
    out.protocol = rule.protocol.map(|p| p.0);
    out.not_protocol = rule.not_protocol.map(|p| p.0);
    let is_icmp = out.protocol.is_some_and(|p| p.is_icmp() || p.is_icmpv6());
    for (negated, icmp_type, code) in
        [(false, rule.icmp_type, rule.icmp_code), (true, rule.not_icmp_type, rule.not_icmp_code)]
    {
        if icmp_type.is_none() && code.is_none() {
            continue;
        }
        let bang = if negated { "!" } else { "" };
        if !is_icmp {
            return Err(V1Error::invalid(
                at(path, &format!("{bang}icmp_type")),
                "ICMP type and code need protocol icmp or icmpv6",
            ));
        }
        if icmp_type.is_none() {
            return Err(V1Error::invalid(
                at(path, &format!("{bang}icmp_code")),
                "an ICMP code needs an ICMP type",
            ));
        }
        let fields = Some(IcmpFields { icmp_type, code, extra: Map::new() });
        if negated {
            out.not_icmp = fields;
        } else {
            out.icmp = fields;
        }
    }
    let ports_ok = out.protocol.is_some_and(Protocol::supports_ports);
    for end in [End::Src, End::Dst] {
        let mut entity = EntityRule::default();
        for negated in [false, true] {
            let side = rule.side(end, negated);
            let prefix = side.prefix;
            let field = |name: &str| at(path, &format!("{prefix}{name}"));
            let has = match side.tag.as_deref() {
                Some(tag) => {
                    check_tag(&field("tag"), tag)?;
                    Some(Selector::has_label(tag).map_err(|e| {
                        V1Error::invalid(field("tag"), format!("{tag:?} cannot be a tag: {e}"))
                    })?)
                }
                None => None,
            };
            let selector = match side.selector.as_deref() {
                Some(text) => Some((text, parse_selector(&field("selector"), text)?)),
                None => None,
            };
            // Felix folded a tag into the selector: `(sel) && has(tag)`; for the negated
            // side neither may match, so `(sel) || has(tag)` must not.
            let combined = match (has, selector) {
                (None, None) => None,
                (Some(has), None) => Some(has.to_string()),
                (None, Some((text, _))) => Some(text.to_owned()),
                (Some(has), Some((_, sel))) => {
                    Some(if negated { sel.or(has) } else { sel.and(has) }.to_string())
                }
            };
            let mut nets = Vec::new();
            if let Some(net) = side.net.as_deref() {
                nets.push(normalize_net(&field("net"), net)?);
            }
            for (i, net) in side.nets.iter().enumerate() {
                nets.push(normalize_net(&format!("{}[{i}]", field("nets")), net)?);
            }
            check_ports(&field("ports"), side.ports)?;
            if !side.ports.is_empty() && !ports_ok {
                return Err(V1Error::invalid(
                    field("ports"),
                    "matching ports needs protocol tcp or udp",
                ));
            }
            let ports = std::mem::take(side.ports);
            if negated {
                entity.not_selector = combined;
                entity.not_nets = nets;
                entity.not_ports = ports;
            } else {
                entity.selector = combined;
                entity.nets = nets;
                entity.ports = ports;
            }
        }
        match end {
            End::Src => out.source = entity,
            End::Dst => out.destination = entity,
        }
    }
    let here = if path.is_empty() { "rule" } else { path };
    out.validate(here).map_err(|e| V1Error::invalid(e.field().to_owned(), model_reason(&e)))?;
    Ok(out)
}

/// The v1 form of a v3 rule, or `None` when it uses something v1 never had.
pub fn to_v1(rule: &Rule) -> Option<V1Rule> {
    if rule.http.is_some() || rule.metadata.is_some() || !rule.extra.is_empty() {
        return None;
    }
    let mut out = V1Rule::new(V1Action::from_v3(rule.action));
    out.ip_version = rule.ip_version;
    out.protocol = rule.protocol.map(V1Protocol);
    out.not_protocol = rule.not_protocol.map(V1Protocol);
    for (negated, icmp) in [(false, &rule.icmp), (true, &rule.not_icmp)] {
        let Some(icmp) = icmp else { continue };
        // An ICMP match with neither type nor code has no v1 spelling.
        if !icmp.extra.is_empty() || icmp.icmp_type.is_none() {
            return None;
        }
        if negated {
            out.not_icmp_type = icmp.icmp_type;
            out.not_icmp_code = icmp.code;
        } else {
            out.icmp_type = icmp.icmp_type;
            out.icmp_code = icmp.code;
        }
    }
    for (end, entity) in [(End::Src, &rule.source), (End::Dst, &rule.destination)] {
        if entity.namespace_selector.is_some()
            || entity.service_accounts.is_some()
            || !entity.extra.is_empty()
        {
            return None;
        }
        for (negated, selector, nets, ports) in [
            (false, &entity.selector, &entity.nets, &entity.ports),
            (true, &entity.not_selector, &entity.not_nets, &entity.not_ports),
        ] {
            let side = out.side(end, negated);
            if let Some(text) = selector {
                match as_tag(text) {
                    Some(tag) => *side.tag = Some(tag),
                    None => *side.selector = Some(text.clone()),
                }
            }
            if let [net] = nets.as_slice() {
                *side.net = Some(net.clone());
            } else {
                side.nets.clone_from(nets);
            }
            side.ports.clone_from(ports);
        }
    }
    Some(out)
}

/// The tag a selector selects when it is exactly `has(tag)` and `tag` is one v1 accepts; a
/// `has(k)` whose key is no valid tag (longer than a label name, say) stays a selector, or
/// `rule json` would print a tag that `rule update` refuses.
fn as_tag(selector: &str) -> Option<String> {
    let parsed = Selector::parse(selector).ok()?;
    let text = parsed.to_string();
    let inner = text.strip_prefix("has(")?.strip_suffix(')')?;
    check_tag("", inner).ok()?;
    (Selector::has_label(inner).ok()? == parsed).then(|| inner.to_owned())
}
