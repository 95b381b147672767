//! BIRD's side: the config file, written whole or not at all (temporary file, check, rename),
//! and `birdc` to have the running BIRD check and load it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one `birdc` call may take.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed BIRD config write or reload.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("cannot write BIRD config {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} {command:?} took longer than {BIRDC_TIMEOUT:?}")]
    Timeout { program: String, command: String },
    /// BIRD refused the config: a bug in the renderer, since every input was validated.
    #[error("BIRD refused config {}: {output}", path.display())]
    Refused { path: PathBuf, output: String },
    #[error("birdc {command:?} failed: {output}")]
    Birdc { command: String, output: String },
}

impl BirdError {
    /// Disk and process trouble may pass; a refused config fails the same way until the
    /// model changes.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, BirdError::Refused { .. })
    }
}

/// Talks to one BIRD over its control socket.
#[derive(Debug, Clone)]
pub struct Birdc {
    pub program: PathBuf,
    pub socket: PathBuf,
}

/// What `birdc` said.
#[derive(Debug)]
pub enum Reply {
    Ok(String),
    /// BIRD answered with an error.
    Failed(String),
    /// No BIRD behind the socket (not started yet, or stopped).
    Unreachable(String),
}

impl Birdc {
    /// Whether a BIRD listens on the socket.
    pub fn socket_exists(&self) -> bool {
        self.socket.exists()
    }

    /// Runs `birdc -s <socket> <args…>`.
    pub fn run(&self, args: &[&str]) -> Result<Reply, BirdError> {
        let program = self.program.display().to_string();
        let mut child = Command::new(&self.program)
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| BirdError::Spawn { program: program.clone(), source })?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < BIRDC_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(BirdError::Timeout { program, command: args.join(" ") });
                }
                Err(source) => return Err(BirdError::Spawn { program, source }),
            }
        };
        let output = child
            .wait_with_output()
            .map_err(|source| BirdError::Spawn { program: program.clone(), source })?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        // birdc's greeting carries nothing.
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("BIRD ") || !l.ends_with(" ready."))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(if status.success() {
            Reply::Ok(text)
        } else if text.contains("Unable to connect to server control socket") {
            Reply::Unreachable(text)
        } else {
            Reply::Failed(text)
        })
    }
}

/// Replaces `path` with `content` unless it holds it already; returns whether it wrote.
///
/// The new text goes to a temporary file beside `path` first; `check` gets that file and may
/// refuse it (then `path` is left untouched and the temporary file removed); only then is it
/// renamed over `path`, so a reader never sees half a config.
pub fn write_config(
    path: &Path,
    content: &str,
    check: impl FnOnce(&Path) -> Result<(), BirdError>,
) -> Result<bool, BirdError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let err = |source| BirdError::Write { path: path.to_path_buf(), source };
    let name = path.file_name().map_or_else(|| "bird.conf".into(), |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(".{name}.tabby-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(err)?;
        file.write_all(content.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
        check(&tmp)?;
        std::fs::rename(&tmp, path).map_err(err)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn refused_configs_never_replace_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bird.conf");
        assert!(write_config(&path, "one;\n", |_| Ok(())).unwrap());
        assert!(!write_config(&path, "one;\n", |_| panic!("unchanged: no check")).unwrap());
        let refused = write_config(&path, "two;\n", |tmp| {
            assert_eq!(std::fs::read_to_string(tmp).unwrap(), "two;\n");
            Err(BirdError::Refused { path: tmp.to_path_buf(), output: "syntax error".into() })
        });
        assert!(!refused.unwrap_err().is_retryable());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one;\n");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
