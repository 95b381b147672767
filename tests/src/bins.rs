//! Where the built tabby binaries are: `TABBY_BIN_DIR`, else next to the running executable,
//! else the workspace's `target/debug` or `target/release`.

use std::path::{Path, PathBuf};

/// The CNI plugin.
pub const CNI_PLUGIN: &str = "tabby";
/// The per-host agent.
pub const AGENT: &str = "tabby-agent";
/// The resource CLI.
pub const TABBYCTL: &str = "tabbyctl";
/// The IPAM admin CLI.
pub const IPAMCTL: &str = "ipamctl";

/// Environment variable naming the directory that holds the binaries.
pub const BIN_DIR_ENV: &str = "TABBY_BIN_DIR";

/// The directory holding the tabby binaries.
///
/// Order: `$TABBY_BIN_DIR`; the directory of the running executable (a test binary lives in
/// `target/<profile>/deps`, `tabby-demo` in `target/<profile>`) if the CNI plugin is there;
/// `target/debug`, then `target/release` of the workspace. Panics with the command that builds
/// them when none holds the CNI plugin.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        // A relative override is taken from where the command was started, as a user expects.
        return std::path::absolute(&dir).unwrap_or(dir);
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(parent) = exe.parent() {
            if parent.file_name().is_some_and(|n| n == "deps") {
                candidates.extend(parent.parent().map(Path::to_path_buf));
            }
            candidates.push(parent.to_path_buf());
        }
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target");
    candidates.push(target.join("debug"));
    candidates.push(target.join("release"));
    candidates.iter().find(|dir| dir.join(CNI_PLUGIN).is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "cannot find the tabby binaries (looked for {CNI_PLUGIN} in {candidates:?}); build \
             them with `cargo build --workspace --bins` or point {BIN_DIR_ENV} at them"
        )
    })
}

/// The path of binary `name` in [`bin_dir`]; panics (saying how to build it) when missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} does not exist: build the binaries with `cargo build --workspace --bins` \
         (or set {BIN_DIR_ENV})",
        path.display()
    );
    path
}
