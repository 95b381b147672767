//! Unit tests of the v1 grammar, the v1 ↔ v3 translation and the pure edits.

#![allow(clippy::unwrap_used)]

use datastore::model::{Action, Port, Profile, Protocol, Rule};
use datastore::selector::Selector;
use serde_json::json;

use super::*;

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn rule_of(text: &str) -> Rule {
    let ProfileCommand::Edit { op, .. } = parse_command(&words(text)).unwrap() else {
        panic!("not an edit: {text}")
    };
    let EditOp::RuleAdd { rule, .. } = *op else { panic!("not a rule add: {text}") };
    to_v3(&rule, "").unwrap()
}

fn v3(value: serde_json::Value) -> Rule {
    serde_json::from_value(value).unwrap()
}

#[test]
fn runbook_rules_translate_as_calico_did() {
    assert_eq!(
        rule_of("web rule add inbound allow tcp to ports 80,443"),
        v3(json!({"action": "Allow", "protocol": "TCP", "destination": {"ports": [80, 443]}}))
    );
    assert_eq!(
        rule_of("app rule add inbound allow from tag web"),
        v3(json!({"action": "Allow", "source": {"selector": "has(web)"}}))
    );
    assert_eq!(
        rule_of("m rule add inbound allow tcp from tag db-users to ports 3306"),
        v3(json!({"action": "Allow", "protocol": "TCP",
                  "source": {"selector": "has(db-users)"}, "destination": {"ports": [3306]}}))
    );
    assert_eq!(
        rule_of("x rule add outbound deny icmp type 8 code 0 from cidr 10.0.0.0/8 to tag t"),
        v3(json!({"action": "Deny", "protocol": "ICMP", "icmp": {"type": 8, "code": 0},
                  "source": {"nets": ["10.0.0.0/8"]}, "destination": {"selector": "has(t)"}}))
    );
    // calicoctl 0.x: a CIDR without the keyword; a bare address becomes a host CIDR.
    assert_eq!(
        rule_of("x rule add inbound allow from 192.168.1.1"),
        v3(json!({"action": "Allow", "source": {"nets": ["192.168.1.1/32"]}}))
    );
    assert_eq!(
        rule_of("x rule add inbound allow udp from ports 1000-2000,53"),
        v3(json!({"action": "Allow", "protocol": "UDP", "source": {"ports": ["1000:2000", 53]}}))
    );
}

#[test]
fn command_shapes() {
    let parse = |t: &str| parse_command(&words(t)).unwrap();
    assert_eq!(parse("show --detailed"), ProfileCommand::Show { detailed: true });
    assert_eq!(
        parse("remove web --no-check"),
        ProfileCommand::Remove { name: "web".into(), no_check: true }
    );
    let ProfileCommand::Edit { op, .. } = parse("web rule add inbound --at=2 allow") else {
        panic!()
    };
    assert!(matches!(
        *op,
        EditOp::RuleAdd { position: Some(2), direction: Direction::Inbound, .. }
    ));
    for text in ["web rule remove outbound 3", "web rule remove outbound --at 3"] {
        let ProfileCommand::Edit { op, .. } = parse(text) else { panic!() };
        assert_eq!(*op, EditOp::RuleRemoveAt { direction: Direction::Outbound, position: 3 });
    }
    let ProfileCommand::Edit { op, .. } = parse("web rule remove inbound allow from tag web")
    else {
        panic!()
    };
    assert!(matches!(*op, EditOp::RuleRemoveMatch { .. }));
    assert_eq!(parse("web rule update"), ProfileCommand::RuleUpdate { name: "web".into() });
}

#[test]
fn grammar_errors_are_usage_errors_and_bad_values_are_not() {
    let err = |t: &str| parse_command(&words(t)).unwrap_err();
    for usage in [
        "",
        "web rule add sideways allow",
        "web rule add inbound permit tcp",
        "web rule add inbound allow tcp to ports 80 from tag x",
        "web rule add inbound allow tcp type 8",
        "web rule remove inbound --at=1 allow",
        "web rule remove inbound",
        "web tag frobnicate x",
        "web rule add inbound allow from tag a tag b",
    ] {
        assert!(err(usage).is_usage(), "{usage:?} gave {:?}", err(usage));
    }
    let e = err("web rule add inbound allow tcp to ports 70000");
    assert_eq!(e, V1Error::invalid("to ports", "port 70000 out of range: ports are 1-65535"));
    assert!(!err("web rule add inbound allow tcp to ports 0").is_usage());
    assert!(err("web rule add inbound allow tcp to ports 90:80").to_string().contains("backwards"));
    assert!(err("web rule add inbound allow icmp to ports 80").to_string().contains("tcp or udp"));
    assert!(err("web rule add inbound allow icmp type 255").to_string().contains("0 to 254"));
    assert!(err("web rule add inbound allow from cidr 10.0.0.0/33")
        .to_string()
        .contains("from cidr"));
    assert!(err("web rule add inbound allow from tag a!b").to_string().contains("cannot be a tag"));
}

#[test]
fn ports_parse_like_calicoctl() {
    assert_eq!(
        parse_ports("p", "80,443,8000:8080,9000-9001").unwrap(),
        [
            Port::Single(80),
            Port::Single(443),
            Port::Range { first: 8000, last: 8080 },
            Port::Range { first: 9000, last: 9001 }
        ]
    );
    for bad in ["", "80,", "http", "1:2:3", "99999999999999999999"] {
        assert!(parse_ports("p", bad).is_err(), "{bad:?}");
    }
}

/// Found by fuzzing (fuzz/fuzz_targets/v1_rules.rs): a one-port range read from the words or
/// the JSON is the port itself, so `rule json` output parses back to the same rules and
/// `rule remove ... ports 80:80` finds a rule stored as `80`.
#[test]
fn one_port_ranges_are_single_ports() {
    assert_eq!(parse_ports("p", "80:80,81-81").unwrap(), [Port::Single(80), Port::Single(81)]);
    let text = r#"{"id":"p","inbound_rules":[{"action":"allow","protocol":"udp","src_ports":["2000:2000",53]}],"outbound_rules":[]}"#;
    let rules = parse_rules_json(text).unwrap();
    let again = parse_rules_json(&serde_json::to_string(&rules).unwrap()).unwrap();
    assert_eq!(again, rules);

    let mut profile = Profile::classic_default("p");
    profile.spec.ingress.push(rule_of("p rule add inbound allow tcp to ports 80"));
    let op = parse_command(&words("p rule remove inbound allow tcp to ports 80:80")).unwrap();
    let ProfileCommand::Edit { op, .. } = op else { panic!("not an edit") };
    let out = edit("p", Some(&profile), &op).unwrap();
    let Change::Update(updated) = out.change else { panic!("nothing removed") };
    assert_eq!(updated.spec.ingress.len(), 1);
}

/// Found by fuzzing (fuzz/fuzz_targets/v1_rules.rs): `has(k)` with a key too long for a
/// label name is a valid v3 selector but no valid v1 tag, so it must travel as a selector:
/// as a tag, `rule json` printed rules that `rule update` refused.
#[test]
fn has_of_a_key_that_is_no_tag_stays_a_selector() {
    let long = format!("{}db-users", "c".repeat(83));
    let rule = v3(json!({"action": "Deny", "protocol": "TCP",
        "source": {"notSelector": format!("has({long})")}, "destination": {"ports": ["3300:3310"]}}));
    let v1 = to_v1(&rule).unwrap();
    assert_eq!(v1.not_src_tag, None);
    assert_eq!(v1.not_src_selector.as_deref(), Some(format!("has({long})").as_str()));
    assert_eq!(to_v3(&v1, "").unwrap(), rule);

    let mut profile = Profile::classic_default("p");
    profile.spec.ingress.push(rule);
    let rules = parse_rules_json(&rule_json(&profile).unwrap()).unwrap();
    let Change::Update(updated) =
        edit("p", Some(&profile), &EditOp::RuleUpdate(rules)).unwrap().change
    else {
        panic!("no update")
    };
    assert_eq!(updated.spec, profile.spec);
}

#[test]
fn v1_json_negations_and_selectors_fold_as_felix_did() {
    let rules = parse_rules_json(
        r#"{"id": "p", "inbound_rules": [
              {"action": "allow", "!src_tag": "banned", "src_tag": "web",
               "src_selector": "role == 'fe'", "protocol": "tcp", "dst_ports": [80, "8000:8080"]},
              {"action": "deny", "!protocol": "udp", "src_nets": ["10.0.0.0/8", "10.1.0.0/16"]},
              {"action": "next-tier", "ip_version": 6, "protocol": "icmpv6", "icmp_type": 128}
            ], "outbound_rules": [{"action": "allow"}]}"#,
    )
    .unwrap();
    let V1RuleEntry::V1(first) = &rules.inbound_rules[0] else { panic!() };
    let rule = to_v3(first, "inbound_rules[0]").unwrap();
    assert_eq!(rule.source.not_selector.as_deref(), Some("has(banned)"));
    let selector = Selector::parse(rule.source.selector.as_deref().unwrap()).unwrap();
    let labels = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    assert!(selector.matches(&labels(&[("role", "fe"), ("web", "")])));
    assert!(!selector.matches(&labels(&[("role", "fe")])));
    assert!(!selector.matches(&labels(&[("web", "")])));
    assert_eq!(rule.destination.ports, [Port::Single(80), Port::Range { first: 8000, last: 8080 }]);

    let V1RuleEntry::V1(second) = &rules.inbound_rules[1] else { panic!() };
    let rule = to_v3(second, "").unwrap();
    assert_eq!(rule.not_protocol, Some(Protocol::Udp));
    assert_eq!(rule.source.nets, ["10.0.0.0/8", "10.1.0.0/16"]);

    let V1RuleEntry::V1(third) = &rules.inbound_rules[2] else { panic!() };
    let rule = to_v3(third, "").unwrap();
    assert_eq!(rule.action, Action::Pass);
    assert_eq!(rule.ip_version, Some(6));
}

#[test]
fn v1_json_errors_name_the_field() {
    let err = |text: &str| parse_rules_json(text).unwrap_err().to_string();
    let e = err(
        r#"{"id":"p","inbound_rules":[{"action":"allow","protocol":"tcp","dst_ports":[70000]}],"outbound_rules":[]}"#,
    );
    assert!(e.starts_with("inbound_rules[0].dst_ports[0]: port 70000 out of range"), "{e}");
    let e = err(
        r#"{"id":"p","inbound_rules":[],"outbound_rules":[{"action":"allow","dst_portz":[1]}]}"#,
    );
    assert!(e.starts_with("outbound_rules[0]") && e.contains("dst_portz"), "{e}");
    let e = err(r#"{"id":"p","inbound_rules":[{"action":"maybe"}],"outbound_rules":[]}"#);
    assert!(e.starts_with("inbound_rules[0].action"), "{e}");
    let e = err(r#"{"id":"p","inbound_rule":[],"outbound_rules":[]}"#);
    assert!(e.starts_with("inbound_rule: unknown field"), "{e}");
    let e = err(r#"{"inbound_rules":[],"outbound_rules":[]}"#);
    assert!(e.starts_with("id: missing"), "{e}");

    let rules = parse_rules_json(
        r#"{"id":"p","inbound_rules":[{"action":"allow","dst_ports":[80]}],"outbound_rules":[]}"#,
    )
    .unwrap();
    let V1RuleEntry::V1(rule) = &rules.inbound_rules[0] else { panic!() };
    let e = to_v3(rule, "inbound_rules[0]").unwrap_err().to_string();
    assert!(e.starts_with("inbound_rules[0].dst_ports: matching ports needs protocol tcp"), "{e}");
    let bad_selector =
        r#"{"id":"p","inbound_rules":[{"src_selector":"a == "}],"outbound_rules":[]}"#;
    let rules = parse_rules_json(bad_selector).unwrap();
    let V1RuleEntry::V1(rule) = &rules.inbound_rules[0] else { panic!() };
    let e = to_v3(rule, "inbound_rules[0]").unwrap_err().to_string();
    assert!(
        e.starts_with("inbound_rules[0].src_selector: invalid selector") && e.contains("position"),
        "{e}"
    );
}

#[test]
fn v3_rules_round_trip_through_v1() {
    let cases = [
        json!({"action": "Allow"}),
        json!({"action": "Allow", "source": {"selector": "has(web)"}}),
        json!({"action": "Deny", "protocol": "TCP", "source": {"notSelector": "has(x)", "notNets": ["10.0.0.0/8"]},
               "destination": {"ports": [80, "1000:2000"], "notPorts": [81]}}),
        json!({"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 3, "code": 1}}),
        json!({"action": "Log", "notProtocol": 47, "destination": {"selector": "a == 'b'", "nets": ["10.0.0.0/8", "10.2.0.0/16"]}}),
    ];
    for case in cases {
        let rule = v3(case.clone());
        let back = to_v1(&rule).unwrap_or_else(|| panic!("no v1 form for {case}"));
        assert_eq!(to_v3(&back, "").unwrap(), rule, "{case}");
    }
}

#[test]
fn v3_only_rules_travel_as_v3_and_show_as_v3() {
    let rule = v3(json!({"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}}));
    assert!(to_v1(&rule).is_none());
    assert_eq!(
        describe(&rule),
        r#"v3 {"action":"Allow","protocol":"TCP","http":{"methods":["GET"]}}"#
    );
    let mut profile = Profile::classic_default("p");
    profile.spec.ingress.push(rule.clone());
    let json = rule_json(&profile).unwrap();
    let back = parse_rules_json(&json).unwrap();
    assert_eq!(back.inbound_rules[1], V1RuleEntry::V3(rule.clone()));
    let out = edit("p", Some(&profile), &EditOp::RuleUpdate(back)).unwrap();
    let Change::Update(updated) = out.change else { panic!() };
    assert_eq!(updated.spec, profile.spec, "rule json | rule update must change nothing");
}

#[test]
fn rule_show_numbers_like_calicoctl() {
    let profile = Profile::classic_default("web");
    assert_eq!(
        rule_show(&profile),
        "Inbound rules:\n   1 allow from tag web\nOutbound rules:\n   1 allow\n"
    );
    let rule = rule_of("w rule add inbound allow tcp from ports 1:2 tag a cidr 10.0.0.0/8 to ports 80 tag b cidr 10.1.0.0/16");
    assert_eq!(
        describe(&rule),
        "allow tcp from ports 1:2 tag a cidr 10.0.0.0/8 to ports 80 tag b cidr 10.1.0.0/16"
    );
    let negated = v3(json!({"action": "Allow", "source": {"notSelector": "has(x)"}}));
    assert!(describe(&negated).starts_with("v3 "));
}

#[test]
fn positions_are_checked() {
    let profile = Profile::classic_default("web");
    let op = |text: &str| match parse_command(&words(text)).unwrap() {
        ProfileCommand::Edit { op, .. } => *op,
        other => panic!("{other:?}"),
    };
    let err = edit("web", Some(&profile), &op("web rule remove inbound 2")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "inbound rule position 2 is out of range: profile \"web\" has 1 inbound rule(s)"
    );
    assert!(edit("web", Some(&profile), &op("web rule remove outbound 0")).is_err());
    assert!(edit("web", Some(&profile), &op("web rule add inbound --at=3 deny")).is_err());
    let out = edit("web", Some(&profile), &op("web rule add inbound --at=1 deny")).unwrap();
    let Change::Update(p) = out.change else { panic!() };
    assert_eq!(p.spec.ingress[0].action, Action::Deny);
    let same = edit("web", Some(&profile), &op("web rule add inbound allow from tag web")).unwrap();
    assert_eq!(same.change, Change::None);
    assert_eq!(same.message.as_deref(), Some("Rule already present, skipping."));
    let missing = edit("web", Some(&profile), &op("web rule remove inbound deny")).unwrap_err();
    assert!(matches!(missing, V1Error::RuleNotFound { .. }), "{missing}");
}

#[test]
fn tags_are_labels_with_empty_values() {
    let mut profile = Profile::classic_default("app");
    profile.spec.labels_to_apply.insert("tier".into(), "fe".into());
    let out = edit("app", Some(&profile), &EditOp::TagAdd("db-users".into())).unwrap();
    let Change::Update(p) = out.change else { panic!() };
    assert_eq!(p.spec.labels_to_apply.get("db-users").map(String::as_str), Some(""));
    assert_eq!(tag_show(&p), "app\ndb-users\n");
    assert!(edit("app", Some(&profile), &EditOp::TagAdd("tier".into())).is_err());
    assert!(matches!(
        edit("app", Some(&profile), &EditOp::TagRemove("tier".into())),
        Err(V1Error::TagNotFound { .. })
    ));
    assert!(edit("app", Some(&profile), &EditOp::TagAdd("a b".into())).is_err());
    assert!(matches!(
        edit("ghost", None, &EditOp::TagAdd("x".into())),
        Err(V1Error::ProfileNotFound(_))
    ));
    let update =
        parse_rules_json(r#"{"id":"other","inbound_rules":[],"outbound_rules":[]}"#).unwrap();
    let e = edit("app", Some(&profile), &EditOp::RuleUpdate(update)).unwrap_err().to_string();
    assert!(e.starts_with("id: "), "{e}");
}
