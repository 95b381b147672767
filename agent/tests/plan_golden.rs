//! Planner golden files: each `tests/golden/plan/<case>/model.json` (this host plus the
//! resources in etcd) is planned and rendered, and must equal `expected.nft` (warnings as
//! leading `#` comments); the rendered table must also pass `nft -c` (check mode, in a
//! private network namespace, nothing changed anywhere).
//!
//! Refresh with `UPDATE_GOLDEN=1 cargo test -p agent --test plan_golden`, then review every
//! changed file by hand: they are the specification of the ruleset.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use agent::host::HostInfo;
use agent::model::ClusterModel;
use agent::nft::render;
use agent::plan::{plan, PlanConfig};
use datastore::client::Kv;
use datastore::keys::KeyLayout;
use datastore::model::parse_resource;
use serde::Deserialize;
use testkit::Netns;

#[derive(Deserialize)]
struct Case {
    host: HostInfo,
    resources: Vec<serde_json::Value>,
}

fn case_dirs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/plan");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("model.json").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no golden cases under {}", root.display());
    dirs
}

/// The model and host of a case; every resource must be accepted by the model.
fn load(dir: &Path) -> (ClusterModel, HostInfo) {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let case: Case =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let layout = KeyLayout::new("/calico");
    let kvs: Vec<Kv> = case
        .resources
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let bytes = serde_json::to_vec(value).expect("json");
            let resource = parse_resource(&bytes)
                .unwrap_or_else(|e| panic!("{}: resources[{i}]: {e}", path.display()));
            let key = layout.resource(resource.kind(), resource.namespace(), resource.name());
            let revision = i64::try_from(i).expect("small") + 1;
            Kv { key, value: bytes, mod_revision: revision, create_revision: revision, version: 1 }
        })
        .collect();
    let model = ClusterModel::from_kvs(layout, &kvs, 1000);
    assert!(model.invalid().is_empty(), "{}: refused: {:?}", path.display(), model.invalid());
    (model, case.host)
}

/// Warnings as comments, then the table.
fn rendered(dir: &Path) -> String {
    let (model, host) = load(dir);
    let config = PlanConfig::new("tabby").expect("config");
    let plan = plan(&model, &host, &config);
    plan.ruleset.validate().unwrap_or_else(|e| panic!("{}: invalid ruleset: {e}", dir.display()));
    let mut out = String::new();
    for w in &plan.warnings {
        let _ = writeln!(out, "# warning: {w}");
    }
    out.push_str(&render(&plan.ruleset));
    out
}

#[test]
fn plans_match_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for dir in case_dirs() {
        let actual = rendered(&dir);
        let path = dir.join("expected.nft");
        if update {
            std::fs::write(&path, &actual).expect("write golden file");
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("read {}: {e} (UPDATE_GOLDEN=1 creates it)", path.display())
        });
        if actual != expected {
            failures.push(format!("{}:\n{}", path.display(), first_difference(&expected, &actual)));
        }
    }
    assert!(failures.is_empty(), "plans differ from golden files:\n{}", failures.join("\n"));
}

fn first_difference(expected: &str, actual: &str) -> String {
    let mut e = expected.lines();
    let mut a = actual.lines();
    for line in 1.. {
        match (e.next(), a.next()) {
            (None, None) => break,
            (x, y) if x == y => {}
            (x, y) => {
                return format!("  line {line}: expected {x:?}\n  line {line}: actual   {y:?}")
            }
        }
    }
    "  (identical lines, different line endings)".into()
}

#[test]
fn planning_is_deterministic() {
    for dir in case_dirs() {
        assert_eq!(rendered(&dir), rendered(&dir), "{}", dir.display());
    }
}

/// Every golden table is accepted by the kernel: `nft -c -f -` in a namespace of our own.
#[test]
fn golden_tables_pass_nft_check_mode() {
    let ns = Netns::new("plangold");
    for dir in case_dirs() {
        let text = rendered(&dir);
        let out = ns.run_with_stdin("nft", ["-c", "-f", "-"], text.as_bytes());
        assert!(
            out.status.success(),
            "nft -c rejected {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
