//! Churn on a thread of its own, so a test can break things while profiles keep changing,
//! and pause it for a checkpoint whose expectations must hold still.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use super::{Churn, Pacer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    Paused,
    Stopped,
}

#[derive(Debug)]
struct Control {
    mode: Mode,
    /// Lanes waiting in `Paused`: none of them has a write in flight.
    parked: usize,
}

/// A running background churn; stopped when dropped.
#[derive(Debug)]
pub struct Background {
    control: Arc<(Mutex<Control>, Condvar)>,
    threads: Vec<JoinHandle<usize>>,
}

impl Background {
    /// Starts flipping `churn`'s profiles in turn at `rate` changes a second in all, one
    /// thread per lane.
    pub fn start(churn: &Arc<Churn>, rate: f64) -> Background {
        let control =
            Arc::new((Mutex::new(Control { mode: Mode::Running, parked: 0 }), Condvar::new()));
        let lanes = churn.lanes();
        let threads = (0..lanes)
            .map(|lane| {
                let (churn, shared) = (Arc::clone(churn), Arc::clone(&control));
                std::thread::spawn(move || {
                    let (lock, changed) = &*shared;
                    let mut pacer = Pacer::new(rate / lanes as f64);
                    let mut tried = 0;
                    loop {
                        {
                            let mut control = lock.lock().unwrap_or_else(PoisonError::into_inner);
                            if control.mode == Mode::Paused {
                                control.parked += 1;
                                changed.notify_all();
                                while control.mode == Mode::Paused {
                                    control = changed
                                        .wait(control)
                                        .unwrap_or_else(PoisonError::into_inner);
                                }
                                control.parked -= 1;
                            }
                            if control.mode == Mode::Stopped {
                                return tried;
                            }
                        }
                        pacer.wait();
                        // Failures (etcd down) are recorded by the churn itself.
                        let _ = churn.flip(churn.lane_profile(lane, tried));
                        tried += 1;
                    }
                })
            })
            .collect();
        Background { control, threads }
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pauses the churn and returns once no write is in flight.
    pub fn pause(&self) {
        let mut control = self.control();
        control.mode = Mode::Paused;
        self.control.1.notify_all();
        while control.parked < self.threads.iter().filter(|t| !t.is_finished()).count() {
            control = self
                .control
                .1
                .wait_timeout(control, std::time::Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Resumes a paused churn.
    pub fn resume(&self) {
        let mut control = self.control();
        control.mode = Mode::Running;
        self.control.1.notify_all();
    }

    /// Stops the churn; returns how many writes it tried.
    pub fn stop(mut self) -> usize {
        self.halt()
    }

    fn halt(&mut self) -> usize {
        {
            let mut control = self.control();
            control.mode = Mode::Stopped;
            self.control.1.notify_all();
        }
        self.threads.drain(..).map(|t| t.join().unwrap_or(0)).sum()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.halt();
    }
}
