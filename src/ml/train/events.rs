//! What a run reports as it goes, as plain data: the events, the epoch report, and the observer
//! the console and the CLI receive them through.

use serde::{Deserialize, Serialize};

use crate::ml::data::preprocess::DataReport;
use crate::ml::metrics::Evaluation;
use crate::store::{CheckpointKind, EpochMetrics};

/// Metrics of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochSummary {
    /// The numbers written to `metrics.jsonl` (`time` is seconds of training so far).
    #[serde(flatten)]
    pub metrics: EpochMetrics,
    pub epochs: usize,
    /// Whether this epoch gave the best checkpoint so far.
    pub improved: bool,
}

impl std::ops::Deref for EpochSummary {
    type Target = EpochMetrics;

    fn deref(&self) -> &EpochMetrics {
        &self.metrics
    }
}

/// What a run reports as it goes: plain data, no handles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TrainEvent {
    Started {
        run_id: String,
        spec: String,
        epochs: usize,
        steps_per_epoch: u64,
        parameters: usize,
        data: DataReport,
        resumed_from_epoch: Option<usize>,
    },
    Step {
        epoch: usize,
        step: u64,
        step_in_epoch: u64,
        loss: f64,
        lr: f64,
        samples_per_sec: f64,
    },
    Epoch(EpochSummary),
    Checkpoint {
        epoch: usize,
        kind: CheckpointKind,
    },
    Paused {
        epoch: usize,
        step: u64,
    },
    Resumed {
        epoch: usize,
        step: u64,
    },
    EarlyStopped {
        epoch: usize,
        best_epoch: usize,
    },
    Finished {
        test: Evaluation,
        best_epoch: usize,
        duration_s: f64,
    },
    Failed {
        reason: String,
    },
    Cancelled {
        epoch: usize,
        step: u64,
    },
}

/// Receives a run's events as they happen (a progress bar, a log printer, a channel).
pub trait TrainObserver: Send {
    fn on_event(&mut self, event: &TrainEvent);
}

/// An observer that ignores everything.
pub struct Silent;
impl TrainObserver for Silent {
    fn on_event(&mut self, _: &TrainEvent) {}
}

impl<F: FnMut(&TrainEvent) + Send> TrainObserver for F {
    fn on_event(&mut self, event: &TrainEvent) {
        self(event)
    }
}

/// How a run ended when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(Box<Evaluation>),
    Cancelled,
}
