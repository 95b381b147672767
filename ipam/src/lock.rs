//! The host-wide IPAM lock: one `flock` on a file that every allocator on this host takes
//! around assign and release, so local callers never race each other on the same block.
//!
//! Concurrent updates from one host almost always target the same affine block, so letting
//! them run in parallel only turns into CAS conflicts (Calico cni-plugin PR #985). The wait is
//! bounded: a caller that cannot get the lock in time gets a retryable error rather than
//! hanging the container runtime.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rand::Rng;

/// Default lock file, as Calico's `/var/run/calico/ipam.lock`.
pub const DEFAULT_LOCK_FILE: &str = "/var/run/tabby/ipam.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("timed out after {waited:?} waiting for the IPAM lock {path}")]
    Timeout { path: PathBuf, waited: Duration },
    #[error("cannot open the IPAM lock file {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("flock on {path} failed: {errno}")]
    Flock { path: PathBuf, errno: Errno },
}

impl LockError {
    /// A timeout may clear once the other holder finishes; a file we cannot open will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, LockError::Timeout { .. })
    }
}

/// Held lock; released when dropped (the kernel also releases it if the process dies).
#[derive(Debug)]
pub struct HostLockGuard {
    _lock: Flock<File>,
    path: PathBuf,
}

impl HostLockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the exclusive lock on `path` (creating the file and its directory), waiting at most
/// `timeout`. Polls with a short jittered sleep so the wait can be bounded and cancelled.
pub async fn acquire(path: &Path, timeout: Duration) -> Result<HostLockGuard, LockError> {
    let start = Instant::now();
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|source| LockError::Open { path: path.to_path_buf(), source })?;
        }
    }
    let mut file = open(path)?;
    let mut pause = Duration::from_millis(1);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                tracing::trace!(path = %path.display(), waited = ?start.elapsed(), "IPAM lock taken");
                return Ok(HostLockGuard { _lock: lock, path: path.to_path_buf() });
            }
            Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => file = f,
            Err((_, errno)) => return Err(LockError::Flock { path: path.to_path_buf(), errno }),
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(LockError::Timeout { path: path.to_path_buf(), waited });
        }
        let jitter = rand::rng().random_range(0..=pause.as_micros() as u64);
        let sleep = (pause + Duration::from_micros(jitter)).min(timeout.saturating_sub(waited));
        tokio::time::sleep(sleep).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Open { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_taker_waits_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ipam.lock");
        let held = acquire(&path, Duration::from_secs(1)).await.unwrap();
        assert_eq!(held.path(), path);
        let start = Instant::now();
        let err = acquire(&path, Duration::from_millis(100)).await.unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        assert!(err.is_retryable());
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(start.elapsed() < Duration::from_secs(1));
        drop(held);
        acquire(&path, Duration::from_millis(100)).await.unwrap();
    }

    #[tokio::test]
    async fn lock_is_exclusive_across_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.lock");
        let inside = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (path, inside) = (path.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = acquire(&path, Duration::from_secs(10)).await.unwrap();
                let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert_eq!(n, 0, "two holders at once");
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[tokio::test]
    async fn unopenable_path_is_not_retryable() {
        let err = acquire(Path::new("/proc/self/nope/ipam.lock"), Duration::from_millis(10))
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
    }
}
