//! Whatever the operator types or feeds in, the parsers answer with a value or an error,
//! never a panic.

use proptest::prelude::*;

/// Words the v1 grammar knows, so random commands get deep into it.
const WORDS: &[&str] = &[
    "profile",
    "show",
    "add",
    "remove",
    "web",
    "tag",
    "rule",
    "inbound",
    "outbound",
    "allow",
    "deny",
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
    "from",
    "to",
    "ports",
    "cidr",
    "type",
    "code",
    "--at",
    "--at=1",
    "--at=0",
    "1",
    "0",
    "80,443",
    "1:2",
    "2:1",
    "70000",
    "10.0.0.0/8",
    "::/0",
    "json",
    "update",
    "--no-check",
    "--detailed",
    "",
    "a!b",
    "255",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn v1_grammar_never_panics(picks in prop::collection::vec((0..WORDS.len(), any::<bool>(), ".{0,8}"), 0..14)) {
        let words: Vec<String> = picks
            .into_iter()
            .map(|(i, random, text)| if random { text } else { WORDS[i].to_owned() })
            .collect();
        if let Ok(ctl::v1::ProfileCommand::Edit { name, op }) = ctl::v1::parse_command(&words) {
            let profile = datastore::model::Profile::classic_default("web");
            let _ = ctl::v1::edit(&name, Some(&profile), &op);
            let _ = ctl::v1::edit(&name, None, &op);
        }
    }

    #[test]
    fn rules_json_never_panics(text in r#"[\[\]{}":,!a-z_0-9 .-]{0,80}"#) {
        let _ = ctl::v1::parse_rules_json(&text);
        let _ = ctl::v1::parse_rules_json(&format!(r#"{{"id":"p","inbound_rules":[{{{text}}}],"outbound_rules":[]}}"#));
    }

    #[test]
    fn documents_never_panic(text in "(?s).{0,200}") {
        let _ = ctl::input::parse_documents("fuzz", &text, "default", true);
        let prefixed = format!("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: x\nspec:\n{text}");
        let _ = ctl::input::parse_documents("fuzz", &prefixed, "default", true);
    }
}
