//! podman as the runtime: its CNI backend (switched on in a containers.conf of the test's
//! own) runs `tabby` for `podman run --network <tabby network>` and `podman rm`. Two
//! containers from a busybox-static image reach each other by address; removing them
//! releases both addresses.
//!
//! podman runs inside the test's host namespace through `nsenter --net` (`ip netns exec`
//! would remount /sys and hide the cgroup mounts runc needs), with its own --root and
//! --runroot, so nothing of the machine's podman state is touched.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns: a panic is the report")]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::store::StoreHost;
use serde_json::json;

/// A private podman: storage, run dir, CNI config and plugin dirs under one temp dir.
struct Podman {
    dir: tempfile::TempDir,
    host_netns: PathBuf,
}

impl Podman {
    fn new(h: &StoreHost, network: &str) -> Podman {
        let version = Command::new("podman").arg("--version").output();
        match &version {
            Ok(out) if out.status.success() => {}
            other => panic!("podman is needed for this test and cannot run: {other:?}"),
        }
        let dir = tempfile::Builder::new().prefix("tabby-podman-").tempdir().unwrap();
        let p = dir.path();
        for sub in ["root", "runroot", "tmp", "cni-conf", "cni-bin", "rootfs/bin"] {
            std::fs::create_dir_all(p.join(sub)).unwrap();
        }
        // The plugin dir: tabby and tabby-ipam next to the reference plugins podman expects.
        for entry in std::fs::read_dir("/usr/lib/cni").unwrap() {
            let entry = entry.unwrap();
            std::os::unix::fs::symlink(entry.path(), p.join("cni-bin").join(entry.file_name()))
                .unwrap();
        }
        for (name, bin) in [("tabby", common::tabby()), ("tabby-ipam", common::tabby_ipam())] {
            std::os::unix::fs::symlink(bin, p.join("cni-bin").join(name)).unwrap();
        }
        let conf = format!(
            r#"[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}"]
network_config_dir = "{netconf}"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{events}"
tmp_dir = "{tmp}"

[containers]
default_ulimits = []
"#,
            bin = p.join("cni-bin").display(),
            netconf = p.join("cni-conf").display(),
            events = p.join("events.log").display(),
            tmp = p.join("tmp").display(),
        );
        std::fs::write(p.join("containers.conf"), conf).unwrap();
        let mut plugin = h.conf(None, network);
        if let Some(obj) = plugin.as_object_mut() {
            obj.remove("name");
        }
        let conflist = json!({"cniVersion": "1.0.0", "name": network, "plugins": [plugin]});
        std::fs::write(
            p.join("cni-conf").join(format!("{network}.conflist")),
            conflist.to_string(),
        )
        .unwrap();
        // An image of one static busybox and its applets.
        std::fs::copy("/bin/busybox", p.join("rootfs/bin/busybox"))
            .expect("busybox-static provides /bin/busybox");
        for applet in ["sh", "sleep", "ping", "nc", "ip", "cat", "echo"] {
            std::os::unix::fs::symlink("busybox", p.join("rootfs/bin").join(applet)).unwrap();
        }
        let tar = p.join("rootfs.tar");
        let out = Command::new("tar")
            .arg("-C")
            .arg(p.join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success(), "tar: {}", String::from_utf8_lossy(&out.stderr));
        let podman = Podman { dir, host_netns: h.fx.host.path() };
        podman.ok(&["import", tar.to_str().unwrap(), "tabby-test-busybox"]);
        podman
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut net = std::ffi::OsString::from("--net=");
        net.push(&self.host_netns);
        Command::new("nsenter")
            .arg(net)
            .arg("--")
            .arg("podman")
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .args(["--storage-driver", "vfs", "--runtime", "runc"])
            .args(args)
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .output()
            .unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers left by a failed assertion: stop them (and so run DEL) before the
        // storage goes.
        let out = self.run(&["rm", "-f", "-a", "-t", "0"]);
        if !out.status.success() {
            eprintln!("podman rm -fa: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = self.run(&["rmi", "-a", "-f"]);
    }
}

#[test]
fn podman_runs_two_containers_that_reach_each_other() {
    let h = StoreHost::new("podman");
    h.add_pool("pool-pm", "10.205.0.0/16", None, false);
    let podman = Podman::new(&h, "tabbynet");
    assert!(podman.ok(&["network", "ls"]).contains("tabbynet"));

    let mut ids = Vec::new();
    let mut ips = Vec::new();
    for name in ["tabby-c1", "tabby-c2"] {
        let id = podman.ok(&[
            "run",
            "-d",
            "--network",
            "tabbynet",
            "--name",
            name,
            "tabby-test-busybox",
            "sleep",
            "1000",
        ]);
        let ip = podman.ok(&[
            "inspect",
            name,
            "--format",
            "{{.NetworkSettings.Networks.tabbynet.IPAddress}}",
        ]);
        assert!(ip.starts_with("10.205."), "{name} got {ip:?}");
        assert_eq!(h.holder(ip.parse().unwrap()), Some(format!("tabbynet.{id}.eth0")));
        ids.push(id);
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1]);
    assert_eq!(h.fx.host_calis().len(), 2);
    assert_eq!(h.endpoint_keys().len(), 2);
    assert!(h.check().is_clean(), "{:?}", h.check());

    // By ICMP and by TCP, container 1 to container 2's address.
    let ping = podman.ok(&["exec", "tabby-c1", "ping", "-c", "1", "-W", "2", &ips[1]]);
    assert!(ping.contains("1 packets received"), "{ping}");
    podman.ok(&["exec", "-d", "tabby-c2", "sh", "-c", "echo pong | nc -l -p 7777"]);
    let mut answer = String::new();
    for _ in 0..20 {
        let out = podman.run(&[
            "exec",
            "tabby-c1",
            "sh",
            "-c",
            &format!("nc -w 2 {} 7777 </dev/null", ips[1]),
        ]);
        answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if answer == "pong" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(answer, "pong", "TCP from c1 to c2");

    podman.ok(&["rm", "-f", "-t", "0", "tabby-c1", "tabby-c2"]);
    h.assert_nothing_left();
}
