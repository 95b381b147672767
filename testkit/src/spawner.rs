//! Starts fixture daemons from one long-lived thread, tied to it by a parent-death signal.
//!
//! A daemon a test starts must not outlive the test binary, even when the binary is killed or
//! exits without running destructors (statics are never dropped). `setpriv --pdeathsig KILL`
//! asks the kernel to kill the daemon when its parent goes away, but "parent" means the
//! *thread* that forked it: a daemon spawned from a test thread would die as soon as that
//! thread finished. So every daemon is forked from this module's thread, which lives exactly
//! as long as the process.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

/// A spawn request: the full command line, the log file, and where to send the result.
struct Request {
    argv: Vec<OsString>,
    log: File,
    reply: Sender<io::Result<Child>>,
}

/// The channel to the spawner thread, started on first use.
static SPAWNER: OnceLock<Mutex<Sender<Request>>> = OnceLock::new();

/// Spawns `argv` under `setpriv --pdeathsig KILL`, stdin closed and stdout and stderr
/// appended to `log`.
///
/// `setpriv` execs the program, so the returned child's pid is the daemon's own.
pub(crate) fn spawn_tied(argv: Vec<OsString>, log: File) -> io::Result<Child> {
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                // Runs until the process exits: the sender lives in a static and is never
                // dropped, so `recv` never fails.
                while let Ok(request) = rx.recv() {
                    let _ = request.reply.send(spawn_now(&request.argv, &request.log));
                }
            })
            .expect("testkit: cannot start the spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send(Request { argv, log, reply })
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    answer.recv().map_err(|_| io::Error::other("testkit spawner thread dropped the request"))?
}

/// The fork itself, on the spawner thread.
fn spawn_now(argv: &[OsString], log: &File) -> io::Result<Child> {
    Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .spawn()
}
