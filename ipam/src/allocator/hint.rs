//! The block hint: which blocks this node was affine to at its last write, kept in memory
//! and, when a file is configured, on disk so the next short-lived process (a CNI ADD)
//! reads its blocks in the first round trip instead of the second.
//!
//! The hint is only ever a guess: the snapshot still reads this node's affinities and a
//! stale or foreign entry costs one wasted key read, never a wrong allocation. So a file
//! that cannot be read or parsed is treated as empty, and a failed write is only logged.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::IpNet;

/// Upper bound on entries taken from the file: a host holds a handful of blocks; a file
/// written by something else must not turn into thousands of key reads.
const MAX_ENTRIES: usize = 64;

#[derive(Debug)]
pub(super) struct Hint {
    file: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    loaded: bool,
    blocks: BTreeSet<IpNet>,
}

impl Hint {
    pub(super) fn new(file: Option<PathBuf>) -> Self {
        Hint { file, state: Mutex::new(State::default()) }
    }

    /// The hinted blocks for `node`; the file is read once, on first use.
    pub(super) fn get(&self, node: &str) -> Vec<IpNet> {
        let Ok(mut state) = self.state.lock() else { return Vec::new() };
        if !state.loaded {
            state.loaded = true;
            if let Some(path) = &self.file {
                state.blocks = read(path, node);
            }
        }
        state.blocks.iter().copied().collect()
    }

    /// Replaces the hint; the file is rewritten only when the set changed.
    pub(super) fn set(&self, node: &str, blocks: BTreeSet<IpNet>) {
        let Ok(mut state) = self.state.lock() else { return };
        state.loaded = true;
        if state.blocks == blocks {
            return;
        }
        state.blocks = blocks;
        if let Some(path) = &self.file {
            if let Err(e) = write(path, node, &state.blocks) {
                tracing::debug!(path = %path.display(), error = %e, "block hint not saved");
            }
        }
    }
}

/// `node <name>` then one CIDR per line. Anything else (another node's hint, garbage)
/// reads as no hint.
fn render(node: &str, blocks: &BTreeSet<IpNet>) -> String {
    let mut out = format!("node {node}\n");
    for b in blocks {
        out.push_str(&b.to_string());
        out.push('\n');
    }
    out
}

fn parse(text: &str, node: &str) -> BTreeSet<IpNet> {
    let mut lines = text.lines();
    if lines.next() != Some(&format!("node {node}")) {
        return BTreeSet::new();
    }
    let mut out = BTreeSet::new();
    for line in lines.take(MAX_ENTRIES) {
        match line.trim().parse::<IpNet>() {
            Ok(net) if net == net.trunc() => {
                out.insert(net);
            }
            _ => return BTreeSet::new(),
        }
    }
    out
}

fn read(path: &Path, node: &str) -> BTreeSet<IpNet> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, node),
        Err(_) => BTreeSet::new(),
    }
}

/// Written to a temporary name and renamed, so a reader never sees half a file even
/// without the host lock.
fn write(path: &Path, node: &str, blocks: &BTreeSet<IpNet>) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, render(node, blocks))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> BTreeSet<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn survives_a_process_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.hint");
        let first = Hint::new(Some(path.clone()));
        assert!(first.get("n1").is_empty());
        first.set("n1", nets(&["10.0.0.0/26", "fd00::/122"]));
        let second = Hint::new(Some(path.clone()));
        assert_eq!(
            second.get("n1"),
            vec!["10.0.0.0/26".parse().unwrap(), "fd00::/122".parse().unwrap()]
        );
        // Another node name on the same host (a renamed node) does not inherit the blocks.
        assert!(Hint::new(Some(path)).get("n2").is_empty());
    }

    #[test]
    fn garbage_reads_as_no_hint() {
        for text in [
            "",
            "node n1\nnot a cidr\n",
            "node n1\n10.0.0.1/26\n",
            "n1\n10.0.0.0/26\n",
            "node n1\n10.0.0.0/26\n\u{0}\n",
        ] {
            assert!(parse(text, "n1").is_empty(), "{text:?}");
        }
        assert_eq!(parse("node n1\n10.0.0.0/26\n", "n1"), nets(&["10.0.0.0/26"]));
    }

    #[test]
    fn oversized_files_are_capped() {
        let lines = (0..1000u32).map(|i| format!("10.{}.{}.0/26\n", i / 256, i % 256));
        let text = std::iter::once("node n1\n".to_string()).chain(lines).collect::<String>();
        assert_eq!(parse(&text, "n1").len(), MAX_ENTRIES);
    }

    #[test]
    fn unwritable_file_only_loses_the_hint() {
        let hint = Hint::new(Some(PathBuf::from("/nonexistent-dir/ipam.hint")));
        hint.set("n1", nets(&["10.0.0.0/26"]));
        assert_eq!(hint.get("n1").len(), 1);
    }
}
