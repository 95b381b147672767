//! Doing things inside a named network namespace from this process: a short-lived thread that
//! `setns`es into it (sockets it opens stay in that namespace for their whole life), or a
//! command run under `nsenter --net`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sched::CloneFlags;

/// Runs `f` on a fresh thread whose network namespace is the one at `path`
/// (`/var/run/netns/<name>`), and returns its result.
///
/// Only that thread changes namespace, and it ends with `f`, so no other code of the process
/// ever runs in the wrong namespace. Sockets `f` creates belong to the namespace and may be
/// handed back and used from any thread.
pub fn in_netns<T, F>(path: &Path, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io::Error::other(format!("setns into {}: {e}", path.display())))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A `Command` running `program` in the namespace at `path` via `nsenter --net`, which (unlike
/// `ip netns exec`) leaves `/sys` and the cgroup mounts alone.
pub fn nsenter<S: AsRef<OsStr>>(path: &Path, program: S) -> Command {
    let mut net = std::ffi::OsString::from("--net=");
    net.push(path);
    let mut command = Command::new("nsenter");
    command.arg(net).arg("--").arg(program);
    command
}

/// A plain HTTP/1.0 GET of `path` from `addr` inside the namespace at `netns`; returns the
/// status code and body.
pub fn http_get(
    netns: &Path,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let mut stream = in_netns(netns, || TcpStream::connect_timeout(&addr, timeout))??;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no HTTP status line in {head:?}")))?;
    Ok((status, body.to_string()))
}
