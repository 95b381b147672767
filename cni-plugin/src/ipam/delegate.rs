//! A delegated IPAM plugin: found in `CNI_PATH`, run with our environment and the
//! runtime's full config, its result read in whatever version it answers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::IpamRequest;
use crate::spec::{CniResult, Error, IpamConf, Maintenance};

/// An IPAM plugin binary to exec.
#[derive(Clone, Debug)]
pub struct Delegate {
    plugin: String,
    binary: PathBuf,
}

impl Delegate {
    /// Finds `ipam.type` in the `CNI_PATH` directories. Looked up before anything is done,
    /// so a missing plugin fails the ADD with nothing to undo.
    pub fn find(conf: &IpamConf, cni_path: &[PathBuf]) -> Result<Delegate, Error> {
        if cni_path.is_empty() {
            return Err(Error::InvalidEnv {
                var: "CNI_PATH",
                reason: format!("not set; needed to find IPAM plugin {:?}", conf.plugin_type),
            });
        }
        cni_path
            .iter()
            .map(|dir| dir.join(&conf.plugin_type))
            .find(|p| p.is_file())
            .map(|binary| Delegate { plugin: conf.plugin_type.clone(), binary })
            .ok_or_else(|| {
                let dirs: Vec<_> = cni_path.iter().map(|d| d.display().to_string()).collect();
                Error::config(
                    "ipam.type",
                    format!(
                        "plugin {:?} not found in CNI_PATH ({})",
                        conf.plugin_type,
                        dirs.join(":")
                    ),
                )
            })
    }

    /// The binary that runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Runs the plugin for `command` and returns its stdout on success.
    ///
    /// The child inherits our environment (the runtime's `CNI_*` variables) with
    /// `CNI_COMMAND` set explicitly, so a rollback DEL after a failed ADD says DEL. Its
    /// stderr is ours, as the spec asks. Blocking is fine: the plugin does one thing at a time.
    fn exec(&self, command: &str, stdin: &[u8]) -> Result<Vec<u8>, Error> {
        let mut cmd = Command::new(&self.binary);
        cmd.env("CNI_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // libcni's argument parser rejects keys it does not know unless told otherwise;
        // runtimes send keys meant for other plugins (Calico sets this flag for the same reason).
        if let Some(args) = std::env::var_os("CNI_ARGS").filter(|a| !a.is_empty()) {
            let has_flag = args
                .to_str()
                .is_some_and(|a| a.split(';').any(|kv| kv.starts_with("IgnoreUnknown=")));
            if !has_flag {
                let mut patched = std::ffi::OsString::from("IgnoreUnknown=1;");
                patched.push(&args);
                cmd.env("CNI_ARGS", patched);
            }
        }
        let io_err = |what: &str, source| Error::Io {
            what: format!("{what} IPAM plugin {}", self.binary.display()),
            source,
        };
        let mut child = cmd.spawn().map_err(|e| io_err("cannot run", e))?;
        if let Some(mut pipe) = child.stdin.take() {
            // A config fits the pipe buffer, and plugins read all of stdin before writing.
            // A plugin that exits without reading closes the pipe; its exit status and
            // output below say why, which is more useful than EPIPE.
            match pipe.write_all(stdin) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(io_err("cannot write config to", e));
                }
                _ => {}
            }
        }
        let out = child.wait_with_output().map_err(|e| io_err("lost", e))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(self.failure(command, &out.stdout, out.status))
    }

    /// Turns a failed run into an error carrying the plugin's own code and message.
    fn failure(&self, command: &str, stdout: &[u8], status: std::process::ExitStatus) -> Error {
        #[derive(Deserialize)]
        struct Reply {
            code: u32,
            #[serde(default)]
            msg: String,
            #[serde(default)]
            details: String,
        }
        match serde_json::from_slice::<Reply>(stdout) {
            Ok(r) => Error::Delegate {
                plugin: format!("{} {command}", self.plugin),
                code: r.code,
                msg: r.msg,
                details: r.details,
            },
            Err(_) => Error::Internal {
                what: format!(
                    "IPAM plugin {} {command} failed ({status}): {}",
                    self.plugin,
                    String::from_utf8_lossy(stdout).trim()
                ),
                source: None,
            },
        }
    }
}

impl Delegate {
    pub fn add(&self, req: &IpamRequest<'_>) -> Result<CniResult, Error> {
        let stdout = self.exec("ADD", req.stdin)?;
        let value = serde_json::from_slice(&stdout).map_err(|e| Error::Internal {
            what: format!("IPAM plugin {} printed invalid JSON", self.plugin),
            source: Some(Box::new(e)),
        })?;
        CniResult::parse(value).map_err(|e| Error::Internal {
            what: format!("IPAM plugin {} printed an unusable result", self.plugin),
            source: Some(Box::new(e)),
        })
    }

    pub fn del(&self, req: &IpamRequest<'_>) -> Result<(), Error> {
        self.exec("DEL", req.stdin).map(drop)
    }

    pub fn check(&self, req: &IpamRequest<'_>) -> Result<(), Error> {
        self.exec("CHECK", req.stdin).map(drop)
    }

    pub fn gc(&self, req: &Maintenance) -> Result<(), Error> {
        self.exec("GC", &req.stdin).map(drop)
    }

    pub fn status(&self, req: &Maintenance) -> Result<(), Error> {
        self.exec("STATUS", &req.stdin).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::Map;

    use super::*;

    fn conf(t: &str) -> IpamConf {
        IpamConf { plugin_type: t.into(), rest: Map::new() }
    }

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn find_needs_cni_path_and_the_binary() {
        assert_eq!(Delegate::find(&conf("x"), &[]).unwrap_err().code(), 4);
        let dir = tempfile::tempdir().unwrap();
        let err = Delegate::find(&conf("nope"), &[dir.path().to_owned()]).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("nope"));
        script(dir.path(), "fake", "true");
        let d = Delegate::find(&conf("fake"), &[PathBuf::from("/nonexistent"), dir.path().into()])
            .unwrap();
        assert_eq!(d.binary(), dir.path().join("fake"));
    }

    #[test]
    fn passes_stdin_and_command_and_reads_any_version() {
        let dir = tempfile::tempdir().unwrap();
        // Echo back what we got, as a 0.2.0 result, so the test sees stdin and CNI_COMMAND.
        script(
            dir.path(),
            "fake",
            r#"in=$(cat); [ "$in" = '{"k":1}' ] || exit 3
echo "{\"cniVersion\":\"0.2.0\",\"ip4\":{\"ip\":\"10.9.0.2/24\"},\"dns\":{\"domain\":\"$CNI_COMMAND\"}}""#,
        );
        let d = Delegate::find(&conf("fake"), &[dir.path().into()]).unwrap();
        let out = d.exec("ADD", br#"{"k":1}"#).unwrap();
        let r = CniResult::parse(serde_json::from_slice(&out).unwrap()).unwrap();
        assert_eq!(r.ips[0].address.to_string(), "10.9.0.2/24");
        assert_eq!(r.dns.domain.as_deref(), Some("ADD"));
    }

    #[test]
    fn failures_keep_the_plugins_code() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "fails",
            r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"busy","details":"lock"}'; exit 1"#,
        );
        script(dir.path(), "garbage", "echo oops; exit 2");
        let d = Delegate::find(&conf("fails"), &[dir.path().into()]).unwrap();
        let err = d.exec("ADD", b"{}").unwrap_err();
        assert_eq!(err.code(), 11);
        assert!(err.to_string().contains("busy"));
        let d = Delegate::find(&conf("garbage"), &[dir.path().into()]).unwrap();
        let err = d.exec("DEL", b"{}").unwrap_err();
        assert_eq!(err.code(), 999);
        assert!(err.to_string().contains("oops"), "{err}");
    }
}
