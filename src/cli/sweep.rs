//! `vigil sweep`: runs a sweep file's trials locally or on Slurm and prints each trial as it is
//! submitted and as it ends, then the trials by objective and the best (`--json` for scripts);
//! `vigil sweep --resume ID` continues a sweep whose driver was stopped or killed. Also the
//! Slurm flags `vigil train --on slurm` shares, and its single-run submission.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};

use super::invalid;
use crate::error::Result;
use crate::store::RunStore;
use crate::sweep::file::SlurmOptions;
use crate::sweep::path::{format_float, show};
use crate::sweep::{Backend, Driver, SweepEvent, SweepOptions, SweepState, TrialStatus};

/// Where runs go: this machine or a Slurm cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum On {
    Local,
    Slurm,
}

impl From<On> for Backend {
    fn from(o: On) -> Self {
        match o {
            On::Local => Backend::Local,
            On::Slurm => Backend::Slurm,
        }
    }
}

/// Slurm job settings on the command line (over the sweep file's `slurm:`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SlurmArgs {
    /// Slurm partition (`sbatch --partition`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Wall-time limit per trial (`sbatch --time`, e.g. 00:30:00).
    #[arg(long)]
    pub time: Option<String>,
    /// CPUs per trial (`sbatch --cpus-per-task`).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory per trial (`sbatch --mem`, e.g. 2G).
    #[arg(long)]
    pub mem: Option<String>,
    /// GPUs per trial (`sbatch --gres=gpu:N`).
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Another sbatch option, as written on its command line (repeatable).
    #[arg(long = "sbatch-arg", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// The runs folder is shared with the Slurm nodes although its filesystem looks local (a
    /// FUSE or bind mount): skip the check that refuses such a folder.
    #[arg(long)]
    pub shared_runs_dir: bool,
}

impl SlurmArgs {
    fn options(&self, array: bool) -> SlurmOptions {
        SlurmOptions {
            partition: self.partition.clone(),
            time: self.time.clone(),
            cpus: self.cpus,
            mem: self.mem.clone(),
            gpus: self.gpus,
            extra: self.sbatch_args.clone(),
            array,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep file (`models/NAME.sweep.ron`).
    #[arg(required_unless_present_any = ["resume", "stop"])]
    pub file: Option<PathBuf>,
    /// Continue a stopped or killed sweep (its id, a unique prefix, or `latest`).
    #[arg(long, value_name = "SWEEP", conflicts_with = "file")]
    pub resume: Option<String>,
    /// Stop one trial (its run id): `scancel` for a Slurm job, as the console's stop key does.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["file", "resume"])]
    pub stop: Option<String>,
    /// Where trials run: background processes here, or Slurm jobs (the store must be on a
    /// folder the nodes share).
    #[arg(long, value_enum)]
    pub on: Option<On>,
    /// Trials running at once (locally: processes; on Slurm: jobs in flight).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Override the file's trial budget.
    #[arg(long)]
    pub trials: Option<usize>,
    /// Submit a grid or random sweep to Slurm as one array job.
    #[arg(long)]
    pub array: bool,
    #[command(flatten)]
    pub slurm: SlurmArgs,
    /// Print one JSON object (trials and the best) at the end instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Print only the final table.
    #[arg(long, short)]
    pub quiet: bool,
    /// Benchmark ASHA: run the sweep with its early stopping and again with every trial to the
    /// end (same trials, in throwaway stores), and print both wall times and best objectives.
    #[arg(long, conflicts_with_all = ["resume", "json"])]
    pub bench: bool,
    /// Repeats of each side with --bench (medians are printed).
    #[arg(long, default_value_t = 1, requires = "bench")]
    pub repeats: usize,
}

pub(super) fn run(store: &RunStore, models_dir: &Path, args: Args) -> Result<()> {
    let opts = SweepOptions {
        backend: args.on.map(Backend::from),
        jobs: args.jobs,
        trials: args.trials,
        slurm: args.slurm.options(args.array),
        no_early_stopping: false,
        shared_runs_dir: args.slurm.shared_runs_dir,
    };
    if let Some(run) = &args.stop {
        let dir = store.resolve(run)?;
        println!("{}", crate::sweep::driver::stop_trial(store, &dir)?);
        return Ok(());
    }
    if args.bench {
        let file = args.file.as_ref().expect("clap requires a file without --resume");
        return bench(models_dir, file, opts, args.repeats.max(1));
    }
    let verbose = !args.json && !args.quiet;
    let observer = move |e: &SweepEvent| {
        if verbose {
            print_event(e);
        }
    };
    let driver = match &args.resume {
        Some(q) => {
            if args.on.is_some() || args.trials.is_some() {
                return Err(invalid("--resume keeps the sweep's --on and --trials; only --jobs may change"));
            }
            Driver::resume(store, models_dir, q, &opts, observer)?
        }
        None => {
            let file = args.file.as_ref().expect("clap requires a file without --resume");
            Driver::create(store, models_dir, file, &opts, observer)?
        }
    };
    let stop = driver.stop_flag();
    let presses = std::sync::atomic::AtomicU32::new(0);
    // Ctrl-C stops the driver, not the trials: they go on and `--resume` follows them again.
    let _ = ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::Relaxed) > 0 {
            std::process::exit(130);
        }
        stop.store(true, Ordering::Relaxed);
    });
    let state = driver.run()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json(&state)).expect("serialises"));
    } else {
        print_summary(&state);
    }
    Ok(())
}

fn params_line(params: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    params.iter().map(|(k, v)| format!("{k}={}", show(v))).collect::<Vec<_>>().join("  ")
}

fn print_event(e: &SweepEvent) {
    match e {
        SweepEvent::Started { id, backend, budget, resumed } => {
            let what = if *resumed { "resuming" } else { "sweep" };
            println!("{what} {id}: {budget} trials on {}", backend.as_str());
        }
        SweepEvent::Submitted { number, run, params, job } => {
            let job = job.as_ref().map(|j| format!(" (job {j})")).unwrap_or_default();
            println!("trial {number:>3} started  {run}{job}  {}", params_line(params));
        }
        SweepEvent::Ended { number, run, status, objective, note } => {
            let value = objective.map(|v| format!("  objective {}", format_float(v))).unwrap_or_default();
            let note = note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default();
            println!("trial {number:>3} {status:<9} {run}{value}{note}");
        }
        SweepEvent::Finished { id } => println!("sweep {id} finished"),
        SweepEvent::Interrupted { id } => {
            println!("driver stopped; running trials go on; `vigil sweep --resume {id}` follows them again")
        }
    }
}

/// The trials sorted by objective (best first; those without a value last).
fn ranked(state: &SweepState) -> Vec<&crate::sweep::TrialRecord> {
    let mut trials: Vec<_> = state.trials.iter().collect();
    trials.sort_by(|a, b| match (a.objective, b.objective) {
        (Some(x), Some(y)) => state.goal.as_loss(x).total_cmp(&state.goal.as_loss(y)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.number.cmp(&b.number),
    });
    trials
}

fn print_summary(state: &SweepState) {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = vec![
        "trial".to_string(),
        "run".into(),
        "status".into(),
        state.metric.as_str().into(),
        "epochs".into(),
    ];
    header.extend(state.parameters.iter().cloned());
    t.set_header(header);
    for r in ranked(state) {
        let mut row = vec![
            r.number.to_string(),
            r.run.to_string(),
            r.status.to_string(),
            r.objective.map(format_float).unwrap_or_else(|| "-".into()),
            r.epoch.to_string(),
        ];
        row.extend(state.parameters.iter().map(|p| r.params.get(p).map(show).unwrap_or_default()));
        t.add_row(row);
    }
    println!("{t}");
    let counts = state.counts();
    let n = |s: TrialStatus| counts.get(&s).copied().unwrap_or(0);
    println!(
        "{} trials: {} completed, {} pruned, {} failed, {} cancelled, {} still active",
        state.trials.len(),
        n(TrialStatus::Completed),
        n(TrialStatus::Pruned),
        n(TrialStatus::Failed),
        n(TrialStatus::Cancelled),
        n(TrialStatus::Planned) + n(TrialStatus::Pending) + n(TrialStatus::Running)
    );
    if let Some(b) = state.best() {
        println!(
            "best: trial {} ({}) {} {}  {}",
            b.number,
            b.run,
            state.metric.as_str(),
            format_float(b.objective.unwrap_or_default()),
            params_line(&b.params)
        );
    }
}

/// The sweep as `--json` prints it.
pub fn json(state: &SweepState) -> serde_json::Value {
    let counts: serde_json::Map<String, serde_json::Value> =
        state.counts().into_iter().map(|(k, v)| (k.as_str().to_string(), v.into())).collect();
    serde_json::json!({
        "id": state.id,
        "name": state.name,
        "spec": state.spec,
        "backend": state.backend,
        "method": state.method,
        "objective": { "metric": state.metric.as_str(), "goal": state.goal },
        "budget": state.budget,
        "finished": state.finished,
        "counts": counts,
        "best": state.best(),
        "trials": state.trials,
    })
}

/// `vigil train --on slurm`: the run is created here and trained by a Slurm job.
pub(super) fn submit_train(run: &crate::store::RunDir, store: &RunStore, slurm: &SlurmArgs) -> Result<()> {
    use crate::sweep::slurm;
    let opts = slurm.options(false);
    // Beside the run, not in it: the job's output grows after the run's manifest is written.
    let jobs_dir = store.root().join("slurm");
    std::fs::create_dir_all(&jobs_dir).map_err(|e| crate::error::Error::io(&jobs_dir, e))?;
    let script_path = jobs_dir.join(format!("{}.sh", run.id));
    let script = slurm::script("`vigil train --on slurm`", store.root(), "", &slurm::sh_quote(&run.id))?;
    let result = (|| {
        crate::store::write_atomic(&script_path, script.as_bytes())?;
        let mut args = vec![
            format!("--job-name=vigil-{}", run.id),
            format!("--output={}", jobs_dir.join(format!("{}.out", run.id)).display()),
        ];
        args.extend(slurm::sbatch_options(&opts));
        slurm::sbatch(&args, &script_path)
    })();
    match result {
        Ok(job) => {
            crate::sweep::JobState::submitted(&job).write(&run.path)?;
            println!("run id: {}", run.id);
            println!("submitted as Slurm job {job}; the console follows the run, `scancel {job}` stops it");
            Ok(())
        }
        Err(e) => {
            // Nothing half-submitted: the run that was never queued goes.
            let _ = std::fs::remove_dir_all(&run.path);
            Err(e)
        }
    }
}

/// Checks the Slurm commands are there, and that the nodes can write the runs folder, before
/// `vigil train --on slurm` creates its run.
pub(super) fn check_slurm(store: &RunStore, slurm: &SlurmArgs) -> Result<()> {
    crate::sweep::slurm::require()?;
    crate::sweep::shared::check(store.root(), slurm.shared_runs_dir)
}

/// `--bench`: the sweep with ASHA against the same trials run to the end.
fn bench(models_dir: &Path, file: &Path, opts: SweepOptions, repeats: usize) -> Result<()> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut sides: Vec<(&str, Vec<f64>, Vec<f64>, usize)> = Vec::new();
    for (label, full) in [("ASHA", false), ("to the end", true)] {
        let (mut times, mut bests, mut pruned) = (Vec::new(), Vec::new(), 0);
        for rep in 0..repeats {
            let root =
                std::env::temp_dir().join(format!("vigil-sweep-bench-{}-{rep}-{full}", std::process::id()));
            let store = RunStore::new(&root);
            let opts = SweepOptions { no_early_stopping: full, ..opts.clone() };
            let t0 = std::time::Instant::now();
            let state = Driver::create(&store, models_dir, file, &opts, |_: &SweepEvent| {})?.run();
            let secs = t0.elapsed().as_secs_f64();
            let _ = std::fs::remove_dir_all(&root);
            let state = state?;
            eprintln!(
                "{label:<10} repeat {}: {secs:.1} s, best {}",
                rep + 1,
                state.best().and_then(|b| b.objective).map(format_float).unwrap_or_default()
            );
            times.push(secs);
            bests.push(state.best().and_then(|b| b.objective).unwrap_or(f64::NAN));
            pruned = state.counts().get(&TrialStatus::Pruned).copied().unwrap_or(0);
        }
        sides.push((label, times, bests, pruned));
    }
    let (asha_t, full_t) = (median(sides[0].1.clone()), median(sides[1].1.clone()));
    let (asha_b, full_b) = (median(sides[0].2.clone()), median(sides[1].2.clone()));
    for (label, times, bests, pruned) in &sides {
        println!(
            "{label:<10}  median {:.1} s over {repeats} repeat(s)  best objective {}  ({pruned} trials pruned)",
            median(times.clone()),
            format_float(median(bests.clone()))
        );
    }
    println!(
        "ASHA takes {:.2}x the time of the full trials (target < 0.5); its best is {:+.2} points from the full trials' best (target within 0.5)",
        asha_t / full_t,
        100.0 * (asha_b - full_b)
    );
    Ok(())
}
