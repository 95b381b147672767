//! The `nft` text form of the IR: golden files, and `nft -c` (check mode, inside a private
//! namespace, no change anywhere) accepting the rendered rich example.
//!
//! Refresh the golden files with `TABBY_UPDATE_GOLDEN=1 cargo test -p agent --test nft_render`.

mod nft_example;

use std::path::PathBuf;
use std::process::Command;

use agent::nft::ir::{proto, Action, Chain, Comment, Dir, Family, Match, Ports, Rule, Ruleset};
use agent::nft::{render, render_replace};
use nft_example::{name, net, rich};

fn golden(file: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/nft").join(file);
    if std::env::var_os("TABBY_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("create golden dir");
        std::fs::write(&path, actual).expect("write golden file");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("read {}: {e} (set TABBY_UPDATE_GOLDEN=1 to create it)", path.display())
    });
    assert_eq!(actual, expected, "rendering differs from {}", path.display());
}

#[test]
fn rich_ruleset_matches_golden_text() {
    golden("rich.nft", &render(&rich("tabby")));
}

#[test]
fn rules_render_as_nft_syntax() {
    let mut rs = Ruleset::new(name("tabby"));
    rs.add_chain(
        Chain::regular(name("c-1"))
            .rule(
                Rule::new()
                    .with(Match::l4proto(proto::TCP))
                    .with(Match::dport(Ports::one(22)).negated().expect("negatable"))
                    .with(Match::addr(Dir::Dst, net("10.1.2.3/16")))
                    .counter()
                    .then(Action::Accept)
                    .comment(Comment::new("ssh elsewhere").expect("comment")),
            )
            .rule(
                Rule::new()
                    .with(Match::IcmpType { family: Family::V6, neg: true, value: 1 })
                    .then(Action::Drop),
            ),
    )
    .expect("chain");
    assert_eq!(
        render(&rs),
        "table inet tabby {\n\tchain c-1 {\n\
         \t\tmeta l4proto tcp th dport != 22-22 ip daddr 10.1.0.0/16 counter accept comment \"ssh elsewhere\"\n\
         \t\ticmpv6 type != 1-1 drop\n\
         \t}\n}\n"
    );
    assert!(render_replace(&rs)
        .starts_with("table inet tabby\ndelete table inet tabby\ntable inet tabby {"));
}

#[test]
fn nft_check_mode_accepts_the_rendered_rich_ruleset() {
    testkit::require_root();
    let ns = testkit::Netns::new("render");
    let text = render_replace(&rich("tabby"));
    let out = ns.run_with_stdin("nft", ["-c", "-f", "-"], text.as_bytes());
    assert!(
        out.status.success(),
        "nft -c rejected the rendered ruleset: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Check mode changed nothing.
    let listed = ns.run("nft", ["list", "tables"]);
    assert!(String::from_utf8_lossy(&listed.stdout).trim().is_empty());
    // And nft is not just accepting anything.
    let bad = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "-c", "add rule inet tabby nochain accept"])
        .output()
        .expect("run nft");
    assert!(!bad.status.success());
}
