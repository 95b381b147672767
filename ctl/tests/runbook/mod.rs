//! The web/app/mysqldb runbook shared by the golden-file test and the black-box CLI test, and
//! where its golden files live.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

/// `(command, stdin)`: the runbook an operator would type.
pub const RUNBOOK: &[(&str, Option<&str>)] = &[
    ("profile add web", None),
    ("profile web rule show", None),
    ("profile web rule remove inbound --at=1", None),
    ("profile web rule add inbound allow tcp to ports 80,443", None),
    ("profile web rule add inbound allow icmp type 8", None),
    ("profile web rule show", None),
    ("profile add app", None),
    ("profile app rule add inbound allow from tag web", None),
    ("profile app tag add db-users", None),
    ("profile app tag show", None),
    ("profile add mysqldb", None),
    ("profile mysqldb rule add inbound allow tcp from tag db-users to ports 3306", None),
    ("profile mysqldb rule show", None),
    ("profile web rule remove inbound 2", None),
    ("profile web rule show", None),
    ("profile add db-users", None),
    ("profile db-users rule add outbound --at=1 allow tcp to ports 3306 tag mysqldb", None),
    (
        "profile mysqldb rule update",
        Some(
            r#"{"id": "mysqldb",
  "inbound_rules": [
    {"action": "allow", "protocol": "tcp", "src_tag": "db-users", "dst_ports": [3306]},
    {"action": "deny", "protocol": "tcp", "!src_tag": "db-users", "dst_ports": ["3300:3310"]}
  ],
  "outbound_rules": [{"action": "allow"}]}"#,
        ),
    ),
    ("profile mysqldb rule show", None),
    ("profile mysqldb rule json", None),
    ("profile db-users rule show", None),
];

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The golden file name part for a command: its words after `profile`, joined by `-`.
pub fn slug(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let mut s: String = words
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    s.truncate(60);
    s
}

/// The golden file of step `n` (1-based) of the runbook.
pub fn golden_file(n: usize, command: &str) -> PathBuf {
    golden_dir().join(format!("{n:02}-{}.json", slug(command)))
}
