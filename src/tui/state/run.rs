//! What the console knows about one run, rebuilt from its folder by the store follower's
//! feeds, and the status it shows for it.

use std::collections::{BTreeMap, VecDeque};

use crate::engine::follow::{EpochPoint, RunFeed, StepPoint};
use crate::external::ExternalRun;
use crate::ml::metrics::Evaluation;
use crate::ml::spec::ExperimentSpec;
use crate::store::{CheckpointEntry, CheckpointKind, EventLine, RunInfo, RunStatus};

/// The status the console shows for a run: the store's, or `interrupted` for a run that says it
/// is active but whose trainer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShownStatus {
    Run(RunStatus),
    Interrupted,
}

impl ShownStatus {
    /// The word the tables show (and the filter's `status:` matches).
    pub fn label(&self) -> &'static str {
        match self {
            ShownStatus::Run(s) => s.as_str(),
            ShownStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for ShownStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.label())
    }
}

/// Steps kept at full resolution, newest last; older ones go to the down-sampled history.
pub const RECENT_STEPS: usize = 4096;
/// The most points the down-sampled history keeps; past it, every other point is dropped.
pub const HISTORY_STEPS: usize = 4096;

/// A run's training steps: the newest at full resolution in a bounded buffer, and everything
/// before them down-sampled (a long run stays a few thousand points, not millions). Steps arrive
/// in order, so neither part is ever sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps {
    recent: VecDeque<StepPoint>,
    history: Vec<StepPoint>,
    /// One history point is kept for this many steps that leave the recent buffer.
    stride: usize,
    /// Steps that left the recent buffer since the last one kept.
    skipped: usize,
}

impl Steps {
    pub fn push(&mut self, s: StepPoint) {
        if self.recent.len() == RECENT_STEPS
            && let Some(old) = self.recent.pop_front()
        {
            let stride = self.stride.max(1);
            if self.skipped.is_multiple_of(stride) {
                self.history.push(old);
            }
            self.skipped += 1;
            if self.history.len() > HISTORY_STEPS {
                // Keep every other point and halve the rate from now on.
                self.history = self.history.iter().step_by(2).copied().collect();
                self.stride = stride * 2;
                self.skipped = 0;
            }
        }
        self.recent.push_back(s);
    }

    pub fn clear(&mut self) {
        *self = Steps::default();
    }

    /// Every step kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &StepPoint> + '_ {
        self.history.iter().chain(self.recent.iter())
    }

    /// The newest `n` steps (at most), oldest first.
    pub fn newest(&self, n: usize) -> impl Iterator<Item = &StepPoint> + '_ {
        self.recent.iter().skip(self.recent.len().saturating_sub(n))
    }

    pub fn last(&self) -> Option<&StepPoint> {
        self.recent.back()
    }

    pub fn len(&self) -> usize {
        self.history.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

impl Extend<StepPoint> for Steps {
    fn extend<I: IntoIterator<Item = StepPoint>>(&mut self, iter: I) {
        for s in iter {
            self.push(s);
        }
    }
}

/// Everything the console knows about one run, rebuilt from its folder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub info: RunInfo,
    pub interrupted: bool,
    /// The spec as run, and its parameters flattened for tables and filters.
    pub spec: Option<ExperimentSpec>,
    pub params: BTreeMap<String, String>,
    pub steps: Steps,
    pub epochs: Vec<EpochPoint>,
    pub events: Vec<EventLine>,
    pub checkpoints: Vec<CheckpointEntry>,
    /// Smaller variants of the model (`vigil optimize`), by name.
    pub variants: Vec<crate::ml::variants::Report>,
    /// Robustness curves `vigil attack` saved for the run.
    pub attacks: Vec<crate::ml::attack::curve::Curve>,
    /// HotFlip reports `vigil attack --method hotflip` saved for the run.
    pub flips: Vec<crate::ml::attack::hotflip::FlipReport>,
    pub evaluation: Option<Evaluation>,
    /// Evaluations asked for from the console (`e`), newest last.
    pub evaluations: Vec<(CheckpointKind, Evaluation)>,
    /// A run another program trains (`--watch`): read-only, its curves are its tags.
    pub external: Option<ExternalRun>,
    /// The user's tags and note (`notes.json`).
    pub notes: crate::store::notes::RunNotes,
    /// Its Slurm job as last recorded (`slurm.json`), for a run trained by a Slurm job.
    pub job: Option<crate::sweep::JobState>,
}

impl RunState {
    /// A run first seen in the store.
    pub fn new(info: RunInfo) -> Self {
        RunState {
            info,
            interrupted: false,
            spec: None,
            params: BTreeMap::new(),
            steps: Steps::default(),
            epochs: vec![],
            events: vec![],
            checkpoints: vec![],
            variants: vec![],
            attacks: vec![],
            flips: vec![],
            evaluation: None,
            evaluations: vec![],
            external: None,
            notes: Default::default(),
            job: None,
        }
    }

    /// Lays a feed from the store follower over what is known.
    pub fn apply(&mut self, feed: RunFeed) {
        let RunFeed {
            id: _,
            info,
            spec,
            steps,
            epochs,
            reset,
            events,
            checkpoints,
            evaluation,
            variants,
            attacks,
            flips,
            notes,
            job,
            interrupted,
            external,
        } = feed;
        if let Some(j) = job {
            self.job = j;
        }
        if let Some(n) = notes {
            self.notes = n;
        }
        self.info = info;
        self.interrupted = interrupted;
        if let Some(s) = spec {
            self.params = s.params();
            self.spec = Some(*s);
        }
        if reset {
            self.steps.clear();
            self.epochs.clear();
        }
        self.steps.extend(steps);
        self.epochs.extend(epochs);
        self.events.extend(events);
        if let Some(c) = checkpoints {
            self.checkpoints = c;
        }
        if let Some(v) = variants {
            self.variants = v;
        }
        if let Some(a) = attacks {
            self.attacks = a;
        }
        if let Some(f) = flips {
            self.flips = f;
        }
        if evaluation.is_some() {
            self.evaluation = evaluation;
        }
        if let Some(x) = external {
            let run = self.external.get_or_insert_with(ExternalRun::default);
            run.apply(*x);
            // Its "parameters" (Params tab, Compare's table, the filter): where it is read from
            // and each tag's newest value.
            self.params = BTreeMap::from([
                ("source".to_string(), run.dir.display().to_string()),
                ("format".to_string(), run.format()),
            ]);
            for (tag, s) in &run.tags {
                if let Some(p) = s.last() {
                    self.params.insert(format!("last {tag}"), format!("{:.6}", p.value));
                }
            }
        }
    }

    /// Whether Vigil only watches it (another program trains it): nothing may change it.
    pub fn is_external(&self) -> bool {
        self.external.is_some()
    }

    /// Every step kept, oldest first (see [`Steps`]).
    pub fn steps(&self) -> impl DoubleEndedIterator<Item = &StepPoint> + '_ {
        self.steps.iter()
    }

    /// The status to show: `interrupted` for a run whose trainer is gone.
    pub fn status(&self) -> ShownStatus {
        if self.interrupted { ShownStatus::Interrupted } else { ShownStatus::Run(self.info.status) }
    }

    /// Its Slurm job while Slurm is not done with it, as the views say it beside the run's status:
    /// `Slurm job 42: pending (BeginTime)`.
    pub fn live_job(&self) -> Option<String> {
        let j = self.job.as_ref().filter(|j| !j.is_terminal())?;
        Some(format!("Slurm job {}: {}", j.job, j.describe()))
    }

    /// Whether it is queued, running or paused (and its trainer alive).
    pub fn is_active(&self) -> bool {
        self.info.status.is_active() && !self.interrupted
    }

    /// Whether it has a best checkpoint (to serve, evaluate or explain).
    pub fn has_best(&self) -> bool {
        self.checkpoints.iter().any(|c| c.kind == CheckpointKind::Best)
    }

    /// Fraction done, from steps.
    pub fn progress(&self) -> f64 {
        let total = self.info.epochs as f64 * self.info.steps_per_epoch.max(1) as f64;
        if total <= 0.0 { 0.0 } else { (self.info.step as f64 / total).clamp(0.0, 1.0) }
    }

    /// Seconds left at the pace so far.
    pub fn eta(&self) -> Option<f64> {
        let total = self.info.epochs as u64 * self.info.steps_per_epoch;
        let last = self.steps.last()?;
        if last.step == 0 || total <= last.step {
            return None;
        }
        Some(last.time / last.step as f64 * (total - last.step) as f64)
    }

    /// The recent training loss: the mean of the last 20 steps, since one mini-batch's loss
    /// is too noisy to compare runs by.
    pub fn last_loss(&self) -> Option<f64> {
        let recent: Vec<f64> = self.steps.newest(20).map(|s| s.loss).collect();
        if recent.is_empty() {
            return self.info.train_loss;
        }
        Some(recent.iter().sum::<f64>() / recent.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: u64) -> StepPoint {
        StepPoint { step: i, epoch: 0, loss: 1.0, lr: 0.1, samples_per_sec: 1.0, time: i as f64 }
    }

    #[test]
    fn steps_stay_bounded_in_order_with_the_newest_at_full_resolution() {
        let mut s = Steps::default();
        let n = (RECENT_STEPS * 10) as u64;
        s.extend((0..n).map(step));
        assert!(s.len() <= RECENT_STEPS + HISTORY_STEPS + 1, "{}", s.len());
        let all: Vec<u64> = s.iter().map(|p| p.step).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(all[0], 0, "the history starts at the first step");
        let newest: Vec<u64> = s.newest(3).map(|p| p.step).collect();
        assert_eq!(newest, vec![n - 3, n - 2, n - 1]);
        assert_eq!(s.last().map(|p| p.step), Some(n - 1));
    }
}
