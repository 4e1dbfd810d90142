//! The sweep follower: reads the store's sweeps (`sweeps/*/state.json`) and their trials'
//! Slurm job states (`slurm.json`) and reports them as plain data whenever something changed,
//! so that the console shows any sweep, whichever process or cluster drives it. The trials'
//! curves come from the store follower like any run's.
//!
//! On the same thread, every `jobs_every`, it asks Slurm about every run whose job is not final
//! ([`crate::sweep::jobs::JobFollower`]) and writes the answer to the run's `slurm.json`: job
//! states follow their jobs while the console is open, with or without a sweep's driver, and the
//! store follower carries them to the Runs and Detail views. squeue can take a while on a busy
//! cluster, which is why this runs here and not on the UI thread.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;

use super::{Handle, Sink};
use crate::error::Result;
use crate::store::{RunId, RunStore};
use crate::sweep::{JobState, SweepState};

/// One sweep as the console shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepFeed {
    pub state: SweepState,
    /// Each trial's Slurm job, for sweeps on Slurm.
    pub jobs: BTreeMap<RunId, JobState>,
}

/// Reads every sweep once.
pub fn read_all(store: &RunStore) -> Vec<SweepFeed> {
    crate::sweep::state::list(store)
        .into_iter()
        .map(|state| {
            let jobs = state
                .trials
                .iter()
                .filter(|t| t.job.is_some())
                .filter_map(|t| Some((t.run.clone(), JobState::read(&store.dir(&t.run).path)?)))
                .collect();
            SweepFeed { state, jobs }
        })
        .collect()
}

/// Starts the follower on a thread; it sends the whole list when it changed, and refreshes the
/// store's Slurm job states every `jobs_every`.
pub fn spawn(
    store: RunStore,
    poll: Duration,
    jobs_every: Duration,
    sink: impl Sink<Vec<SweepFeed>>,
) -> Result<Handle<()>> {
    let (commands, mut stop) = super::channel::<()>();
    let join = super::thread("vigil-sweeps", "the sweep follower", move || {
        let mut last: Option<Vec<SweepFeed>> = None;
        let mut jobs = crate::sweep::jobs::JobFollower::new();
        let mut next_jobs = std::time::Instant::now();
        loop {
            if std::time::Instant::now() >= next_jobs {
                jobs.refresh(&store);
                next_jobs = std::time::Instant::now() + jobs_every;
            }
            let now = read_all(&store);
            if last.as_ref() != Some(&now) {
                if !sink(now.clone()) {
                    return;
                }
                last = Some(now);
            }
            std::thread::sleep(poll);
            if matches!(stop.try_recv(), Err(TryRecvError::Disconnected)) {
                return;
            }
        }
    })?;
    Ok(Handle { commands, join })
}
