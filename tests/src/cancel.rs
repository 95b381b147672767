//! Interruption: SIGINT/SIGTERM turn into a flag that the harness's wait loops check, so an
//! interrupted demo unwinds through its `Drop` guards and leaves nothing behind.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once an interrupt has been received.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The panic message of an interrupted wait; callers can tell it from a real failure.
pub const INTERRUPTED: &str = "interrupted by a signal";

/// Asks every harness wait loop to stop at its next check.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether an interrupt has been requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Panics with [`INTERRUPTED`] when an interrupt has been requested; the unwinding drops
/// (and so cleans up) whatever the interrupted code had built.
pub fn check() {
    if requested() {
        std::panic::panic_any(INTERRUPTED);
    }
}

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    Int,
    Term,
}

impl std::fmt::Display for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interrupt::Int => "SIGINT",
            Interrupt::Term => "SIGTERM",
        })
    }
}

/// Handles SIGINT and SIGTERM on a thread of their own: each one calls [`request`] and then
/// `on_signal` with how many have arrived so far (so a second one can abort).
///
/// A handler rather than a blocked signal mask, because children inherit a mask across exec
/// (Rust's `Command` does not reset it): agents and etcd would then ignore the SIGTERM that
/// stops them.
pub fn install(on_signal: impl Fn(Interrupt, usize) + Send + 'static) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let handlers = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
            let (mut int, mut term) = match handlers {
                Ok(h) => {
                    let _ = ready_tx.send(Ok(()));
                    h
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut count = 0;
            loop {
                let which = tokio::select! {
                    _ = int.recv() => Interrupt::Int,
                    _ = term.recv() => Interrupt::Term,
                };
                count += 1;
                request();
                on_signal(which, count);
            }
        });
    })?;
    ready_rx.recv().map_err(|_| std::io::Error::other("the signal thread died"))?
}
