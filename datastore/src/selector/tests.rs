//! Table tests for the selector language: what parses, what it prints as, what it matches, and
//! where a bad selector is reported.

use std::collections::{BTreeMap, HashMap};

use super::{Selector, MAX_NESTING_DEPTH, MAX_SELECTOR_LEN};
use crate::selector::Layered;

type LabelSet = &'static [(&'static str, &'static str)];

enum Want {
    /// Parses; prints as `canonical`; matches every set in `yes` and none in `no`.
    Parses { canonical: &'static str, yes: &'static [LabelSet], no: &'static [LabelSet] },
    /// Fails at `position` with a message containing `message`.
    Fails { position: usize, message: &'static str },
}

use Want::{Fails, Parses};

// One case per line so the table reads as a table.
#[rustfmt::skip]
const CASES: &[(&str, Want)] = &[
    // The brief's two anchors.
    ("has(web)", Parses { canonical: "has(web)", yes: &[&[("web", "")], &[("web", "x"), ("a", "b")]], no: &[&[], &[("webx", "")], &[("we", "")]] }),
    (
        "role == 'db' && tier in {'a','b'}",
        Parses {
            canonical: r#"role == "db" && tier in {"a", "b"}"#,
            yes: &[&[("role", "db"), ("tier", "a")], &[("role", "db"), ("tier", "b")]],
            no: &[&[("role", "db")], &[("role", "db"), ("tier", "c")], &[("tier", "a")], &[("role", "web"), ("tier", "a")]],
        },
    ),
    // Empty means all().
    ("", Parses { canonical: "all()", yes: &[&[], &[("a", "b")]], no: &[] }),
    ("  \t ", Parses { canonical: "all()", yes: &[&[]], no: &[] }),
    ("all()", Parses { canonical: "all()", yes: &[&[], &[("a", "b")]], no: &[] }),
    (" ( all ( ) ) ", Parses { canonical: "all()", yes: &[&[]], no: &[] }),
    // Comparisons and Calico's rules for absent labels.
    (r#"a == "b""#, Parses { canonical: r#"a == "b""#, yes: &[&[("a", "b")], &[("a", "b"), ("c", "d")]], no: &[&[], &[("a", "c")], &[("b", "b")]] }),
    ("a==''", Parses { canonical: r#"a == """#, yes: &[&[("a", "")]], no: &[&[], &[("a", "x")]] }),
    ("a != 'b'", Parses { canonical: r#"a != "b""#, yes: &[&[], &[("a", "c")], &[("a", "")]], no: &[&[("a", "b")]] }),
    ("a in {}", Parses { canonical: "a in {}", yes: &[], no: &[&[], &[("a", "")]] }),
    ("a not in {}", Parses { canonical: "a not in {}", yes: &[&[], &[("a", "x")]], no: &[] }),
    ("a not in {'x', \"y\"}", Parses { canonical: r#"a not in {"x", "y"}"#, yes: &[&[], &[("a", "z")], &[("b", "x")]], no: &[&[("a", "x")], &[("a", "y")]] }),
    ("a in {\"z\", 'x', \"z\", 'y'}", Parses { canonical: r#"a in {"x", "y", "z"}"#, yes: &[&[("a", "x")], &[("a", "z")]], no: &[&[], &[("a", "w")]] }),
    ("a in {'x',}", Parses { canonical: r#"a in {"x"}"#, yes: &[&[("a", "x")]], no: &[&[("a", "")]] }),
    ("a notin {'x'}", Parses { canonical: r#"a not in {"x"}"#, yes: &[&[]], no: &[&[("a", "x")]] }),
    ("!a in {'x'}", Parses { canonical: r#"!a in {"x"}"#, yes: &[&[], &[("a", "y")]], no: &[&[("a", "x")]] }),
    ("a contains 'x'", Parses { canonical: r#"a contains "x""#, yes: &[&[("a", "x")], &[("a", "axb")]], no: &[&[], &[("a", "b")], &[("b", "x")]] }),
    ("a starts with 'x'", Parses { canonical: r#"a starts with "x""#, yes: &[&[("a", "xa")]], no: &[&[], &[("a", "ax")]] }),
    ("a ends with 'x'", Parses { canonical: r#"a ends with "x""#, yes: &[&[("a", "ax")]], no: &[&[], &[("a", "xa")]] }),
    ("a startswith 'x'", Parses { canonical: r#"a starts with "x""#, yes: &[&[("a", "x")]], no: &[&[("a", "y")]] }),
    ("a endswith\"x\"", Parses { canonical: r#"a ends with "x""#, yes: &[&[("a", "x")]], no: &[&[("a", "y")]] }),
    // Negation: runs of '!' fold, as in Calico.
    ("!has(a)", Parses { canonical: "!has(a)", yes: &[&[], &[("b", "x")]], no: &[&[("a", "")]] }),
    ("!!has(a)", Parses { canonical: "has(a)", yes: &[&[("a", "")]], no: &[&[]] }),
    ("! ! ! has(a)", Parses { canonical: "!has(a)", yes: &[&[]], no: &[&[("a", "")]] }),
    ("!a == 'x'", Parses { canonical: r#"!a == "x""#, yes: &[&[], &[("a", "y")]], no: &[&[("a", "x")]] }),
    ("!(has(a) || has(b))", Parses { canonical: "!(has(a) || has(b))", yes: &[&[], &[("c", "")]], no: &[&[("a", "")], &[("b", "")]] }),
    ("!(!has(a) || has(b))", Parses { canonical: "!(!has(a) || has(b))", yes: &[&[("a", "")]], no: &[&[], &[("a", ""), ("b", "")]] }),
    ("!(!has(a))", Parses { canonical: "has(a)", yes: &[&[("a", "")]], no: &[&[]] }),
    // Precedence: && binds tighter than ||.
    ("a == 'x' || b == 'y' && c == 'z'", Parses { canonical: r#"a == "x" || b == "y" && c == "z""#, yes: &[&[("a", "x")], &[("b", "y"), ("c", "z")]], no: &[&[("b", "y")], &[("c", "z")], &[]] }),
    ("(a == 'x' || b == 'y') && c == 'z'", Parses { canonical: r#"(a == "x" || b == "y") && c == "z""#, yes: &[&[("a", "x"), ("c", "z")], &[("b", "y"), ("c", "z")]], no: &[&[("a", "x")], &[("b", "y")], &[("c", "z")]] }),
    ("has(a) && (has(b) || has(c)) && has(d)", Parses { canonical: "has(a) && (has(b) || has(c)) && has(d)", yes: &[&[("a", ""), ("c", ""), ("d", "")]], no: &[&[("a", ""), ("d", "")], &[("b", ""), ("c", ""), ("d", "")]] }),
    ("a == 'x' && !(b == 'y' || c != 'z')", Parses { canonical: r#"a == "x" && !(b == "y" || c != "z")"#, yes: &[&[("a", "x"), ("c", "z")]], no: &[&[("a", "x")], &[("a", "x"), ("b", "y"), ("c", "z")]] }),
    // Nested and redundant parentheses.
    ("((((has(a)))))", Parses { canonical: "has(a)", yes: &[&[("a", "1")]], no: &[&[]] }),
    ("(has(a) && (has(b) && (has(c))))", Parses { canonical: "has(a) && has(b) && has(c)", yes: &[&[("a", ""), ("b", ""), ("c", "")]], no: &[&[("a", ""), ("b", "")]] }),
    ("has(a) || ((has(b)) || has(c))", Parses { canonical: "has(a) || has(b) || has(c)", yes: &[&[("c", "")]], no: &[&[("d", "")]] }),
    ("((has(a) || has(b)) && (has(c) || has(d)))", Parses { canonical: "(has(a) || has(b)) && (has(c) || has(d))", yes: &[&[("b", ""), ("c", "")]], no: &[&[("a", ""), ("b", "")]] }),
    // Quotes of both kinds; the canonical form picks the one that cannot clash.
    ("a == \"it's\"", Parses { canonical: r#"a == "it's""#, yes: &[&[("a", "it's")]], no: &[&[("a", "its")]] }),
    ("a == 'say \"hi\"'", Parses { canonical: r#"a == 'say "hi"'"#, yes: &[&[("a", "say \"hi\"")]], no: &[&[("a", "say hi")]] }),
    ("a in {\"'\", '\"'}", Parses { canonical: r#"a in {'"', "'"}"#, yes: &[&[("a", "'")], &[("a", "\"")]], no: &[&[("a", "")]] }),
    ("a == 'x && y || (z)'", Parses { canonical: r#"a == "x && y || (z)""#, yes: &[&[("a", "x && y || (z)")]], no: &[&[("a", "x")]] }),
    // Keys: DNS prefixes, digits, punctuation, and keyword-named labels.
    ("projectcalico.org/namespace == 'default'", Parses { canonical: r#"projectcalico.org/namespace == "default""#, yes: &[&[("projectcalico.org/namespace", "default")]], no: &[&[("namespace", "default")]] }),
    ("has( projectcalico.org/orchestrator )", Parses { canonical: "has(projectcalico.org/orchestrator)", yes: &[&[("projectcalico.org/orchestrator", "k8s")]], no: &[&[]] }),
    ("x-1_2.3/y != 'v'", Parses { canonical: r#"x-1_2.3/y != "v""#, yes: &[&[]], no: &[&[("x-1_2.3/y", "v")]] }),
    ("has == 'x'", Parses { canonical: r#"has == "x""#, yes: &[&[("has", "x")]], no: &[&[("x", "")]] }),
    ("in in {'a'} && not != 'b'", Parses { canonical: r#"in in {"a"} && not != "b""#, yes: &[&[("in", "a")]], no: &[&[("in", "a"), ("not", "b")]] }),
    ("all() && has(a)", Parses { canonical: "all() && has(a)", yes: &[&[("a", "")]], no: &[&[]] }),
    // Whitespace: none, lots, newlines.
    ("a  ==  \"b\"&&has(c)||!has(d)", Parses { canonical: r#"a == "b" && has(c) || !has(d)"#, yes: &[&[], &[("a", "b"), ("c", ""), ("d", "")]], no: &[&[("d", "")]] }),
    ("has(a)\n&&\r\n\thas(b)", Parses { canonical: "has(a) && has(b)", yes: &[&[("a", ""), ("b", "")]], no: &[&[("a", "")]] }),
    // Errors, each at the offending token.
    ("(has(a)", Fails { position: 7, message: "expected ')' but found end of input" }),
    ("(has(a) has(b))", Fails { position: 8, message: "expected ')' but found 'has'" }),
    ("a == 'db", Fails { position: 5, message: "unterminated string" }),
    ("a == \"db'", Fails { position: 5, message: "unterminated string" }),
    ("has(a) && b in {'x', 'y}", Fails { position: 21, message: "unterminated string" }),
    ("a ==", Fails { position: 4, message: "expected a quoted string but found end of input" }),
    ("a == b", Fails { position: 5, message: "expected a quoted string but found 'b'" }),
    ("a != && has(b)", Fails { position: 5, message: "expected a quoted string but found '&&'" }),
    ("has(a) has(b)", Fails { position: 7, message: "expected '&&', '||' or end of input but found 'has'" }),
    ("has(a))", Fails { position: 6, message: "expected '&&', '||' or end of input but found ')'" }),
    ("a == 'x' %", Fails { position: 9, message: "unexpected character '%'" }),
    ("a$b == 'x'", Fails { position: 1, message: "unexpected character '$'" }),
    ("has(a:b)", Fails { position: 5, message: "unexpected character ':'" }),
    ("\u{e9}t\u{e9} == 'x'", Fails { position: 0, message: "unexpected character '\u{e9}'" }),
    ("has(a b)", Fails { position: 6, message: "expected ')' but found 'b'" }),
    ("has()", Fails { position: 4, message: "expected a label name but found ')'" }),
    ("all(x)", Fails { position: 4, message: "expected ')' but found 'x'" }),
    ("a = 'x'", Fails { position: 2, message: "expected '=='" }),
    ("has(a) & has(b)", Fails { position: 7, message: "expected '&&'" }),
    ("has(a) | has(b)", Fails { position: 7, message: "expected '||'" }),
    ("a", Fails { position: 1, message: "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label 'a' but found end of input" }),
    ("a b", Fails { position: 2, message: "after label 'a' but found 'b'" }),
    ("!", Fails { position: 1, message: "expected a label, 'has(', 'all()', '!' or '(' but found end of input" }),
    ("has(a) &&", Fails { position: 9, message: "but found end of input" }),
    ("has(a) && || has(b)", Fails { position: 10, message: "but found '||'" }),
    ("()", Fails { position: 1, message: "but found ')'" }),
    (")", Fails { position: 0, message: "but found ')'" }),
    ("'x' == a", Fails { position: 0, message: "but found string \"x\"" }),
    ("a in 'x'", Fails { position: 5, message: "expected '{' but found string \"x\"" }),
    ("a in {'x' 'y'}", Fails { position: 10, message: "expected ',' or '}' but found string \"y\"" }),
    ("a in {,}", Fails { position: 6, message: "expected a quoted string or '}' but found ','" }),
    ("a in {'x'", Fails { position: 9, message: "expected ',' or '}' but found end of input" }),
    ("a not 'x'", Fails { position: 6, message: "expected 'in' after 'not'" }),
    ("a starts 'x'", Fails { position: 9, message: "expected 'with' after 'starts'" }),
    ("global()", Fails { position: 0, message: "global() is not supported" }),
];

fn labels(set: LabelSet) -> BTreeMap<String, String> {
    set.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[test]
fn table_has_enough_cases() {
    assert!(CASES.len() >= 45, "only {} cases", CASES.len());
}

#[test]
fn selector_table() {
    for (text, want) in CASES {
        match (Selector::parse(text), want) {
            (Ok(sel), Parses { canonical, yes, no }) => {
                assert_eq!(sel.to_string(), *canonical, "canonical form of {text:?}");
                for set in *yes {
                    assert!(sel.matches(&labels(set)), "{text:?} should match {set:?}");
                }
                for set in *no {
                    assert!(!sel.matches(&labels(set)), "{text:?} should not match {set:?}");
                }
            }
            (Err(err), Fails { position, message }) => {
                assert_eq!(err.position, *position, "position for {text:?}: {err}");
                assert!(
                    err.message.contains(message),
                    "message for {text:?}: got {err}, want {message:?}"
                );
            }
            (Ok(sel), Fails { .. }) => panic!("{text:?} should fail to parse, got {sel}"),
            (Err(err), Parses { .. }) => panic!("{text:?} should parse, got {err}"),
        }
    }
}

#[test]
fn display_round_trips_for_every_valid_case() {
    for (text, want) in CASES {
        if let Parses { .. } = want {
            let sel = Selector::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            let printed = sel.to_string();
            let reparsed = Selector::parse(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
            assert_eq!(reparsed, sel, "{text:?} printed as {printed:?}");
            assert_eq!(reparsed.to_string(), printed, "canonical form is a fixed point");
        }
    }
}

#[test]
fn error_display_names_position_and_problem() {
    let err = Selector::parse("(has(a)").expect_err("missing ')'");
    assert_eq!(
        err.to_string(),
        "invalid selector at position 7: expected ')' but found end of input"
    );
}

#[test]
fn nesting_up_to_the_limit_parses_and_beyond_is_an_error() {
    let nested = |depth: usize| format!("{}has(a){}", "(".repeat(depth), ")".repeat(depth));
    let sel = Selector::parse(&nested(MAX_NESTING_DEPTH)).expect("100 levels are allowed");
    assert_eq!(sel.to_string(), "has(a)");

    let err = Selector::parse(&nested(MAX_NESTING_DEPTH + 1)).expect_err("101 levels");
    assert_eq!(err.position, MAX_NESTING_DEPTH, "points at the first '(' too deep: {err}");
    assert!(err.message.contains("nested deeper than 100"), "{err}");
}

#[test]
fn hostile_input_is_an_error_not_a_stack_overflow() {
    let err = Selector::parse(&"(".repeat(60_000)).expect_err("deep parens");
    assert_eq!(err.position, MAX_NESTING_DEPTH);

    let err = Selector::parse(&"!(".repeat(30_000)).expect_err("deep negated parens");
    assert_eq!(err.position, 2 * MAX_NESTING_DEPTH + 1);

    // Runs of '!', '&&' and '||' are loops, not recursion, so long ones are fine.
    let bangs = format!("{}has(a)", "!".repeat(60_000));
    assert_eq!(Selector::parse(&bangs).map(|s| s.to_string()), Ok("has(a)".to_owned()));
    let chain = vec!["has(a)"; 5_000].join(" && ");
    assert!(Selector::parse(&chain).is_ok());
}

#[test]
fn input_over_the_length_cap_is_rejected() {
    let fits = format!("has({})", "k".repeat(MAX_SELECTOR_LEN - 5));
    assert_eq!(fits.len(), MAX_SELECTOR_LEN);
    assert!(Selector::parse(&fits).is_ok());

    let too_long = format!("has({})", "k".repeat(MAX_SELECTOR_LEN - 4));
    let err = Selector::parse(&too_long).expect_err("over the cap");
    assert_eq!(err.position, MAX_SELECTOR_LEN);
    assert!(err.message.contains("65537 bytes"), "{err}");
}

#[test]
fn long_literals_are_abbreviated_in_messages() {
    let err = Selector::parse(&format!("has(x) '{}'", "v".repeat(1_000))).expect_err("garbage");
    assert_eq!(err.position, 7);
    assert!(err.message.ends_with(&format!("string \"{}...\"", "v".repeat(40))), "{err}");
}

#[test]
fn equal_spellings_are_equal_selectors() {
    let a = Selector::parse("tier in {'b', \"a\", 'b'} && (has(x))").expect("valid");
    let b = Selector::parse(r#"tier in {"a", "b"} && has(x)"#).expect("valid");
    assert_eq!(a, b);
    let state = std::hash::RandomState::new();
    assert_eq!(
        std::hash::BuildHasher::hash_one(&state, &a),
        std::hash::BuildHasher::hash_one(&state, &b)
    );
}

#[test]
fn empty_and_all_are_all() {
    assert!(Selector::parse("").expect("empty").is_all());
    assert!(Selector::parse(" all() ").expect("all").is_all());
    assert!(Selector::all().is_all());
    assert!(Selector::default().is_all());
    assert!(!Selector::parse("all() && has(a)").expect("valid").is_all());
    let parsed: Selector = "has(a)".parse().expect("FromStr");
    assert!(!parsed.is_all());
}

#[test]
fn v1_tag_translation_combinators() {
    let web = Selector::has_label("web").expect("valid key");
    assert_eq!(web.to_string(), "has(web)");
    assert_eq!(web, Selector::parse("has(web)").expect("valid"));

    let not_web = !web.clone();
    assert_eq!(not_web.to_string(), "!has(web)");
    assert_eq!(!not_web.clone(), web, "double negation cancels");

    // `(sel) && (!has(X))`, Calico's folding of a v1 `!src_tag`.
    let sel = Selector::parse("role == 'a' || role == 'b'").expect("valid");
    let folded = sel.and(not_web.clone());
    assert_eq!(folded.to_string(), r#"(role == "a" || role == "b") && !has(web)"#);
    assert_eq!(Selector::parse(&folded.to_string()).expect("reparses"), folded);
    assert!(folded.matches(&labels(&[("role", "a")])));
    assert!(!folded.matches(&labels(&[("role", "a"), ("web", "")])));

    // all() is the identity of `and` and absorbs `or`.
    assert_eq!(Selector::all().and(web.clone()), web);
    assert_eq!(web.clone().and(Selector::all()), web);
    assert!(web.clone().or(Selector::all()).is_all());

    // Chains flatten, so the printed form re-parses to the same tree.
    let chain = web.clone().and(Selector::has_label("a").expect("valid")).and(not_web.clone());
    assert_eq!(chain.to_string(), "has(web) && has(a) && !has(web)");
    assert_eq!(Selector::parse(&chain.to_string()).expect("reparses"), chain);
    let either = web.clone().or(not_web).or(chain.clone());
    assert_eq!(either.to_string(), "has(web) || !has(web) || has(web) && has(a) && !has(web)");
    assert_eq!(Selector::parse(&either.to_string()).expect("reparses"), either);
    let negated = !either;
    assert_eq!(Selector::parse(&negated.to_string()).expect("reparses"), negated);
}

#[test]
fn has_label_rejects_keys_the_grammar_cannot_express() {
    assert_eq!(Selector::has_label("my tag").map_err(|e| e.position), Err(2),);
    assert_eq!(Selector::has_label("").map_err(|e| e.position), Err(0));
    assert!(Selector::has_label("projectcalico.org/name").is_ok());
    assert!(super::is_valid_label_key("a-b_c.d/e9"));
    assert!(!super::is_valid_label_key("a=b"));
    assert!(!super::is_valid_label_key(""));
}

#[test]
fn layered_labels_prefer_the_endpoint() {
    let endpoint = labels(&[("role", "db"), ("env", "prod")]);
    let profile = labels(&[("role", "web"), ("web", "")]);
    let both = Layered(&endpoint, &profile);

    let matches = |text: &str| Selector::parse(text).expect("valid").matches(&both);
    assert!(matches("role == 'db'"), "endpoint value wins");
    assert!(!matches("role == 'web'"), "profile value is shadowed");
    assert!(matches("has(web)"), "profile-only label is inherited");
    assert!(matches("has(web) && env == 'prod'"), "labels from both layers combine");
    assert!(!matches("has(nope)"));
    assert!(matches("nope not in {'x'}"));
}

#[test]
fn layered_labels_with_an_empty_layer_and_hash_maps() {
    let empty: HashMap<String, String> = HashMap::new();
    let profile: HashMap<String, String> =
        [("web".to_owned(), String::new())].into_iter().collect();
    let sel = Selector::parse("has(web)").expect("valid");
    assert!(sel.matches(&Layered(&empty, &profile)));
    assert!(sel.matches(&Layered(&profile, &empty)));
    assert!(!sel.matches(&Layered(&empty, &empty)));
    // Layers nest: endpoint over (profile A over profile B).
    let first = labels(&[("a", "1")]);
    let second = labels(&[("a", "2"), ("b", "2")]);
    let inner = Layered(&first, &second);
    let outer = Layered(&empty, &inner);
    assert!(Selector::parse("a == '1' && b == '2'").expect("valid").matches(&outer));
}

#[test]
fn serde_uses_the_canonical_text_and_rejects_bad_selectors() {
    let sel = Selector::parse("tier in {'b','a'}").expect("valid");
    let json = serde_json::to_string(&sel).expect("serialise");
    assert_eq!(json, r#""tier in {\"a\", \"b\"}""#);
    let back: Selector = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, sel);

    let err = serde_json::from_str::<Selector>(r#""has(a""#).expect_err("bad selector");
    assert!(err.to_string().contains("invalid selector at position 5"), "{err}");
}
