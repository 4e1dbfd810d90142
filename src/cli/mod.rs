//! The command line: clap definitions and one function per command. Commands print for people
//! on a terminal and for scripts (`--json`) elsewhere; all the work happens in the library.

mod output;
mod train;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::ml::data::preprocess::PreparedData;
use crate::ml::spec::{self, DEFAULT_SPEC};
use crate::ml::train::{evaluate, load_trained};
use crate::store::{RunStore, Which};

/// Train, evaluate, serve, secure and explain neural networks from the terminal.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, long_about = None)]
pub struct Cli {
    /// Folder of the run store.
    #[arg(long, global = true, env = "VIGIL_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Folder of experiment specs; its files override the built-in specs of the same name.
    #[arg(long, global = true, env = "VIGIL_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train an experiment spec (a name from `vigil models` or a path to a .ron file).
    Train(TrainArgs),
    /// Evaluate a run's checkpoint on a split (test by default).
    Eval {
        /// Run id, a unique prefix or suffix of one, or `latest`.
        run: String,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// Which split to score.
        #[arg(long, value_enum, default_value = "test")]
        split: SplitArg,
        /// Which checkpoint to load.
        #[arg(long, value_enum, default_value = "best")]
        checkpoint: Which,
    },
    /// List the runs in the store.
    Runs {
        /// Print a JSON array (oldest first) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the experiment specs in the models folder and built in.
    Models,
    /// Measure training throughput of the reference MLP and CNN.
    Bench {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Timed repeats per model (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Also measure the machine's matrix-product peak (a 2048x2048 product with the same
        /// gemm crate) and report each model's share of it.
        #[arg(long)]
        peak: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Spec name or path; the default experiment when absent.
    pub spec: Option<String>,
    /// Override the number of epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override the seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Continue a stopped run from its last checkpoint instead of starting one.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["spec", "epochs", "seed", "lr"])]
    pub resume: Option<String>,
    /// Print nothing but the run id and the final metrics.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A data split on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Train,
    Validation,
    Test,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let store = RunStore::new(&cli.runs_dir);
    match cli.command {
        None => train::train(
            &store,
            &cli.models_dir,
            TrainArgs {
                spec: Some(DEFAULT_SPEC.into()),
                epochs: None,
                seed: None,
                lr: None,
                resume: None,
                quiet: false,
            },
        ),
        Some(Command::Train(args)) => train::train(&store, &cli.models_dir, args),
        Some(Command::Eval { run, json, split, checkpoint }) => eval(&store, &run, json, split, checkpoint),
        Some(Command::Runs { json }) => runs(&store, json),
        Some(Command::Models) => models(&cli.models_dir),
        Some(Command::Bench { json, repeats, peak }) => bench(json, repeats.max(1), peak),
    }
}

fn eval(store: &RunStore, run: &str, json: bool, split: SplitArg, which: Which) -> Result<()> {
    let dir = store.resolve(run)?;
    let trained = load_trained(&dir, which)?;
    let data = PreparedData::build(&trained.spec, Some(&trained.pipeline))?;
    let (name, part) = match split {
        SplitArg::Train => ("train", &data.train),
        SplitArg::Validation => ("validation", &data.validation),
        SplitArg::Test => ("test", &data.test),
    };
    let e = evaluate(&trained.network, part, &trained.pipeline.classes, name)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&e).expect("serialises"));
    } else {
        println!(
            "{} on the {name} split ({} examples), {} checkpoint",
            dir.id,
            e.samples,
            match which {
                Which::Best => "best",
                Which::Last => "last",
            }
        );
        output::print_evaluation(&e);
    }
    Ok(())
}

fn runs(store: &RunStore, json: bool) -> Result<()> {
    let runs = store.list();
    if json {
        let rows: Vec<serde_json::Value> = runs.iter().map(output::run_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("serialises"));
    } else if runs.is_empty() {
        println!("no runs in {} yet: `vigil train` starts one", store.root().display());
    } else {
        output::print_runs(&runs);
    }
    Ok(())
}

fn models(models_dir: &std::path::Path) -> Result<()> {
    let entries = spec::list(models_dir);
    output::print_models(&entries);
    Ok(())
}

fn bench(json: bool, repeats: usize, peak: bool) -> Result<()> {
    let mut results = Vec::new();
    for (name, spec, input, batch) in crate::bench::reference_models() {
        let steps = if batch >= 128 { 40 } else { 12 };
        if !json && std::io::stderr().is_terminal() {
            eprintln!("measuring {name} ...");
        }
        results.push(crate::bench::train_throughput(name, &spec, &input, batch, 5, repeats, steps)?);
    }
    let peak = if peak {
        if !json && std::io::stderr().is_terminal() {
            eprintln!("measuring the matrix-product peak ...");
        }
        let p = crate::bench::matmul_peak(2048, 7)?;
        for r in &mut results {
            r.matmul_peak_gflops = Some(p.gflops_median);
        }
        Some(p)
    } else {
        None
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serialises"));
    } else {
        output::print_bench(&results, peak.as_ref());
    }
    Ok(())
}

/// Refuses arguments that clap cannot check.
pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}
