//! A sweep on disk. The sweep's folder in the store holds its file as given and its state, so
//! that `vigil sweep --resume` needs nothing else and the console can show any sweep, whoever
//! drives it; each trial is an ordinary run whose folder says which sweep it belongs to.
//!
//! ```text
//! runs/sweeps/<sweep-id>/sweep.ron     the sweep file as given
//!                        state.json    SweepState: every trial planned so far and where it is
//!                        logs/         each trial's output (local processes, Slurm jobs)
//!                        jobs/         the batch scripts submitted to Slurm
//! runs/<run-id>/sweep.json             SweepMember: the sweep, the trial's number, its parameters
//! runs/<run-id>/slurm.json             JobState: the run's Slurm job as squeue last said
//! ```
//!
//! A trial is written to `state.json` (with its run created) before it is submitted, and its
//! process id or job id right after; a driver killed between the two finds the run on resume
//! (its process wrote its pid, or Slurm knows the job by its name) instead of starting it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::file::{Goal, Metric};
use crate::error::{Error, Result};
use crate::store::{RunDir, RunId, RunStore, now, read_json, write_json};

/// The store's folder of sweeps.
pub fn sweeps_root(store: &RunStore) -> PathBuf {
    store.root().join("sweeps")
}

/// Where trials run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Local,
    Slurm,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Slurm => "slurm",
        }
    }
}

/// Where one trial is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Its run exists; it is not submitted yet.
    Planned,
    /// Submitted: a process starting, or a job waiting in Slurm's queue.
    Pending,
    Running,
    Completed,
    /// Stopped early by ASHA at a rung.
    Pruned,
    Failed,
    /// Stopped by a person (`x` in the console, `scancel`).
    Cancelled,
}

impl TrialStatus {
    /// Whether the trial may still change.
    pub fn is_active(self) -> bool {
        matches!(self, TrialStatus::Planned | TrialStatus::Pending | TrialStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Planned => "planned",
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Completed => "completed",
            TrialStatus::Pruned => "pruned",
            TrialStatus::Failed => "failed",
            TrialStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A rung a trial reached, with its value there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RungValue {
    pub epoch: usize,
    pub value: f64,
}

/// One trial of a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// From 0, in the order trials were planned.
    pub number: usize,
    pub run: RunId,
    pub params: BTreeMap<String, Value>,
    pub status: TrialStatus,
    /// The local process training it.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Its Slurm job (`1234`, or `1234_5` for an array task).
    #[serde(default)]
    pub job: Option<String>,
    /// Completed epochs.
    #[serde(default)]
    pub epoch: usize,
    /// The best value of the objective's metric so far.
    #[serde(default)]
    pub objective: Option<f64>,
    /// The rungs it reached and was judged at.
    #[serde(default)]
    pub rungs: Vec<RungValue>,
    /// Why it ended as it did (a failure, the rung that pruned it).
    #[serde(default)]
    pub note: Option<String>,
    /// Seconds of training, from its run.
    #[serde(default)]
    pub duration_s: f64,
}

/// `state.json`: the sweep and its trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepState {
    pub id: String,
    pub name: String,
    /// The base spec's name.
    pub spec: String,
    pub created: String,
    pub updated: String,
    pub backend: Backend,
    pub method: String,
    pub metric: Metric,
    pub goal: Goal,
    /// The trial budget.
    pub budget: usize,
    pub jobs: usize,
    /// The varied parameters' paths.
    pub parameters: Vec<String>,
    /// The driving process, while one drives it.
    #[serde(default)]
    pub driver_pid: Option<u32>,
    #[serde(default)]
    pub finished: bool,
    pub trials: Vec<TrialRecord>,
}

impl SweepState {
    /// The best trial so far (finished or not) by the objective.
    pub fn best(&self) -> Option<&TrialRecord> {
        self.trials.iter().filter(|t| t.objective.is_some_and(f64::is_finite)).reduce(|a, b| {
            if self.goal.better(b.objective.unwrap_or_default(), a.objective.unwrap_or_default()) {
                b
            } else {
                a
            }
        })
    }

    /// How many trials are in each status.
    pub fn counts(&self) -> BTreeMap<TrialStatus, usize> {
        let mut out = BTreeMap::new();
        for t in &self.trials {
            *out.entry(t.status).or_default() += 1;
        }
        out
    }

    /// The best objective after each trial, in trial order (the best-so-far curve); trials
    /// without a value yet repeat the best before them.
    pub fn best_so_far(&self) -> Vec<Option<f64>> {
        let mut best: Option<f64> = None;
        self.trials
            .iter()
            .map(|t| {
                if let Some(v) = t.objective.filter(|v| v.is_finite())
                    && best.is_none_or(|b| self.goal.better(v, b))
                {
                    best = Some(v);
                }
                best
            })
            .collect()
    }
}

/// A sweep's folder.
#[derive(Debug, Clone)]
pub struct SweepDir {
    pub id: String,
    pub path: PathBuf,
}

impl SweepDir {
    pub fn new(store: &RunStore, id: &str) -> Self {
        SweepDir { id: id.to_string(), path: sweeps_root(store).join(id) }
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn state(&self) -> Result<SweepState> {
        read_json(&self.file("state.json"))
    }

    pub fn write_state(&self, s: &SweepState) -> Result<()> {
        write_json(&self.file("state.json"), s)
    }

    /// The trial's output file.
    pub fn log_of(&self, run: &str) -> PathBuf {
        self.file(&format!("logs/{run}.log"))
    }
}

/// Every sweep in the store with a readable state, oldest first.
pub fn list(store: &RunStore) -> Vec<SweepState> {
    let Ok(entries) = std::fs::read_dir(sweeps_root(store)) else { return vec![] };
    let mut out: Vec<SweepState> =
        entries.flatten().filter_map(|e| read_json(&e.path().join("state.json")).ok()).collect();
    out.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    out
}

/// Finds a sweep by id, unique prefix, or `latest`.
pub fn resolve(store: &RunStore, query: &str) -> Result<SweepDir> {
    let all = list(store);
    let found: Vec<&SweepState> = if query == "latest" {
        all.last().into_iter().collect()
    } else if let Some(s) = all.iter().find(|s| s.id == query) {
        vec![s]
    } else {
        all.iter().filter(|s| s.id.starts_with(query)).collect()
    };
    match found.as_slice() {
        [one] => Ok(SweepDir::new(store, &one.id)),
        [] => Err(Error::not_found(format!(
            "no sweep {query:?} in {} (sweeps: {})",
            sweeps_root(store).display(),
            if all.is_empty() {
                "none yet".into()
            } else {
                all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
            }
        ))),
        many => Err(Error::argument(format!(
            "{query:?} matches {} sweeps: {}",
            many.len(),
            many.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// `sweep.json` in a trial's run folder: which sweep it belongs to and with what parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepMember {
    pub sweep: String,
    pub trial: usize,
    pub params: BTreeMap<String, Value>,
}

impl SweepMember {
    pub fn write(&self, run: &RunDir) -> Result<()> {
        write_json(&run.file("sweep.json"), self)
    }

    pub fn read(run: &RunDir) -> Option<SweepMember> {
        read_json(&run.file("sweep.json")).ok()
    }
}

/// `slurm.json` in a run's folder: its job as Slurm last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub job: String,
    /// Slurm's state name: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, OUT_OF_MEMORY, TIMEOUT...
    pub state: String,
    /// Why it waits (squeue's reason), while pending.
    #[serde(default)]
    pub reason: Option<String>,
    /// The node it runs or ran on.
    #[serde(default)]
    pub node: Option<String>,
    pub updated: String,
}

impl JobState {
    /// A job sbatch just accepted: pending, for all anyone knows yet.
    pub fn submitted(job: &str) -> JobState {
        JobState { job: job.to_string(), state: "PENDING".into(), reason: None, node: None, updated: now() }
    }

    pub fn read(run_dir: &Path) -> Option<JobState> {
        read_json(&run_dir.join("slurm.json")).ok()
    }

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        write_json(&run_dir.join("slurm.json"), self)
    }

    /// Whether Slurm is done with the job.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED" | "RESIZING"
        )
    }

    /// The state as the console shows it: `pending (Resources)`, `running on node1`.
    pub fn describe(&self) -> String {
        let state = self.state.to_lowercase().replace('_', " ");
        match (&self.reason, &self.node) {
            (Some(r), _) if self.state == "PENDING" && !r.is_empty() && r != "None" => {
                format!("{state} ({r})")
            }
            (_, Some(n)) if !n.is_empty() && !n.starts_with('(') => format!("{state} on {n}"),
            _ => state,
        }
    }
}
