#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use datastore::client::Kv;
use datastore::keys::KeyLayout;
use serde_json::json;

use super::*;
use crate::config::BgpSettings;

/// A stand-in `birdc` that logs its arguments and refuses `configure check` of any file
/// holding `REFUSE`.
fn fake_birdc(dir: &Path) -> BgpSettings {
    let program = dir.join("birdc");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> {log}\n\
         if [ \"$3\" = configure ] && [ \"$4\" = check ]; then\n\
           f=$(echo \"$5\" | tr -d '\"')\n\
           if grep -q REFUSE \"$f\"; then echo \"$f:1:1 syntax error\"; exit 1; fi\n\
           echo 'Configuration OK'; exit 0\nfi\necho Reconfigured\n",
        log = dir.join("calls").display()
    );
    std::fs::write(&program, script).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("bird.ctl");
    std::fs::write(&socket, "").unwrap();
    BgpSettings {
        enabled: true,
        bird_config: dir.join("bird.conf"),
        bird_socket: socket,
        birdc: program,
        as_number: datastore::model::DEFAULT_AS_NUMBER,
    }
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split_whitespace().skip(2).take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

fn model(nodes: &[(&str, &str)]) -> ClusterModel {
    let layout = KeyLayout::new("/calico");
    let kvs: Vec<Kv> = nodes
        .iter()
        .enumerate()
        .map(|(i, (name, ip))| Kv {
            key: layout.resource(datastore::keys::Kind::Node, None, name),
            value: json!({
                "kind": "Node", "apiVersion": "projectcalico.org/v3",
                "metadata": {"name": name},
                "spec": {"bgp": {"ipv4Address": format!("{ip}/24")}}
            })
            .to_string()
            .into_bytes(),
            mod_revision: i as i64 + 1,
            create_revision: i as i64 + 1,
            version: 1,
        })
        .collect();
    ClusterModel::from_kvs(layout, &kvs, 10)
}

fn host() -> HostInfo {
    HostInfo { ipv4: Some("192.0.2.1/24".parse().unwrap()), bgp: true, ..HostInfo::new("a") }
}

#[test]
fn bird_reloads_only_when_the_text_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bird = BirdDataplane::new(&fake_birdc(dir.path()));
    let two = model(&[("a", "192.0.2.1"), ("b", "192.0.2.2")]);
    assert!(bird.apply(&two, &host()).unwrap().changed);
    let load = format!("configure \"{}\"", dir.path().join("bird.conf").display());
    assert_eq!(calls(dir.path()), ["configure check".to_string(), load]);
    let text = std::fs::read_to_string(dir.path().join("bird.conf")).unwrap();
    assert!(text.contains("neighbor 192.0.2.2 as 64512;"), "{text}");

    // Same model, and a resync: nothing written, BIRD left alone.
    bird.resync();
    assert!(!bird.apply(&two, &host()).unwrap().changed);
    assert_eq!(calls(dir.path()).len(), 2);

    // A new node: a new config, checked then loaded.
    let three = model(&[("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")]);
    assert!(bird.apply(&three, &host()).unwrap().changed);
    assert_eq!(calls(dir.path()).len(), 4);

    // Someone edited the file: rewritten and reloaded.
    std::fs::write(dir.path().join("bird.conf"), "edited").unwrap();
    assert!(bird.apply(&three, &host()).unwrap().changed);
    assert_eq!(calls(dir.path()).len(), 6);
}

#[test]
fn refused_config_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let settings = fake_birdc(dir.path());
    let mut bird = BirdDataplane::new(&settings);
    bird.apply(&model(&[("a", "192.0.2.1")]), &host()).unwrap();
    let before = std::fs::read_to_string(&settings.bird_config).unwrap();
    let refused = write_config(&settings.bird_config, "REFUSE\n", |tmp| bird.check(tmp));
    assert!(!refused.unwrap_err().is_retryable());
    assert_eq!(std::fs::read_to_string(&settings.bird_config).unwrap(), before);
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 4, "birdc, calls, bird.ctl, bird.conf and no temporary file: {left:?}");
}

#[test]
fn no_bird_running_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = fake_birdc(dir.path());
    settings.bird_socket = dir.path().join("absent.ctl");
    settings.birdc = "/usr/sbin/birdc".into();
    let mut bird = BirdDataplane::new(&settings);
    let report = bird.apply(&model(&[("a", "192.0.2.1")]), &host()).unwrap();
    assert!(report.changed, "the file was written");
    assert!(dir.path().join("bird.conf").exists());
}
