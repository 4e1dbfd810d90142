//! The command line: clap definitions and one function per command. Commands print for people
//! on a terminal and for scripts (`--json`) elsewhere; all the work happens in the library.

mod attack;
mod audit;
mod embed;
mod explain;
mod explain_token;
mod generate;
mod keys;
mod optimize;
mod output;
mod privacy;
mod protect;
mod serve;
mod soak;
mod sweep;
mod sys;
mod tag;
mod traffic;
mod train;
mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::ml::spec;
use crate::ml::train::{evaluate, load_trained};
use crate::store::{CheckpointKind, RunStore};

/// Train, evaluate, serve, secure and explain neural networks from the terminal.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, long_about = None)]
pub struct Cli {
    /// Folder of the run store.
    #[arg(long, global = true, env = "VIGIL_RUNS_DIR", default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Whether the runs folder was named (flag or environment) rather than the default: a named
    /// folder that does not exist is a mistake, the default one only means nothing was trained yet.
    #[arg(skip)]
    pub runs_dir_named: bool,
    /// Folder of experiment specs; its files override the built-in specs of the same name.
    #[arg(long, global = true, env = "VIGIL_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
    /// Console colour theme: dark, light, high-contrast, ansi16, or a .ron file.
    #[arg(long, env = "VIGIL_THEME")]
    pub theme: Option<String>,
    /// Console keymap file laid over the defaults (default: ~/.config/vigil/keymap.ron).
    #[arg(long, value_parser = existing_file)]
    pub keymap: Option<PathBuf>,
    /// The service the console starts (`s`) also logs raw inputs, so that the Explain view can
    /// explain its requests (by default only their SHA-256: inputs may be personal data).
    #[arg(long)]
    pub serve_log_raw_inputs: bool,
    /// Runs the console trains at once (default: one per two cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Key that opens sealed runs (or VIGIL_SEAL_KEY / VIGIL_SEAL_PASSPHRASE).
    #[arg(long, global = true, env = "VIGIL_SEAL_KEY_FILE")]
    pub seal_key_file: Option<PathBuf>,
    /// Seconds between system samples in the console.
    #[arg(long, default_value_t = 1.0)]
    pub sample_every: f64,
    /// Also follow the runs other programs train under these directories (TensorBoard event
    /// files, CSV and JSON-lines metric logs), with the config file's `watch` list.
    #[arg(long, value_name = "DIR", num_args = 1..)]
    pub watch: Vec<PathBuf>,
    /// Load this language model (a GGUF file) into the console's Playground (key i).
    #[arg(long, value_name = "PATH.gguf")]
    pub llm: Option<PathBuf>,
    /// The chat template for --llm: gemma, llama3, chatml, none (the messages' text alone), or
    /// a .ron file of role prefixes and suffixes (default: the one the model's file names).
    #[arg(long, value_name = "NAME|FILE.ron", requires = "llm")]
    pub chat_template: Option<String>,
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
        checkpoint: CheckpointArg,
        /// Split the data file as it is now instead of using the splits the run recorded when it
        /// trained (refused by default when the file changed since).
        #[arg(long)]
        split_from_file: bool,
        /// With --json: every example's index in the data set, true and predicted label and
        /// class probabilities, to check the metrics with other tools.
        #[arg(long, requires = "json")]
        predictions: bool,
    },
    /// Explain a run's prediction on one input (attributions), check the methods (--sanity),
    /// or time them against Captum (--bench).
    Explain(explain::Args),
    /// Explain one token a language model generates: occlusion attribution over the prompt's
    /// tokens (gradients are not available through quantised weights).
    ExplainToken(explain_token::Args),
    /// Attack a run's model with FGSM or PGD at several ε: accuracy, success rate and
    /// perturbation norm per ε, with the adversarial examples saved for the console.
    Attack(attack::Args),
    /// Derive a smaller variant of a run's model (quantised to f16/q8_0/q4_0, pruned, or both),
    /// store it with the run and report size, accuracy, agreement and speed against the original.
    Optimize(optimize::Args),
    /// Sentence embeddings (mean pooling, unit length) from a pretrained encoder folder, the
    /// model cache (`cache:all-minilm-l6-v2`) or a run trained on one.
    Embed(embed::Args),
    /// List the runs in the store (and with --watch, the external runs under directories).
    Runs {
        /// Print a JSON array (oldest first) instead of a table.
        #[arg(long)]
        json: bool,
        /// Also list the runs other programs train under these directories (TensorBoard event
        /// files, CSV and JSON-lines metric logs), with the config file's `watch` list.
        #[arg(long, value_name = "DIR", num_args = 1..)]
        watch: Vec<PathBuf>,
        /// With --json: every point of every tag of the external runs.
        #[arg(long, requires = "json")]
        points: bool,
        /// Only the runs with this tag (`vigil tag` sets tags).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Tag a run, or write a note on it (shown and filterable in the console: tag:NAME).
    Tag(tag::Args),
    /// List the experiment specs in the models folder and built in.
    Models,
    /// Print one sample of CPU, memory, disk, network, GPUs and run processes.
    Sys {
        /// Print one JSON object (with `cpus`, `memory`, `swap`, `gpus`, `processes`).
        #[arg(long)]
        json: bool,
        /// Keep sampling, one line (or JSON object) per sample, like vmstat.
        #[arg(long)]
        follow: bool,
        /// Seconds between samples with --follow (default 1).
        #[arg(long, requires = "follow")]
        every: Option<f64>,
        /// Stop after this many samples with --follow.
        #[arg(long, requires = "follow")]
        count: Option<u64>,
    },
    /// The DP-SGD privacy accountant: ε for a σ, or σ for an ε.
    #[command(subcommand)]
    Privacy(privacy::PrivacyCommand),
    /// Encrypt runs' checkpoints, preprocessing and optimiser state (and the API key file).
    Seal {
        /// Runs to seal.
        runs: Vec<String>,
        /// Every run in the store.
        #[arg(long)]
        all: bool,
        /// Make a new random key, write it to this file (mode 0600) and seal with it.
        #[arg(long, value_name = "FILE")]
        generate_key: Option<PathBuf>,
    },
    /// Decrypt sealed runs back to plain files.
    Unseal {
        runs: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Complete a prompt with a language model (a GGUF file), streaming the text as it is
    /// decoded, then prompt and completion tokens, time to first token and tokens/s.
    Generate(generate::Args),
    /// Sign a run's manifest (the SHA-256 of every file) with an Ed25519 key.
    Sign {
        run: String,
        /// Signing key (default: <runs-dir>/signing.key).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Check a run's files against its signed manifest and the signature.
    Verify {
        run: String,
        /// Accept only this public key (a .pub file).
        #[arg(long, value_parser = existing_file)]
        public_key: Option<PathBuf>,
    },
    /// Serve runs' models over HTTP with keys, limits and an access log.
    Serve(serve::Args),
    /// Create, list and revoke the service's API keys.
    Keys {
        #[command(subcommand)]
        action: keys::Action,
    },
    /// Send test-split inputs to a running service and report what came back.
    Traffic(traffic::Args),
    /// Soak a service: minutes of mixed and hostile traffic, then a report (crashes, memory,
    /// log lines against requests, the hash chain, a key revoked half-way).
    Soak(soak::Args),
    /// Check the service's access log.
    Audit {
        #[command(subcommand)]
        action: audit::Action,
    },
    /// Run a hyperparameter sweep (a `.sweep.ron` file) here or on Slurm, or resume one.
    Sweep(sweep::Args),
    /// Measure training throughput of the reference MLP and CNN.
    Bench {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Timed repeats per model (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        repeats: usize,
        /// Measure the console's frame rendering instead (160x48, 5 runs of 10,000 points).
        #[arg(long)]
        ui: bool,
        /// Measure reading this TensorBoard event file instead (every scalar, CRCs checked);
        /// bench/tensorboard_reference.py makes a 100 MB one and times TensorBoard on it.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["ui", "peak"])]
        events: Option<PathBuf>,
        /// Also measure the machine's matrix-product peak (a 2048x2048 product with the same
        /// gemm crate) and report each model's share of it.
        #[arg(long)]
        peak: bool,
        /// Measure PRADA's time per query and memory on one key after 10^4, 10^5 and 10^6
        /// distinct queries (the bounded state the service keeps, and the paper's unbounded one
        /// up to 10^5) instead.
        #[arg(long, conflicts_with_all = ["ui", "peak"])]
        prada: bool,
        /// Measure a pretrained encoder instead (a folder or `cache:all-minilm-l6-v2`): its
        /// inference and fine-tuning steps (batch 32, sequence 128, AdamW), and training steps
        /// of the from-scratch topics-transformer (at least 20 repeats); compare with
        /// `bench/minilm_reference.py bench FOLDER` (PyTorch, same shapes).
        #[arg(long, value_name = "PATH", conflicts_with_all = ["ui", "peak", "prada", "events", "llm"])]
        encoder: Option<String>,
        /// Measure a language model (a GGUF file) instead: prompt-processing and decode
        /// tokens/s (medians over --repeats), its size and tensor types.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["ui", "peak", "events", "prada"])]
        llm: Option<PathBuf>,
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
    /// Override the learning rate (a positive number).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Continue a stopped run from its last checkpoint instead of starting one.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["spec", "epochs", "seed", "lr"])]
    pub resume: Option<String>,
    /// Train a run already created in the store and still queued: what a sweep's trials and
    /// Slurm jobs run.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["spec", "epochs", "seed", "lr", "resume", "on"])]
    pub run: Option<String>,
    /// Where to train: here (default), or as a Slurm job (`sbatch`; the store must be on a
    /// folder the nodes share).
    #[arg(long, value_enum)]
    pub on: Option<sweep::On>,
    #[command(flatten)]
    pub slurm: sweep::SlurmArgs,
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

/// A checkpoint on the command line (`--checkpoint best|last`); the store's
/// [`CheckpointKind`] knows nothing of clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointArg {
    Best,
    Last,
}

impl From<CheckpointArg> for CheckpointKind {
    fn from(a: CheckpointArg) -> Self {
        match a {
            CheckpointArg::Best => CheckpointKind::Best,
            CheckpointArg::Last => CheckpointKind::Last,
        }
    }
}

/// Parses the process's command line (clap prints usage errors and exits 2 itself).
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.runs_dir_named = matches.value_source("runs_dir").is_some_and(|s| s != ValueSource::DefaultValue);
    cli
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let seal_opts = crate::store::seal::KeyOptions::from_env(cli.seal_key_file.clone());
    // The key is resolved once and travels with the store: every command opens sealed runs when
    // given it; sealing itself checks it separately.
    let key = match cli.command {
        Some(Command::Seal { .. }) => None,
        _ => seal_opts.resolve(&cli.runs_dir, false)?,
    };
    let store = RunStore::new(&cli.runs_dir).with_key(key.map(std::sync::Arc::new));
    match cli.command {
        None => {
            // Loading takes seconds and happens in the console; a path that is not there is
            // refused now, before the terminal is taken (`scripted:` is the test stand-in).
            if let Some(p) = cli.llm.as_ref().filter(|p| !p.to_string_lossy().starts_with("scripted:"))
                && !p.is_file()
            {
                return Err(Error::not_found(format!("--llm {}: no such file", p.display())));
            }
            if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
                return Err(Error::startup(
                    "the console",
                    "it needs a terminal (stdin and stdout are not one); for scripts use `vigil train`, \
                     `vigil runs --json` or `vigil eval`",
                ));
            }
            if cli.jobs == Some(0) {
                return Err(invalid("--jobs must be at least 1"));
            }
            crate::tui::run(crate::tui::ConsoleOptions {
                store,
                models_dir: cli.models_dir,
                theme: cli.theme,
                keymap: cli.keymap,
                concurrency: cli.jobs,
                // Watching other programs' runs is no reason to start one of Vigil's.
                start_default: cli.watch.is_empty(),
                sample_every: sample_period(cli.sample_every)?,
                serve_log_raw_inputs: cli.serve_log_raw_inputs,
                watch: crate::external::config::resolve(
                    &cli.watch,
                    crate::external::config::path().as_deref(),
                )?,
                llm: cli.llm,
                chat_template: cli.chat_template,
            })
        }
        Some(Command::Train(args)) => train::train(&store, &cli.models_dir, args),
        Some(Command::Eval { run, json, split, checkpoint, split_from_file, predictions }) => {
            eval(&store, &run, EvalOutput { json, predictions }, split, checkpoint.into(), split_from_file)
        }
        Some(Command::Explain(args)) => explain::run(&store, args),
        Some(Command::ExplainToken(args)) => explain_token::run(args),
        Some(Command::Attack(args)) => attack::run(&store, args),
        Some(Command::Optimize(args)) => optimize::run(&store, args),
        Some(Command::Embed(args)) => embed::run(&store, args),
        Some(Command::Runs { json, tag, watch, points }) => {
            existing_store(&store, cli.runs_dir_named)?;
            let dirs = crate::external::config::resolve(&watch, crate::external::config::path().as_deref())?;
            // External runs carry no tags, so `--tag` lists Vigil's own tagged runs only.
            if dirs.is_empty() || tag.is_some() {
                runs(&store, json, tag.as_deref())
            } else {
                watch::runs(&store, json, &dirs, points)
            }
        }
        Some(Command::Tag(args)) => tag::run(&store, args),
        Some(Command::Models) => models(&cli.models_dir),
        Some(Command::Seal { runs, all, generate_key }) => {
            protect::seal(&store, seal_opts, &runs, all, generate_key)
        }
        Some(Command::Unseal { runs, all }) => protect::unseal(&store, seal_opts, &runs, all),
        Some(Command::Generate(args)) => generate::run(args),
        Some(Command::Sign { run, key }) => protect::sign_run(&store, &run, key),
        Some(Command::Verify { run, public_key }) => protect::verify_run(&store, &run, public_key),
        Some(Command::Privacy(cmd)) => privacy::run(cmd),
        Some(Command::Sys { json, follow, every, count }) => {
            sys::run(&store, json, follow, sample_period(every.unwrap_or(1.0))?, count)
        }
        Some(Command::Bench { json, repeats, llm: Some(path), .. }) => generate::bench(&path, repeats, json),
        Some(Command::Bench { json, prada: true, .. }) => bench_prada(json),
        Some(Command::Bench { json, repeats, encoder: Some(path), .. }) => {
            bench_encoder(&path, repeats, json)
        }
        Some(Command::Bench { json, repeats, events: Some(file), .. }) => {
            watch::bench_events(&file, repeats, json)
        }
        Some(Command::Bench { json, repeats, ui: true, .. }) => bench_ui(json, repeats),
        Some(Command::Bench { json, repeats, ui: false, peak, .. }) => bench(json, repeats, peak),
        Some(Command::Serve(args)) => serve::run(&store, args),
        Some(Command::Keys { action }) => keys::run(&store, action),
        Some(Command::Audit { action }) => audit::run(&cli.runs_dir, action),
        Some(Command::Traffic(args)) => traffic::run(&store, &cli.models_dir, args),
        Some(Command::Soak(args)) => soak::run(&store, args),
        Some(Command::Sweep(args)) => sweep::run(&store, &cli.models_dir, args),
    }
}

/// What `vigil eval` prints.
struct EvalOutput {
    json: bool,
    predictions: bool,
}

/// One example's prediction in `vigil eval --json --predictions`.
#[derive(serde::Serialize)]
struct PredictionJson<'a> {
    /// The example's position in the data set (0-based; for a CSV, its row after the header).
    index: usize,
    true_label: &'a str,
    predicted_label: &'a str,
    probabilities: &'a [f32],
}

fn eval(
    store: &RunStore,
    run: &str,
    out: EvalOutput,
    split: SplitArg,
    which: CheckpointKind,
    split_from_file: bool,
) -> Result<()> {
    let json = out.json;
    let dir = store.resolve(run)?;
    let trained = load_trained(&dir, which)?;
    let data = crate::ml::data::splits::for_run(&dir, &trained.spec, &trained.pipeline, split_from_file)?;
    if split_from_file {
        eprintln!("split from the data file as it is now, not the run's recorded splits");
    }
    let (name, part) = match split {
        SplitArg::Train => ("train", &data.train),
        SplitArg::Validation => ("validation", &data.validation),
        SplitArg::Test => ("test", &data.test),
    };
    let e = evaluate(&trained.network, part, &trained.pipeline.classes, name)?;
    if json {
        let mut v = serde_json::to_value(&e).expect("serialises");
        v["confusion_matrix_orientation"] = "rows are the true class, columns the predicted class".into();
        if out.predictions {
            let indices = match split {
                SplitArg::Train => &data.indices.train,
                SplitArg::Validation => &data.indices.validation,
                SplitArg::Test => &data.indices.test,
            };
            let (_, predicted, probabilities) = crate::ml::train::predict(&trained.network, part)?;
            let classes = &trained.pipeline.classes;
            let rows: Vec<PredictionJson> = (0..part.labels.len())
                .map(|i| PredictionJson {
                    index: indices[i],
                    true_label: &classes[part.labels[i] as usize],
                    predicted_label: &classes[predicted[i] as usize],
                    probabilities: &probabilities[i],
                })
                .collect();
            v["predictions"] = serde_json::to_value(rows).expect("serialises");
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    } else {
        println!("{} on the {name} split ({} examples), {} checkpoint", dir.id, e.samples, which);
        output::print_evaluation(&e);
    }
    Ok(())
}

/// A runs folder named by `--runs-dir`/`VIGIL_RUNS_DIR` must exist for the commands that only
/// read it: an empty listing would hide a mistyped path.
fn existing_store(store: &RunStore, named: bool) -> Result<()> {
    if named && !store.root().is_dir() {
        return Err(invalid(format!(
            "the runs folder {} does not exist (--runs-dir or VIGIL_RUNS_DIR names it)",
            store.root().display()
        )));
    }
    Ok(())
}

fn runs(store: &RunStore, json: bool, tag: Option<&str>) -> Result<()> {
    // Slurm's news first, so that a job that waits, runs or ended shows as it is now.
    crate::sweep::jobs::JobFollower::new().refresh(store);
    let mut runs = store.list();
    if let Some(t) = tag {
        crate::store::notes::check_tag(t)?;
        runs.retain(|r| tag::notes_of(store, r).tags.iter().any(|x| x == t));
        if runs.is_empty() {
            println!("no run is tagged {t:?} (`vigil tag RUN {t}` tags one)");
            return Ok(());
        }
    }
    if json {
        let rows: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                let mut v = output::run_json(r, output::job_of(store, r).as_ref());
                let notes = tag::notes_of(store, r);
                v["tags"] = serde_json::json!(notes.tags);
                v["note"] = serde_json::json!(notes.note);
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("serialises"));
    } else if runs.is_empty() {
        println!("no runs in {} yet: `vigil train` starts one", store.root().display());
    } else {
        output::print_runs(&output::with_jobs(store, runs));
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

/// `vigil bench --encoder PATH`: a pretrained encoder's inference (sentences a second, batch 32
/// of 128 tokens, ids drawn from a fixed seed between [CLS] and [SEP]), its fine-tuning (the same
/// batches, the whole encoder unfrozen with a linear head, dropout 0.1 as BERT trains, AdamW), and
/// training steps of the shipped from-scratch transformer (topics-transformer's model and
/// optimiser, batch 32 of its 24 tokens): medians of the repeats. `bench/minilm_reference.py
/// bench FOLDER` times PyTorch on the same three.
fn bench_encoder(path: &str, repeats: usize, json: bool) -> Result<()> {
    use crate::ml::spec::{ModelSpec, Pooling};
    use rand::{Rng, SeedableRng};
    let (batch, seq) = (32usize, 128usize);
    let bert_id = |rng: &mut rand_chacha::ChaCha8Rng, p: usize| match p {
        0 => 101,
        p if p == seq - 1 => 102,
        _ => rng.random_range(1000..30000),
    };
    let encoder =
        crate::ml::model::pretrained::SentenceEncoder::open(&crate::ml::model::pretrained::resolve(path))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<u32> = (0..batch * seq).map(|i| bert_id(&mut rng, i % seq)).collect();
    let x = candle_core::Tensor::from_vec(ids, (batch, seq), &candle_core::Device::Cpu)?;
    encoder.embed_ids(&x)?; // warm-up
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = std::time::Instant::now();
        encoder.embed_ids(&x)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let infer = times[times.len() / 2];

    let finetune = ModelSpec::Pretrained {
        path: path.to_string(),
        pooling: Pooling::Mean,
        head: vec![],
        freeze: false,
        max_len: seq,
        dropout: 0.1,
    };
    let adamw = crate::ml::spec::Optimizer::AdamW {
        lr: 2e-5,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let finetune =
        crate::bench::token_train_step(&finetune, seq, None, 5, batch, &adamw, bert_id, 1, repeats)?;

    let (scratch_spec, _) = crate::ml::spec::resolve("topics-transformer", std::path::Path::new("models"))?;
    let data = crate::ml::data::preprocess::PreparedData::build(&scratch_spec, None)?;
    let scratch_seq = data.pipeline.input.dims()[0];
    let vocab = data.pipeline.vocabulary().unwrap_or(2);
    let scratch = crate::bench::token_train_step(
        &scratch_spec.model,
        scratch_seq,
        Some(vocab),
        data.pipeline.classes.len(),
        batch,
        &scratch_spec.optimizer,
        |rng, _| rng.random_range(2..vocab as u32),
        5,
        repeats.max(20),
    )?;

    let threads = crate::ml::kernels::par::threads();
    let figures =
        [("inference", infer, seq), ("fine-tune", finetune, seq), ("scratch", scratch, scratch_seq)];
    if json {
        let rows: Vec<_> = figures
            .iter()
            .map(|(what, s, len)| {
                serde_json::json!({"what": what, "engine": "vigil", "threads": threads, "batch": batch,
                    "seq": len, "median_s": s, "sequences_per_s": batch as f64 / s})
            })
            .collect();
        println!("{}", serde_json::json!({"repeats": repeats, "scratch_vocabulary": vocab, "results": rows}));
    } else {
        println!("{path}, {threads} threads, batch {batch}, medians of {repeats} repeats:");
        for (what, s, len) in figures {
            println!(
                "  {what:<10} {len:>4} tokens  {:>8.1} ms/step  {:>8.1} sequences/s",
                s * 1000.0,
                batch as f64 / s
            );
        }
        println!(
            "  (scratch: topics-transformer, vocabulary {vocab}; pass --vocab {vocab} to the reference)"
        );
    }
    Ok(())
}

fn bench_prada(json: bool) -> Result<()> {
    // The digits models' input width; 10 classes.
    let points = crate::bench::prada_scaling(64, &[10_000, 100_000, 1_000_000], 100_000);
    if json {
        println!("{}", serde_json::to_string_pretty(&points).expect("serialises"));
        return Ok(());
    }
    println!("PRADA on one key: distinct queries of 64 values in 10 classes");
    println!(
        "{:<10} {:>10} {:>12} {:>12} {:>8} {:>8} {:>6}",
        "state", "queries", "us/query", "heap", "kept", "W", "alarm"
    );
    for p in &points {
        println!(
            "{:<10} {:>10} {:>12.2} {:>10.2} MB {:>8} {:>8} {:>6}",
            p.state,
            p.queries,
            p.us_per_query,
            p.heap_bytes as f64 / 1e6,
            p.kept_queries,
            p.w.map_or("-".into(), |w| format!("{w:.4}")),
            if p.alarm { "yes" } else { "no" }
        );
    }
    println!("us/query: the mean over the queries since the row above; heap: the key's PRADA state");
    Ok(())
}

fn bench_ui(json: bool, repeats: usize) -> Result<()> {
    let results = crate::bench::render_frames(160, 48, 5, 10_000, 40 * repeats);
    if json {
        println!("{}", serde_json::to_string_pretty(&results).expect("serialises"));
    } else {
        for r in &results {
            println!(
                "{:<9} {}x{}  {} runs x {} points  median {:.3} ms/frame  (max {:.3} ms, {} frames)",
                r.view,
                r.width,
                r.height,
                r.runs,
                r.points_per_run,
                r.ms_per_frame_median,
                r.ms_per_frame_max,
                r.frames
            );
        }
    }
    Ok(())
}

/// A sampling period from seconds on the command line (at least the sampler's minimum).
fn sample_period(secs: f64) -> Result<std::time::Duration> {
    if !(0.2..=3600.0).contains(&secs) {
        return Err(invalid(format!("a sampling period of {secs} s is not between 0.2 and 3600 seconds")));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A file the command reads: refused at parse time (exit 2, naming the flag) when it is not
/// there, instead of an I/O error (exit 1) once the work has started.
pub(crate) fn existing_file(text: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Err("a folder, not a file".into()),
        Ok(_) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A file the command writes: its folder must exist (Vigil does not create folders it was not
/// asked to), checked at parse time for the same reason as [`existing_file`].
pub(crate) fn output_file(text: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(text);
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.is_dir() {
        return Err(format!("{text} is a folder; give a file name"));
    }
    if !folder.is_dir() {
        return Err(format!("the folder {} does not exist", folder.display()));
    }
    Ok(path)
}

/// A count that must be at least 1 (`--repeats`): zero would report the median of nothing.
pub(crate) fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

/// Refuses arguments that clap cannot check (bad input: exit 2).
pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::argument(msg)
}
