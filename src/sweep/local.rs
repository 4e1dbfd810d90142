//! Trials on this machine: each is `vigil train --run RUN`, the same command and training code
//! as any run, started as a background process in its own process group, so that it outlives a
//! driver that is stopped or killed and a resumed driver picks it up by its pid. ASHA's early
//! stops and the console's stop key ask the trainer to stop through the run's `control` file.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};

use super::driver::{Executor, Seen, Submitted};
use super::state::{Backend, SweepDir, TrialRecord};
use crate::error::{Error, Result};
use crate::store::{ControlRequest, RunStatus, RunStore, process_alive};

/// Runs trials as local processes.
#[derive(Default)]
pub struct Local {
    children: BTreeMap<usize, Child>,
}

impl Executor for Local {
    fn backend(&self) -> Backend {
        Backend::Local
    }

    fn submit(
        &mut self,
        sweep: &SweepDir,
        trials: &[&TrialRecord],
        store: &RunStore,
    ) -> Result<Vec<Submitted>> {
        let argv = super::trial_command(store.root())?;
        let mut out = Vec::new();
        for t in trials {
            let log_path = sweep.log_of(&t.run);
            if let Some(dir) = log_path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
            let err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]).arg(t.run.as_str());
            cmd.stdin(Stdio::null()).stdout(log).stderr(err);
            // Its own process group: Ctrl-C in the driver's terminal does not reach the trials.
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = cmd.spawn().map_err(|e| Error::startup(format!("trial {}", t.number), e))?;
            out.push(Submitted { pid: Some(child.id()), job: None });
            self.children.insert(t.number, child);
        }
        Ok(out)
    }

    fn find(&mut self, _sweep: &SweepDir, trial: &TrialRecord, store: &RunStore) -> Option<Submitted> {
        let info = store.dir(&trial.run).info().ok()?;
        // Its process wrote its pid, or got further than queued: it was started.
        let started = info.status != RunStatus::Queued || info.pid.is_some_and(process_alive);
        started.then_some(Submitted { pid: info.pid, job: None })
    }

    fn poll(&mut self, trials: &[&TrialRecord], store: &RunStore) -> BTreeMap<usize, Seen> {
        let mut out = BTreeMap::new();
        for t in trials {
            let seen = match self.children.get_mut(&t.number) {
                Some(child) => match child.try_wait() {
                    Ok(Some(status)) => {
                        self.children.remove(&t.number);
                        Seen::Gone {
                            status: RunStatus::Failed,
                            reason: format!("its process exited ({status})"),
                        }
                    }
                    _ => Seen::Alive,
                },
                // A trial a previous driver started: alive while its process is.
                None => {
                    let pid = store.dir(&t.run).info().ok().and_then(|i| i.pid).or(t.pid);
                    match pid {
                        Some(p) if process_alive(p) => Seen::Alive,
                        _ => Seen::Gone { status: RunStatus::Failed, reason: "its process is gone".into() },
                    }
                }
            };
            out.insert(t.number, seen);
        }
        out
    }

    fn stop(&mut self, trial: &TrialRecord, store: &RunStore) -> Result<()> {
        store.dir(&trial.run).write_control(ControlRequest::Stop)
    }

    fn cancel_submission(&mut self, _trial: &TrialRecord) {}
}

impl Drop for Local {
    fn drop(&mut self) {
        // Reap the trials that ended; the others go on without the driver.
        for child in self.children.values_mut() {
            let _ = child.try_wait();
        }
    }
}
