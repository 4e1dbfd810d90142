//! The sweep's driver: plans trials, submits them to an [`Executor`] (local processes or Slurm
//! jobs), follows their runs in the store, stops weak ones at ASHA's rungs, and writes the
//! sweep's state after every change, so that a driver stopped or killed at any point is
//! continued by `vigil sweep --resume` without losing or repeating a trial. It trains nothing
//! itself: every trial is `vigil train --run RUN`, wherever it runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::asha;
use super::file::{LoadedSweep, Method, SlurmOptions, SweepFile};
use super::path;
use super::sampler::{self, Observation};
use super::state::{Backend, RungValue, SweepDir, SweepMember, SweepState, TrialRecord, TrialStatus};
use crate::error::{Error, Result};
use crate::store::{
    EpochMetrics, EventKind, MetricLine, RunStatus, RunStore, now, process_alive, read_jsonl,
};

/// What an executor returns for a submitted trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub pid: Option<u32>,
    pub job: Option<String>,
}

/// What an executor knows of a submitted trial.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Waiting in a queue.
    Pending,
    /// Its process or job is there.
    Alive,
    /// Its process or job ended: how its run should read if its trainer did not say.
    Gone { status: RunStatus, reason: String },
}

impl TrialRecord {
    /// Records where a trial was submitted (or found submitted by a killed driver).
    fn submitted(&mut self, s: Submitted) {
        self.pid = s.pid;
        self.job = s.job;
        self.status = TrialStatus::Pending;
    }

    /// The event that says it ended, as it stands.
    fn ended(&self) -> SweepEvent {
        SweepEvent::Ended {
            number: self.number,
            run: self.run.to_string(),
            status: self.status,
            objective: self.objective,
            note: self.note.clone(),
        }
    }
}

/// Where trials run: local processes or Slurm jobs.
pub trait Executor {
    fn backend(&self) -> Backend;
    /// Starts these trials (several at once may become one array job); one entry per trial.
    /// On an error nothing of this call is left submitted.
    fn submit(
        &mut self,
        sweep: &SweepDir,
        trials: &[&TrialRecord],
        store: &RunStore,
    ) -> Result<Vec<Submitted>>;
    /// A trial a killed driver may have started before recording it.
    fn find(&mut self, sweep: &SweepDir, trial: &TrialRecord, store: &RunStore) -> Option<Submitted>;
    /// What is known of these trials now, by trial number.
    fn poll(&mut self, trials: &[&TrialRecord], store: &RunStore) -> BTreeMap<usize, Seen>;
    /// Stops a trial (ASHA, or a person).
    fn stop(&mut self, trial: &TrialRecord, store: &RunStore) -> Result<()>;
    /// Takes back a submission that cannot be recorded.
    fn cancel_submission(&mut self, trial: &TrialRecord);
}

/// What the command line may change of a sweep file.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    pub backend: Option<Backend>,
    pub jobs: Option<usize>,
    pub trials: Option<usize>,
    /// Slurm settings given as flags, over the file's.
    pub slurm: SlurmOptions,
    /// Run every trial to the end, ignoring the file's ASHA (the benchmark's baseline).
    pub no_early_stopping: bool,
    /// The user says the runs folder is shared with the Slurm nodes (`--shared-runs-dir`).
    pub shared_runs_dir: bool,
}

/// What the driver reports as it goes (the CLI prints it).
#[derive(Debug, Clone, PartialEq)]
pub enum SweepEvent {
    Started { id: String, backend: Backend, budget: usize, resumed: bool },
    Submitted { number: usize, run: String, params: BTreeMap<String, Value>, job: Option<String> },
    Ended { number: usize, run: String, status: TrialStatus, objective: Option<f64>, note: Option<String> },
    Finished { id: String },
    Interrupted { id: String },
}

/// A running sweep: its file, its state and its executor.
pub struct Driver<'a> {
    store: &'a RunStore,
    dir: SweepDir,
    sweep: LoadedSweep,
    state: SweepState,
    exec: Box<dyn Executor>,
    /// Each trial's epoch lines read so far, and where its metrics file was read to.
    metrics: BTreeMap<usize, (u64, Vec<EpochMetrics>)>,
    observer: Box<dyn FnMut(&SweepEvent) + 'a>,
    stop: Arc<AtomicBool>,
    poll: Duration,
}

fn merged_slurm(file: &SlurmOptions, flags: &SlurmOptions) -> SlurmOptions {
    SlurmOptions {
        partition: flags.partition.clone().or_else(|| file.partition.clone()),
        time: flags.time.clone().or_else(|| file.time.clone()),
        cpus: flags.cpus.or(file.cpus),
        mem: flags.mem.clone().or_else(|| file.mem.clone()),
        gpus: flags.gpus.or(file.gpus),
        extra: file.extra.iter().chain(&flags.extra).cloned().collect(),
        array: file.array || flags.array,
    }
}

fn executor(
    store: &RunStore,
    opts: &SweepOptions,
    backend: Backend,
    slurm: SlurmOptions,
    jobs: usize,
) -> Result<Box<dyn Executor>> {
    Ok(match backend {
        Backend::Local => Box::new(super::local::Local::default()),
        Backend::Slurm => {
            let exec = super::slurm::Slurm::new(slurm, jobs)?;
            super::shared::check(store.root(), opts.shared_runs_dir)?;
            Box::new(exec)
        }
    })
}

/// A new sweep id: the name and six hex digits.
fn new_id(store: &RunStore, name: &str) -> String {
    let root = super::state::sweeps_root(store);
    for attempt in 0u64.. {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let h = crate::store::sha256_hex(format!("{nanos}-{}-{attempt}", std::process::id()).as_bytes());
        let id = format!("{name}-{}", &h[..6]);
        if !root.join(&id).exists() {
            return id;
        }
    }
    unreachable!("an unused id is found")
}

impl<'a> Driver<'a> {
    /// Checks a sweep file and prepares a new sweep; nothing is written until every check passed.
    pub fn create(
        store: &'a RunStore,
        models_dir: &Path,
        file: &Path,
        opts: &SweepOptions,
        observer: impl FnMut(&SweepEvent) + 'a,
    ) -> Result<Driver<'a>> {
        let mut sweep = SweepFile::load(file, models_dir)?;
        if let Some(t) = opts.trials {
            if t == 0 {
                return Err(Error::argument("--trials must be at least 1"));
            }
            sweep.file.trials = t;
        }
        if opts.jobs == Some(0) {
            return Err(Error::argument("--jobs must be at least 1"));
        }
        if opts.no_early_stopping {
            sweep.file.early_stopping = None;
        }
        let backend = opts.backend.unwrap_or(Backend::Local);
        let jobs = opts.jobs.or(sweep.file.jobs).unwrap_or(match backend {
            Backend::Local => crate::engine::runner::default_concurrency(),
            Backend::Slurm => sweep.file.trials,
        });
        let mut budget = sweep.file.trials;
        if matches!(sweep.file.method, Method::Grid) {
            budget = budget.min(sampler::grid_size(&sweep.file.parameters));
        }
        let id = new_id(store, &sweep.name);
        let dir = SweepDir::new(store, &id);
        let t = now();
        let state = SweepState {
            id: id.clone(),
            name: sweep.name.clone(),
            spec: sweep.base.name.clone(),
            created: t.clone(),
            updated: t,
            backend,
            method: sweep.file.method.name().into(),
            metric: sweep.file.objective.metric,
            goal: sweep.file.objective.goal(),
            budget,
            jobs,
            parameters: sweep.file.parameters.keys().cloned().collect(),
            driver_pid: Some(std::process::id()),
            finished: false,
            trials: vec![],
        };
        Self::assemble(store, dir, sweep, state, opts, observer)
    }

    /// Opens a sweep to continue it.
    pub fn resume(
        store: &'a RunStore,
        models_dir: &Path,
        query: &str,
        opts: &SweepOptions,
        observer: impl FnMut(&SweepEvent) + 'a,
    ) -> Result<Driver<'a>> {
        let dir = super::state::resolve(store, query)?;
        let mut state = dir.state()?;
        if let Some(pid) = state.driver_pid
            && pid != std::process::id()
            && process_alive(pid)
            && !state.finished
        {
            return Err(Error::refused(format!(
                "sweep {} is being driven by process {pid}; stop it first or follow it in the console",
                state.id
            )));
        }
        let text_path = dir.file("sweep.ron");
        let text = std::fs::read_to_string(&text_path).map_err(|e| Error::io(&text_path, e))?;
        let sweep = SweepFile::load_text(&text, &text_path, models_dir)?;
        if let Some(j) = opts.jobs {
            if j == 0 {
                return Err(Error::argument("--jobs must be at least 1"));
            }
            state.jobs = j;
        }
        state.driver_pid = Some(std::process::id());
        Self::assemble(store, dir, sweep, state, opts, observer)
    }

    /// A driver for a sweep whose state is settled, new or resumed: the command line's Slurm
    /// settings over the file's, and the executor for its backend (checked before anything
    /// is written).
    fn assemble(
        store: &'a RunStore,
        dir: SweepDir,
        mut sweep: LoadedSweep,
        state: SweepState,
        opts: &SweepOptions,
        observer: impl FnMut(&SweepEvent) + 'a,
    ) -> Result<Driver<'a>> {
        let slurm = merged_slurm(&sweep.file.slurm, &opts.slurm);
        sweep.file.slurm = slurm.clone();
        let exec = executor(store, opts, state.backend, slurm, state.jobs)?;
        Ok(Driver {
            store,
            dir,
            sweep,
            state,
            exec,
            metrics: BTreeMap::new(),
            observer: Box::new(observer),
            stop: Arc::new(AtomicBool::new(false)),
            poll: Duration::from_millis(100),
        })
    }

    /// The flag that stops the driver (not the trials) at its next poll.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    pub fn state(&self) -> &SweepState {
        &self.state
    }

    fn save(&mut self) -> Result<()> {
        self.state.updated = now();
        self.dir.write_state(&self.state)
    }

    /// Drives the sweep until every trial has ended (or the stop flag is set).
    pub fn run(mut self) -> Result<SweepState> {
        let fresh = !self.dir.path.exists();
        if fresh {
            std::fs::create_dir_all(&self.dir.path).map_err(|e| Error::io(&self.dir.path, e))?;
            crate::store::write_atomic(&self.dir.file("sweep.ron"), self.sweep.text.as_bytes())?;
            self.save()?;
        }
        (self.observer)(&SweepEvent::Started {
            id: self.state.id.clone(),
            backend: self.state.backend,
            budget: self.state.budget,
            resumed: !fresh,
        });
        match self.drive() {
            Ok(()) => Ok(self.state),
            Err(e) => {
                // A sweep whose very first submission was refused leaves nothing behind.
                if fresh && self.state.trials.is_empty() {
                    let _ = std::fs::remove_dir_all(&self.dir.path);
                } else {
                    self.state.driver_pid = None;
                    let _ = self.save();
                }
                Err(e)
            }
        }
    }

    fn drive(&mut self) -> Result<()> {
        self.adopt_planned()?;
        loop {
            let changed = self.refresh()? | self.asha()?;
            let submitted = self.submit_more()?;
            if changed || submitted {
                self.save()?;
            }
            let active = self.state.trials.iter().any(|t| t.status.is_active());
            if !active && self.state.trials.len() >= self.state.budget {
                self.state.finished = true;
                self.state.driver_pid = None;
                self.save()?;
                (self.observer)(&SweepEvent::Finished { id: self.state.id.clone() });
                return Ok(());
            }
            if !active && !submitted && self.next_params().is_none() {
                // A grid that ran out before the budget.
                self.state.budget = self.state.trials.len();
                continue;
            }
            if self.stop.load(Ordering::Relaxed) {
                self.state.driver_pid = None;
                self.save()?;
                (self.observer)(&SweepEvent::Interrupted { id: self.state.id.clone() });
                return Ok(());
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Planned trials of a driver that was killed: found where they were submitted, or
    /// submitted now.
    fn adopt_planned(&mut self) -> Result<()> {
        let planned: Vec<usize> = (0..self.state.trials.len())
            .filter(|&i| self.state.trials[i].status == TrialStatus::Planned)
            .collect();
        let mut todo = Vec::new();
        for i in planned {
            match self.exec.find(&self.dir, &self.state.trials[i], self.store) {
                Some(s) => self.state.trials[i].submitted(s),
                None => todo.push(i),
            }
        }
        if !todo.is_empty() {
            self.submit_indices(&todo)?;
        }
        self.save()
    }

    /// Reads each submitted trial's run and its executor's view of it.
    fn refresh(&mut self) -> Result<bool> {
        // Pruned trials too while their runs still read active: a job killed by scancel
        // cannot say it stopped, so the driver says it for it.
        let active: Vec<usize> = (0..self.state.trials.len())
            .filter(|&i| {
                let t = &self.state.trials[i];
                matches!(t.status, TrialStatus::Pending | TrialStatus::Running)
                    || (t.status == TrialStatus::Pruned
                        && self.store.dir(&t.run).info().is_ok_and(|r| r.status.is_active()))
            })
            .collect();
        if active.is_empty() {
            return Ok(false);
        }
        let seen = {
            let refs: Vec<&TrialRecord> = active.iter().map(|&i| &self.state.trials[i]).collect();
            self.exec.poll(&refs, self.store)
        };
        let objective = self.sweep.file.objective;
        let goal = objective.goal();
        let mut changed = false;
        for i in active {
            let number = self.state.trials[i].number;
            let run = self.store.dir(&self.state.trials[i].run);
            let entry = self.metrics.entry(number).or_default();
            if let Ok((lines, offset)) = read_jsonl::<MetricLine>(&run.file("metrics.jsonl"), entry.0) {
                if offset < entry.0 {
                    entry.1.clear();
                }
                entry.0 = offset;
                for l in lines {
                    if let MetricLine::Epoch(m) = l {
                        entry.1.retain(|e| e.epoch < m.epoch);
                        entry.1.push(m);
                    }
                }
            }
            let epochs = entry.1.clone();
            let Ok(info) = run.info() else { continue };
            let before = self.state.trials[i].clone();
            let t = &mut self.state.trials[i];
            t.epoch = epochs.last().map(|m| m.epoch).unwrap_or(0);
            t.objective = epochs
                .iter()
                .map(|m| objective.metric.of(m))
                .filter(|v| v.is_finite())
                .reduce(|a, b| if goal.better(b, a) { b } else { a });
            t.duration_s = info.duration_s;
            let gone = match seen.get(&number) {
                Some(Seen::Gone { status, reason }) => Some((*status, reason.clone())),
                _ => None,
            };
            let pruned = t.status == TrialStatus::Pruned;
            match info.status {
                RunStatus::Completed => t.status = TrialStatus::Completed,
                RunStatus::Failed => {
                    t.status = TrialStatus::Failed;
                    t.note = info.failure.clone();
                }
                RunStatus::Cancelled => {
                    t.status = TrialStatus::Cancelled;
                    t.note.get_or_insert_with(|| "stopped".into());
                }
                RunStatus::Running | RunStatus::Paused | RunStatus::Queued => match gone {
                    Some((status, reason)) => {
                        // Its trainer died without saying so (killed, out of memory, scancel):
                        // its run says what happened, so the console does not show it running.
                        let reason = format!("{reason} at epoch {}", t.epoch);
                        record_ending(&run, status, &reason);
                        t.status = if status == RunStatus::Cancelled {
                            TrialStatus::Cancelled
                        } else {
                            TrialStatus::Failed
                        };
                        t.note = Some(reason);
                    }
                    None if info.status == RunStatus::Queued => t.status = TrialStatus::Pending,
                    None => t.status = TrialStatus::Running,
                },
            }
            if pruned
                && matches!(t.status, TrialStatus::Cancelled | TrialStatus::Failed | TrialStatus::Running)
            {
                // ASHA stopped it: it stays pruned whatever its run says about the stop.
                t.status = TrialStatus::Pruned;
                t.note = before.note.clone();
            }
            if *t != before {
                changed = true;
                if before.status.is_active() && !t.status.is_active() {
                    (self.observer)(&t.ended());
                }
            }
        }
        Ok(changed)
    }

    /// ASHA: judges each running trial at the rungs it reached.
    fn asha(&mut self) -> Result<bool> {
        let Some(rule) = self.sweep.file.early_stopping.clone() else { return Ok(false) };
        let metric = rule.metric.unwrap_or(self.sweep.file.objective.metric);
        let goal =
            if rule.metric.is_some() { metric.natural_goal() } else { self.sweep.file.objective.goal() };
        let mut changed = false;
        for i in 0..self.state.trials.len() {
            if self.state.trials[i].status != TrialStatus::Running {
                continue;
            }
            let number = self.state.trials[i].number;
            let values: Vec<(usize, f64)> = self
                .metrics
                .get(&number)
                .map(|(_, e)| e.iter().map(|m| (m.epoch, metric.of(m))).collect())
                .unwrap_or_default();
            for &rung in &rule.rungs {
                if self.state.trials[i].rungs.iter().any(|r| r.epoch == rung) {
                    continue;
                }
                let Some(value) = asha::value_at(&values, rung, goal) else { break };
                self.state.trials[i].rungs.push(RungValue { epoch: rung, value });
                changed = true;
                let at_rung: Vec<f64> = self
                    .state
                    .trials
                    .iter()
                    .filter_map(|t| t.rungs.iter().find(|r| r.epoch == rung).map(|r| r.value))
                    .collect();
                if !asha::continues(value, &at_rung, rule.reduction, goal) {
                    let t = &self.state.trials[i];
                    self.exec.stop(t, self.store)?;
                    let t = &mut self.state.trials[i];
                    t.status = TrialStatus::Pruned;
                    t.note = Some(format!(
                        "pruned at epoch {rung}: {} {} is not in the best 1/{} of {} trials there",
                        metric.as_str(),
                        path::format_float(value),
                        rule.reduction,
                        at_rung.len()
                    ));
                    (self.observer)(&t.ended());
                    break;
                }
            }
        }
        Ok(changed)
    }

    /// The parameters of the next trial, if the method has one.
    fn next_params(&self) -> Option<BTreeMap<String, Value>> {
        let history: Vec<Observation> = self
            .state
            .trials
            .iter()
            .filter(|t| matches!(t.status, TrialStatus::Completed | TrialStatus::Pruned))
            .filter_map(|t| Some(Observation { params: t.params.clone(), objective: t.objective? }))
            .collect();
        sampler::propose(
            &self.sweep.file.method,
            &self.sweep.file.parameters,
            self.state.trials.len(),
            &history,
            self.sweep.file.objective.goal(),
        )
    }

    /// Plans and submits trials while there is room and budget.
    fn submit_more(&mut self) -> Result<bool> {
        let active = self.state.trials.iter().filter(|t| t.status.is_active()).count();
        let room = self.state.jobs.saturating_sub(active);
        let left = self.state.budget.saturating_sub(self.state.trials.len());
        if room == 0 || left == 0 {
            return Ok(false);
        }
        // A grid or random sweep on Slurm with `array: true` goes as one array job: Slurm then
        // keeps `jobs` of them running (`--array=0-N%jobs`).
        let array = self.state.backend == Backend::Slurm
            && self.sweep.file.slurm.array
            && self.sweep.file.method.is_static();
        let n = if array { left } else { room.min(left) };
        let mut planned = Vec::new();
        for _ in 0..n {
            let Some(params) = self.next_params() else { break };
            planned.push(self.plan(params)?);
        }
        if planned.is_empty() {
            return Ok(false);
        }
        self.save()?;
        let result = if array {
            self.submit_indices(&planned)
        } else {
            planned.iter().try_for_each(|&i| self.submit_indices(&[i]))
        };
        if let Err(e) = result {
            // The rest of this batch was planned but not submitted: it goes too.
            self.discard_planned();
            return Err(e);
        }
        Ok(true)
    }

    /// Creates a trial's run and its record (not yet submitted).
    fn plan(&mut self, params: BTreeMap<String, Value>) -> Result<usize> {
        let file = self.dir.file("sweep.ron");
        let pairs: Vec<(&str, &Value)> = params.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let spec = path::apply(&self.sweep.base, &pairs, &file)?;
        let run = self.store.create(&spec)?;
        let number = self.state.trials.len();
        SweepMember { sweep: self.state.id.clone(), trial: number, params: params.clone() }.write(&run)?;
        self.state.trials.push(TrialRecord {
            number,
            run: run.id.clone(),
            params,
            status: TrialStatus::Planned,
            pid: None,
            job: None,
            epoch: 0,
            objective: None,
            rungs: vec![],
            note: None,
            duration_s: 0.0,
        });
        Ok(self.state.trials.len() - 1)
    }

    /// Removes every trial planned and not submitted, with its run.
    fn discard_planned(&mut self) {
        let (keep, drop): (Vec<TrialRecord>, Vec<TrialRecord>) = std::mem::take(&mut self.state.trials)
            .into_iter()
            .partition(|t| t.status != TrialStatus::Planned);
        for t in drop {
            let _ = std::fs::remove_dir_all(self.store.dir(&t.run).path);
        }
        self.state.trials = keep;
        let _ = self.save();
    }

    /// Submits planned trials; on a refusal their runs and records are removed, so nothing
    /// half-submitted stays.
    fn submit_indices(&mut self, indices: &[usize]) -> Result<()> {
        let result = {
            let refs: Vec<&TrialRecord> = indices.iter().map(|&i| &self.state.trials[i]).collect();
            self.exec.submit(&self.dir, &refs, self.store)
        };
        match result {
            Ok(subs) => {
                for (&i, s) in indices.iter().zip(subs) {
                    let t = &mut self.state.trials[i];
                    t.submitted(s);
                    let ev = SweepEvent::Submitted {
                        number: t.number,
                        run: t.run.to_string(),
                        params: t.params.clone(),
                        job: t.job.clone(),
                    };
                    (self.observer)(&ev);
                }
                if let Err(e) = self.save() {
                    for &i in indices {
                        let t = self.state.trials[i].clone();
                        self.exec.cancel_submission(&t);
                    }
                    return Err(e);
                }
                Ok(())
            }
            Err(e) => {
                let mut sorted = indices.to_vec();
                sorted.sort_unstable();
                for &i in sorted.iter().rev() {
                    let t = self.state.trials.remove(i);
                    let _ = std::fs::remove_dir_all(self.store.dir(&t.run).path);
                }
                let _ = self.save();
                Err(e)
            }
        }
    }
}

/// Says in a run's folder how it ended when its trainer could not (killed, out of memory,
/// `scancel`, a job that never started): its status, its failure, and a line in its log.
pub fn record_ending(run: &crate::store::RunDir, status: RunStatus, reason: &str) {
    let _ = run.update_info(|r| {
        r.status = status;
        r.failure = (status == RunStatus::Failed).then(|| reason.to_string());
        r.finished = Some(now());
        r.pid = None;
    });
    let kind = if status == RunStatus::Cancelled { EventKind::Cancelled } else { EventKind::Failed };
    let _ = run.log(kind, reason);
}

/// Stops one trial of a sweep from outside its driver (the console's stop key): `scancel` for
/// a Slurm job, the run's control file for a local process.
pub fn stop_trial(store: &RunStore, run: &crate::store::RunDir) -> Result<String> {
    if let Some(job) = super::state::JobState::read(&run.path).filter(|j| !j.is_terminal()) {
        super::slurm::scancel(&job.job)?;
        // A job cancelled while pending never starts its run: the run says so now, since no
        // trainer will, and squeue soon forgets such a job.
        if run.info().is_ok_and(|i| i.status == RunStatus::Queued) {
            let _ = super::state::JobState {
                state: "CANCELLED".into(),
                reason: None,
                updated: now(),
                ..job.clone()
            }
            .write(&run.path);
            record_ending(
                run,
                RunStatus::Cancelled,
                &format!("its Slurm job {} was cancelled before it started (scancel)", job.job),
            );
        }
        return Ok(format!("scancel {} ({})", job.job, run.id));
    }
    let _ = store;
    run.write_control(crate::store::ControlRequest::Stop)?;
    Ok(format!("asked {} to stop", run.id))
}
