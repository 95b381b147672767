//! Unit tests of rule decoding and validation.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn protocol_reads_names_case_insensitively_and_numbers() {
    let p: Protocol = serde_json::from_str("\"tcp\"").unwrap();
    assert_eq!(p, Protocol::Tcp);
    assert_eq!(serde_json::to_string(&p).unwrap(), "\"TCP\"");
    let p: Protocol = serde_json::from_str("\"icmpv6\"").unwrap();
    assert_eq!(serde_json::to_string(&p).unwrap(), "\"ICMPv6\"");
    let p: Protocol = serde_json::from_str("\"47\"").unwrap();
    assert_eq!(p, Protocol::Number(47));
    assert_eq!(serde_json::to_string(&p).unwrap(), "47");
    assert!(Protocol::Number(6).supports_ports());
    assert!(Protocol::Number(1).is_icmp());
    assert!(!Protocol::Icmp.supports_ports());
    let err = serde_json::from_str::<Protocol>("256").unwrap_err().to_string();
    assert!(err.contains("out of range 0-255"), "{err}");
    let err = serde_json::from_str::<Protocol>("\"gre\"").unwrap_err().to_string();
    assert!(
        err.contains("unknown protocol \\\"gre\\\"") || err.contains("unknown protocol"),
        "{err}"
    );
}

#[test]
fn port_forms() {
    let ports: Vec<Port> =
        serde_json::from_str(r#"[80, "443", "8000:9000", "http", "80:80"]"#).unwrap();
    assert_eq!(
        ports,
        vec![
            Port::Single(80),
            Port::Single(443),
            Port::Range { first: 8000, last: 9000 },
            Port::Named("http".into()),
            Port::Single(80),
        ]
    );
    assert_eq!(serde_json::to_string(&ports).unwrap(), r#"[80,443,"8000:9000","http",80]"#);
    // Written by hand, a one-port range still prints as the port.
    assert_eq!(Port::Range { first: 80, last: 80 }.to_string(), "80");
    for bad in ["70000", "\"70000\"", "\"1:70000\"", "\"a b\"", "-1"] {
        assert!(serde_json::from_str::<Port>(bad).is_err(), "{bad}");
    }
}

/// Found by fuzzing (fuzz/fuzz_targets/v1_rules.rs): `"2000:2000"` read as a range but was
/// written back as `2000`, which read back as a different port, so a stored rule no longer
/// equalled itself after a write and `rule remove` could not find it.
#[test]
fn one_port_range_is_that_port_and_round_trips() {
    let read: Vec<Port> = serde_json::from_str(r#"["2000:2000", 2000, "1:65535"]"#).unwrap();
    assert_eq!(read[0], Port::Single(2000));
    assert_eq!(read[0], read[1]);
    assert_eq!(Port::range(1, 65535), read[2]);
    let back: Vec<Port> = serde_json::from_str(&serde_json::to_string(&read).unwrap()).unwrap();
    assert_eq!(back, read);
}

#[test]
fn port_values_are_checked() {
    assert!(validate_port("p", &Port::Single(0)).is_err());
    assert!(validate_port("p", &Port::Range { first: 9, last: 8 }).is_err());
    assert!(validate_port("p", &Port::Named("Http".into())).is_err());
    assert!(validate_port("p", &Port::Range { first: 1, last: 65535 }).is_ok());
}

fn rule(json: &str) -> Rule {
    serde_json::from_str(json).unwrap()
}

fn err(json: &str) -> ModelError {
    rule(json).validate("spec.ingress[0]").unwrap_err()
}

#[test]
fn icmp_rules() {
    assert!(rule(r#"{"action":"Allow","protocol":"ICMP","icmp":{"type":8,"code":0}}"#)
        .validate("r")
        .is_ok());
    assert_eq!(err(r#"{"action":"Allow","icmp":{"type":8}}"#).field(), "spec.ingress[0].icmp");
    assert_eq!(
        err(r#"{"action":"Allow","protocol":"TCP","notICMP":{"type":8}}"#).field(),
        "spec.ingress[0].notICMP"
    );
    assert_eq!(
        err(r#"{"action":"Allow","protocol":"ICMP","icmp":{"code":0}}"#).field(),
        "spec.ingress[0].icmp.code"
    );
    assert_eq!(
        err(r#"{"action":"Allow","protocol":"ICMP","icmp":{"type":255}}"#).field(),
        "spec.ingress[0].icmp.type"
    );
    assert_eq!(
        err(r#"{"action":"Allow","protocol":"ICMP","ipVersion":6}"#).field(),
        "spec.ingress[0].ipVersion"
    );
}

#[test]
fn ports_need_a_port_protocol() {
    assert_eq!(
        err(r#"{"action":"Allow","destination":{"ports":[80]}}"#).field(),
        "spec.ingress[0].destination.ports"
    );
    assert_eq!(
        err(r#"{"action":"Allow","protocol":"ICMP","source":{"notPorts":[80]}}"#).field(),
        "spec.ingress[0].source.notPorts"
    );
    assert_eq!(
        err(r#"{"action":"Allow","protocol":6,"destination":{"ports":[80,"9:8"]}}"#).field(),
        "spec.ingress[0].destination.ports[1]"
    );
}

#[test]
fn nets_must_agree_on_family() {
    assert!(rule(r#"{"action":"Deny","source":{"nets":["10.0.0.0/8"]},"destination":{"notNets":["192.168.1.1"]}}"#)
        .validate("r")
        .is_ok());
    assert_eq!(
        err(r#"{"action":"Deny","source":{"nets":["10.0.0.0/8"]},"destination":{"nets":["fd00::/8"]}}"#).field(),
        "spec.ingress[0].destination.nets[0]"
    );
    assert_eq!(
        err(r#"{"action":"Deny","ipVersion":6,"source":{"nets":["10.0.0.0/8"]}}"#).field(),
        "spec.ingress[0].source.nets[0]"
    );
    assert_eq!(
        err(r#"{"action":"Deny","source":{"nets":["10.0.0.0/33"]}}"#).field(),
        "spec.ingress[0].source.nets[0]"
    );
}

#[test]
fn ip_version_and_protocol_zero() {
    assert_eq!(err(r#"{"action":"Allow","ipVersion":5}"#).field(), "spec.ingress[0].ipVersion");
    assert_eq!(err(r#"{"action":"Allow","protocol":0}"#).field(), "spec.ingress[0].protocol");
}

#[test]
fn http_rules() {
    assert!(rule(r#"{"action":"Allow","http":{"methods":["GET"],"paths":[{"exact":"/x"}]}}"#)
        .validate("r")
        .is_ok());
    assert_eq!(
        err(r#"{"action":"Deny","http":{"methods":["GET"]}}"#).field(),
        "spec.ingress[0].http"
    );
    assert_eq!(
        err(r#"{"action":"Allow","http":{"paths":[{"exact":"/x","prefix":"/y"}]}}"#).field(),
        "spec.ingress[0].http.paths[0]"
    );
}

#[test]
fn empty_entity_rules_are_omitted() {
    let r = rule(r#"{"action":"Allow","source":{},"destination":{}}"#);
    assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"action":"Allow"}"#);
    assert_eq!(serde_json::to_string(&Rule::new(Action::Pass)).unwrap(), r#"{"action":"Pass"}"#);
}
