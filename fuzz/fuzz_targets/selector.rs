//! Fuzzes the selector language: parsing never panics (nor overflows the stack), errors
//! point inside the text, and a parsed selector prints to text that parses back to it.
//!
//! Input: selector text, optionally followed by a NUL and `key=value` lines, the labels to
//! match it against.

#![no_main]

use std::collections::BTreeMap;

use datastore::selector::Selector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (text, labels) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let labels: BTreeMap<String, String> = String::from_utf8_lossy(labels)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();

    let selector = match Selector::parse(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.position <= text.len(), "error position {} past the end: {e}", e.position);
            return;
        }
    };
    let printed = selector.to_string();
    let reparsed = Selector::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e}"));
    assert_eq!(reparsed, selector, "{text:?} printed as {printed:?}");
    assert_eq!(reparsed.to_string(), printed, "canonical form is not a fixed point");

    let json = serde_json::to_string(&selector).expect("selector serialises");
    let back: Selector = serde_json::from_str(&json).expect("serialised selector parses");
    assert_eq!(back, selector);

    let hit = selector.matches(&labels);
    assert_eq!((!selector.clone()).matches(&labels), !hit, "negation of {printed:?}");
    assert_eq!(!!selector.clone(), selector, "double negation of {printed:?}");
    assert_eq!(selector.clone().and(Selector::all()), selector);
    assert!(selector.clone().or(!selector.clone()).matches(&labels), "s || !s for {printed:?}");
    let both = selector.clone().and(!selector.clone());
    assert!(!both.matches(&labels), "s && !s for {printed:?}");
    let both_text = both.to_string();
    assert_eq!(Selector::parse(&both_text).ok(), Some(both), "{both_text:?} does not round-trip");
});
