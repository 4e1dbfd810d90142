//! The store follower: follows the run store on disk and reports what changed as plain data
//! ([`StoreUpdate`]s). The disk is the source
//! of truth: runs trained by this console and by any other process (another shell, nohup, a
//! batch scheduler) look the same. Each file is read from where the last read stopped, and a run
//! that has finished is looked at less often, so an idle console costs next to nothing.
//! External runs (`--watch`, [`crate::external`]) are followed by a watcher polled beside the
//! store, and come as the same [`RunFeed`]s, with their points per tag in `external`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::error::TryRecvError;

use super::{Handle, Sink};
use crate::error::Result;

use crate::external::watch::{WatchUpdate, Watcher, Writers};
use crate::ml::metrics::Evaluation;
use crate::ml::spec::ExperimentSpec;
use crate::store::{
    CheckpointEntry, EventKind, EventLine, MetricLine, RunId, RunInfo, RunStatus, RunStore, read_jsonl,
};

/// One training step of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPoint {
    pub step: u64,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub samples_per_sec: f64,
    /// Seconds of training since the run started.
    pub time: f64,
}

/// One finished epoch of a run: the store's record.
pub type EpochPoint = crate::store::EpochMetrics;

/// What changed in one run since the last report.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFeed {
    pub id: RunId,
    /// The current `run.json` (always sent).
    pub info: RunInfo,
    /// The spec as run, sent the first time the run is seen.
    pub spec: Option<Box<ExperimentSpec>>,
    /// Metrics lines after the previous report; when `reset` is set, the whole series anew.
    pub steps: Vec<StepPoint>,
    pub epochs: Vec<EpochPoint>,
    pub reset: bool,
    pub events: Vec<EventLine>,
    /// The checkpoint list, when it changed.
    pub checkpoints: Option<Vec<CheckpointEntry>>,
    /// The final test evaluation, when it appeared or changed.
    pub evaluation: Option<Evaluation>,
    /// The variants made by `vigil optimize`, when they changed.
    pub variants: Option<Vec<crate::ml::variants::Report>>,
    /// The robustness curves `vigil attack` saved, when they changed.
    pub attacks: Option<Vec<crate::ml::attack::curve::Curve>>,
    /// The HotFlip reports `vigil attack --method hotflip` saved, when they changed.
    pub flips: Option<Vec<crate::ml::attack::hotflip::FlipReport>>,
    /// The run's tags and note, when they changed.
    pub notes: Option<crate::store::notes::RunNotes>,
    /// Its Slurm job (`slurm.json`), when that changed (a removed file reads as `Some(None)`).
    pub job: Option<Option<crate::sweep::JobState>>,
    /// The run says it is active but the process training it is gone (killed, crashed, or its
    /// machine rebooted): it can be resumed from its last checkpoint.
    pub interrupted: bool,
    /// A run another program trains (`--watch`): its folder, files and new points per tag.
    pub external: Option<Box<crate::external::ExternalFeed>>,
}

impl RunFeed {
    /// A feed with the run's info and nothing else changed; fill in the rest with struct
    /// update syntax (`RunFeed { steps, ..RunFeed::new(info) }`).
    pub fn new(info: RunInfo) -> Self {
        RunFeed {
            id: info.id.clone(),
            info,
            spec: None,
            steps: vec![],
            epochs: vec![],
            reset: false,
            events: vec![],
            checkpoints: None,
            evaluation: None,
            variants: None,
            attacks: None,
            flips: None,
            notes: None,
            job: None,
            interrupted: false,
            external: None,
        }
    }
}

/// A change in the store.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreUpdate {
    Run(Box<RunFeed>),
    Removed(RunId),
}

#[derive(Debug, Default)]
struct Tracked {
    info_mtime: Option<SystemTime>,
    metrics_offset: u64,
    events_offset: u64,
    checkpoints_mtime: Option<SystemTime>,
    eval_mtime: Option<SystemTime>,
    variants_mtime: Option<SystemTime>,
    attacks_mtime: Option<SystemTime>,
    notes_mtime: Option<SystemTime>,
    job_mtime: Option<SystemTime>,
    /// Whether its Slurm job was live at the last look: its trainer then runs on a node, whose
    /// process ids mean nothing here.
    job_live: bool,
    sent_params: bool,
    settled: bool,
    /// Whether the trainer process was alive at the last look (active runs only).
    interrupted: bool,
    pid: Option<u32>,
    next_check: Option<Instant>,
}

/// Follows a run store, and the external runs under the watched directories beside it.
pub struct StoreFollower {
    store: RunStore,
    tracked: HashMap<RunId, Tracked>,
    next_listing: Instant,
    external: Option<Watcher>,
}

/// How often finished runs are looked at (active ones are looked at on every poll).
const SETTLED_EVERY: Duration = Duration::from_secs(2);
/// How often the folder is listed for new or removed runs.
const LISTING_EVERY: Duration = Duration::from_secs(1);

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl StoreFollower {
    pub fn new(store: RunStore) -> Self {
        StoreFollower { store, tracked: HashMap::new(), next_listing: Instant::now(), external: None }
    }

    /// Also follows the external runs a watcher finds; they come as the same feeds.
    pub fn with_watcher(mut self, w: Watcher) -> Self {
        self.external = Some(w);
        self
    }

    /// Reads what changed on disk since the last call.
    pub fn poll(&mut self) -> Vec<StoreUpdate> {
        let now = Instant::now();
        let mut out = Vec::new();
        if now >= self.next_listing {
            self.next_listing = now + LISTING_EVERY;
            let present: Vec<RunId> = self.store.dirs().into_iter().map(|d| d.id).collect();
            let gone: Vec<RunId> = self.tracked.keys().filter(|id| !present.contains(id)).cloned().collect();
            for id in gone {
                self.tracked.remove(&id);
                out.push(StoreUpdate::Removed(id));
            }
            for id in present {
                self.tracked.entry(id).or_default();
            }
        }
        let ids: Vec<RunId> = self.tracked.keys().cloned().collect();
        for id in ids {
            if let Some(feed) = self.check(&id, now) {
                out.push(StoreUpdate::Run(Box::new(feed)));
            }
        }
        if let Some(w) = &mut self.external {
            out.extend(w.poll().into_iter().map(external_update));
        }
        out
    }

    fn check(&mut self, id: &str, now: Instant) -> Option<RunFeed> {
        let dir = self.store.root().join(id);
        let t = self.tracked.get_mut(id)?;
        if t.settled && t.next_check.is_some_and(|n| now < n) {
            return None;
        }
        t.next_check = Some(now + SETTLED_EVERY);
        let info_mtime = mtime(&dir.join("run.json"));
        let metrics_len = std::fs::metadata(dir.join("metrics.jsonl")).map(|m| m.len()).unwrap_or(0);
        let events_len = std::fs::metadata(dir.join("events.jsonl")).map(|m| m.len()).unwrap_or(0);
        let ckpt_mtime = mtime(&dir.join("checkpoints/index.json"));
        let eval_mtime = mtime(&dir.join("eval.json"));
        // A variant made or replaced adds or renames an entry of the folder.
        let variants_mtime = mtime(&dir.join("variants"));
        let attacks_mtime = mtime(&dir.join(crate::ml::attack::curve::INDEX));
        let notes_mtime = mtime(&dir.join(crate::store::notes::FILE));
        let job_mtime = mtime(&dir.join("slurm.json"));
        // A trainer that died leaves run.json untouched: look at its process too.
        let interrupted = !t.job_live && t.pid.is_some_and(|p| !crate::store::process_alive(p));
        let changed = interrupted != t.interrupted
            || info_mtime != t.info_mtime
            || metrics_len != t.metrics_offset
            || events_len != t.events_offset
            || ckpt_mtime != t.checkpoints_mtime
            || eval_mtime != t.eval_mtime
            || variants_mtime != t.variants_mtime
            || attacks_mtime != t.attacks_mtime
            || notes_mtime != t.notes_mtime
            || job_mtime != t.job_mtime
            || !t.sent_params;
        if !changed {
            return None;
        }
        let run = self.store.dir(id);
        // A run.json caught mid-rename or not yet written: try again on the next poll.
        let info = run.info().ok()?;
        let reset = metrics_len < t.metrics_offset;
        let from = if reset { 0 } else { t.metrics_offset };
        let (lines, metrics_offset) = read_jsonl::<MetricLine>(&dir.join("metrics.jsonl"), from).ok()?;
        let (events, events_offset) =
            read_jsonl::<EventLine>(&dir.join("events.jsonl"), t.events_offset).ok()?;
        let mut steps = Vec::new();
        let mut epochs = Vec::new();
        for l in lines {
            match l {
                MetricLine::Step { step, epoch, loss, lr, samples_per_sec, time } => {
                    steps.push(StepPoint { step, epoch, loss, lr, samples_per_sec, time })
                }
                MetricLine::Epoch(m) => epochs.push(m),
            }
        }
        let checkpoints =
            if ckpt_mtime != t.checkpoints_mtime { run.checkpoints().ok().map(|c| c.entries) } else { None };
        let evaluation = if eval_mtime != t.eval_mtime { run.evaluation().ok() } else { None };
        let variants = (variants_mtime != t.variants_mtime).then(|| crate::ml::variants::list(&run));
        t.variants_mtime = variants_mtime;
        let (attacks, flips) = if attacks_mtime != t.attacks_mtime {
            let index = crate::ml::attack::curve::index(&run).unwrap_or_default();
            (Some(index.curves), Some(index.flips))
        } else {
            (None, None)
        };
        t.attacks_mtime = attacks_mtime;
        // A removed file reads as no notes, which is what it means.
        let notes = (notes_mtime != t.notes_mtime || !t.sent_params)
            .then(|| crate::store::notes::RunNotes::load(&run).unwrap_or_default());
        t.notes_mtime = notes_mtime;
        let job = (job_mtime != t.job_mtime || !t.sent_params).then(|| crate::sweep::JobState::read(&dir));
        if let Some(j) = &job {
            t.job_live = j.as_ref().is_some_and(|j| !j.is_terminal());
        }
        t.job_mtime = job_mtime;
        let spec = if t.sent_params { None } else { run.spec().ok().map(Box::new) };
        t.sent_params = true;
        t.info_mtime = info_mtime;
        t.metrics_offset = metrics_offset;
        t.events_offset = events_offset;
        t.checkpoints_mtime = ckpt_mtime;
        t.eval_mtime = eval_mtime;
        let interrupted = info.status.is_active()
            && !t.job_live
            && info.pid.is_some_and(|p| !crate::store::process_alive(p));
        t.pid = if info.status.is_active() { info.pid } else { None };
        t.interrupted = interrupted;
        // An interrupted run changes no more unless someone resumes it: look at it less often.
        t.settled = !info.status.is_active() || interrupted;
        Some(RunFeed {
            id: id.into(),
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
            external: None,
        })
    }
}

/// An external run's change as the feed Vigil's own runs produce: its warnings (and its start
/// and end) become lines of its log, naming the file and the position.
fn external_update(u: WatchUpdate) -> StoreUpdate {
    match u {
        WatchUpdate::Removed(id) => StoreUpdate::Removed(id),
        WatchUpdate::Run(_, c) => {
            let c = *c;
            let time = crate::store::now();
            let line = |kind, message: String| EventLine { time: time.clone(), kind, message };
            let mut events = Vec::new();
            if c.status_changed {
                events.push(match c.info.status {
                    RunStatus::Running => line(
                        EventKind::Started,
                        format!("following {} ({})", c.feed.dir.display(), c.info.spec),
                    ),
                    _ => line(
                        EventKind::Finished,
                        "no writer process and no file change: taken as finished".to_string(),
                    ),
                });
            }
            events.extend(c.warnings.iter().map(|w| line(EventKind::Warning, w.to_string())));
            StoreUpdate::Run(Box::new(RunFeed {
                events,
                external: Some(Box::new(c.feed)),
                ..RunFeed::new(c.info)
            }))
        }
    }
}

/// What the store follower needs.
pub struct FollowDeps {
    pub store: RunStore,
    /// How often the store is looked at.
    pub poll: Duration,
    /// Directories whose external runs are followed too (`--watch`).
    pub watch: Vec<PathBuf>,
    /// Where the processes writing external runs are published (for the system sampler).
    pub writers: Option<tokio::sync::watch::Sender<Writers>>,
}

/// Starts the store follower on a thread of its own (it reads files: that keeps them off the
/// async workers). It stops when the sink or the command channel closes.
pub fn spawn(deps: FollowDeps, sink: impl Sink<StoreUpdate>) -> Result<Handle<()>> {
    let (commands, mut stop) = super::channel::<()>();
    let join = super::thread("vigil-follow", "the store follower", move || {
        let mut follower = StoreFollower::new(deps.store);
        if !deps.watch.is_empty() {
            let mut w = Watcher::new(deps.watch);
            if let Some(tx) = deps.writers {
                w = w.with_writers(tx);
            }
            follower = follower.with_watcher(w);
        }
        loop {
            for u in follower.poll() {
                if !sink(u) {
                    return;
                }
            }
            std::thread::sleep(deps.poll);
            if matches!(stop.try_recv(), Err(TryRecvError::Disconnected)) {
                return;
            }
        }
    })?;
    Ok(Handle { commands, join })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::spec;

    #[test]
    fn reports_new_runs_then_only_changes_then_removals() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path());
        let mut w = StoreFollower::new(store.clone());
        assert!(w.poll().is_empty());
        let s = spec::resolve("digits-logreg", Path::new("models")).unwrap().0;
        let run = store.create(&s).unwrap();
        w.next_listing = Instant::now();
        let first = w.poll();
        assert_eq!(first.len(), 1);
        let StoreUpdate::Run(feed) = &first[0] else { panic!() };
        assert_eq!(feed.id, run.id);
        assert_eq!(feed.spec.as_ref().unwrap().name, "digits-logreg");
        // Nothing changed: nothing reported.
        assert!(w.poll().is_empty());
        run.append_metric(&MetricLine::Step {
            step: 1,
            epoch: 1,
            loss: 2.0,
            lr: 0.1,
            samples_per_sec: 1.0,
            time: 0.1,
        })
        .unwrap();
        let second = w.poll();
        let StoreUpdate::Run(feed) = &second[0] else { panic!() };
        assert_eq!(feed.steps.len(), 1);
        assert!(feed.spec.is_none(), "the spec is sent once");
        std::fs::remove_dir_all(&run.path).unwrap();
        w.next_listing = Instant::now();
        assert_eq!(w.poll(), vec![StoreUpdate::Removed(run.id)]);
    }

    #[test]
    fn a_run_whose_slurm_job_is_live_is_not_taken_as_interrupted() {
        // Its trainer runs on a node: the pid in run.json is not a process of this machine.
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::new(dir.path());
        let s = spec::resolve("digits-logreg", Path::new("models")).unwrap().0;
        let run = store.create(&s).unwrap();
        run.update_info(|r| {
            r.status = RunStatus::Running;
            r.pid = Some(u32::MAX);
        })
        .unwrap();
        let job = |state: &str| crate::sweep::JobState {
            job: "9".into(),
            state: state.into(),
            reason: None,
            node: Some("gpu01".into()),
            updated: crate::store::now(),
        };
        job("RUNNING").write(&run.path).unwrap();
        let feed = |w: &mut StoreFollower| match w.poll().pop() {
            Some(StoreUpdate::Run(f)) => f,
            other => panic!("{other:?}"),
        };
        let mut w = StoreFollower::new(store.clone());
        let first = feed(&mut w);
        assert!(!first.interrupted);
        assert_eq!(first.job.unwrap().unwrap().describe(), "running on gpu01");
        // The job ended and the run still reads running: now it is interrupted.
        std::thread::sleep(Duration::from_millis(20));
        job("NODE_FAIL").write(&run.path).unwrap();
        assert!(feed(&mut w).interrupted);
    }
}
