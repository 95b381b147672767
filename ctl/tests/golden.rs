//! The web/app/mysqldb runbook, command by command, through the pure v1 layer: each step's
//! output and resulting v3 profile must equal `tests/golden/NN-*.json`, and the profiles at the
//! end must equal `manifests/examples/profiles.yaml`.
//!
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test -p ctl --test golden`
//! and review the diff: the golden files are the specification.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use ctl::v1::{self, Change, ProfileCommand};
use datastore::model::Profile;
use serde_json::{json, Value};

mod runbook;
use runbook::{golden_dir, slug, RUNBOOK};

/// Runs one command on the in-memory profiles; returns stdout and the profile it named.
fn step(
    profiles: &mut BTreeMap<String, Profile>,
    command: &str,
    stdin: Option<&str>,
) -> (String, String) {
    let words: Vec<String> = command.split_whitespace().skip(1).map(str::to_owned).collect();
    let mut parsed = v1::parse_command(&words).unwrap_or_else(|e| panic!("{command}: {e}"));
    if let ProfileCommand::RuleUpdate { name } = &parsed {
        let rules = v1::parse_rules_json(stdin.expect("rule update needs stdin")).unwrap();
        parsed = ProfileCommand::Edit {
            name: name.clone(),
            op: Box::new(v1::EditOp::RuleUpdate(rules)),
        };
    }
    match parsed {
        ProfileCommand::Edit { name, op } => {
            let outcome = v1::edit(&name, profiles.get(&name), &op)
                .unwrap_or_else(|e| panic!("{command}: {e}"));
            match outcome.change {
                Change::None => {}
                Change::Create(p) | Change::Update(p) => {
                    profiles.insert(name.clone(), *p);
                }
            }
            (outcome.message.map(|m| m + "\n").unwrap_or_default(), name)
        }
        ProfileCommand::RuleShow { name } => (v1::rule_show(&profiles[&name]), name),
        ProfileCommand::RuleJson { name } => (v1::rule_json(&profiles[&name]).unwrap(), name),
        ProfileCommand::TagShow { name } => (v1::tag_show(&profiles[&name]), name),
        other => panic!("{command}: not a single-profile command: {other:?}"),
    }
}

/// Runs the runbook; returns the final profiles.
fn run_runbook(check: impl Fn(usize, &str, Value)) -> BTreeMap<String, Profile> {
    let mut profiles = BTreeMap::new();
    for (i, (command, stdin)) in RUNBOOK.iter().enumerate() {
        let (stdout, name) = step(&mut profiles, command, *stdin);
        let profile = profiles.get(&name).map(|p| serde_json::to_value(p).unwrap());
        check(
            i + 1,
            command,
            json!({"command": command, "stdin": stdin, "stdout": stdout, "profile": profile}),
        );
    }
    profiles
}

#[test]
fn runbook_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    run_runbook(|n, command, actual| {
        let path = runbook::golden_file(n, command);
        if update {
            std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
            return;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it, then review it)",
                path.display()
            )
        });
        let expected: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            actual,
            expected,
            "step {n} `{command}` differs from {}:\nactual:\n{}",
            path.display(),
            serde_json::to_string_pretty(&actual).unwrap()
        );
    });
}

#[test]
fn runbook_ends_with_the_example_profiles() {
    let profiles = run_runbook(|_, _, _| {});
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/profiles.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = ctl::input::parse_documents("profiles.yaml", &text, "default", true).unwrap();
    let examples: BTreeMap<String, Value> = docs
        .iter()
        .map(|d| (d.resource.name().to_owned(), serde_json::to_value(&d.resource).unwrap()))
        .collect();
    let produced: BTreeMap<String, Value> =
        profiles.iter().map(|(n, p)| (n.clone(), serde_json::to_value(p).unwrap())).collect();
    assert_eq!(produced, examples);
}

#[test]
fn golden_files_have_no_strays() {
    let expected: Vec<String> = RUNBOOK
        .iter()
        .enumerate()
        .map(|(i, (c, _))| format!("{:02}-{}.json", i + 1, slug(c)))
        .collect();
    let mut found: Vec<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, expected, "golden files and runbook steps differ");
}
