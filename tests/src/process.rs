//! Running helper commands with a deadline: a plugin or CLI that hangs (say, on an etcd that is
//! down) must fail the test with what it printed, not hang it.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished (or killed) command left behind.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The command line, for messages.
    pub command: String,
    /// `None` when the command was killed at its deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    /// Whether the command exited 0 before its deadline.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// A one-paragraph account of the run for assertion messages.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => format!("killed after {:?} (deadline)", self.elapsed),
        };
        format!(
            "`{}` → {status}\n  stdout: {}\n  stderr: {}",
            self.command,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }

    /// Returns stdout if the command succeeded, panics with [`Ran::describe`] otherwise.
    pub fn ok(self) -> String {
        assert!(self.success(), "command failed: {}", self.describe());
        self.stdout
    }
}

/// Runs `command` with `stdin` (or nothing) on its standard input, killing it after
/// `timeout`. Panics only if the program cannot be started at all.
pub fn run(command: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Ran {
    let shown = show(command);
    let started = Instant::now();
    let mut child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{shown}`: {e}"));
    let input = stdin.map(<[u8]>::to_vec);
    let writer = child.stdin.take().map(|mut pipe| {
        std::thread::spawn(move || {
            // A program that exits without reading its input is not an error here.
            let _ = pipe.write_all(input.as_deref().unwrap_or_default());
        })
    });
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ran {
        command: shown,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

/// `program arg…` as a shell user would read it.
pub fn show(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
