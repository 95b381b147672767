//! Reading and writing `/proc/sys` in the calling thread's network namespace.
//!
//! `/proc/sys/net` shows the namespace of the thread doing the lookup, so a write for the
//! host goes through the caller's thread and one for a container through [`super::Netns::run`].

use std::io;
use std::path::PathBuf;

/// A sysctl key relative to `/proc/sys`, e.g. `net/ipv4/conf/cali1/proxy_arp`.
pub fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key)
}

/// Writes `value` to the sysctl `key`.
pub fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key), value)
}

/// Reads the sysctl `key`, trimmed.
pub fn read(key: &str) -> io::Result<String> {
    std::fs::read_to_string(path(key)).map(|s| s.trim().to_owned())
}

/// Whether IPv6 exists in this namespace (the module may be off or disabled on boot).
pub fn ipv6_present() -> bool {
    path("net/ipv6").exists()
}
