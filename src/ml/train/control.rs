//! Steering a run between steps: the switches a viewer in this process flips, and the run's
//! `control` file through which another process asks for the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::store::RunDir;

/// Shared switches a viewer flips to steer a run between steps.
#[derive(Debug, Default)]
pub struct TrainControl {
    paused: AtomicBool,
    cancelled: AtomicBool,
}

impl TrainControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Reads a run's `control` file at most twice a second and applies what it asks to the
/// [`TrainControl`], so that another process can steer this run.
pub(super) struct ControlFile {
    next_check: Instant,
    seen: Option<std::time::SystemTime>,
}

impl ControlFile {
    pub(super) fn new(run: &RunDir) -> Self {
        // A request left from an earlier session of this run is not for this one.
        let seen = std::fs::metadata(run.file("control")).and_then(|m| m.modified()).ok();
        ControlFile { next_check: Instant::now(), seen }
    }

    pub(super) fn poll(&mut self, run: &RunDir, control: &TrainControl) {
        if Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + Duration::from_millis(500);
        let modified = std::fs::metadata(run.file("control")).and_then(|m| m.modified()).ok();
        if modified.is_none() || modified == self.seen {
            return;
        }
        self.seen = modified;
        match run.read_control() {
            Some(crate::store::ControlRequest::Pause) => control.pause(),
            Some(crate::store::ControlRequest::Run) => control.resume(),
            Some(crate::store::ControlRequest::Stop) => control.cancel(),
            None => {}
        }
    }
}
