//! Trials on a Slurm cluster: each trial, or a whole grid or random sweep as one array job, is
//! submitted with `sbatch` and runs `vigil train --run RUN` on its node, writing the run's folder
//! in the store, which must be on a folder the nodes share. Job states come from `squeue` (and
//! `sacct` for jobs squeue has forgotten) and are written beside the run as `slurm.json`;
//! stopping a trial, by ASHA or from the console, is `scancel`.
//!
//! Jobs are named `vigil-<run-id>` (array jobs `vigil-<sweep-id>-a<first trial>`), so that a
//! resumed driver finds a job a killed one submitted but did not record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::driver::{Executor, Seen, Submitted};
use super::file::SlurmOptions;
use super::state::{Backend, JobState, SweepDir, TrialRecord};
use crate::error::{Error, Result};
use crate::store::{RunStatus, RunStore, now};

/// Finds a program on the PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The error for a cluster command that is not installed (bad input: `--on slurm` here).
fn missing(program: &str) -> Error {
    Error::unsuitable(format!(
        "--on slurm needs `{program}` on the PATH, and it is not there (PATH={}); run on a Slurm login node, or use --on local",
        std::env::var("PATH").unwrap_or_default()
    ))
}

/// Checks that `sbatch`, `squeue` and `scancel` are on the PATH.
pub fn require() -> Result<()> {
    for p in ["sbatch", "squeue", "scancel"] {
        if on_path(p).is_none() {
            return Err(missing(p));
        }
    }
    Ok(())
}

/// `sbatch` options from the settings.
pub fn sbatch_options(o: &SlurmOptions) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(p) = &o.partition {
        args.push(format!("--partition={p}"));
    }
    if let Some(t) = &o.time {
        args.push(format!("--time={t}"));
    }
    if let Some(c) = o.cpus {
        args.push(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &o.mem {
        args.push(format!("--mem={m}"));
    }
    if let Some(g) = o.gpus.filter(|g| *g > 0) {
        args.push(format!("--gres=gpu:{g}"));
    }
    args.extend(o.extra.iter().cloned());
    args
}

/// Quotes a word for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job ids of a submission's trials, from sbatch's job id.
type JobIds = Box<dyn Fn(&str) -> Vec<String>>;

/// Runs trials as Slurm jobs.
pub struct Slurm {
    opts: SlurmOptions,
    jobs: usize,
    /// When each job was last seen by squeue or sacct, for jobs that vanish.
    unseen_polls: BTreeMap<String, u32>,
}

impl Slurm {
    /// Checks that `sbatch`, `squeue` and `scancel` are there before anything is created.
    pub fn new(opts: SlurmOptions, jobs: usize) -> Result<Self> {
        require()?;
        Ok(Slurm { opts, jobs, unseen_polls: BTreeMap::new() })
    }
}

/// A batch script that trains `run` (a quoted word, or `"$1"` in an array job's script, which
/// sets it in `prelude`) from the store at `root`; `origin` says which command submitted it.
pub fn script(origin: &str, root: &Path, prelude: &str, run: &str) -> Result<String> {
    let words: Vec<String> =
        super::trial_command(root)?.iter().map(|w| sh_quote(&w.to_string_lossy())).collect();
    Ok(format!("#!/bin/sh\n# Submitted by {origin}.\n{prelude}exec {} {run}\n", words.join(" ")))
}

/// Submits a batch script; the job id, or sbatch's own message as a refusal (bad input).
pub fn sbatch(args: &[String], script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .arg(script)
        .output()
        .map_err(|e| Error::startup("sbatch", e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(Error::refused(format!(
            "sbatch refused the job ({}): {}",
            out.status,
            if msg.is_empty() { stdout.trim().to_string() } else { msg }
        )));
    }
    // `--parsable` prints `id` or `id;cluster`.
    let id = stdout.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::refused(format!("sbatch printed no job id: {:?}", stdout.trim())));
    }
    Ok(id)
}

/// What Slurm says of one job now.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Slurm's state name (PENDING, RUNNING, COMPLETED, CANCELLED, OUT_OF_MEMORY...).
    pub state: String,
    /// Why it waits (squeue's reason), while pending.
    pub reason: Option<String>,
    pub node: Option<String>,
}

/// Every job of this user squeue lists, by id, with its name; `None` when squeue did not answer
/// (the controller is down or unreachable), which says nothing about any job.
fn queue() -> Option<BTreeMap<String, (Found, String)>> {
    let mut out = BTreeMap::new();
    // `-r`: one line per array task; `-t all`: finished jobs too, while the controller keeps them.
    let o = Command::new("squeue")
        .args(["--me", "-h", "-r", "-t", "all", "-o", "%i|%T|%r|%N|%j"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() == 5 {
            let opt = |s: &str| (!s.is_empty() && s != "None" && s != "(null)").then(|| s.to_string());
            let found = Found { state: f[1].to_string(), reason: opt(f[2]), node: opt(f[3]) };
            out.insert(f[0].to_string(), (found, f[4].to_string()));
        }
    }
    Some(out)
}

/// Jobs squeue no longer knows, from accounting (when the cluster keeps it).
fn accounting(ids: &[&str]) -> BTreeMap<String, Found> {
    let mut out = BTreeMap::new();
    if ids.is_empty() || on_path("sacct").is_none() {
        return out;
    }
    let Ok(o) = Command::new("sacct")
        .args(["-n", "-P", "-X", "-o", "JobID,State,NodeList", "-j", &ids.join(",")])
        .output()
    else {
        return out;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() == 3 {
            // `CANCELLED by 0` → CANCELLED.
            let state = f[1].split_whitespace().next().unwrap_or_default().to_string();
            let node = Some(f[2].to_string()).filter(|n| !n.is_empty() && n != "None assigned");
            out.insert(f[0].to_string(), Found { state, reason: None, node });
        }
    }
    out
}

/// What Slurm says of these jobs now: squeue, then sacct for the jobs squeue has forgotten. A
/// job neither knows is missing from the answer; `None` when squeue did not answer at all.
pub fn lookup(jobs: &[&str]) -> Option<BTreeMap<String, Found>> {
    let q = queue()?;
    let missing: Vec<&str> = jobs.iter().copied().filter(|j| !q.contains_key(*j)).collect();
    let mut out = accounting(&missing);
    out.extend(q.into_iter().filter(|(id, _)| jobs.contains(&id.as_str())).map(|(id, (f, _))| (id, f)));
    Some(out)
}

/// Writes what Slurm said of a run's job into its `slurm.json`, when that changed (the file's
/// time then says when the job last changed), and returns the job's state.
pub fn record(run_dir: &Path, job: &str, found: &Found) -> JobState {
    let before = JobState::read(run_dir);
    // A job that ran keeps the node it ran on when accounting no longer says it.
    let node = found.node.clone().or_else(|| before.as_ref().and_then(|b| b.node.clone()));
    let js = JobState {
        job: job.to_string(),
        state: found.state.clone(),
        reason: found.reason.clone(),
        node,
        updated: now(),
    };
    if before.as_ref().map(|b| (&b.job, &b.state, &b.reason, &b.node))
        != Some((&js.job, &js.state, &js.reason, &js.node))
    {
        let _ = js.write(run_dir);
    }
    js
}

/// How a run whose job ended should read if its trainer could not say so itself.
pub fn ending(state: &str) -> (RunStatus, String) {
    match state {
        "COMPLETED" => (RunStatus::Failed, "its Slurm job completed without finishing the run".into()),
        "CANCELLED" => (RunStatus::Cancelled, "its Slurm job was cancelled (scancel)".into()),
        "TIMEOUT" => (RunStatus::Failed, "its Slurm job reached its time limit".into()),
        "OUT_OF_MEMORY" => (RunStatus::Failed, "its Slurm job ran out of memory".into()),
        "NODE_FAIL" => (RunStatus::Failed, "its Slurm node failed".into()),
        "PREEMPTED" => (RunStatus::Failed, "its Slurm job was preempted".into()),
        other => (RunStatus::Failed, format!("its Slurm job ended {}", other.to_lowercase())),
    }
}

impl Executor for Slurm {
    fn backend(&self) -> Backend {
        Backend::Slurm
    }

    fn submit(
        &mut self,
        sweep: &SweepDir,
        trials: &[&TrialRecord],
        store: &RunStore,
    ) -> Result<Vec<Submitted>> {
        let origin = format!("`vigil sweep` for sweep {}", sweep.id);
        let logs = sweep.file("logs");
        let jobs_dir = sweep.file("jobs");
        for d in [&logs, &jobs_dir] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let mut args = sbatch_options(&self.opts);
        let (script_path, body, ids): (PathBuf, String, JobIds) = if trials.len() == 1 {
            let t = trials[0];
            args.push(format!("--job-name=vigil-{}", t.run));
            args.push(format!("--output={}", sweep.log_of(&t.run).display()));
            let body = script(&origin, store.root(), "", &sh_quote(&t.run))?;
            (jobs_dir.join(format!("{}.sh", t.run)), body, Box::new(|id: &str| vec![id.to_string()]))
        } else {
            let first = trials[0].number;
            let n = trials.len();
            args.push(format!("--job-name=vigil-{}-a{first}", sweep.id));
            args.push(format!("--output={}", logs.join("slurm-%A_%a.log").display()));
            args.push(format!("--array=0-{}%{}", n - 1, self.jobs.max(1)));
            let runs: Vec<String> = trials.iter().map(|t| sh_quote(&t.run)).collect();
            // The task's run is the first word left after shifting the runs by the task's id.
            let prelude = format!("set -- {}\nshift \"$SLURM_ARRAY_TASK_ID\"\n", runs.join(" "));
            let body = script(&origin, store.root(), &prelude, "\"$1\"")?;
            (
                jobs_dir.join(format!("array-{first}.sh")),
                body,
                Box::new(move |id: &str| (0..n).map(|i| format!("{id}_{i}")).collect()),
            )
        };
        crate::store::write_atomic(&script_path, body.as_bytes())?;
        let id = sbatch(&args, &script_path)?;
        let jobs = ids(&id);
        for (trial, job) in trials.iter().zip(&jobs) {
            let _ = JobState::submitted(job).write(&store.dir(&trial.run).path);
        }
        Ok(jobs.into_iter().map(|j| Submitted { pid: None, job: Some(j) }).collect())
    }

    fn find(&mut self, sweep: &SweepDir, trial: &TrialRecord, _store: &RunStore) -> Option<Submitted> {
        let q = queue()?;
        let single = format!("vigil-{}", trial.run);
        let array = format!("vigil-{}-a", sweep.id);
        for (id, (_, name)) in &q {
            if *name == single {
                return Some(Submitted { pid: None, job: Some(id.clone()) });
            }
            // An array task: `vigil-<sweep>-a<first>` with task `number - first`.
            if let Some(first) = name.strip_prefix(&array).and_then(|f| f.parse::<usize>().ok())
                && let Some((_, task)) = id.split_once('_')
                && task.parse::<usize>().ok() == trial.number.checked_sub(first)
            {
                return Some(Submitted { pid: None, job: Some(id.clone()) });
            }
        }
        None
    }

    fn poll(&mut self, trials: &[&TrialRecord], store: &RunStore) -> BTreeMap<usize, Seen> {
        let jobs: Vec<&str> = trials.iter().filter_map(|t| t.job.as_deref()).collect();
        let mut out = BTreeMap::new();
        // Slurm did not answer: nothing is known, so nothing changes.
        let Some(found) = lookup(&jobs) else { return out };
        for t in trials {
            let Some(job) = &t.job else { continue };
            let seen = match found.get(job) {
                Some(f) => {
                    self.unseen_polls.remove(job);
                    let js = record(&store.dir(&t.run).path, job, f);
                    if js.is_terminal() {
                        let (status, reason) = ending(&js.state);
                        Seen::Gone { status, reason }
                    } else if js.state == "PENDING" {
                        Seen::Pending
                    } else {
                        Seen::Alive
                    }
                }
                None => {
                    // Forgotten by the controller and no accounting: after a while, lost.
                    let n = self.unseen_polls.entry(job.clone()).or_default();
                    *n += 1;
                    if *n > 40 {
                        Seen::Gone {
                            status: RunStatus::Failed,
                            reason: "Slurm no longer knows its job".into(),
                        }
                    } else {
                        Seen::Alive
                    }
                }
            };
            out.insert(t.number, seen);
        }
        out
    }

    fn stop(&mut self, trial: &TrialRecord, _store: &RunStore) -> Result<()> {
        match &trial.job {
            Some(job) => scancel(job),
            None => Ok(()),
        }
    }

    fn cancel_submission(&mut self, trial: &TrialRecord) {
        if let Some(job) = &trial.job {
            let _ = scancel(job);
        }
    }
}

/// Cancels a job (`1234` or an array task `1234_5`).
pub fn scancel(job: &str) -> Result<()> {
    let out = Command::new("scancel").arg(job).output().map_err(|e| Error::startup("scancel", e))?;
    if !out.status.success() {
        return Err(Error::refused(format!(
            "scancel {job}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
