//! The fixtures themselves work: etcd starts, restarts on its data, compacts, speaks TLS only
//! to trusted clients, runs inside a namespace, and leaves nothing behind.

use std::net::IpAddr;
use std::path::PathBuf;

use testkit::{Etcd, Netns};

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "command failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn etcd_pid(etcd: &Etcd) -> u32 {
    // The fixture's child is etcd itself (setpriv and nsenter exec); find it by its port.
    let port = etcd.endpoint().rsplit(':').next().expect("endpoint has a port").to_string();
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("listen-client-urls=.*:{port}")])
        .output()
        .expect("run pgrep");
    stdout(&out).trim().lines().next().expect("etcd pid").parse().expect("numeric pid")
}

#[test]
fn etcd_serves_restarts_on_its_data_and_dies_on_drop() {
    let mut etcd = Etcd::start();
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    stdout(&etcd.etcdctl(["put", "/tt/a", "1"]));
    let rev = etcd.revision();
    assert!(rev >= 2);

    etcd.stop();
    assert!(!etcd.is_running());
    assert!(!etcd.etcdctl(["--command-timeout=1s", "get", "/tt/a"]).status.success());
    etcd.start_again();
    assert_eq!(stdout(&etcd.etcdctl(["get", "--print-value-only", "/tt/a"])).trim(), "1");

    stdout(&etcd.etcdctl(["put", "/tt/a", "2"]));
    let compacted = etcd.compact_latest();
    let old = etcd.etcdctl(["get", "--rev", &(compacted - 1).to_string(), "/tt/a"]);
    assert!(!old.status.success(), "a compacted revision is still readable");
    assert!(String::from_utf8_lossy(&old.stderr).contains("compacted"));

    let pid = etcd_pid(&etcd);
    let data_dir = etcd.data_dir().to_path_buf();
    assert!(pid_alive(pid));
    drop(etcd);
    assert!(!pid_alive(pid), "etcd survived its fixture");
    assert!(!data_dir.exists(), "data dir survived its fixture");
}

#[test]
fn etcd_tls_requires_a_client_certificate_from_its_ca() {
    let etcd = Etcd::builder().tls(true).start();
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    let tls = etcd.tls_files().expect("TLS files");
    // The fixture's etcdctl uses the good client certificate.
    stdout(&etcd.etcdctl(["put", "/tt/tls", "x"]));

    let ca = format!("--cacert={}", tls.ca.display());
    let foreign = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints={}", etcd.endpoint()),
            ca.clone(),
            format!("--cert={}", tls.foreign_client_cert.display()),
            format!("--key={}", tls.foreign_client_key.display()),
            "--command-timeout=2s".into(),
            "get".into(),
            "/tt/tls".into(),
        ])
        .output()
        .unwrap();
    assert!(!foreign.status.success(), "etcd accepted a certificate from a foreign CA");

    let anonymous = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints={}", etcd.endpoint()),
            ca,
            "--command-timeout=2s".into(),
            "get".into(),
            "/tt/tls".into(),
        ])
        .output()
        .unwrap();
    assert!(!anonymous.status.success(), "etcd accepted a client without a certificate");
}

#[test]
fn etcd_runs_inside_a_namespace() {
    testkit::require_root();
    let fabric = Netns::new("fab");
    fabric.ip_ok(["link", "add", "br0", "type", "bridge"]);
    fabric.ip_ok(["addr", "add", "10.249.0.1/24", "dev", "br0"]);
    fabric.ip_ok(["link", "set", "br0", "up"]);
    let ip: IpAddr = "10.249.0.1".parse().unwrap();
    let etcd = Etcd::builder().listen_ip(ip).netns(fabric.name()).start();
    assert_eq!(etcd.netns(), Some(fabric.name()));
    assert!(etcd.endpoint().starts_with("http://10.249.0.1:"));
    stdout(&etcd.etcdctl(["put", "/tt/ns", "y"]));
    // Not reachable from the host namespace: the address only exists in the fabric.
    let from_host = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints={}", etcd.endpoint()),
            "--command-timeout=1s".into(),
            "get".into(),
            "/tt/ns".into(),
        ])
        .output()
        .unwrap();
    assert!(!from_host.status.success());
    let pid = etcd_pid(&etcd);
    assert!(fabric.pids().contains(&(pid as i32)), "etcd is not inside {}", fabric.name());
    drop(etcd);
    assert!(!pid_alive(pid));
}

#[test]
fn shared_etcd_is_one_instance() {
    let a = Etcd::shared();
    let b = Etcd::shared();
    assert_eq!(a.endpoint(), b.endpoint());
    stdout(&a.etcdctl(["put", "/tt/shared", "z"]));
}
