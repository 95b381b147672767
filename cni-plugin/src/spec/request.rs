//! A whole CNI invocation (environment + stdin) validated into one [`Request`] before the
//! plugin touches anything.

use std::path::PathBuf;

use serde::Deserialize;

use super::{CniArgs, CniVersion, Command, ContainerId, Error, IfName, NetConf, RawEnv};

/// What the runtime asked for, fully validated.
#[derive(Debug)]
pub enum Request {
    Add(Invocation<PathBuf>),
    Check(Invocation<PathBuf>),
    /// DEL may come without a netns: Mesos omits `CNI_NETNS` once the namespace is gone.
    Del(Invocation<Option<PathBuf>>),
    Version(CniVersion),
    Gc(Maintenance),
    Status(Maintenance),
}

/// An ADD, CHECK or DEL for one attachment `(container id, ifname)`; `N` is the netns path
/// (optional for DEL).
#[derive(Debug)]
pub struct Invocation<N> {
    pub container_id: ContainerId,
    pub ifname: IfName,
    pub netns: N,
    pub args: CniArgs,
    pub cni_path: Vec<PathBuf>,
    pub conf: NetConf,
    /// The config exactly as received, for delegated plugins.
    pub stdin: Vec<u8>,
}

/// A GC or STATUS request: not about one attachment.
#[derive(Debug)]
pub struct Maintenance {
    pub cni_path: Vec<PathBuf>,
    pub conf: NetConf,
    pub stdin: Vec<u8>,
}

impl Request {
    /// Validates the environment and stdin. Environment errors (code 4) are reported before
    /// config errors, so a runtime that forgot a variable hears about that first.
    pub fn parse(env: &RawEnv, stdin: &[u8]) -> Result<Request, Error> {
        let command = env.command()?;
        match command {
            Command::Version => Ok(Request::Version(version_request(stdin))),
            Command::Add | Command::Check => {
                let (container_id, ifname) = (env.container_id()?, env.ifname()?);
                let netns = env.netns_required()?;
                let (args, cni_path) = (env.args()?, env.path());
                let conf = NetConf::parse(stdin)?;
                if command == Command::Check && !conf.cni_version.supports_check() {
                    return Err(Error::VerbNeedsNewerVersion {
                        verb: "CHECK",
                        version: conf.cni_version,
                    });
                }
                let inv = Invocation {
                    container_id,
                    ifname,
                    netns,
                    args,
                    cni_path,
                    conf,
                    stdin: stdin.to_vec(),
                };
                Ok(if command == Command::Add { Request::Add(inv) } else { Request::Check(inv) })
            }
            Command::Del => {
                let (container_id, ifname) = (env.container_id()?, env.ifname()?);
                let netns = env.netns_optional()?;
                let (args, cni_path) = (env.args()?, env.path());
                let conf = NetConf::parse(stdin)?;
                Ok(Request::Del(Invocation {
                    container_id,
                    ifname,
                    netns,
                    args,
                    cni_path,
                    conf,
                    stdin: stdin.to_vec(),
                }))
            }
            Command::Gc | Command::Status => {
                let cni_path = env.path();
                if command == Command::Gc && cni_path.is_empty() {
                    return Err(Error::InvalidEnv {
                        var: "CNI_PATH",
                        reason: "not set (required for GC)".into(),
                    });
                }
                let conf = NetConf::parse(stdin)?;
                if !conf.cni_version.supports_gc_status() {
                    return Err(Error::VerbNeedsNewerVersion {
                        verb: command.as_str(),
                        version: conf.cni_version,
                    });
                }
                let m = Maintenance { cni_path, conf, stdin: stdin.to_vec() };
                Ok(if command == Command::Gc { Request::Gc(m) } else { Request::Status(m) })
            }
        }
    }
}

/// VERSION echoes the runtime's version when tabby speaks it; a missing, empty or unknown
/// one is answered in the newest, since the point of VERSION is to find out what we speak.
fn version_request(stdin: &[u8]) -> CniVersion {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<Peek>(stdin)
        .ok()
        .and_then(|p| p.cni_version)
        .and_then(|v| CniVersion::parse(&v).ok())
        .unwrap_or(CniVersion::LATEST)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONF: &str =
        r#"{"cniVersion":"1.0.0","name":"n","type":"tabby","ipam":{"type":"host-local"}}"#;

    fn env(pairs: &[(&str, &str)]) -> RawEnv {
        RawEnv::from_vars(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ]
    }

    #[test]
    fn add_is_built() {
        let Request::Add(inv) = Request::parse(&env(&add_env()), CONF.as_bytes()).unwrap() else {
            panic!("not an ADD")
        };
        assert_eq!(inv.container_id.as_str(), "abc");
        assert_eq!(inv.netns, PathBuf::from("/var/run/netns/x"));
        assert_eq!(inv.conf.cni_version, CniVersion::V1_0_0);
        assert_eq!(inv.stdin, CONF.as_bytes());
    }

    #[test]
    fn each_missing_variable_is_named() {
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let vars: Vec<_> = add_env().into_iter().filter(|(k, _)| *k != var).collect();
            let err = Request::parse(&env(&vars), CONF.as_bytes()).unwrap_err();
            assert_eq!(err.code(), 4, "{var}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn env_errors_come_before_config_errors() {
        let vars: Vec<_> = add_env().into_iter().filter(|(k, _)| *k != "CNI_IFNAME").collect();
        assert_eq!(Request::parse(&env(&vars), b"{").unwrap_err().code(), 4);
        assert_eq!(Request::parse(&env(&add_env()), b"{").unwrap_err().code(), 6);
    }

    #[test]
    fn del_without_netns_is_fine_and_mesos_nested_ids_are_valid() {
        let vars = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "5f1c.9a2b-child"),
            ("CNI_IFNAME", "eth1"),
        ];
        let Request::Del(inv) = Request::parse(&env(&vars), CONF.as_bytes()).unwrap() else {
            panic!("not a DEL")
        };
        assert_eq!(inv.netns, None);
        assert_eq!(inv.container_id.as_str(), "5f1c.9a2b-child");
    }

    #[test]
    fn check_needs_0_4_0() {
        let mut vars = add_env();
        vars[0] = ("CNI_COMMAND", "CHECK");
        let old = r#"{"cniVersion":"0.3.1","name":"n","type":"tabby"}"#;
        assert_eq!(Request::parse(&env(&vars), old.as_bytes()).unwrap_err().code(), 1);
        assert!(matches!(Request::parse(&env(&vars), CONF.as_bytes()), Ok(Request::Check(_))));
    }

    #[test]
    fn gc_and_status_need_1_1_0_and_gc_needs_cni_path() {
        let conf11 = json!({"cniVersion":"1.1.0","name":"n","type":"tabby"}).to_string();
        let gc = env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")]);
        assert!(matches!(Request::parse(&gc, conf11.as_bytes()), Ok(Request::Gc(_))));
        assert_eq!(Request::parse(&gc, CONF.as_bytes()).unwrap_err().code(), 1);
        let gc_no_path = env(&[("CNI_COMMAND", "GC")]);
        assert_eq!(Request::parse(&gc_no_path, conf11.as_bytes()).unwrap_err().code(), 4);
        let status = env(&[("CNI_COMMAND", "STATUS")]);
        assert!(matches!(Request::parse(&status, conf11.as_bytes()), Ok(Request::Status(_))));
    }

    #[test]
    fn version_needs_nothing_but_the_command() {
        let v = env(&[("CNI_COMMAND", "VERSION")]);
        assert!(matches!(Request::parse(&v, b""), Ok(Request::Version(CniVersion::V1_1_0))));
        assert!(matches!(
            Request::parse(&v, br#"{"cniVersion":"0.3.1"}"#),
            Ok(Request::Version(CniVersion::V0_3_1))
        ));
    }
}
