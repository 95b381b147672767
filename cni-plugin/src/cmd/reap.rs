//! The detached veth reaper: DEL hands the kernel's slow deletion of a detached pair to a
//! child process of the plugin's own binary and answers the runtime without waiting.
//!
//! The child gets `/dev/null` for stdin, stdout and stderr and a process group of its own:
//! runtimes read the plugin's stdout until it closes and may signal its group, and neither
//! must wait for or hit the reaper. When it cannot be started, DEL deletes the pair itself.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::dataplane::{self, Detached, Netns};

/// First argument that makes the `tabby` binary a reaper instead of a CNI plugin (CNI
/// runtimes pass no arguments).
pub const REAP_ARG: &str = "--reap-veth";

/// Set by a binary whose `main` answers [`REAP_ARG`] through [`reap_main`]. Library users
/// (tests, the agent) never set it: their executable would not understand the argument.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Lets DEL hand deletions to reapers: the running executable handles [`REAP_ARG`].
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Starts a reaper for `link`; an error means it did not start (or reapers are not enabled)
/// and the caller must delete the link itself.
pub fn spawn(link: &Detached) -> std::io::Result<()> {
    if !ENABLED.load(Ordering::Relaxed) {
        return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "reapers not enabled"));
    }
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .arg(REAP_ARG)
        .arg(link.index.to_string())
        .arg(&link.ifname)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        // Not waited for: the plugin exits right after and init adopts the child.
        .map(drop)
}

/// Deletes the link the arguments name, if `args` (without the program name) ask for a
/// reaper; `None` otherwise. Exit status 2 for arguments it cannot read, 1 when the kernel
/// refused the deletion.
pub fn reap_main(args: &[OsString]) -> Option<ExitCode> {
    if args.first().map(OsString::as_os_str) != Some(REAP_ARG.as_ref()) {
        return None;
    }
    let Some(link) = parse(&args[1..]) else {
        eprintln!("usage: tabby {REAP_ARG} <ifindex> <ifname>");
        return Some(ExitCode::from(2));
    };
    Some(match dataplane::delete_detached(&Netns::current(), &link) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tabby: cannot delete {}: {e}", link.ifname);
            ExitCode::FAILURE
        }
    })
}

fn parse(args: &[OsString]) -> Option<Detached> {
    let [index, ifname] = args else { return None };
    let index: u32 = index.to_str()?.parse().ok().filter(|i| *i > 0)?;
    let ifname = ifname.to_str()?;
    // Only names the plugin makes: a reaper must never be talked into deleting eth0.
    let valid = ifname.len() <= 15
        && ifname.starts_with(dataplane::HOST_VETH_PREFIX)
        && ifname.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| Detached { ifname: ifname.to_owned(), index })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_its_own_flag_makes_a_reaper() {
        assert!(reap_main(&args(&[])).is_none());
        assert!(reap_main(&args(&["--version"])).is_none());
    }

    #[test]
    fn arguments_are_checked_before_anything_is_deleted() {
        assert_eq!(
            parse(&args(&["17", "cali1234567890a"])),
            Some(Detached { ifname: "cali1234567890a".into(), index: 17 })
        );
        for bad in [
            &["17"][..],
            &["0", "cali1234567890a"],
            &["x", "cali1234567890a"],
            &["17", "eth0"],
            &["17", "cali1234567890ab"],
            &["17", "cali-../x"],
            &["17", "cali1234567890a", "extra"],
        ] {
            assert_eq!(parse(&args(bad)), None, "{bad:?}");
        }
        assert_eq!(reap_main(&args(&[REAP_ARG, "0", "eth0"])), Some(ExitCode::from(2)));
    }
}
