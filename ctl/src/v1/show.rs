//! The one-line description `rule show` prints for a rule: calicoctl's words where the v1
//! command grammar can say it, the v3 JSON where it cannot.

use datastore::model::{Port, Protocol, Rule};

use super::rules::{to_v1, End, V1Action, V1Rule};

/// How `rule show` prints a rule: the calicoctl words when the v1 command grammar can say it
/// (`allow tcp from tag web to ports 80,443`), else `v3 ` and the rule's v3 JSON.
pub fn describe(rule: &Rule) -> String {
    if let Some(words) = to_v1(rule).as_ref().and_then(grammar_words) {
        return words;
    }
    match serde_json::to_string(rule) {
        Ok(json) => format!("v3 {json}"),
        Err(e) => format!("v3 <cannot print rule: {e}>"),
    }
}

/// calicoctl's `Rule.pprint`, for rules the command grammar can express.
fn grammar_words(rule: &V1Rule) -> Option<String> {
    let mut rule = rule.clone();
    if !matches!(rule.action, V1Action::Allow | V1Action::Deny)
        || rule.ip_version.is_some()
        || rule.not_protocol.is_some()
        || rule.not_icmp_type.is_some()
        || rule.not_icmp_code.is_some()
    {
        return None;
    }
    let protocol = match rule.protocol.map(|p| p.0) {
        None => None,
        Some(p @ (Protocol::Tcp | Protocol::Udp | Protocol::Icmp | Protocol::IcmpV6)) => Some(p),
        Some(_) => return None,
    };
    let mut out = vec![rule.action.word().to_owned()];
    if let Some(p) = rule.protocol {
        out.push(p.word());
    }
    if let Some(t) = rule.icmp_type {
        out.extend(["type".to_owned(), t.to_string()]);
    }
    if let Some(c) = rule.icmp_code {
        out.extend(["code".to_owned(), c.to_string()]);
    }
    for (end, word) in [(End::Src, "from"), (End::Dst, "to")] {
        if !rule.side(end, true).is_empty() {
            return None;
        }
        let side = rule.side(end, false);
        if side.selector.is_some()
            || !side.nets.is_empty()
            || side.ports.iter().any(|p| matches!(p, Port::Named(_)))
            || (!side.ports.is_empty() && !protocol.is_some_and(Protocol::supports_ports))
        {
            return None;
        }
        if side.is_empty() {
            continue;
        }
        out.push(word.to_owned());
        if !side.ports.is_empty() {
            let ports: Vec<String> = side.ports.iter().map(ToString::to_string).collect();
            out.extend(["ports".to_owned(), ports.join(",")]);
        }
        if let Some(tag) = side.tag.as_ref() {
            out.extend(["tag".to_owned(), tag.clone()]);
        }
        if let Some(net) = side.net.as_ref() {
            out.extend(["cidr".to_owned(), net.clone()]);
        }
    }
    Some(out.join(" "))
}
