//! Bounded polling: every wait in the harness has a deadline and, when it runs out, says what
//! it was waiting for and what it saw last.

use std::time::{Duration, Instant};

/// Pause between two checks.
pub const POLL: Duration = Duration::from_millis(100);

/// Calls `check` until it returns `Ok` or `timeout` has passed; returns the value, or the last
/// `Err` (what was seen) once time is up. Stops early (panicking) on an interrupt.
pub fn poll<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        crate::cancel::check();
        match check() {
            Ok(v) => return Ok(v),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Like [`poll`], but panics on timeout with "timed out after … waiting for `what`; last
/// seen: …".
pub fn until<T>(what: &str, timeout: Duration, check: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    poll(timeout, check).unwrap_or_else(|seen| {
        panic!("timed out after {:.1?} waiting for {what}; last seen:\n{seen}", started.elapsed())
    })
}

/// Checks `check` repeatedly for `duration` and panics on the first failure: for "this must
/// stay true for a while" (the dataplane while etcd is down).
pub fn holds(
    what: &str,
    duration: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) {
    let started = Instant::now();
    loop {
        crate::cancel::check();
        if let Err(seen) = check() {
            panic!("{what} stopped holding after {:.1?}:\n{seen}", started.elapsed());
        }
        if started.elapsed() >= duration {
            return;
        }
        std::thread::sleep(interval);
    }
}
