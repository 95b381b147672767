//! Liveness and readiness, as the reconcile loop, the watchers and the heartbeat report them,
//! for `/livez` and `/readyz`.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The loop counts as alive while it ticked within this long (a cold apply at scale takes a
/// couple of seconds; a loop stuck for a minute is not coming back).
pub const LIVENESS_TIMEOUT: Duration = Duration::from_mins(1);

/// Shared health state; every field is written by one part of the agent and read by the
/// HTTP server.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds since `started` of the loop's last tick.
    last_tick_ms: AtomicU64,
    in_sync: AtomicBool,
    /// An apply finished since start.
    applied: AtomicBool,
    /// The last apply succeeded.
    apply_ok: AtomicBool,
    etcd_up: AtomicBool,
    /// Why the last apply failed.
    apply_error: Mutex<Option<String>>,
    /// Why etcd is considered down.
    etcd_error: Mutex<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Health {
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            in_sync: AtomicBool::new(false),
            applied: AtomicBool::new(false),
            apply_ok: AtomicBool::new(false),
            etcd_up: AtomicBool::new(false),
            apply_error: Mutex::new(None),
            etcd_error: Mutex::new(None),
        }
    }

    /// When the agent started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The reconcile loop is turning.
    pub fn tick(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_tick_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_in_sync(&self, in_sync: bool) {
        self.in_sync.store(in_sync, Ordering::Relaxed);
    }

    pub fn in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Relaxed)
    }

    /// Records the outcome of an apply.
    pub fn set_apply_result(&self, result: Result<(), String>) {
        self.applied.store(true, Ordering::Relaxed);
        self.apply_ok.store(result.is_ok(), Ordering::Relaxed);
        *lock(&self.apply_error) = result.err();
    }

    /// Records that etcd answered (`Ok`) or failed (`Err` with why).
    pub fn set_etcd(&self, result: Result<(), String>) {
        self.etcd_up.store(result.is_ok(), Ordering::Relaxed);
        *lock(&self.etcd_error) = result.err();
    }

    pub fn etcd_up(&self) -> bool {
        self.etcd_up.load(Ordering::Relaxed)
    }

    /// `Ok` while the loop ticked within [`LIVENESS_TIMEOUT`]; the text says since when.
    pub fn liveness(&self) -> Result<String, String> {
        let last = Duration::from_millis(self.last_tick_ms.load(Ordering::Relaxed));
        let since = self.started.elapsed().saturating_sub(last);
        let text = format!("reconcile loop last ticked {:.1}s ago\n", since.as_secs_f64());
        if since <= LIVENESS_TIMEOUT {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// `Ok` when the model is in sync, the last apply succeeded and etcd answers; the text
    /// lists each condition either way.
    pub fn readiness(&self) -> Result<String, String> {
        let in_sync = self.in_sync();
        let applied = self.applied.load(Ordering::Relaxed);
        let apply_ok = applied && self.apply_ok.load(Ordering::Relaxed);
        let etcd_up = self.etcd_up();
        let mut text = String::new();
        text.push_str(if in_sync { "datastore: in sync\n" } else { "datastore: not in sync\n" });
        match (applied, apply_ok) {
            (false, _) => text.push_str("dataplane: not programmed yet\n"),
            (true, true) => text.push_str("dataplane: programmed\n"),
            (true, false) => {
                let why = lock(&self.apply_error).clone().unwrap_or_default();
                let _ = writeln!(text, "dataplane: last apply failed: {why}");
            }
        }
        if etcd_up {
            text.push_str("etcd: up\n");
        } else {
            let why = lock(&self.etcd_error).clone().unwrap_or_else(|| "not reached yet".into());
            let _ = writeln!(text, "etcd: down: {why}");
        }
        if in_sync && apply_ok && etcd_up {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

/// A poisoned lock only means a panic elsewhere while holding a string: keep going.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_sync_apply_and_etcd() {
        let health = Health::new();
        health.tick();
        assert!(health.liveness().is_ok());
        assert!(health.readiness().is_err());
        health.set_in_sync(true);
        health.set_etcd(Ok(()));
        let text = health.readiness().unwrap_err();
        assert!(text.contains("not programmed yet"), "{text}");
        health.set_apply_result(Ok(()));
        assert!(health.readiness().is_ok());
        health.set_etcd(Err("connection refused".into()));
        let text = health.readiness().unwrap_err();
        assert!(text.contains("etcd: down: connection refused"), "{text}");
        health.set_etcd(Ok(()));
        health.set_apply_result(Err("route 10.0.0.0/26: EBUSY".into()));
        assert!(health.readiness().unwrap_err().contains("EBUSY"));
    }
}
