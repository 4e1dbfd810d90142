//! The run queue: takes [`RunnerCommand`]s from the console, trains runs on blocking threads
//! (never on the async runtime), at most `concurrency` at a time, and reports [`RunnerEvent`]s.
//! Progress itself reaches the console through the run store (see [`super::follow`]); this module
//! only says what started, ended, or could not be done.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Handle, Join, Sink};

use crate::ml::metrics::Evaluation;
use crate::ml::spec::ExperimentSpec;
use crate::ml::train::{Outcome, Silent, TrainControl, evaluate, load_trained, train};
use crate::store::{CheckpointKind, ControlRequest, RunDir, RunId, RunStatus, RunStore, write_json};

/// What the console asks of the runner.
#[derive(Debug, Clone, PartialEq)]
pub enum RunnerCommand {
    /// Create a run for this spec and queue it.
    Start(Box<ExperimentSpec>),
    /// Queue a stopped run to continue from its last checkpoint.
    Resume(RunId),
    /// Pause or resume a run between steps (also runs trained by other processes).
    Pause(RunId),
    Unpause(RunId),
    /// Stop a run (its last checkpoint is kept), or drop it from the queue.
    Stop(RunId),
    /// Evaluate a checkpoint on the test split.
    Evaluate(RunId, CheckpointKind),
    /// Remove a finished run's folder.
    Delete(RunId),
    /// Move a finished run's folder to `<runs>/.archive/`.
    Archive(RunId),
    /// List the archived runs (answered with [`RunnerEvent::ArchiveList`]).
    ListArchived,
    /// Move an archived run back into the store.
    Restore(RunId),
    /// Stop every active run (checkpoints kept) and end.
    StopAll,
}

/// What the runner reports back.
#[derive(Debug, Clone, PartialEq)]
pub enum RunnerEvent {
    Queued(RunId),
    Started(RunId),
    Completed(RunId),
    Cancelled(RunId),
    Failed(RunId, String),
    Evaluated(RunId, CheckpointKind, Box<Evaluation>),
    Deleted(RunId),
    Archived(RunId),
    /// The archived runs, newest first.
    ArchiveList(Vec<crate::store::RunInfo>),
    Restored(RunId),
    /// Something asked could not be done; a message for the status line.
    Refused(String),
    /// Runs training or queued in this process.
    Load {
        active: usize,
        queued: usize,
    },
}

enum Done {
    /// A spec's data was read and checked (before its run exists).
    Checked(Box<ExperimentSpec>, Result<(), String>),
    Trained(RunId, Result<Outcome, String>),
    Evaluated(RunId, CheckpointKind, Result<Evaluation, String>),
}

/// The queue and the runs this process trains.
pub struct Runner {
    store: RunStore,
    concurrency: usize,
    queue: VecDeque<(RunDir, bool)>,
    active: HashMap<RunId, Arc<TrainControl>>,
    events: mpsc::UnboundedSender<RunnerEvent>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// Specs whose data is being checked before their run is created.
    checking: usize,
    /// Everything was asked to stop: specs checked from now on are not started.
    stopping: bool,
}

/// What the runner needs.
pub struct RunnerDeps {
    pub store: RunStore,
    /// Runs trained at once.
    pub concurrency: usize,
}

/// Starts the run queue on the current runtime. It ends when the command sender is dropped and
/// every run it started has stopped (checkpoints written).
pub fn spawn(deps: RunnerDeps, sink: impl Sink<RunnerEvent>) -> crate::error::Result<Handle<RunnerCommand>> {
    let (commands, rx) = super::channel();
    let (events, mut ev_rx) = mpsc::unbounded_channel();
    let runner = Runner::new(deps.store, deps.concurrency, events);
    let task = tokio::spawn(async move {
        let forward = async move {
            while let Some(e) = ev_rx.recv().await {
                if !sink(e) {
                    break;
                }
            }
        };
        tokio::join!(runner.run(rx), forward);
    });
    Ok(Handle { commands, join: Join::Task(task) })
}

/// One training run per two cores keeps the machine responsive for everything else.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map(|n| (n.get() / 2).max(1)).unwrap_or(1)
}

impl Runner {
    pub fn new(store: RunStore, concurrency: usize, events: mpsc::UnboundedSender<RunnerEvent>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Runner {
            store,
            concurrency: concurrency.max(1),
            queue: VecDeque::new(),
            active: HashMap::new(),
            events,
            done_tx,
            done_rx,
            checking: 0,
            stopping: false,
        }
    }

    /// Serves commands until the command channel closes and every run has ended.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<RunnerCommand>) {
        let mut open = true;
        loop {
            if !open && self.active.is_empty() && self.queue.is_empty() && self.checking == 0 {
                break;
            }
            tokio::select! {
                cmd = commands.recv(), if open => match cmd {
                    Some(c) => self.handle(c),
                    None => open = false,
                },
                Some(done) = self.done_rx.recv() => self.finished(done),
            }
            self.start_queued();
        }
    }

    fn emit(&self, e: RunnerEvent) {
        let _ = self.events.send(e);
    }

    fn load(&self) {
        self.emit(RunnerEvent::Load { active: self.active.len(), queued: self.queue.len() });
    }

    fn handle(&mut self, cmd: RunnerCommand) {
        match cmd {
            RunnerCommand::Start(spec) => {
                // The data is read and checked before the run exists, as `vigil train` does, so
                // that a bad data file leaves no failed run behind. Reading it can take a while:
                // a blocking thread, never the runtime.
                self.stopping = false;
                self.checking += 1;
                let tx = self.done_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let checked = crate::ml::data::preprocess::PreparedData::build(&spec, None)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    let _ = tx.send(Done::Checked(spec, checked));
                });
            }
            RunnerCommand::Resume(id) => match self.store.resolve(&id) {
                Ok(run) => {
                    let resumable = run.checkpoints().map(|c| c.resume.is_some()).unwrap_or(false);
                    let status = run.info().map(|i| i.status);
                    if !resumable {
                        self.emit(RunnerEvent::Refused(format!("{id} has no checkpoint to continue from")));
                    } else if matches!(status, Ok(RunStatus::Completed)) {
                        self.emit(RunnerEvent::Refused(format!("{id} has completed")));
                    } else {
                        let _ = run.update_info(|i| i.status = RunStatus::Queued);
                        self.emit(RunnerEvent::Queued(run.id.clone()));
                        self.queue.push_back((run, true));
                        self.load();
                    }
                }
                Err(e) => self.emit(RunnerEvent::Refused(e.to_string())),
            },
            RunnerCommand::Pause(id) | RunnerCommand::Unpause(id) | RunnerCommand::Stop(id)
                if self.queue.iter().any(|(r, _)| r.id == id) =>
            {
                // A queued run has no trainer yet: stopping it just takes it off the queue.
                self.queue.retain(|(r, _)| r.id != id);
                if let Ok(run) = self.store.resolve(&id) {
                    let _ = run.update_info(|i| i.status = RunStatus::Cancelled);
                }
                self.emit(RunnerEvent::Cancelled(id));
                self.load();
            }
            RunnerCommand::Pause(id) => self.steer(&id, ControlRequest::Pause),
            RunnerCommand::Unpause(id) => self.steer(&id, ControlRequest::Run),
            RunnerCommand::Stop(id) => self.steer(&id, ControlRequest::Stop),
            RunnerCommand::Evaluate(id, which) => match self.store.resolve(&id) {
                Ok(run) => {
                    let tx = self.done_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let result = evaluate_checkpoint(&run, which).map_err(|e| e.to_string());
                        let _ = tx.send(Done::Evaluated(run.id.clone(), which, result));
                    });
                }
                Err(e) => self.emit(RunnerEvent::Refused(e.to_string())),
            },
            RunnerCommand::Delete(id) | RunnerCommand::Archive(id) if self.is_busy(&id) => {
                self.emit(RunnerEvent::Refused(format!("{id} is still active: stop it first")));
            }
            RunnerCommand::Delete(id) => match self.store.resolve(&id) {
                Ok(run) => match std::fs::remove_dir_all(&run.path) {
                    Ok(()) => self.emit(RunnerEvent::Deleted(id)),
                    Err(e) => self.emit(RunnerEvent::Refused(format!("cannot delete {id}: {e}"))),
                },
                Err(e) => self.emit(RunnerEvent::Refused(e.to_string())),
            },
            RunnerCommand::Archive(id) => match self.store.resolve(&id) {
                Ok(run) => {
                    let archive = self.store.root().join(ARCHIVE);
                    let result = std::fs::create_dir_all(&archive)
                        .and_then(|_| std::fs::rename(&run.path, archive.join(&run.id)));
                    match result {
                        Ok(()) => self.emit(RunnerEvent::Archived(id)),
                        Err(e) => self.emit(RunnerEvent::Refused(format!("cannot archive {id}: {e}"))),
                    }
                }
                Err(e) => self.emit(RunnerEvent::Refused(e.to_string())),
            },
            RunnerCommand::ListArchived => self.emit(RunnerEvent::ArchiveList(archived(&self.store))),
            RunnerCommand::Restore(id) => {
                let from = self.store.root().join(ARCHIVE).join(&id);
                let to = self.store.root().join(&id);
                let result = if !from.join("run.json").is_file() {
                    Err(format!("{id} is not in {}", self.store.root().join(ARCHIVE).display()))
                } else if to.exists() {
                    Err(format!("{} already exists: delete or archive it first", to.display()))
                } else {
                    std::fs::rename(&from, &to).map_err(|e| e.to_string())
                };
                match result {
                    Ok(()) => self.emit(RunnerEvent::Restored(id)),
                    Err(e) => self.emit(RunnerEvent::Refused(format!("cannot restore {id}: {e}"))),
                }
            }
            RunnerCommand::StopAll => {
                self.stopping = true;
                for (run, _) in self.queue.drain(..) {
                    let _ = run.update_info(|i| i.status = RunStatus::Cancelled);
                }
                for control in self.active.values() {
                    control.cancel();
                }
                self.load();
            }
        }
    }

    /// Whether a run is queued or trained here, or trained by another live process.
    fn is_busy(&self, id: &str) -> bool {
        if self.active.contains_key(id) || self.queue.iter().any(|(r, _)| r.id == id) {
            return true;
        }
        self.store
            .resolve(id)
            .and_then(|r| r.info())
            .map(|i| i.status.is_active() && i.pid.is_some_and(crate::store::process_alive))
            .unwrap_or(false)
    }

    /// Pauses, resumes or stops a run: directly when this process trains it, through the run's
    /// control file when another process does.
    fn steer(&mut self, id: &str, request: ControlRequest) {
        if let Some(control) = self.active.get(id) {
            match request {
                ControlRequest::Pause => control.pause(),
                ControlRequest::Run => control.resume(),
                ControlRequest::Stop => control.cancel(),
            }
            return;
        }
        match self.store.resolve(id) {
            Ok(run) => {
                let info = run.info();
                let alive = info
                    .as_ref()
                    .is_ok_and(|i| i.status.is_active() && i.pid.is_some_and(crate::store::process_alive));
                if alive {
                    if let Err(e) = run.write_control(request) {
                        self.emit(RunnerEvent::Refused(e.to_string()));
                    }
                } else if request == ControlRequest::Run {
                    // A stopped run: "resume" means continue it here from its checkpoint.
                    self.handle(RunnerCommand::Resume(id.into()));
                } else {
                    self.emit(RunnerEvent::Refused(format!("{id} is not training")));
                }
            }
            Err(e) => self.emit(RunnerEvent::Refused(e.to_string())),
        }
    }

    fn start_queued(&mut self) {
        while self.active.len() < self.concurrency {
            let Some((run, resume)) = self.queue.pop_front() else { break };
            let control = TrainControl::new();
            self.active.insert(run.id.clone(), control.clone());
            self.emit(RunnerEvent::Started(run.id.clone()));
            let tx = self.done_tx.clone();
            // Candle work is CPU-bound for seconds to hours: a blocking thread, never the runtime.
            tokio::task::spawn_blocking(move || {
                let result = train(&run, resume, &mut Silent, &control).map_err(|e| e.to_string());
                let _ = tx.send(Done::Trained(run.id.clone(), result));
            });
            self.load();
        }
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Checked(spec, result) => {
                self.checking -= 1;
                match result {
                    Ok(()) if self.stopping => {}
                    Ok(()) => match self.store.create(&spec) {
                        Ok(run) => {
                            self.emit(RunnerEvent::Queued(run.id.clone()));
                            self.queue.push_back((run, false));
                            self.load();
                        }
                        Err(e) => self.emit(RunnerEvent::Refused(format!("cannot create a run: {e}"))),
                    },
                    Err(reason) => {
                        self.emit(RunnerEvent::Refused(format!("cannot start {}: {reason}", spec.name)))
                    }
                }
            }
            Done::Trained(id, result) => {
                self.active.remove(&id);
                self.emit(match result {
                    Ok(Outcome::Completed(_)) => RunnerEvent::Completed(id),
                    Ok(Outcome::Cancelled) => RunnerEvent::Cancelled(id),
                    Err(reason) => RunnerEvent::Failed(id, reason),
                });
                self.load();
            }
            Done::Evaluated(id, which, Ok(e)) => self.emit(RunnerEvent::Evaluated(id, which, Box::new(e))),
            Done::Evaluated(id, _, Err(reason)) => {
                self.emit(RunnerEvent::Refused(format!("evaluation of {id} failed: {reason}")))
            }
        }
    }
}

/// The folder of the run store that archived runs move to.
pub const ARCHIVE: &str = ".archive";

/// The runs in the archive, newest first (a folder without a readable `run.json` is skipped).
pub fn archived(store: &RunStore) -> Vec<crate::store::RunInfo> {
    let archive = RunStore::new(store.root().join(ARCHIVE));
    let mut runs = archive.list();
    runs.sort_by(|a, b| b.created.cmp(&a.created));
    runs
}

/// Scores a checkpoint on the test split and keeps the result as `evals/<which>-test.json`.
pub fn evaluate_checkpoint(run: &RunDir, which: CheckpointKind) -> crate::error::Result<Evaluation> {
    let trained = load_trained(run, which)?;
    let data = crate::ml::data::splits::for_run(run, &trained.spec, &trained.pipeline, false)?;
    let e = evaluate(&trained.network, &data.test, &trained.pipeline.classes, "test")?;
    let dir = run.file("evals");
    std::fs::create_dir_all(&dir).map_err(|err| crate::error::Error::io(&dir, err))?;
    let name = match which {
        CheckpointKind::Best => "best",
        CheckpointKind::Last => "last",
    };
    write_json(&dir.join(format!("{name}-test.json")), &e)?;
    Ok(e)
}
