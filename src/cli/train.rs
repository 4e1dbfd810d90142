//! `vigil train`: starts (or resumes) a run on a training thread and renders its events, as a
//! progress bar with ETA on a terminal and as plain log lines elsewhere (CI, nohup, schedulers).
//! Ctrl-C cancels the run cleanly: its status is written and its last checkpoint kept.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{TrainArgs, invalid, output};
use crate::error::{Error, Result};
use crate::ml::spec;
use crate::ml::train::{Outcome, TrainControl, TrainEvent};
use crate::store::{RunDir, RunStatus, RunStore, process_alive};

pub(super) fn train(store: &RunStore, models_dir: &Path, args: TrainArgs) -> Result<()> {
    if let Some(query) = &args.run {
        return train_queued(store, query, args.quiet);
    }
    let slurm = args.on == Some(super::sweep::On::Slurm);
    if slurm {
        if args.resume.is_some() {
            return Err(invalid(
                "--on slurm starts a new run; resume a Slurm run with `vigil train --on slurm` after `--run` is queued again",
            ));
        }
        // Before the run exists: without Slurm nothing is created.
        super::sweep::check_slurm(store, &args.slurm)?;
    }
    let (run, resume) = match &args.resume {
        Some(query) => {
            let dir = store.resolve(query)?;
            let info = dir.info()?;
            match info.status {
                RunStatus::Completed => {
                    return Err(invalid(format!("run {} has completed: there is nothing to resume", dir.id)));
                }
                s if s.is_active()
                    && info.pid.is_some_and(process_alive)
                    && info.pid != Some(std::process::id()) =>
                {
                    return Err(invalid(format!(
                        "run {} is {s} in process {}; stop it there first",
                        dir.id,
                        info.pid.unwrap_or_default()
                    )));
                }
                _ => {}
            }
            (dir, true)
        }
        None => {
            let name = args.spec.as_deref().unwrap_or(spec::DEFAULT_SPEC);
            let (mut spec, _origin) = spec::resolve(name, models_dir)?;
            if let Some(e) = args.epochs {
                if e == 0 {
                    return Err(invalid("--epochs must be at least 1"));
                }
                spec.epochs = e;
            }
            if let Some(s) = args.seed {
                spec.seed = s;
            }
            if let Some(lr) = args.lr {
                if !(lr.is_finite() && lr > 0.0) {
                    return Err(invalid(format!(
                        "--lr {lr}: a learning rate must be a positive number (such as 0.01)"
                    )));
                }
                spec.optimizer.set_lr(lr);
            }
            // The data is checked before the run exists, so that a bad file leaves no failed run
            // behind (it is read again by the trainer: a run keeps no data in memory for it).
            crate::ml::data::preprocess::PreparedData::build(&spec, None)?;
            (store.create(&spec)?, false)
        }
    };
    if slurm {
        return super::sweep::submit_train(&run, store, &args.slurm);
    }
    run_with_output(run, resume, args.quiet)
}

/// `--run RUN`: trains a run created elsewhere (a sweep's driver, `train --on slurm`), or
/// continues it from its checkpoint when it has one (a Slurm job that was requeued).
fn train_queued(store: &RunStore, query: &str, quiet: bool) -> Result<()> {
    let dir = store.resolve(query)?;
    let info = dir.info()?;
    // Queued, or left active by a trainer that died (a requeued Slurm job): anything else has a trainer or is done.
    let orphaned = info.status.is_active() && !info.pid.is_some_and(process_alive);
    if info.status != RunStatus::Queued && !orphaned {
        return Err(invalid(format!(
            "run {} is {}, not queued: there is nothing to start",
            dir.id, info.status
        )));
    }
    // On a Slurm node, say where the job runs beside the run's status.
    if let Ok(job) = std::env::var("SLURM_JOB_ID") {
        let job = match (std::env::var("SLURM_ARRAY_JOB_ID"), std::env::var("SLURM_ARRAY_TASK_ID")) {
            (Ok(a), Ok(t)) => format!("{a}_{t}"),
            _ => job,
        };
        let _ = crate::sweep::JobState {
            job,
            state: "RUNNING".into(),
            reason: None,
            node: std::env::var("SLURMD_NODENAME").ok(),
            updated: crate::store::now(),
        }
        .write(&dir.path);
    }
    let resume = dir.checkpoints().ok().and_then(|c| c.resume).is_some();
    run_with_output(dir, resume, quiet)
}

fn run_with_output(run: RunDir, resume: bool, quiet: bool) -> Result<()> {
    let control = TrainControl::new();
    let (tx, rx) = mpsc::channel::<TrainEvent>();
    {
        let control = control.clone();
        let mut presses = 0u32;
        // A second Ctrl-C exits at once for an operator who does not want to wait for the step.
        let _ = ctrlc::set_handler(move || {
            presses += 1;
            if presses > 1 {
                std::process::exit(crate::error::EXIT_INTERRUPTED);
            }
            control.cancel();
        });
    }
    let worker = {
        let run = run.clone();
        let control = control.clone();
        std::thread::Builder::new()
            .name(format!("train {}", run.id))
            .spawn(move || {
                let mut forward = move |e: &TrainEvent| {
                    let _ = tx.send(e.clone());
                };
                crate::ml::train::train(&run, resume, &mut forward, &control)
            })
            .map_err(|e| Error::startup("the training thread", e))?
    };
    let mut view = View::new(!quiet, std::io::stdout().is_terminal());
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(event) => view.show(&event),
            Err(mpsc::RecvTimeoutError::Timeout) => view.tick(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    view.clear();
    let outcome = worker.join().map_err(|_| Error::internal("the training thread panicked"))?;
    println!("run id: {}", run.id);
    match outcome? {
        Outcome::Completed(test) => {
            println!("test split ({} examples), best checkpoint:", test.samples);
            output::print_evaluation(&test);
            let info = run.info().ok();
            if let Some(dp) = info.as_ref().and_then(|i| i.dp.as_ref()) {
                println!(
                    "differential privacy: (ε = {:.3}, δ = {:e}) spent over {} noisy steps (σ = {:.3}, clip {})",
                    dp.epsilon, dp.delta, dp.steps, dp.sigma, dp.clip_norm
                );
            }
            if let Some(adv) = info.and_then(|i| i.membership_advantage) {
                println!(
                    "membership inference: attacker advantage {adv:.3} (loss threshold; 0 = no leak; privacy.json has more)"
                );
            }
            Ok(())
        }
        // Stopped before the end (Ctrl-C here, or `x` in a console): not a success, so
        // scripts see it (exit 130); the error says how to continue.
        Outcome::Cancelled => Err(crate::error::TrainError::Interrupted { run: run.id.to_string() }.into()),
    }
}

/// How a run's events are shown: a bar on a terminal, lines otherwise, nothing when quiet.
struct View {
    verbose: bool,
    bar: Option<ProgressBar>,
    steps_per_epoch: u64,
}

impl View {
    fn new(verbose: bool, terminal: bool) -> Self {
        let bar = (verbose && terminal).then(|| {
            let b = ProgressBar::new(1);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{bar:32.cyan/blue}] {pos}/{len} steps  {msg}  ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b
        });
        View { verbose, bar, steps_per_epoch: 1 }
    }

    fn line(&self, text: String) {
        if !self.verbose {
            return;
        }
        match &self.bar {
            Some(b) => b.println(text),
            None => println!("{text}"),
        }
    }

    fn tick(&self) {
        if let Some(b) = &self.bar {
            b.tick();
        }
    }

    fn clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn show(&mut self, event: &TrainEvent) {
        match event {
            TrainEvent::Started {
                run_id,
                spec,
                epochs,
                steps_per_epoch,
                parameters,
                data,
                resumed_from_epoch,
            } => {
                self.steps_per_epoch = *steps_per_epoch;
                let total = *epochs as u64 * steps_per_epoch;
                if let Some(b) = &self.bar {
                    b.set_length(total);
                    let done = resumed_from_epoch.unwrap_or(0) as u64 * steps_per_epoch;
                    b.set_position(done);
                    b.reset_eta();
                    b.set_prefix(format!("epoch {}/{epochs}", resumed_from_epoch.unwrap_or(0) + 1));
                }
                let what = match resumed_from_epoch {
                    Some(e) => format!("resuming {run_id} after epoch {e}"),
                    None => format!("training {run_id}"),
                };
                self.line(format!(
                    "{what}: {spec}, {parameters} parameters, {epochs} epochs x {steps_per_epoch} steps"
                ));
                self.line(format!(
                    "data: {} ({} train / {} validation / {} test){}{}",
                    data.origin,
                    data.train,
                    data.validation,
                    data.test,
                    if data.dropped_missing > 0 {
                        format!(", {} rows with missing values dropped", data.dropped_missing)
                    } else {
                        String::new()
                    },
                    if data.imputed_values > 0 {
                        format!(", {} missing values imputed", data.imputed_values)
                    } else {
                        String::new()
                    },
                ));
            }
            TrainEvent::Step { epoch, step, loss, samples_per_sec, .. } => {
                if let Some(b) = &self.bar {
                    b.set_position(*step);
                    b.set_prefix(format!("epoch {epoch}"));
                    b.set_message(format!("loss {loss:.4}  {samples_per_sec:.0} samples/s"));
                }
            }
            TrainEvent::Epoch(s) => {
                self.line(format!(
                    "epoch {:>3}/{}  train loss {:.4}  acc {:6.2}%  |  val loss {:.4}  acc {:6.2}%  F1 {:.4}  |  lr {:.2e}  {:.1}s{}",
                    s.epoch,
                    s.epochs,
                    s.train_loss,
                    100.0 * s.train_accuracy,
                    s.val_loss,
                    100.0 * s.val_accuracy,
                    s.val_macro_f1,
                    s.lr,
                    s.time,
                    if s.improved { "  *best" } else { "" }
                ));
            }
            TrainEvent::EarlyStopped { epoch, best_epoch } => {
                self.line(format!("early stop after epoch {epoch}: no improvement since epoch {best_epoch}"));
            }
            TrainEvent::Paused { epoch, step } => self.line(format!("paused at epoch {epoch} step {step}")),
            TrainEvent::Resumed { epoch, step } => self.line(format!("resumed at epoch {epoch} step {step}")),
            TrainEvent::Cancelled { epoch, step } => {
                self.line(format!("cancelled at epoch {epoch} step {step}"))
            }
            TrainEvent::Failed { reason } => self.line(format!("failed: {reason}")),
            TrainEvent::Finished { duration_s, best_epoch, .. } => {
                self.line(format!("finished in {duration_s:.1}s of training; best epoch {best_epoch}"));
            }
            TrainEvent::Checkpoint { .. } => {}
        }
    }
}
