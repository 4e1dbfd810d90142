//! Following Slurm jobs wherever a run is looked at, not only while a sweep's driver runs: any
//! run whose `slurm.json` names a job Slurm is not done with (a sweep's trial, a `vigil train
//! --on slurm` run, a trial whose driver was killed) is asked about with one `squeue` (and
//! `sacct` for jobs squeue forgot), and what Slurm says is written back to its `slurm.json`, so
//! that every process reading the store sees it. The console's sweep follower does this at a
//! modest interval on its own thread; `vigil runs` does it once before it prints.
//!
//! A job that ended while its run still reads active (killed by `scancel`, out of memory, out of
//! time) gets its run's ending written, as a sweep's driver would have. Nothing here submits or
//! stops a job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::slurm;
use super::state::JobState;
use crate::store::{RunId, RunStore, now};

/// How long a job may be unknown to both squeue and sacct, while its run reads active, before
/// the run is taken as lost (a cluster without accounting forgets finished jobs after
/// `MinJobAge`, 300 s by default).
const LOST_AFTER: Duration = Duration::from_secs(120);

/// The state written for a job Slurm no longer knows, whose run has ended (no Slurm state says
/// more: the job is over, since its trainer is).
pub const ENDED: &str = "ENDED";

/// Follows the store's Slurm jobs; keep one to call [`JobFollower::refresh`] again.
#[derive(Debug, Default)]
pub struct JobFollower {
    /// Runs whose `slurm.json` was final when last read, with that file's time: not read again
    /// until it changes.
    settled: BTreeMap<RunId, Option<SystemTime>>,
    /// When each job was first found unknown to Slurm.
    unseen: BTreeMap<String, Instant>,
}

impl JobFollower {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks Slurm about every run whose recorded job is not final and records what it says.
    /// Returns the runs whose `slurm.json` changed. Without `squeue` on the PATH, or with no live
    /// job in the store, it runs nothing.
    pub fn refresh(&mut self, store: &RunStore) -> Vec<RunId> {
        let mut live = Vec::new();
        for dir in store.dirs() {
            let file = dir.file("slurm.json");
            let mtime = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
            if mtime.is_none() || self.settled.get(&dir.id) == Some(&mtime) {
                continue;
            }
            let Some(job) = JobState::read(&dir.path) else { continue };
            if job.is_terminal() {
                self.settled.insert(dir.id.clone(), mtime);
            } else {
                self.settled.remove(&dir.id);
                live.push((dir, job));
            }
        }
        if live.is_empty() || slurm::on_path("squeue").is_none() {
            return vec![];
        }
        let ids: Vec<&str> = live.iter().map(|(_, j)| j.job.as_str()).collect();
        // Slurm did not answer: nothing is known, so nothing is written.
        let Some(found) = slurm::lookup(&ids) else { return vec![] };
        let mut changed = Vec::new();
        for (dir, before) in &live {
            let Ok(info) = dir.info() else { continue };
            let after = match found.get(&before.job) {
                Some(f) => {
                    self.unseen.remove(&before.job);
                    let js = slurm::record(&dir.path, &before.job, f);
                    if js.is_terminal() && info.status.is_active() {
                        let (status, reason) = slurm::ending(&js.state);
                        super::driver::record_ending(
                            dir,
                            status,
                            &format!("{reason} at epoch {}", info.epoch),
                        );
                    }
                    js
                }
                None => {
                    let first = *self.unseen.entry(before.job.clone()).or_insert_with(Instant::now);
                    let lost = info.status.is_active() && first.elapsed() >= LOST_AFTER;
                    if info.status.is_active() && !lost {
                        continue;
                    }
                    if lost {
                        super::driver::record_ending(
                            dir,
                            crate::store::RunStatus::Failed,
                            &format!("Slurm no longer knows its job {}", before.job),
                        );
                    }
                    self.unseen.remove(&before.job);
                    let js = JobState { state: ENDED.into(), reason: None, updated: now(), ..before.clone() };
                    let _ = js.write(&dir.path);
                    js
                }
            };
            if (&after.state, &after.reason, &after.node) != (&before.state, &before.reason, &before.node) {
                changed.push(dir.id.clone());
            }
        }
        changed
    }
}
