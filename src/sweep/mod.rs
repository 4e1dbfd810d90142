//! Hyperparameter sweeps: a sweep file (`models/*.sweep.ron`) names a base spec, the spec fields
//! to vary and their domains, a method (grid, random, TPE), an objective, a trial budget and ASHA
//! early stopping; the driver runs each trial as an ordinary run of the store, on this machine or
//! as Slurm jobs, and keeps the sweep's state in the store so that it can be resumed after being
//! stopped or killed. Nothing here draws or trains: the console reads the state, and each trial
//! is `vigil train --run RUN`.
//!
//! - `file.rs`: the sweep file, its domains and its checks;
//! - `path.rs`: setting spec fields by dotted path;
//! - `sampler.rs`: grid, random and TPE proposals;
//! - `asha.rs`: the rung decision;
//! - `state.rs`: the sweep's folder, `state.json`, and the files it adds to a trial's run;
//! - `driver.rs`: planning, submitting, following, pruning and resuming;
//! - `local.rs`, `slurm.rs`: where trials run;
//! - `shared.rs`: whether the runs folder is one the nodes share;
//! - `jobs.rs`: following any run's Slurm job into its `slurm.json`, with or without a driver.

pub mod asha;
pub mod driver;
pub mod file;
pub mod jobs;
pub mod local;
pub mod path;
pub mod sampler;
pub mod shared;
pub mod slurm;
pub mod state;

pub use driver::{Driver, SweepEvent, SweepOptions};

use std::ffi::OsString;
use std::path::Path;

use crate::error::{Error, Result};

/// The command that trains a queued run wherever it runs (a background process here, a Slurm
/// job on a node): `vigil --runs-dir ROOT train --quiet --run`, to which the run's id is added
/// last, so that an array job's script can put its task's run there. The program is this very
/// `vigil`, and the runs folder is made absolute, since the job starts elsewhere.
pub fn trial_command(root: &Path) -> Result<Vec<OsString>> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::startup("trials", format!("cannot find vigil itself: {e}")))?;
    let root = std::path::absolute(root).map_err(|e| Error::io(root, e))?;
    Ok(vec![exe.into(), "--runs-dir".into(), root.into(), "train".into(), "--quiet".into(), "--run".into()])
}
pub use file::{SWEEP_SUFFIX, SweepFile};
pub use state::{Backend, JobState, SweepDir, SweepMember, SweepState, TrialRecord, TrialStatus};
