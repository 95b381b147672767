//! The `CNI_*` environment: raw capture, then validated identifiers (container id, ifname,
//! `CNI_ARGS`) that the rest of the plugin can trust.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use super::Error;

/// The verb the runtime asks for (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    fn parse(s: &str) -> Result<Command, Error> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(Error::InvalidEnv {
                    var: "CNI_COMMAND",
                    reason: format!(
                    "unknown command {other:?} (expected ADD, DEL, CHECK, VERSION, GC or STATUS)"
                ),
                })
            }
        })
    }

    /// The verb as the runtime spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Gc => "GC",
            Command::Status => "STATUS",
        }
    }
}

/// The `CNI_*` variables as found, before validation (the "low-level args").
#[derive(Clone, Debug, Default)]
pub struct RawEnv {
    pub command: Option<OsString>,
    pub container_id: Option<OsString>,
    pub netns: Option<OsString>,
    pub ifname: Option<OsString>,
    pub args: Option<OsString>,
    pub path: Option<OsString>,
}

impl RawEnv {
    /// Picks the `CNI_*` variables out of an environment listing.
    pub fn from_vars<I, K, V>(vars: I) -> RawEnv
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut env = RawEnv::default();
        for (k, v) in vars {
            let (k, v) = (k.into(), v.into());
            let slot = match k.to_str() {
                Some("CNI_COMMAND") => &mut env.command,
                Some("CNI_CONTAINERID") => &mut env.container_id,
                Some("CNI_NETNS") => &mut env.netns,
                Some("CNI_IFNAME") => &mut env.ifname,
                Some("CNI_ARGS") => &mut env.args,
                Some("CNI_PATH") => &mut env.path,
                _ => continue,
            };
            *slot = Some(v);
        }
        env
    }

    /// The process's own environment.
    pub fn from_process() -> RawEnv {
        RawEnv::from_vars(std::env::vars_os())
    }

    /// `CNI_COMMAND`, which every invocation needs.
    pub fn command(&self) -> Result<Command, Error> {
        Command::parse(required_str("CNI_COMMAND", self.command.as_ref())?)
    }

    pub(crate) fn container_id(&self) -> Result<ContainerId, Error> {
        ContainerId::new(required_str("CNI_CONTAINERID", self.container_id.as_ref())?)
    }

    pub(crate) fn ifname(&self) -> Result<IfName, Error> {
        IfName::new(required_str("CNI_IFNAME", self.ifname.as_ref())?)
    }

    /// `CNI_NETNS`, required (ADD, CHECK).
    pub(crate) fn netns_required(&self) -> Result<PathBuf, Error> {
        self.netns_optional()?.ok_or_else(|| Error::InvalidEnv {
            var: "CNI_NETNS",
            reason: "not set (required for this command)".into(),
        })
    }

    /// `CNI_NETNS`, optional (DEL: Mesos omits it when the namespace is already gone).
    pub(crate) fn netns_optional(&self) -> Result<Option<PathBuf>, Error> {
        match self.netns.as_ref().filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => {
                let path = PathBuf::from(v);
                if path.is_absolute() {
                    Ok(Some(path))
                } else {
                    Err(Error::InvalidEnv {
                        var: "CNI_NETNS",
                        reason: format!("{} is not an absolute path", path.display()),
                    })
                }
            }
        }
    }

    pub(crate) fn args(&self) -> Result<CniArgs, Error> {
        match self.args.as_ref() {
            None => Ok(CniArgs::default()),
            Some(v) => CniArgs::parse(utf8("CNI_ARGS", v)?),
        }
    }

    /// `CNI_PATH` split into directories; empty when unset (only delegation needs it).
    pub(crate) fn path(&self) -> Vec<PathBuf> {
        match self.path.as_ref() {
            None => Vec::new(),
            Some(v) => std::env::split_paths(v).filter(|p| !p.as_os_str().is_empty()).collect(),
        }
    }
}

fn utf8<'a>(var: &'static str, v: &'a OsString) -> Result<&'a str, Error> {
    v.to_str().ok_or_else(|| Error::InvalidEnv { var, reason: "not valid UTF-8".into() })
}

fn required_str<'a>(var: &'static str, v: Option<&'a OsString>) -> Result<&'a str, Error> {
    match v {
        None => Err(Error::InvalidEnv { var, reason: "not set".into() }),
        Some(v) if v.is_empty() => Err(Error::InvalidEnv { var, reason: "empty".into() }),
        Some(v) => utf8(var, v),
    }
}

/// A container id as the spec allows it: an alphanumeric first character, then
/// `[A-Za-z0-9_.-]`. Mesos nested containers (`parent.child`) fit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn new(s: &str) -> Result<ContainerId, Error> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if first_ok && rest_ok {
            Ok(ContainerId(s.to_owned()))
        } else {
            Err(Error::InvalidEnv {
                var: "CNI_CONTAINERID",
                reason: format!(
                    "{s:?} must start with a letter or digit and contain only [A-Za-z0-9_.-]"
                ),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A kernel interface name: 1..=15 bytes, not `.` or `..`, no `/`, `:` or whitespace
/// (the kernel's `dev_valid_name`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IfName(String);

/// IFNAMSIZ (16) less the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

impl IfName {
    pub fn new(s: &str) -> Result<IfName, Error> {
        let reason = if s.is_empty() {
            Some("empty".to_owned())
        } else if s.len() > MAX_IFNAME_LEN {
            Some(format!("{s:?} is {} bytes, longer than {MAX_IFNAME_LEN}", s.len()))
        } else if s == "." || s == ".." {
            Some(format!("{s:?} is not a valid interface name"))
        } else if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
            Some(format!("{s:?} contains '/', ':' or whitespace"))
        } else {
            None
        };
        match reason {
            None => Ok(IfName(s.to_owned())),
            Some(reason) => Err(Error::InvalidEnv { var: "CNI_IFNAME", reason }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keys tabby understands in `CNI_ARGS`; others need `IgnoreUnknown=1`, as in libcni.
const KNOWN_ARGS: [&str; 6] = [
    "IgnoreUnknown",
    "IP",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// `CNI_ARGS` (`K=V;K2=V2`), validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
    ips: Vec<IpAddr>,
}

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, Error> {
        let bad = |reason: String| Error::InvalidEnv { var: "CNI_ARGS", reason };
        let mut pairs = Vec::new();
        for item in s.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| bad(format!("{item:?} is not KEY=VALUE")))?;
            pairs.push((k.to_owned(), v.to_owned()));
        }
        let mut args = CniArgs { pairs, ips: Vec::new() };
        let ignore_unknown = match args.get("IgnoreUnknown") {
            None => false,
            Some(v) if v == "1" || v.eq_ignore_ascii_case("true") => true,
            Some(v) if v == "0" || v.eq_ignore_ascii_case("false") => false,
            Some(v) => return Err(bad(format!("IgnoreUnknown={v:?} is not a boolean"))),
        };
        if !ignore_unknown {
            if let Some((k, _)) = args.pairs.iter().find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str()))
            {
                return Err(bad(format!("unknown key {k:?} (set IgnoreUnknown=1 to allow it)")));
            }
        }
        if let Some(v) = args.get("IP") {
            args.ips = v
                .split(',')
                .map(|ip| {
                    ip.trim().parse().map_err(|_| bad(format!("IP={ip:?} is not an IP address")))
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(args)
    }

    /// The value of a key, if present (the last one wins, as in libcni).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Addresses requested with `IP=` (comma-separated for dual stack).
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// All pairs in the order given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<impl fmt::Debug, Error>) -> u32 {
        r.unwrap_err().code()
    }

    #[test]
    fn container_ids() {
        for ok in ["a", "0abc", "f3c1-9.x_y", "parent-uuid.child-uuid"] {
            assert_eq!(ContainerId::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "a:b", "é"] {
            let err = ContainerId::new(bad).unwrap_err();
            assert_eq!(err.code(), 4, "{bad:?}");
            assert!(err.to_string().contains("CNI_CONTAINERID"));
        }
    }

    #[test]
    fn ifnames() {
        for ok in ["eth0", "eth1", "a", "x234567890abcde", "net-1.2"] {
            IfName::new(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "tab\t", "x234567890abcdef"] {
            let err = IfName::new(bad).unwrap_err();
            assert_eq!(err.code(), 4, "{bad:?}");
            assert!(err.to_string().contains("CNI_IFNAME"), "{err}");
        }
    }

    #[test]
    fn commands() {
        let env = |c: &str| RawEnv::from_vars([("CNI_COMMAND", c)]);
        assert_eq!(env("ADD").command().unwrap(), Command::Add);
        assert_eq!(env("STATUS").command().unwrap(), Command::Status);
        assert_eq!(code(env("add").command()), 4);
        assert_eq!(code(RawEnv::default().command()), 4);
    }

    #[test]
    fn netns_must_be_absolute_and_is_optional_for_del() {
        let env = RawEnv::from_vars([("CNI_NETNS", "ns/x")]);
        assert_eq!(code(env.netns_optional()), 4);
        assert_eq!(RawEnv::default().netns_optional().unwrap(), None);
        let err = RawEnv::default().netns_required().unwrap_err();
        assert!(err.to_string().contains("CNI_NETNS"));
        let empty = RawEnv::from_vars([("CNI_NETNS", "")]);
        assert_eq!(empty.netns_optional().unwrap(), None);
    }

    #[test]
    fn cni_path_splits() {
        let env = RawEnv::from_vars([("CNI_PATH", "/a::/b")]);
        assert_eq!(env.path(), vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    }

    #[test]
    fn cni_args() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar;IP=10.0.0.5").unwrap();
        assert_eq!(a.get("FOO"), Some("bar"));
        assert_eq!(a.ips(), ["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let dual = CniArgs::parse("IP=10.0.0.5,fd00::5").unwrap();
        assert_eq!(dual.ips().len(), 2);
        for bad in ["FOO=bar", "IP=nope", "novalue", "=x", "IgnoreUnknown=maybe"] {
            let err = CniArgs::parse(bad).unwrap_err();
            assert_eq!(err.code(), 4, "{bad}");
            assert!(err.to_string().contains("CNI_ARGS"));
        }
    }
}
