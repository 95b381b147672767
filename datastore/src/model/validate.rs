//! Checks shared by the resource validators: names, labels, selectors, addresses.
//!
//! The rules are Calico's (`libcalico-go/lib/validator/v3`) and Kubernetes' (label and name
//! syntax), written out by hand so the model needs no regex engine.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::ModelError;
use crate::selector::Selector;

/// Longest resource name Kubernetes (and so Calico) accepts.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// Calico's cap on the total size of a resource's annotations.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` — one DNS-1123 label, without Kubernetes' length cap
/// (Calico's name regex has none either; the whole name is capped instead).
fn is_label_shape(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let last = s.chars().next_back().unwrap_or(first);
    is_lower_alnum(first)
        && is_lower_alnum(last)
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
}

/// A DNS-1123 label: at most 63 lower-case alphanumerics or `-`, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= MAX_LABEL_LEN && is_label_shape(s)
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters — Calico's rule for
/// most resource names.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && s.split('.').all(is_label_shape)
}

/// Calico's rule for NetworkPolicy names: a label, `label.label`, or `knp.default.<subdomain>`
/// (the names of converted Kubernetes policies).
pub(crate) fn is_network_policy_name(s: &str) -> bool {
    if s.len() > MAX_NAME_LEN {
        return false;
    }
    if let Some(rest) = s.strip_prefix("knp.default.").or_else(|| s.strip_prefix("ossg.default.")) {
        return is_dns1123_subdomain(rest);
    }
    is_global_network_policy_name(s)
}

/// Calico's rule for GlobalNetworkPolicy names: a label, optionally `tier.` in front.
pub(crate) fn is_global_network_policy_name(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    s.len() <= MAX_NAME_LEN && labels.len() <= 2 && labels.iter().all(|l| is_label_shape(l))
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` of at most 63 characters: the name part of a
/// label key, and every non-empty label value.
fn is_label_name_shape(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let last = s.chars().next_back().unwrap_or(first);
    s.len() <= MAX_LABEL_LEN
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A Kubernetes qualified name (`[prefix/]name`): what a label or annotation key must be.
pub fn is_valid_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty() && is_dns1123_subdomain(prefix) && is_label_name_shape(name)
        }
        None => is_label_name_shape(key),
    }
}

/// A Kubernetes label value: empty, or up to 63 of `[-A-Za-z0-9_.]` with alphanumeric ends.
pub fn is_valid_label_value(value: &str) -> bool {
    value.is_empty() || is_label_name_shape(value)
}

pub(crate) fn check_resource_name(field: &str, name: &str) -> Result<(), ModelError> {
    if name.is_empty() {
        return Err(ModelError::invalid(field, "name must not be empty"));
    }
    if !is_dns1123_subdomain(name) {
        return Err(ModelError::invalid(
            field,
            format!(
                "{name:?} is not a valid name: use at most 253 lower case alphanumeric \
                 characters, '-' or '.', starting and ending with an alphanumeric"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_labels(
    field: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    for (key, value) in labels {
        if !is_valid_label_key(key) {
            return Err(ModelError::invalid(
                format!("{field}.{key}"),
                format!(
                    "{key:?} is not a valid label key: an optional DNS subdomain prefix and '/', \
                     then at most 63 of [-A-Za-z0-9_.] starting and ending with an alphanumeric"
                ),
            ));
        }
        if !is_valid_label_value(value) {
            return Err(ModelError::invalid(
                format!("{field}.{key}"),
                format!(
                    "{value:?} is not a valid label value: at most 63 of [-A-Za-z0-9_.], \
                     starting and ending with an alphanumeric"
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_annotations(
    field: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    let mut total = 0;
    for (key, value) in annotations {
        if !is_valid_label_key(key) {
            return Err(ModelError::invalid(
                format!("{field}.{key}"),
                format!("{key:?} is not a valid annotation key"),
            ));
        }
        total += key.len() + value.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        return Err(ModelError::invalid(
            field,
            format!(
                "annotations take {total} bytes, more than the limit of {MAX_ANNOTATIONS_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// An empty selector means `all()` in Calico, so only non-empty ones are parsed.
pub(crate) fn check_selector(field: &str, selector: Option<&String>) -> Result<(), ModelError> {
    let Some(selector) = selector else { return Ok(()) };
    if selector.trim().is_empty() {
        return Ok(());
    }
    Selector::parse(selector).map(drop).map_err(|e| ModelError::Selector {
        field: field.to_owned(),
        selector: selector.clone(),
        position: e.position,
        message: e.message.clone(),
    })
}

/// Calico's `ParseCIDROrIP`: a CIDR, or a bare address meaning its host prefix. Returns the
/// address as written and the network.
pub fn parse_cidr_or_ip(s: &str) -> Option<(IpAddr, IpNet)> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some((net.addr(), net));
    }
    let addr: IpAddr = s.parse().ok()?;
    Some((addr, IpNet::from(addr)))
}

/// serde `deserialize_with` for a CIDR field, with an error that says what was expected
/// (ipnet's own says only "invalid IP address syntax").
pub(crate) fn deserialize_cidr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<IpNet, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not a CIDR (an address and prefix length, like 10.65.0.0/16)"
        ))
    })
}

/// A network that must be strictly masked (no host bits), as Calico's `net` validator wants.
pub(crate) fn check_masked_net(field: &str, s: &str) -> Result<IpNet, ModelError> {
    let (addr, net) = parse_cidr_or_ip(s).ok_or_else(|| {
        ModelError::invalid(field, format!("{s:?} is not a valid CIDR or IP address"))
    })?;
    if addr != net.network() {
        return Err(ModelError::invalid(
            field,
            format!("{s:?} is not strictly masked (did you mean {}?)", net.trunc()),
        ));
    }
    Ok(net.trunc())
}

/// A MAC address as Go's `net.ParseMAC` reads the common EUI-48 forms: six hex octets
/// separated by `:` or `-`.
pub(crate) fn is_valid_mac(s: &str) -> bool {
    let sep = if s.contains('-') { '-' } else { ':' };
    let octets: Vec<&str> = s.split(sep).collect();
    octets.len() == 6
        && octets.iter().all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Linux interface names as Calico accepts them: 1–15 of `[A-Za-z0-9_.-]`.
pub(crate) fn is_valid_interface_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Container ids as the CNI spec allows them (alphanumeric first, then `[A-Za-z0-9_.-]`):
/// wider than Calico's rule, because Mesos nests containers as `parent.child`.
pub(crate) fn is_valid_container_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Kubernetes' `IsValidPortName` (an IANA service name): 1–15 of `[a-z0-9-]`, at least one
/// letter, no `-` at either end and no `--`.
pub(crate) fn is_valid_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("default-ipv4-ippool"));
        assert!(is_dns1123_subdomain("node.host1"));
        assert!(!is_dns1123_subdomain("Host1"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(""));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(is_dns1123_label("prod"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_network_policy_name("default.allow-db"));
        assert!(is_network_policy_name("knp.default.a.b.c"));
        assert!(!is_network_policy_name("a.b.c"));
        assert!(is_global_network_policy_name("allow-dns"));
        assert!(!is_global_network_policy_name("a.b.c"));
    }

    #[test]
    fn labels() {
        assert!(is_valid_label_key("web"));
        assert!(is_valid_label_key("projectcalico.org/namespace"));
        assert!(is_valid_label_key("App_Name.v1"));
        assert!(!is_valid_label_key("/x"));
        assert!(!is_valid_label_key("a/b/c"));
        assert!(!is_valid_label_key("bad key"));
        assert!(is_valid_label_value(""));
        assert!(is_valid_label_value("v1.2-rc_3"));
        assert!(!is_valid_label_value("-x"));
        assert!(!is_valid_label_value(&"x".repeat(64)));
    }

    #[test]
    fn nets_and_macs() {
        assert_eq!(
            check_masked_net("f", "10.0.0.0/8").unwrap_or_else(|e| panic!("{e}")).to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            check_masked_net("f", "10.0.0.1").unwrap_or_else(|e| panic!("{e}")).to_string(),
            "10.0.0.1/32"
        );
        let err =
            check_masked_net("f", "10.0.0.1/8").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        assert!(check_masked_net("f", "nope").is_err());
        assert!(is_valid_mac("ee:ee:ee:ee:ee:ee"));
        assert!(is_valid_mac("0A-1b-2c-3d-4e-5f"));
        assert!(!is_valid_mac("ee:ee:ee:ee:ee"));
        assert!(!is_valid_mac("ee:ee:ee:ee:ee:eg"));
        assert!(is_valid_port_name("http"));
        assert!(!is_valid_port_name("8080"));
        assert!(!is_valid_port_name("a--b"));
        assert!(is_valid_container_id("3f1c.child_1"));
        assert!(!is_valid_container_id(".x"));
        assert!(is_valid_interface_name("cali0123456789a"));
        assert!(!is_valid_interface_name("cali0123456789ab"));
    }
}
