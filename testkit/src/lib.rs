//! Test fixtures shared by every tabby crate: a real etcd on a free port, private network
//! namespaces, unique names for kernel objects, and a loud root check.
//!
//! Fixtures panic on failure: a test that cannot get its etcd or namespace must fail, with a
//! message that says why, never skip. Everything a fixture creates is removed when it is
//! dropped, including when the test panics.

#![forbid(unsafe_code)]
pub mod bench;
mod etcd;
mod names;
mod netns;
mod spawner;
mod tls;

pub use etcd::{Etcd, EtcdBuilder};
pub use names::unique_name;
pub use netns::Netns;
pub use tls::TlsFiles;

/// Panics unless the process runs as root.
///
/// Call it first in every test that creates namespaces, links, routes or nftables tables, so a
/// run without privileges fails with this message instead of a confusing `EPERM` later (or a
/// silent skip).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates network namespaces, links or nftables tables); \
         run the test suite as root, e.g. `sudo -E cargo test`"
    );
}

/// Environment variable naming a directory of CNI plugin binaries to test or measure instead
/// of the ones cargo built for the test (`cargo plugins` makes the statically linked ones
/// that ship, in `target/x86_64-unknown-linux-gnu/release`).
pub const PLUGIN_DIR_ENV: &str = "TABBY_PLUGIN_DIR";

/// The plugin `name` (`tabby`, `tabby-ipam`): from [`PLUGIN_DIR_ENV`] when set, else
/// `built` (the caller's `env!("CARGO_BIN_EXE_<name>")`, or where its binaries are). Panics
/// when the named directory lacks it: a run meant for the shipped binaries must not quietly
/// test others.
pub fn plugin(name: &str, built: impl AsRef<std::path::Path>) -> std::path::PathBuf {
    let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV) else {
        return built.as_ref().to_path_buf();
    };
    let path = std::path::absolute(std::path::Path::new(&dir).join(name))
        .unwrap_or_else(|e| panic!("{PLUGIN_DIR_ENV}: {e}"));
    assert!(path.is_file(), "{PLUGIN_DIR_ENV} is set but {} does not exist", path.display());
    path
}

/// Runs `cmd`, panicking with its stderr unless it exits 0; returns its stdout.
///
/// The helper behind every "must succeed" call in the fixtures.
pub(crate) fn must_succeed(what: &str, output: &std::io::Result<std::process::Output>) -> String {
    match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => panic!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => panic!("{what} could not be run: {e}"),
    }
}
