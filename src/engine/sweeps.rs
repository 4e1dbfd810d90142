//! The sweep follower: reads the store's sweeps (`sweeps/*/state.json`) and their trials'
//! Slurm job states (`slurm.json`) and reports them as plain data whenever something changed,
//! so that the console shows any sweep, whichever process or cluster drives it. The trials'
//! curves come from the store follower like any run's.

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

/// Starts the follower on a thread; it sends the whole list when it changed.
pub fn spawn(store: RunStore, poll: Duration, sink: impl Sink<Vec<SweepFeed>>) -> Result<Handle<()>> {
    let (commands, mut stop) = super::channel::<()>();
    let join = super::thread("vigil-sweeps", "the sweep follower", move || {
        let mut last: Option<Vec<SweepFeed>> = None;
        loop {
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
