//! Golden files for the pure route planner and route diff.
//!
//! `golden/routes/<case>/{model.json, host.json}` → `expected.json` (routes, the local
//! workloads' device routes, and notes);
//! `golden/route-diff/<case>/{desired.json, observed.json}` → `expected.json` (operations);
//! `golden/bird/<case>/{model.json, host.json}` → `expected.conf` (the BIRD config, which
//! the real `bird -p` must also accept) and `expected-notes.json`.
//! `model.json` maps etcd keys to values, loaded through the agent's own model, so a case
//! also shows what the model ignores. Run with `TABBY_BLESS=1` to rewrite the expected files
//! after an intended change, then review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use agent::host::HostInfo;
use agent::model::ClusterModel;
use agent::routes::{self, DesiredRoute, KernelRoute};
use datastore::client::Kv;
use datastore::keys::KeyLayout;
use serde_json::{json, Value};

fn golden(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(dir);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no golden cases in {}", root.display());
    cases
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Compares `actual` with `<case>/expected.json`, or writes it when blessing. Returns a
/// failure message instead of panicking, so every case is reported.
fn check(case: &Path, actual: &Value) -> Option<String> {
    check_text(case, "expected.json", &(serde_json::to_string_pretty(actual).unwrap() + "\n"))
}

/// Compares `actual` with the file `<case>/<name>`, or writes it when blessing.
fn check_text(case: &Path, name: &str, actual: &str) -> Option<String> {
    let path = case.join(name);
    if std::env::var_os("TABBY_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (expected != actual)
        .then(|| format!("{}:\nexpected:\n{expected}\nactual:\n{actual}", path.display()))
}

fn load_model(case: &Path) -> ClusterModel {
    let Value::Object(entries) = read_json(&case.join("model.json")) else {
        panic!("{}: model.json must map etcd keys to values", case.display());
    };
    let kvs: Vec<Kv> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| Kv {
            key,
            value: serde_json::to_vec(&value).unwrap(),
            mod_revision: i as i64 + 1,
            create_revision: i as i64 + 1,
            version: 1,
        })
        .collect();
    let revision = kvs.len() as i64;
    ClusterModel::from_kvs(KeyLayout::new("/calico"), &kvs, revision)
}

#[test]
fn route_planner_golden_files() {
    let mut failures = Vec::new();
    for case in golden("routes") {
        let model = load_model(&case);
        assert!(model.in_sync());
        let host: HostInfo = serde_json::from_value(read_json(&case.join("host.json"))).unwrap();
        let plan = routes::plan_routes_explained(&model, &host);
        assert_eq!(plan.routes, routes::plan_routes(&model, &host));
        let actual = json!({
            "routes": plan.routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "device_routes": plan.device_routes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "notes": plan.notes.iter().map(|n| format!("{}: {}", n.dst, n.reason)).collect::<Vec<_>>(),
            "ignored": model.invalid().keys().collect::<Vec<_>>(),
        });
        failures.extend(check(&case, &actual));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bird_config_golden_files() {
    let mut failures = Vec::new();
    for case in golden("bird") {
        let model = load_model(&case);
        let host: HostInfo = serde_json::from_value(read_json(&case.join("host.json"))).unwrap();
        let plan = agent::bgp::plan(&model, &host, datastore::model::DEFAULT_AS_NUMBER).unwrap();
        let text = agent::bgp::render(&plan);
        let notes = json!({
            "notes": plan.notes,
            "ignored": model.invalid().keys().collect::<Vec<_>>(),
        });
        failures.extend(check_text(&case, "expected.conf", &text));
        failures.extend(check_text(
            &case,
            "expected-notes.json",
            &(serde_json::to_string_pretty(&notes).unwrap() + "\n"),
        ));
        // The real parser: a config BIRD refuses is a bug even if it matches the golden file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bird.conf");
        std::fs::write(&path, &text).unwrap();
        let out = std::process::Command::new("/usr/sbin/bird")
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("bird2 is needed to check the rendered config (/usr/sbin/bird)");
        if !out.status.success() {
            failures.push(format!(
                "{}: bird -p refused the config: {}{}",
                case.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn route_diff_golden_files() {
    let mut failures = Vec::new();
    for case in golden("route-diff") {
        let desired: BTreeSet<DesiredRoute> =
            serde_json::from_value(read_json(&case.join("desired.json"))).unwrap();
        let observed: Vec<KernelRoute> =
            serde_json::from_value(read_json(&case.join("observed.json"))).unwrap();
        let ops = routes::diff(&desired, &observed);
        // Every operation touches only tabby's routes.
        for op in &ops {
            if let routes::RouteOp::Delete(k) | routes::RouteOp::Replace { old: k, .. } = op {
                assert!(k.is_ours(), "{}: {op} touches a foreign route", case.display());
            }
        }
        // Applying the operations reaches the desired state: a second diff is empty.
        let mut after: Vec<KernelRoute> = observed.clone();
        for op in &ops {
            match op {
                routes::RouteOp::Add(r) => after.push(as_kernel(r)),
                routes::RouteOp::Replace { old, new } => {
                    after.retain(|k| k != old);
                    after.push(as_kernel(new));
                }
                routes::RouteOp::Delete(k) => after.retain(|r| r != k),
            }
        }
        assert!(routes::diff(&desired, &after).is_empty(), "{}: not converged", case.display());
        let actual = json!({
            "ops": ops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "conflicts": routes::conflicts(&desired, &observed)
                .iter()
                .map(|(want, theirs)| format!("{want} held by {theirs}"))
                .collect::<Vec<_>>(),
        });
        failures.extend(check(&case, &actual));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn as_kernel(route: &DesiredRoute) -> KernelRoute {
    KernelRoute::written(route)
}
