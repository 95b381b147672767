//! Fuzzes the profile rule languages: calicoctl's v1 rules JSON (`rule update`), the v1
//! command words (`profile web rule add ...`) and v3 resource JSON. Never panics; v3 rules
//! survive v3 -> v1 -> v3; a profile's `rule json` fed back through `rule update` changes
//! nothing; a v3 resource re-encodes to itself.
//!
//! Input: any text; each parser gets all of it (the command parser split into words).

#![no_main]

use ctl::v1::{
    edit, parse_command, parse_rules_json, rule_json, rule_show, to_v1, to_v3, Change, EditOp,
    ProfileCommand, V1RuleEntry,
};
use datastore::model::{parse_resource, AnyResource, Profile, Rule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    v1_json(text);
    v1_words(text);
    v3_resource(data);
});

fn v1_json(text: &str) {
    let Ok(mut rules) = parse_rules_json(text) else { return };
    let json = serde_json::to_string(&rules).expect("v1 rules serialise");
    let again = parse_rules_json(&json).unwrap_or_else(|e| panic!("{json} does not re-parse: {e}"));
    assert_eq!(again, rules, "v1 rules do not round-trip through {json}");
    for (i, entry) in rules.inbound_rules.iter().chain(&rules.outbound_rules).enumerate() {
        if let Ok(v3) = entry.to_v3(&format!("rule[{i}]")) {
            v3_through_v1(&v3);
        }
    }
    rules.id = "p".to_owned();
    let base = Profile::classic_default("p");
    if let Ok(out) = edit("p", Some(&base), &EditOp::RuleUpdate(rules)) {
        if let Change::Update(profile) = out.change {
            json_then_update_changes_nothing(&profile);
        }
    }
}

fn v1_words(text: &str) {
    let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let Ok(ProfileCommand::Edit { name, op }) = parse_command(&words) else { return };
    let existing = Profile::classic_default("p");
    let current = (name == "p").then_some(&existing);
    let Ok(out) = edit(&name, current, &op) else { return };
    if let Change::Update(profile) | Change::Create(profile) = out.change {
        profile.validate().expect("edit returns only valid profiles");
        json_then_update_changes_nothing(&profile);
    }
}

fn v3_resource(data: &[u8]) {
    let Ok(resource) = parse_resource(data) else { return };
    let encoded = resource.to_json().expect("a decoded resource encodes");
    let back = parse_resource(&encoded).expect("an encoded resource decodes");
    assert_eq!(back, resource, "resource does not round-trip through {}", show(&encoded));
    if resource.validate().is_err() {
        return;
    }
    if let AnyResource::Profile(profile) = &resource {
        for rule in profile.spec.ingress.iter().chain(&profile.spec.egress) {
            v3_through_v1(rule);
        }
        json_then_update_changes_nothing(profile);
    }
}

/// A valid v3 rule with a v1 form translates back to itself; one without travels as v3.
fn v3_through_v1(rule: &Rule) {
    let _ = ctl::v1::describe(rule);
    match to_v1(rule) {
        Some(v1) => {
            let back = to_v3(&v1, "").unwrap_or_else(|e| panic!("v1 form {v1:?} refused: {e}"));
            assert_eq!(&back, rule, "v3 -> v1 -> v3 changed the rule (v1 form {v1:?})");
        }
        None => {
            let entry = V1RuleEntry::from_v3(rule);
            assert_eq!(entry.to_v3("").as_ref(), Ok(rule));
        }
    }
}

/// `rule json | rule update` on a valid profile: the rules are unchanged.
fn json_then_update_changes_nothing(profile: &Profile) {
    let _ = rule_show(profile);
    let json = rule_json(profile).expect("rule json encodes");
    let rules =
        parse_rules_json(&json).unwrap_or_else(|e| panic!("rule json output refused: {e}\n{json}"));
    let name = profile.metadata.name.clone();
    let out = edit(&name, Some(profile), &EditOp::RuleUpdate(rules))
        .unwrap_or_else(|e| panic!("rule update of rule json refused: {e}\n{json}"));
    let Change::Update(updated) = out.change else { panic!("rule update made no update") };
    assert_eq!(updated.spec, profile.spec, "rule json | rule update changed the profile\n{json}");
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
