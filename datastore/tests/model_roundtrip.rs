//! Calico-shaped JSON survives a read and a write unchanged, and bad input is refused with the
//! JSON path of the field at fault.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use datastore::model::{
    parse_resource, AnyResource, GlobalNetworkPolicy, IpPool, Kind, ModelError, Port, Profile,
    Protocol, WorkloadEndpoint,
};
use serde_json::Value;

const FIXTURES: [(&str, Kind); 9] = [
    ("ippool.json", Kind::IpPool),
    ("ippool-v6.json", Kind::IpPool),
    ("profile.json", Kind::Profile),
    ("networkpolicy.json", Kind::NetworkPolicy),
    ("globalnetworkpolicy.json", Kind::GlobalNetworkPolicy),
    ("workloadendpoint.json", Kind::WorkloadEndpoint),
    ("node.json", Kind::Node),
    ("bgppeer.json", Kind::BgpPeer),
    ("bgpconfiguration.json", Kind::BgpConfiguration),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn as_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Parses `json` after applying `edit` to it as a JSON value.
fn parse_edited(name: &str, edit: impl FnOnce(&mut Value)) -> Result<AnyResource, ModelError> {
    let mut value = as_value(&fixture(name));
    edit(&mut value);
    parse_resource(&serde_json::to_vec(&value).unwrap())
}

fn parse_and_validate(
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> Result<AnyResource, ModelError> {
    let resource = parse_edited(name, edit)?;
    resource.validate()?;
    Ok(resource)
}

#[test]
fn every_fixture_round_trips_unchanged() {
    for (name, kind) in FIXTURES {
        let input = fixture(name);
        let resource = parse_resource(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resource.kind(), kind, "{name}");
        let output = resource.to_json().unwrap();
        assert_eq!(as_value(&output), as_value(&input), "{name} changed on re-serialisation");
    }
}

#[test]
fn every_fixture_is_valid() {
    for (name, _) in FIXTURES {
        let resource = parse_resource(&fixture(name)).unwrap();
        resource.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn unknown_fields_are_kept_at_every_level() {
    let pool = IpPool::from_json(&fixture("ippool.json")).unwrap();
    assert_eq!(pool.extra["status"]["observedGeneration"], 3);
    assert_eq!(pool.metadata.extra["generation"], 3);
    assert_eq!(pool.spec.extra["futurePoolOption"]["enabled"], true);

    let profile = Profile::from_json(&fixture("profile.json")).unwrap();
    assert_eq!(profile.spec.ingress[1].extra["ruleUnknown"], "kept");

    let gnp = GlobalNetworkPolicy::from_json(&fixture("globalnetworkpolicy.json")).unwrap();
    assert_eq!(gnp.spec.ingress[0].source.extra["services"]["name"], "svc");
    assert_eq!(gnp.spec.order, Some(10.5));
}

#[test]
fn typed_fields_read_as_calico_means_them() {
    let profile = Profile::from_json(&fixture("profile.json")).unwrap();
    let web = &profile.spec.ingress[1];
    assert_eq!(web.protocol, Some(Protocol::Tcp));
    assert_eq!(
        web.destination.ports,
        vec![
            Port::Single(80),
            Port::Single(443),
            Port::Range { first: 8000, last: 9000 },
            Port::Named("http-alt".into())
        ]
    );
    assert_eq!(profile.spec.ingress[3].protocol, Some(Protocol::Number(47)));

    let wep = WorkloadEndpoint::from_json(&fixture("workloadendpoint.json")).unwrap();
    assert_eq!(wep.namespace(), Some("default"));
    assert_eq!(wep.spec.ip_networks[1].to_string(), "fd5f:abcd:64:4f2c::5/128");
}

#[test]
fn typed_decode_refuses_another_kind() {
    let err = IpPool::from_json(&fixture("profile.json")).unwrap_err();
    assert!(matches!(err, ModelError::KindMismatch { expected: Kind::IpPool, .. }), "{err}");
    assert_eq!(err.field(), "kind");
}

#[test]
fn wrong_type_names_the_field() {
    let err = parse_edited("ippool.json", |v| v["spec"]["blockSize"] = "x".into()).unwrap_err();
    assert_eq!(err.field(), "spec.blockSize");
    let text = err.to_string();
    assert!(text.starts_with("spec.blockSize: invalid type: string \"x\", expected u8"), "{text}");
}

#[test]
fn wrong_type_deep_in_a_rule_names_the_path() {
    let err = parse_edited("profile.json", |v| {
        v["spec"]["ingress"][1]["destination"]["ports"][2] = true.into();
    })
    .unwrap_err();
    assert_eq!(err.field(), "spec.ingress[1].destination.ports[2]", "{err}");
}

#[test]
fn invalid_cidr_names_spec_cidr() {
    // Not a CIDR at all: refused while decoding.
    let err =
        parse_edited("ippool.json", |v| v["spec"]["cidr"] = "10.65.0.0/33".into()).unwrap_err();
    assert_eq!(err.field(), "spec.cidr", "{err}");
    // A CIDR with host bits: refused by validation, with the masked form suggested.
    let err = parse_and_validate("ippool.json", |v| v["spec"]["cidr"] = "10.65.1.0/16".into())
        .unwrap_err();
    assert_eq!(err.field(), "spec.cidr");
    assert!(err.to_string().contains("10.65.0.0/16"), "{err}");
    // Link-local.
    let err = parse_and_validate("ippool.json", |v| v["spec"]["cidr"] = "169.254.0.0/16".into())
        .unwrap_err();
    assert_eq!(err.field(), "spec.cidr");
}

#[test]
fn unknown_kind_is_named() {
    let err = parse_edited("ippool.json", |v| v["kind"] = "FelixConfiguration".into()).unwrap_err();
    assert!(
        matches!(&err, ModelError::UnknownKind { kind } if kind == "FelixConfiguration"),
        "{err}"
    );
    assert!(err.to_string().contains("FelixConfiguration"));
}

#[test]
fn wrong_or_missing_api_version_is_refused() {
    let err = parse_edited("ippool.json", |v| v["apiVersion"] = "projectcalico.org/v1".into())
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::WrongApiVersion { found } if found == "projectcalico.org/v1")
    );
    let err = parse_edited("ippool.json", |v| {
        v.as_object_mut().unwrap().remove("apiVersion");
    })
    .unwrap_err();
    assert_eq!(err.field(), "apiVersion");
}

#[test]
fn bad_selector_names_field_and_position() {
    let err = parse_and_validate("networkpolicy.json", |v| {
        v["spec"]["ingress"][0]["source"]["selector"] = "role == 'frontend' &&".into();
    })
    .unwrap_err();
    match &err {
        ModelError::Selector { field, position, .. } => {
            assert_eq!(field, "spec.ingress[0].source.selector");
            assert!(
                *position >= 18,
                "position {position} should point at or after the dangling &&"
            );
        }
        other => panic!("expected a selector error, got {other}"),
    }
    let err =
        parse_and_validate("ippool.json", |v| v["spec"]["nodeSelector"] = "rack = 'r1'".into())
            .unwrap_err();
    assert_eq!(err.field(), "spec.nodeSelector");
    assert!(err.to_string().contains("position"), "{err}");
}

#[test]
fn port_out_of_range_is_refused() {
    let err = parse_edited("profile.json", |v| {
        v["spec"]["ingress"][1]["destination"]["ports"][0] = 70000.into();
    })
    .unwrap_err();
    assert_eq!(err.field(), "spec.ingress[1].destination.ports[0]");
    assert!(err.to_string().contains("out of range"), "{err}");
    let err = parse_edited("profile.json", |v| {
        v["spec"]["ingress"][1]["destination"]["ports"][2] = "8000:90000".into();
    })
    .unwrap_err();
    assert_eq!(err.field(), "spec.ingress[1].destination.ports[2]");
    // In range but backwards: refused by validation.
    let err = parse_and_validate("profile.json", |v| {
        v["spec"]["ingress"][1]["destination"]["ports"][2] = "9000:8000".into();
    })
    .unwrap_err();
    assert_eq!(err.field(), "spec.ingress[1].destination.ports[2]");
}

#[test]
fn unknown_enum_value_names_the_field() {
    let err =
        parse_edited("ippool.json", |v| v["spec"]["ipipMode"] = "Sometimes".into()).unwrap_err();
    assert_eq!(err.field(), "spec.ipipMode");
    let err = parse_edited("profile.json", |v| v["spec"]["egress"][0]["action"] = "allow".into())
        .unwrap_err();
    assert_eq!(err.field(), "spec.egress[0].action");
}

#[test]
fn malformed_json_is_a_decode_error() {
    let err = parse_resource(b"{\"kind\": \"IPPool\",").unwrap_err();
    assert!(matches!(err, ModelError::Decode { .. }), "{err}");
    let err = parse_resource(
        b"{\"kind\":\"Node\",\"apiVersion\":\"projectcalico.org/v3\",\"spec\":{}} x",
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Decode { .. }), "{err}");
    assert!(!err.is_retryable());
}

#[test]
fn validation_errors_carry_the_json_path() {
    let err = parse_and_validate("workloadendpoint.json", |v| v["spec"]["mac"] = "zz:zz".into())
        .unwrap_err();
    assert_eq!(err.field(), "spec.mac");
    let err = parse_and_validate("profile.json", |v| {
        v["spec"]["ingress"][2]["icmp"] = serde_json::json!({"code": 1});
    })
    .unwrap_err();
    assert_eq!(err.field(), "spec.ingress[2].icmp.code");
    let err = parse_and_validate("globalnetworkpolicy.json", |v| {
        v["spec"]["ingress"][0]["source"]["nets"] = serde_json::json!(["10.0.0.0/8", "fd00::/8"]);
    })
    .unwrap_err();
    assert_eq!(err.field(), "spec.ingress[0].source.nets[1]");
    let err = parse_and_validate("bgppeer.json", |v| v["spec"]["asNumber"] = 0.into()).unwrap_err();
    assert_eq!(err.field(), "spec.asNumber");
    let err = parse_and_validate("networkpolicy.json", |v| {
        v["metadata"].as_object_mut().unwrap().remove("namespace");
    })
    .unwrap_err();
    assert_eq!(err.field(), "metadata.namespace");
    let err = parse_and_validate("node.json", |v| v["metadata"]["labels"]["bad key"] = "x".into())
        .unwrap_err();
    assert_eq!(err.field(), "metadata.labels.bad key");
}

#[test]
fn classic_default_profile_validates_and_round_trips() {
    let profile = Profile::classic_default("web");
    profile.validate().unwrap();
    let json = profile.to_json().unwrap();
    assert_eq!(Profile::from_json(&json).unwrap(), profile);
    let any = parse_resource(&json).unwrap();
    assert_eq!(any, AnyResource::from(profile));
}
