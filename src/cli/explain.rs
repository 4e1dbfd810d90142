//! `vigil explain`: attributions for one input of a run's data (a summary, JSON, or a PNG), the
//! sanity and faithfulness checks of the methods (`--sanity`), and the timing of one explanation
//! against Captum's (`--bench`). The work is done by [`crate::ml::explain`]; this file parses
//! arguments, loads the run and prints.

use std::io::IsTerminal;
use std::path::PathBuf;

use candle_core::Tensor;
use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use serde::{Deserialize, Serialize};

use super::{CheckpointArg, SplitArg, invalid};
use crate::error::{Error, Result};
use crate::ml::data::InputShape;
use crate::ml::data::preprocess::Prepared;
use crate::ml::explain::bench::{Timing, time_explanation};
use crate::ml::explain::sanity::{SanityReport, sanity};
use crate::ml::explain::{
    Baseline, Completeness, ExplainedInput, Explainer, Explanation, METHOD_NAMES, Method, MethodKind, Output,
    Rule, picture,
};
use crate::ml::train::{Trained, load_trained};
use crate::store::RunStore;

/// Arguments of `vigil explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id, a unique prefix or suffix of one, or `latest`.
    pub run: String,
    /// Split the data file as it is now instead of using the splits the run recorded when it
    /// trained (refused by default when the file changed since).
    #[arg(long)]
    pub split_from_file: bool,
    /// Which example of the split to explain (0-based).
    #[arg(long, required_unless_present = "sanity")]
    pub sample: Option<usize>,
    /// The split the example comes from.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Attribution method: saliency, grad-input, ig, smoothgrad or occlusion (default ig; with
    /// --sanity, all of them unless one is named).
    #[arg(long)]
    pub method: Option<String>,
    /// Integrated gradients: points on the path from the baseline (default 50).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Integrated gradients: quadrature rule, gauss-legendre (Captum's default), riemann-left,
    /// riemann-right, riemann-middle or riemann-trapezoid.
    #[arg(long)]
    pub rule: Option<String>,
    /// Integrated gradients and occlusion: `zero` or a number, in the model's input space.
    #[arg(long, allow_hyphen_values = true)]
    pub baseline: Option<String>,
    /// SmoothGrad: noise standard deviation as a fraction of the input's range (default 0.15).
    #[arg(long, allow_negative_numbers = true)]
    pub noise: Option<f32>,
    /// SmoothGrad: noisy copies averaged (default 50).
    #[arg(long)]
    pub noise_samples: Option<usize>,
    /// Occlusion: window size in pixels, steps, features or tokens.
    #[arg(long)]
    pub window: Option<usize>,
    /// Occlusion: how far the window moves (at most the window).
    #[arg(long)]
    pub stride: Option<usize>,
    /// The class to attribute, by name or index (default: the predicted class).
    #[arg(long)]
    pub target: Option<String>,
    /// The output attributed: the target's logit or its probability.
    #[arg(long, value_enum, default_value = "logit")]
    pub output: OutputArg,
    /// Which checkpoint to load.
    #[arg(long, value_enum, default_value = "best")]
    pub checkpoint: CheckpointArg,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the input and its heatmap side by side to this PNG file.
    #[arg(long, value_name = "FILE", value_parser = super::output_file)]
    pub png: Option<PathBuf>,
    /// Run the parameter-randomisation and deletion tests of the methods on the split.
    #[arg(long, conflicts_with_all = ["sample", "png", "target", "bench"])]
    pub sanity: bool,
    /// --sanity: how many examples of the split to check (the first ones).
    #[arg(long, default_value_t = 100)]
    pub inputs: usize,
    /// Seed of SmoothGrad's noise, re-initialised layers and random deletion orders.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Time the explanation of the sample (median of --repeats after a warm-up).
    #[arg(long, conflicts_with_all = ["png"])]
    pub bench: bool,
    /// --bench: timed repeats.
    #[arg(long, default_value_t = 30, value_parser = super::at_least_one)]
    pub repeats: usize,
    /// --bench: a JSON file written by bench/captum_reference.py for the same run and sample;
    /// its attributions are compared with ours and its timing shown beside ours.
    #[arg(long, value_name = "FILE", requires = "bench", value_parser = super::existing_file)]
    pub reference: Option<PathBuf>,
}

/// The attributed output on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputArg {
    Logit,
    Probability,
}

/// Runs `vigil explain`.
pub fn run(store: &RunStore, args: Args) -> Result<()> {
    let dir = store.resolve(&args.run)?;
    let trained = load_trained(&dir, args.checkpoint.into())?;
    let data =
        crate::ml::data::splits::for_run(&dir, &trained.spec, &trained.pipeline, args.split_from_file)?;
    let (split_name, part) = match args.split {
        SplitArg::Train => ("train", &data.train),
        SplitArg::Validation => ("validation", &data.validation),
        SplitArg::Test => ("test", &data.test),
    };
    let output = match args.output {
        OutputArg::Logit => Output::Logit,
        OutputArg::Probability => Output::Probability,
    };
    let explainer = Explainer::new(&trained.network).output(output);
    if args.sanity {
        let methods = match &args.method {
            Some(name) => vec![method_from_args(name, &args, &trained.network.input)?],
            // Attention rollout only where there is attention to roll out.
            None => METHOD_NAMES
                .iter()
                .filter(|n| **n != MethodKind::Rollout.as_str() || trained.network.encoder().is_some())
                .map(|n| method_from_args(n, &args, &trained.network.input))
                .collect::<Result<Vec<_>>>()?,
        };
        return run_sanity(&explainer, &trained, part, split_name, &dir.id, &methods, &args);
    }
    let name = args.method.as_deref().unwrap_or("ig");
    let method = method_from_args(name, &args, &trained.network.input)?;
    if method == Method::Rollout && (args.target.is_some() || args.output != OutputArg::Logit) {
        return Err(invalid(
            "--target and --output apply to the gradient and occlusion methods: attention rollout \
             follows the attention to the pooled representation, the same for every class",
        ));
    }
    let n = args.sample.unwrap_or(0);
    if n >= part.labels.len() {
        return Err(invalid(format!(
            "--sample {n} is out of range: the {split_name} split of {} has {} examples (0 to {})",
            dir.id,
            part.labels.len(),
            part.labels.len().saturating_sub(1)
        )));
    }
    let classes = &trained.pipeline.classes;
    let target = args.target.as_deref().map(|t| parse_target(t, classes)).transpose()?;
    let input = part.features.batch(&[n], trained.network.device())?;
    let targets = target.map(|t| vec![t]);
    let label = part.labels[n] as usize;
    let caption = format!("{} / {split_name} sample {n} / label {}", dir.id, class_name(classes, label));

    if args.bench {
        return run_bench(&explainer, &input, &method, targets.as_deref(), &args, &caption);
    }
    let mut e = explainer.explain(&input, &method, targets.as_deref())?.remove(0);
    if let Some(vocab) = trained.pipeline.vocab() {
        e = e.with_words(vocab);
    }
    if let Some(path) = &args.png {
        let bytes = picture::render_png(&e, &caption, classes)?;
        crate::store::write_atomic(path, &bytes)?;
    }
    if args.json {
        let json = ExplainJson::new(&dir.id, split_name, n, label, classes, &e);
        println!("{}", serde_json::to_string_pretty(&json).expect("serialises"));
    } else {
        print_summary(&e, &caption, classes);
        if let Some(path) = &args.png {
            println!("picture written to {}", path.display());
        }
    }
    Ok(())
}

/// The method named on the command line with the settings given there, refusing settings that
/// belong to another method (they would be silently ignored otherwise).
fn method_from_args(name: &str, args: &Args, input: &InputShape) -> Result<Method> {
    let mut method = Method::named(name, input)?;
    let baseline = args.baseline.as_deref().map(parse_baseline).transpose()?;
    let only = |flag: &str, set: bool, methods: &str| -> Result<()> {
        if set && !methods.split(',').any(|m| m == method.name()) {
            return Err(invalid(format!(
                "{flag} applies to {}, not to {}",
                methods.replace(',', " and "),
                method.name()
            )));
        }
        Ok(())
    };
    // With --sanity and no --method, settings for one method apply to it alone.
    let all = args.sanity && args.method.is_none();
    if !all {
        only("--steps", args.steps.is_some(), "ig")?;
        only("--rule", args.rule.is_some(), "ig")?;
        only("--baseline", baseline.is_some(), "ig,occlusion")?;
        only("--noise", args.noise.is_some(), "smoothgrad")?;
        only("--noise-samples", args.noise_samples.is_some(), "smoothgrad")?;
        only("--window", args.window.is_some(), "occlusion")?;
        only("--stride", args.stride.is_some(), "occlusion")?;
    }
    match &mut method {
        Method::Ig { steps, rule, baseline: b } => {
            if let Some(s) = args.steps {
                *steps = s;
            }
            if let Some(r) = &args.rule {
                *rule = Rule::parse(r)?;
            }
            if let Some(v) = &baseline {
                *b = v.clone();
            }
        }
        Method::SmoothGrad { noise_level, samples, seed } => {
            if let Some(v) = args.noise {
                *noise_level = v;
            }
            if let Some(v) = args.noise_samples {
                *samples = v;
            }
            *seed = args.seed;
        }
        Method::Occlusion { window, stride, baseline: b } => {
            if let Some(w) = args.window {
                *window = w;
                if args.stride.is_none() {
                    *stride = (w / 2).max(1);
                }
            }
            if let Some(s) = args.stride {
                *stride = s;
            }
            if let Some(v) = &baseline {
                *b = v.clone();
            }
        }
        Method::Saliency | Method::GradInput | Method::Rollout => {}
    }
    Ok(method)
}

fn parse_baseline(text: &str) -> Result<Baseline> {
    if text == "zero" {
        return Ok(Baseline::Zero);
    }
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(Baseline::Constant(v)),
        _ => Err(invalid(format!("--baseline {text:?} must be `zero` or a number"))),
    }
}

/// A class by name, or by index when no class has that name.
fn parse_target(text: &str, classes: &[String]) -> Result<usize> {
    if let Some(i) = classes.iter().position(|c| c == text) {
        return Ok(i);
    }
    match text.parse::<usize>() {
        Ok(i) if i < classes.len() => Ok(i),
        _ => Err(invalid(format!(
            "--target {text:?} is not a class of this run; the classes are {} (or an index 0 to {})",
            classes.join(", "),
            classes.len().saturating_sub(1)
        ))),
    }
}

fn class_name(classes: &[String], c: usize) -> String {
    classes.get(c).cloned().unwrap_or_else(|| c.to_string())
}

/// What `--json` prints.
#[derive(Debug, Serialize, Deserialize)]
struct ExplainJson {
    run: String,
    split: String,
    sample: usize,
    label: usize,
    label_name: String,
    method: String,
    settings: Method,
    output: Output,
    target: usize,
    target_name: String,
    predicted: usize,
    predicted_name: String,
    classes: Vec<String>,
    probabilities: Vec<f32>,
    /// The shape of `attributions`: the input's, or the number of tokens for text.
    shape: Vec<usize>,
    attributions: Vec<f32>,
    input: ExplainedInput,
    /// Integrated gradients: |Σ attributions − (F(x) − F(baseline))|.
    completeness_delta: Option<f64>,
    completeness: Option<Completeness>,
}

impl ExplainJson {
    fn new(run: &str, split: &str, sample: usize, label: usize, classes: &[String], e: &Explanation) -> Self {
        ExplainJson {
            run: run.into(),
            split: split.into(),
            sample,
            label,
            label_name: class_name(classes, label),
            method: e.method.name().into(),
            settings: e.method.clone(),
            output: e.output,
            target: e.target,
            target_name: class_name(classes, e.target),
            predicted: e.predicted,
            predicted_name: class_name(classes, e.predicted),
            classes: classes.to_vec(),
            probabilities: e.probabilities.clone(),
            shape: match e.layout {
                InputShape::Text { max_len } => vec![max_len],
                ref other => other.dims(),
            },
            attributions: e.attributions.clone(),
            input: e.input.clone(),
            completeness_delta: e.completeness.map(|c| c.gap),
            completeness: e.completeness,
        }
    }
}

fn print_summary(e: &Explanation, caption: &str, classes: &[String]) {
    println!("{caption}");
    let ranked = e.ranked_classes();
    let top: Vec<String> = ranked
        .iter()
        .take(3)
        .map(|(c, p)| format!("{} {:.2}%", class_name(classes, *c), 100.0 * p))
        .collect();
    println!("predicted {}   (top 3: {})", class_name(classes, e.predicted), top.join(", "));
    let output = match e.output {
        Output::Logit => "logit",
        Output::Probability => "probability",
    };
    if e.method == Method::Rollout {
        println!("{}: each token's share of the pooled representation, for every class", e.method.describe());
    } else {
        println!("{} for class {} ({output})", e.method.describe(), class_name(classes, e.target));
    }
    if let Some(c) = &e.completeness {
        println!(
            "completeness: sum of attributions {:.5}, F(x) - F(baseline) {:.5}, gap {:.2e} (relative {:.2e})",
            c.attribution_sum,
            c.output - c.baseline_output,
            c.gap,
            c.relative_gap()
        );
    }
    println!();
    let max = e.attributions.iter().fold(0f32, |m, v| m.max(v.abs()));
    match (&e.layout, &e.input) {
        (InputShape::Image { channels, height, width }, ExplainedInput::Dense(x)) => {
            if *height <= 32 && *width <= 32 {
                print_image_grids(x, &e.attributions, *channels, *height, *width, max);
            }
            let top: Vec<String> = e
                .top(8)
                .iter()
                .map(|&i| {
                    let p = i % (height * width);
                    let pos = if *channels > 1 {
                        format!("c{} ({}, {})", i / (height * width), p / width, p % width)
                    } else {
                        format!("({}, {})", p / width, p % width)
                    };
                    format!("{pos} {:+.4}", e.attributions[i])
                })
                .collect();
            println!("most important pixels (row, column): {}", top.join("  "));
        }
        (InputShape::Sequence { steps, features }, ExplainedInput::Dense(_)) => {
            let per_step: Vec<f32> =
                (0..*steps).map(|t| e.attributions[t * features..(t + 1) * features].iter().sum()).collect();
            let smax = per_step.iter().fold(0f32, |m, v| m.max(v.abs()));
            println!("attribution per step (+ for the target, - against; steps 0 to {}):", steps - 1);
            println!("  |{}|", per_step.iter().map(|&v| signed_char(v, smax)).collect::<String>());
            let mut order: Vec<usize> = (0..*steps).collect();
            order.sort_by(|&a, &b| per_step[b].abs().total_cmp(&per_step[a].abs()));
            let top: Vec<String> =
                order.iter().take(8).map(|&t| format!("step {t} {:+.4}", per_step[t])).collect();
            println!("most important steps: {}", top.join("  "));
        }
        (InputShape::Tabular { .. }, ExplainedInput::Dense(x)) => {
            println!("most important features:");
            for i in e.top(10) {
                println!("  feature {i:>4} = {:<10.4} {:+.5}", x[i], e.attributions[i]);
            }
        }
        (InputShape::Text { .. }, ExplainedInput::Tokens { ids, words }) => {
            let word = |i: usize| {
                words.as_ref().and_then(|w| w.get(i).cloned()).unwrap_or_else(|| format!("#{}", ids[i]))
            };
            let line: Vec<String> = (0..ids.len())
                .filter(|&i| ids[i] != 0)
                .map(|i| format!("{}({:+.3})", word(i), e.attributions[i]))
                .collect();
            println!("tokens: {}", line.join(" "));
            let top: Vec<String> =
                e.top(5).iter().map(|&i| format!("{} {:+.4}", word(i), e.attributions[i])).collect();
            println!("most important tokens: {}", top.join("  "));
            let real: Vec<f32> = (0..ids.len()).filter(|&i| ids[i] != 0).map(|i| e.attributions[i]).collect();
            let spread = real.iter().fold(0f32, |m, v| m.max((v - real[0]).abs()));
            if real.len() > 1 && max > 0.0 && spread <= 1e-5 * max {
                println!(
                    "every token has the same attribution: this model averages its embeddings, so the \
                     gradient is the same for each token; grad-input, ig or occlusion tell tokens apart"
                );
            }
        }
        _ => {}
    }
    if max == 0.0 {
        println!("every attribution is zero: the target output does not change with this input");
    }
}

/// Two characters per cell: `##` strong evidence for the target, `++` for, ` +` weak; `==`,
/// `--`, ` -` against; blank for about zero.
fn signed_char(v: f32, max: f32) -> char {
    let level = if max > 0.0 { (v.abs() / max * 3.0).round() as usize } else { 0 };
    match (v >= 0.0, level) {
        (_, 0) => ' ',
        (true, 1) => '.',
        (true, 2) => '+',
        (true, _) => '#',
        (false, 1) => ',',
        (false, 2) => '-',
        (false, _) => '=',
    }
}

fn print_image_grids(x: &[f32], a: &[f32], channels: usize, h: usize, w: usize, max: f32) {
    const RAMP: &[u8] = b" .:-=+*#%@";
    let plane = h * w;
    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(*v), h.max(*v)));
    let amax = max * channels as f32;
    let pad = 2 * w + 4;
    println!("  {:<pad$}attribution (# + . for the target, = - , against)", "input");
    for i in 0..h {
        let mut left = String::new();
        let mut right = String::new();
        for j in 0..w {
            let p = i * w + j;
            let v = (0..channels).map(|k| x[k * plane + p]).sum::<f32>() / channels as f32;
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
            let ch = RAMP[((t * (RAMP.len() - 1) as f32).round() as usize).min(RAMP.len() - 1)] as char;
            left.push(ch);
            left.push(ch);
            let s = signed_char((0..channels).map(|k| a[k * plane + p]).sum(), amax);
            right.push(s);
            right.push(s);
        }
        println!("  |{left}|  |{right}|");
    }
    println!();
}

fn run_sanity(
    explainer: &Explainer,
    trained: &Trained,
    part: &Prepared,
    split: &str,
    run: &str,
    methods: &[Method],
    args: &Args,
) -> Result<()> {
    let n = args.inputs.min(part.labels.len());
    if n < 2 {
        return Err(invalid(format!(
            "--inputs {} is too few: the checks need at least 2 examples",
            args.inputs
        )));
    }
    let idx: Vec<usize> = (0..n).collect();
    let inputs = part.features.batch(&idx, trained.network.device())?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "checking {} methods and the control on {n} examples: each method runs again after each of {} layers ...",
            methods.len(),
            trained.network.layer_names().len()
        );
    }
    let report = sanity(explainer, trained.spec.init, &inputs, &part.labels[..n], methods, args.seed)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
    } else {
        print_sanity(&report, run, split);
    }
    Ok(())
}

fn table(headers: Vec<String>) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(headers.into_iter().map(Cell::new));
    t
}

fn print_sanity(r: &SanityReport, run: &str, split: &str) {
    let m = &r.randomisation;
    println!(
        "model-parameter randomisation test: {run}, first {} {split} examples; mean Spearman rank \
         correlation of |attributions| with the trained model's over the non-zero input values, \
         after re-initialising each layer (output first). The verdict is judged on the last layer \
         column: a method passes when it is below {}; the control must fail",
        m.inputs, m.threshold
    );
    let mut headers = vec!["method".to_string()];
    headers.extend(m.layers.iter().map(|l| format!("+{l}")));
    headers.push("verdict".into());
    headers.push("all values (not judged)".into());
    let fmt = |v: &Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    let mut t = table(headers);
    for c in &m.curves {
        let mut row = vec![match &c.control {
            Some(what) => format!("{} ({what})", c.name),
            None => c.name.clone(),
        }];
        row.extend(c.correlations.iter().map(fmt));
        row.push(c.verdict(m.threshold));
        row.push(fmt(c.correlations_all_values.last().unwrap_or(&None)));
        t.add_row(row);
    }
    let verdict_column = m.layers.len() + 1;
    for i in (1..t.column_count()).filter(|&i| i != verdict_column) {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{t}");
    println!("(\"all values\": the correlation after full randomisation with zero input values counted too)");
    let d = &r.deletion;
    println!();
    println!(
        "deletion test: features set to zero most important first, {} steps; area under the \
         accuracy curve (lower is more faithful). A method passes below random order and the \
         model-independent control; the control is the reference, not judged",
        d.fractions.len() - 1
    );
    let mut t =
        table(vec!["order".into(), "AUC".into(), "accuracy at 0/25/50/75/100%".into(), "verdict".into()]);
    let at = |acc: &[f64]| {
        let k = acc.len() - 1;
        [0, k / 4, k / 2, 3 * k / 4, k]
            .iter()
            .map(|&i| format!("{:.2}", acc[i]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let control = d.curves.iter().find(|c| c.name == crate::ml::explain::sanity::CONTROL_NAME);
    for c in d.curves.iter().chain(std::iter::once(&d.random)) {
        let verdict = c.verdict(&d.random, control);
        t.add_row(vec![c.name.clone(), format!("{:.4}", c.auc), at(&c.accuracy), verdict]);
    }
    if let Some(col) = t.column_mut(1) {
        col.set_cell_alignment(CellAlignment::Right);
    }
    println!("{t}");
}

/// What bench/captum_reference.py writes.
#[derive(Debug, Deserialize)]
struct Reference {
    tool: String,
    sample: usize,
    target: usize,
    steps: usize,
    attributions: Vec<f32>,
    median_ms: f64,
    #[serde(default)]
    delta: Option<f64>,
    #[serde(default)]
    threads: Option<usize>,
}

fn run_bench(
    explainer: &Explainer,
    input: &Tensor,
    method: &Method,
    targets: Option<&[usize]>,
    args: &Args,
    caption: &str,
) -> Result<()> {
    let (mut last, timing) = time_explanation(explainer, input, method, targets, 3, args.repeats)?;
    let e = last.remove(0);
    let reference = args
        .reference
        .as_ref()
        .map(|path| -> Result<Reference> {
            let text = std::fs::read_to_string(path).map_err(|err| Error::io(path, err))?;
            serde_json::from_str(&text)
                .map_err(|err| Error::data(path, format!("not a Captum reference file: {err}")))
        })
        .transpose()?;
    let comparison = match &reference {
        Some(r) => {
            if r.attributions.len() != e.attributions.len() {
                return Err(invalid(format!(
                    "the reference has {} attributions, this input has {}: was it made for another run?",
                    r.attributions.len(),
                    e.attributions.len()
                )));
            }
            let Method::Ig { steps, .. } = &e.method else {
                return Err(invalid("--reference compares integrated gradients; use --method ig"));
            };
            if r.sample != args.sample.unwrap_or(0) || r.target != e.target || r.steps != *steps {
                return Err(invalid(format!(
                    "the reference is for sample {}, target {}, {} steps; this is sample {}, target {}, {steps} steps",
                    r.sample,
                    r.target,
                    r.steps,
                    args.sample.unwrap_or(0),
                    e.target
                )));
            }
            let max_abs =
                e.attributions.iter().zip(&r.attributions).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            Some(max_abs)
        }
        None => None,
    };
    if args.json {
        let v = serde_json::json!({
            "method": e.method,
            "input": caption,
            "timing": timing,
            "completeness_delta": e.completeness.map(|c| c.gap),
            "reference": reference.as_ref().map(|r| serde_json::json!({
                "tool": r.tool, "median_ms": r.median_ms, "delta": r.delta, "threads": r.threads,
                "max_abs_difference": comparison,
                "time_ratio": timing.median_ms / r.median_ms,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
        return Ok(());
    }
    print_timing(&e, &timing, caption);
    if let (Some(r), Some(diff)) = (&reference, comparison) {
        println!(
            "{}: median {:.2} ms{}; vigil / reference time ratio {:.2}",
            r.tool,
            r.median_ms,
            r.threads.map(|t| format!(" ({t} threads)")).unwrap_or_default(),
            timing.median_ms / r.median_ms
        );
        let verdict = if diff <= 1e-4 { "agree to 1e-4" } else { "DIFFER by more than 1e-4" };
        println!("attributions: largest absolute difference {diff:.2e} ({verdict})");
        if let (Some(d), Some(c)) = (r.delta, e.completeness) {
            println!("completeness gap: reference {d:.2e}, vigil {:.2e}", c.gap);
        }
    }
    Ok(())
}

fn print_timing(e: &Explanation, t: &Timing, caption: &str) {
    println!("{caption}");
    println!("{}", e.method.describe());
    println!(
        "vigil: median {:.2} ms (min {:.2}, max {:.2}) over {} after 3 warm-up runs; CPU threads: {}",
        t.median_ms,
        t.min_ms,
        t.max_ms,
        crate::text::plural(t.repeats as u64, "repeat", "repeats"),
        t.threads
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_by_name_then_index() {
        let classes: Vec<String> = ["cat", "dog", "2"].iter().map(|s| s.to_string()).collect();
        assert_eq!(parse_target("dog", &classes).unwrap(), 1);
        assert_eq!(parse_target("0", &classes).unwrap(), 0);
        // A class named "2" wins over index 2... which is the same class here.
        assert_eq!(parse_target("2", &classes).unwrap(), 2);
        let err = parse_target("7", &classes).unwrap_err().to_string();
        assert!(err.contains("cat, dog, 2"), "{err}");
    }

    #[test]
    fn baselines() {
        assert_eq!(parse_baseline("zero").unwrap(), Baseline::Zero);
        assert_eq!(parse_baseline("-0.5").unwrap(), Baseline::Constant(-0.5));
        assert!(parse_baseline("nan").is_err());
        assert!(parse_baseline("black").is_err());
    }
}
