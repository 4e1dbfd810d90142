//! Tables and JSON rows the command line prints. Formatting only: no command logic.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};

use crate::bench::{BenchResult, PeakResult};
use crate::ml::metrics::Evaluation;
use crate::ml::spec::{SpecEntry, SpecOrigin};
use crate::store::{RunInfo, RunStore};
use crate::sweep::JobState;

pub(crate) fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    // Wrap long cells to the terminal's width (an 80-column SSH session included).
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(headers.iter().map(Cell::new));
    t
}

pub(crate) fn right(t: &mut Table, from: usize) {
    for i in from..t.column_count() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Per-class precision, recall, F1 and support, then the averages.
pub fn print_evaluation(e: &Evaluation) {
    let mut t = table(&["class", "precision", "recall", "f1", "support"]);
    for c in &e.per_class {
        t.add_row(vec![
            c.class.clone(),
            format!("{:.4}", c.precision),
            format!("{:.4}", c.recall),
            format!("{:.4}", c.f1),
            c.support.to_string(),
        ]);
    }
    t.add_row(vec![
        "macro avg".into(),
        format!("{:.4}", e.macro_precision),
        format!("{:.4}", e.macro_recall),
        format!("{:.4}", e.macro_f1),
        e.samples.to_string(),
    ]);
    t.add_row(vec![
        "weighted f1".into(),
        String::new(),
        String::new(),
        format!("{:.4}", e.weighted_f1),
        e.samples.to_string(),
    ]);
    right(&mut t, 1);
    println!("{t}");
    println!("accuracy {:.2}%   loss {:.4}   macro F1 {:.4}", 100.0 * e.accuracy, e.loss, e.macro_f1);
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v))
}

/// The status a viewer should show: a run still marked active whose process has gone is
/// `interrupted` (it can be resumed).
pub fn observed_status(r: &RunInfo, job: Option<&JobState>) -> String {
    // A live Slurm job's trainer runs on a node, whose process ids mean nothing here.
    let live = job.filter(|j| !j.is_terminal());
    if r.status.is_active() && live.is_none() && r.pid.is_some_and(|p| !crate::store::process_alive(p)) {
        "interrupted".into()
    } else {
        r.status.to_string()
    }
}

/// A run's Slurm job (`slurm.json`), for a run trained by one.
pub fn job_of(store: &RunStore, r: &RunInfo) -> Option<JobState> {
    JobState::read(&store.dir(&r.id).path)
}

/// Runs with their Slurm jobs, for [`print_runs`].
pub fn with_jobs(store: &RunStore, runs: Vec<RunInfo>) -> Vec<(RunInfo, Option<JobState>)> {
    runs.into_iter()
        .map(|r| {
            let job = job_of(store, &r);
            (r, job)
        })
        .collect()
}

/// A run's status with what Slurm says of its job beside it, while the job is live:
/// `queued · slurm pending (BeginTime)`.
fn status_with_job(r: &RunInfo, job: Option<&JobState>) -> String {
    let status = observed_status(r, job);
    match job.filter(|j| !j.is_terminal()) {
        Some(j) => format!("{status} · slurm {}", j.describe()),
        None => status,
    }
}

/// The runs table of `vigil runs`.
pub fn print_runs(runs: &[(RunInfo, Option<JobState>)]) {
    let mut t = table(&["id", "spec", "status", "epoch", "best val acc", "test acc", "duration"]);
    for (r, job) in runs {
        t.add_row(vec![
            r.id.to_string(),
            r.spec.clone(),
            status_with_job(r, job.as_ref()),
            format!("{}/{}", r.epoch, r.epochs),
            pct(r.best_val_accuracy),
            pct(r.test_accuracy),
            crate::store::fmt_duration(r.duration_s),
        ]);
    }
    right(&mut t, 3);
    println!("{t}");
}

/// One run as `vigil runs --json` prints it; `slurm` is its job's `slurm.json`, for a run
/// trained by a Slurm job.
pub fn run_json(r: &RunInfo, job: Option<&JobState>) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "spec": r.spec,
        "model": r.model,
        "status": observed_status(r, job),
        "slurm": job,
        "epoch": r.epoch,
        "epochs": r.epochs,
        "step": r.step,
        "best_val_accuracy": r.best_val_accuracy,
        "test_accuracy": r.test_accuracy,
        "train_loss": r.train_loss,
        "duration_s": r.duration_s,
        "created": r.created,
        "started": r.started,
        "finished": r.finished,
        "failure": r.failure,
    })
}

/// The specs table of `vigil models`.
pub fn print_models(entries: &[SpecEntry]) {
    let mut t = table(&["name", "model", "data", "from", "description"]);
    for e in entries {
        let from = match &e.origin {
            SpecOrigin::File(p) => p.display().to_string(),
            SpecOrigin::Builtin(_) => "built in".into(),
        };
        match &e.spec {
            Ok(s) => {
                let data = match &s.data.source {
                    crate::ml::spec::DataSource::Digits => "digits".to_string(),
                    crate::ml::spec::DataSource::Topics => "topics".to_string(),
                    crate::ml::spec::DataSource::Waveforms { .. } => "waveforms".to_string(),
                    crate::ml::spec::DataSource::Csv { path, .. } => path.clone(),
                    crate::ml::spec::DataSource::Idx { images, .. } => images.clone(),
                    crate::ml::spec::DataSource::Tsv { path } => path.clone(),
                };
                t.add_row(vec![e.name.clone(), s.model.kind().into(), data, from, s.description.clone()]);
            }
            Err(err) => {
                t.add_row(vec![e.name.clone(), "INVALID".into(), String::new(), from, err.clone()]);
            }
        }
    }
    println!("{t}");
}

/// The figures of `vigil bench`.
pub fn print_bench(results: &[BenchResult], peak: Option<&PeakResult>) {
    let mut t =
        table(&["model", "batch", "threads", "samples/s (median)", "min", "max", "ms/step", "GFLOP/s"]);
    for r in results {
        t.add_row(vec![
            r.name.clone(),
            r.batch.to_string(),
            r.threads.to_string(),
            format!("{:.0}", r.samples_per_sec_median),
            format!("{:.0}", r.samples_per_sec_min),
            format!("{:.0}", r.samples_per_sec_max),
            format!("{:.2}", r.ms_per_step_median),
            r.gflops.map_or_else(|| "-".into(), |g| format!("{g:.1}")),
        ]);
    }
    right(&mut t, 1);
    println!("{t}");
    println!(
        "training steps (forward, cross-entropy, backward, Adam) on synthetic data; median of {};",
        crate::text::plural(results.first().map_or(0, |r| r.repeats) as u64, "repeat", "repeats")
    );
    println!("GFLOP/s counts the matrix products and convolutions of a step, forward and backward");
    if let Some(p) = peak {
        println!(
            "matrix-product peak: {0}x{0} f32 product with gemm, {1} threads: {2:.1} GFLOP/s (median of {3}, best {4:.1})",
            p.size, p.threads, p.gflops_median, p.repeats, p.gflops_max
        );
        for r in results {
            if let Some(g) = r.gflops {
                println!("  {}: {:.0}% of peak", r.name, 100.0 * g / p.gflops_median);
            }
        }
    }
}
