//! `vigil attack`: a robustness curve of a run (FGSM or PGD at several ε over a split), printed
//! as a table or JSON, with the adversarial examples saved with the run for the console's
//! Explain view. The work is done by [`crate::ml::attack`]; this file parses arguments, loads the
//! run and prints.

use std::io::IsTerminal;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use serde::Serialize;

use super::{CheckpointArg, SplitArg, invalid};
use crate::error::Result;
use crate::ml::attack::curve::{Curve, CurveOptions, robustness_curve, save};
use crate::ml::attack::detector::{self, Detector};
use crate::ml::attack::hotflip::{self, FlipOptions, FlipReport};
use crate::ml::attack::{Attack, AttackMethod, Norm, fmt_num, norm_name};
use crate::ml::train::load_trained;
use crate::store::{CheckpointKind, RunStore};

/// Arguments of `vigil attack`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id, a unique prefix or suffix of one, or `latest`.
    pub run: String,
    /// Split the data file as it is now instead of using the splits the run recorded when it
    /// trained (refused by default when the file changed since).
    #[arg(long)]
    pub split_from_file: bool,
    /// The attack: fgsm (one step of ε), pgd (projected gradient descent; on a text model in
    /// the token-embedding space), or hotflip (text models: swaps whole tokens).
    #[arg(long, visible_alias = "attack", value_enum, default_value = "pgd")]
    pub method: MethodArg,
    /// FGSM/PGD: radii to attack with, comma-separated, in the units of the model's preprocessed
    /// input (default 0,0.05,0.1,0.2,0.3).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub eps: Vec<f32>,
    /// FGSM/PGD: the norm that bounds the perturbation (default linf).
    #[arg(long, value_enum)]
    pub norm: Option<NormArg>,
    /// HotFlip: the most tokens changed per example (default 3).
    #[arg(long)]
    pub flips: Option<usize>,
    /// HotFlip: the flips per example and step re-checked with a real forward pass (default 8).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// PGD: gradient steps (default 20).
    #[arg(long)]
    pub steps: Option<usize>,
    /// PGD: a fixed step size (default 2.5 ε / steps, a step size per ε).
    #[arg(long, allow_negative_numbers = true)]
    pub step_size: Option<f32>,
    /// PGD: start from a random point of the ε-ball (Madry et al.) instead of the clean input
    /// (IBM ART's default, and ours).
    #[arg(long)]
    pub random_start: bool,
    /// PGD: keep every example's last iterate, as IBM ART does, instead of the first one that
    /// fooled the model (the default, as AutoAttack keeps its best point).
    #[arg(long)]
    pub last_iterate: bool,
    /// Push every input toward this class (a name or index) instead of away from its own.
    #[arg(long, value_name = "CLASS")]
    pub targeted: Option<String>,
    /// The split to attack.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Which checkpoint to attack.
    #[arg(long, value_enum, default_value = "best")]
    pub checkpoint: CheckpointArg,
    /// Seed of PGD's random starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not save the adversarial examples with the run.
    #[arg(long)]
    pub no_save: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The attack on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    Fgsm,
    Pgd,
    Hotflip,
}

/// The norm on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NormArg {
    Linf,
    L2,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct AttackJson<'a> {
    run: &'a str,
    method: &'static str,
    norm: &'static str,
    attack: String,
    steps: usize,
    step_size: Option<f32>,
    random_start: bool,
    targeted: Option<usize>,
    split: &'a str,
    checkpoint: &'a str,
    examples: usize,
    space: &'a str,
    units: &'a str,
    range: Option<&'a str>,
    points: &'a [crate::ml::attack::curve::CurvePoint],
    detector: Option<&'a Detector>,
    saved: bool,
    /// Seconds the attacks took (every ε, detector included; loading and saving excluded).
    seconds: f64,
}

/// Runs `vigil attack`.
pub fn run(store: &RunStore, args: Args) -> Result<()> {
    if args.method == MethodArg::Hotflip {
        return run_hotflip(store, args);
    }
    for (flag, set) in [("--flips", args.flips.is_some()), ("--candidates", args.candidates.is_some())] {
        if set {
            return Err(invalid(format!("{flag} applies to hotflip, which swaps tokens of a text model")));
        }
    }
    let mut eps = if args.eps.is_empty() { vec![0.0, 0.05, 0.1, 0.2, 0.3] } else { args.eps.clone() };
    if let Some(bad) = eps.iter().find(|e| !(e.is_finite() && **e >= 0.0)) {
        return Err(invalid(format!("--eps {bad} is not a radius: each ε must be a number >= 0")));
    }
    eps.sort_by(|a, b| a.total_cmp(b));
    eps.dedup();
    let method = match args.method {
        MethodArg::Fgsm => AttackMethod::Fgsm,
        MethodArg::Pgd | MethodArg::Hotflip => AttackMethod::Pgd,
    };
    let norm = match args.norm {
        Some(NormArg::L2) => Norm::L2,
        Some(NormArg::Linf) | None => Norm::Linf,
    };
    if method == AttackMethod::Fgsm {
        refuse_flags(
            &[
                ("--steps", args.steps.is_some()),
                ("--step-size", args.step_size.is_some()),
                ("--random-start", args.random_start),
                ("--last-iterate", args.last_iterate),
            ],
            "applies to pgd; fgsm takes one step of ε from the clean input",
        )?;
    }
    if let Some(s) = args.step_size
        && !(s.is_finite() && s > 0.0)
    {
        return Err(invalid(format!("--step-size {s} must be a positive number")));
    }
    let dir = store.resolve(&args.run)?;
    let trained = load_trained(&dir, args.checkpoint.into())?;
    let classes = trained.pipeline.classes.clone();
    let target = args.targeted.as_deref().map(|t| parse_class(t, &classes)).transpose()?;
    let mut attack = match method {
        AttackMethod::Fgsm => Attack::fgsm(norm, 0.0),
        AttackMethod::Pgd => Attack::pgd(norm, 0.0, args.steps.unwrap_or(20)),
    };
    attack.target = target;
    attack.seed = args.seed;
    attack.random_start = method == AttackMethod::Pgd && args.random_start;
    attack.keep_first_success = method == AttackMethod::Pgd && !args.last_iterate;
    attack.check(classes.len())?;
    let data =
        crate::ml::data::splits::for_run(&dir, &trained.spec, &trained.pipeline, args.split_from_file)?;
    let (split, part) = match args.split {
        SplitArg::Train => ("train", &data.train),
        SplitArg::Validation => ("validation", &data.validation),
        SplitArg::Test => ("test", &data.test),
    };
    let checkpoint = CheckpointKind::from(args.checkpoint).as_str();
    // The run's detector; a finished run trained before detectors existed gets one now.
    // (Fitting is deterministic, so a run whose data allowed none is told the same reason again.)
    let mut det = detector::load(&dir)?;
    let finished = dir.info().is_ok_and(|i| !i.status.is_active());
    if det.is_err() && finished && args.checkpoint == CheckpointArg::Best {
        det = detector::fit_for_run(&dir, &trained.network, &data)?;
        // A signed run's manifest is what was signed: leave it, and the detector outside it.
        if !dir.file("signature.json").exists() {
            dir.write_manifest()?;
        }
    }
    if let (Err(reason), false) = (&det, args.json) {
        eprintln!("{reason}; the attacks are measured without the detector's column");
    }
    let det = det.ok();
    if !args.json && std::io::stderr().is_terminal() {
        eprintln!(
            "attacking {} with {} at {} radii on {} {split} examples ...",
            dir.id,
            attack.describe(),
            eps.len(),
            part.labels.len()
        );
    }
    let opts = CurveOptions {
        attack: attack.clone(),
        eps,
        fixed_step: args.step_size,
        detector: det.as_ref(),
        split: split.into(),
        checkpoint: checkpoint.into(),
    };
    let t0 = std::time::Instant::now();
    let (mut curve, sets) = robustness_curve(&trained.network, &trained.pipeline, part, &opts)?;
    let seconds = t0.elapsed().as_secs_f64();
    if !args.no_save {
        save(&dir, &mut curve, &sets)?;
    }
    if args.json {
        let out = AttackJson {
            run: &dir.id,
            method: match method {
                AttackMethod::Fgsm => "fgsm",
                AttackMethod::Pgd => "pgd",
            },
            norm: match norm {
                Norm::Linf => "linf",
                Norm::L2 => "l2",
            },
            attack: attack.describe().replace(&format!(" of {}", fmt_num(attack.step_size)), ""),
            steps: attack.steps,
            step_size: curve.step_size,
            random_start: curve.random_start,
            targeted: target,
            split,
            checkpoint,
            examples: curve.examples,
            space: &curve.space,
            units: &curve.units,
            range: curve.range.as_deref(),
            points: &curve.points,
            detector: det.as_ref(),
            saved: !args.no_save,
            seconds,
        };
        println!("{}", serde_json::to_string_pretty(&out).expect("serialises"));
    } else {
        let scale =
            match trained.pipeline.token_words(trained.network.token_table().map_or(0, |t| t.dims()[0]))? {
                Some(w) => crate::ml::attack::embedding_scale(&trained.network, &w.special).ok(),
                None => None,
            };
        print_curve(&dir.id, &curve, det.as_ref(), &classes, !args.no_save, store, scale);
    }
    Ok(())
}

/// What `--method hotflip --json` prints: the report as saved, the run and the time.
#[derive(Debug, Serialize)]
struct HotflipJson<'a> {
    run: &'a str,
    method: &'static str,
    #[serde(flatten)]
    report: &'a FlipReport,
    saved: bool,
    /// Seconds the attack took (loading and saving excluded).
    seconds: f64,
}

/// Refuses the first flag that was given but does not apply, saying `why` after its name.
fn refuse_flags(flags: &[(&str, bool)], why: &str) -> Result<()> {
    match flags.iter().find(|(_, set)| *set) {
        Some((flag, _)) => Err(invalid(format!("{flag} {why}"))),
        None => Ok(()),
    }
}

/// `vigil attack RUN --method hotflip`: token flips on a text model.
fn run_hotflip(store: &RunStore, args: Args) -> Result<()> {
    refuse_flags(
        &[
            ("--eps", !args.eps.is_empty()),
            ("--norm", args.norm.is_some()),
            ("--steps", args.steps.is_some()),
            ("--step-size", args.step_size.is_some()),
            ("--random-start", args.random_start),
            ("--last-iterate", args.last_iterate),
        ],
        "applies to fgsm and pgd; hotflip changes whole tokens (set how many with --flips)",
    )?;
    let dir = store.resolve(&args.run)?;
    let trained = load_trained(&dir, args.checkpoint.into())?;
    if !trained.network.takes_tokens() {
        let shape = trained.pipeline.raw_shape.as_ref().map(|s| format!(" (inputs of shape {:?})", s.dims()));
        return Err(invalid(format!(
            "--method hotflip swaps tokens of a text model, but {} takes numbers{}: attack it with \
             --method fgsm or pgd",
            dir.id,
            shape.unwrap_or_default()
        )));
    }
    let classes = trained.pipeline.classes.clone();
    let target = args.targeted.as_deref().map(|t| parse_class(t, &classes)).transpose()?;
    let checkpoint = CheckpointKind::from(args.checkpoint).as_str();
    let data =
        crate::ml::data::splits::for_run(&dir, &trained.spec, &trained.pipeline, args.split_from_file)?;
    let (split, part) = match args.split {
        SplitArg::Train => ("train", &data.train),
        SplitArg::Validation => ("validation", &data.validation),
        SplitArg::Test => ("test", &data.test),
    };
    let opts = FlipOptions {
        max_flips: args.flips.unwrap_or(3),
        candidates: args.candidates.unwrap_or(8),
        target,
        split: split.into(),
        checkpoint: checkpoint.into(),
    };
    opts.check(classes.len())?;
    if !args.json && std::io::stderr().is_terminal() {
        eprintln!(
            "attacking {} with HotFlip (up to {} tokens, {} candidates a step) on {} {split} examples ...",
            dir.id,
            opts.max_flips,
            opts.candidates,
            part.labels.len()
        );
    }
    let t0 = std::time::Instant::now();
    let report = hotflip::hotflip(&trained.network, &trained.pipeline, part, &opts)?;
    let seconds = t0.elapsed().as_secs_f64();
    if !args.no_save {
        hotflip::save(&dir, &report)?;
    }
    if args.json {
        let out =
            HotflipJson { run: &dir.id, method: "hotflip", report: &report, saved: !args.no_save, seconds };
        println!("{}", serde_json::to_string_pretty(&out).expect("serialises"));
        return Ok(());
    }
    let class = |c: usize| classes.get(c).cloned().unwrap_or_else(|| c.to_string());
    let goal = match target {
        Some(t) => format!("targeted at {}", class(t)),
        None => "untargeted".into(),
    };
    println!(
        "{}: HotFlip ({goal}, greedy, {} candidate flips re-checked a step, at most {} tokens) on the {split} \
         split ({} examples, {} attacked), {checkpoint} checkpoint",
        dir.id, report.candidates, report.max_flips, report.examples, report.attacked
    );
    println!(
        "each flip swaps one token for another word of the vocabulary, so every adversarial example is a \
         real text; padding and special tokens are never changed nor put in"
    );
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(["tokens changed", "accuracy", "success rate", "fooled"].map(Cell::new));
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    t.add_row(vec!["0".into(), pct(report.clean_accuracy), "-".into(), "-".into()]);
    for p in &report.points {
        t.add_row(vec![
            format!("≤ {}", p.flips),
            pct(p.accuracy),
            pct(p.success_rate),
            format!("{} of {}", p.fooled, report.attacked),
        ]);
    }
    for i in 0..t.column_count() {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{t}");
    match target {
        Some(_) => println!(
            "success rate: the share of the examples not of the target class predicted as it with at most \
             that many tokens changed"
        ),
        None => println!(
            "success rate: the share of the examples the model got right that it gets wrong with at most \
             that many tokens changed"
        ),
    }
    if !report.adversarial.is_empty() {
        println!(
            "as text: {} of the {} adversarial sentences shown still fool the model when tokenised anew \
             and sent, as a client would",
            report.fool_as_text,
            report.adversarial.len()
        );
        println!("adversarial sentences (changed tokens in *stars*), fewest flips first:");
        for e in report.adversarial.iter().take(8) {
            println!(
                "  #{} {} → {} ({} token{}): {}",
                e.index,
                class(e.label),
                class(e.adversarial_pred),
                e.flips.len(),
                if e.flips.len() == 1 { "" } else { "s" },
                e.adversarial
            );
            println!("      was: {}", e.clean);
        }
    }
    if !args.no_save {
        println!(
            "saved in {} (the console's Security view shows them: 9)",
            store.root().join(&dir.id).join(crate::ml::attack::curve::INDEX).display()
        );
    }
    Ok(())
}

/// A class by name, or by index when no class has that name.
fn parse_class(text: &str, classes: &[String]) -> Result<usize> {
    if let Some(i) = classes.iter().position(|c| c == text) {
        return Ok(i);
    }
    match text.parse::<usize>() {
        Ok(i) if i < classes.len() => Ok(i),
        _ => Err(invalid(format!(
            "--targeted {text:?} is not a class of this run; the classes are {} (or an index 0 to {})",
            classes.join(", "),
            classes.len().saturating_sub(1)
        ))),
    }
}

fn print_curve(
    run: &str,
    c: &Curve,
    det: Option<&Detector>,
    classes: &[String],
    saved: bool,
    store: &RunStore,
    scale: Option<(f32, f32)>,
) {
    let steps = match (c.method, c.step_size) {
        (AttackMethod::Fgsm, _) => String::new(),
        (AttackMethod::Pgd, Some(s)) => format!(", {} steps of {}", c.steps, fmt_num(s)),
        (AttackMethod::Pgd, None) => format!(", {} steps of 2.5 ε / {}", c.steps, c.steps),
    };
    let goal = match c.target {
        Some(t) => format!("targeted at {}", classes.get(t).cloned().unwrap_or_else(|| t.to_string())),
        None => "untargeted".into(),
    };
    let start = if c.method == AttackMethod::Pgd && c.random_start { ", random start" } else { "" };
    println!(
        "{run}: {} ({}, {goal}{steps}{start}) on the {} split ({} examples), {} checkpoint",
        match c.method {
            AttackMethod::Fgsm => "FGSM",
            AttackMethod::Pgd => "PGD",
        },
        norm_name(c.norm),
        c.split,
        c.examples,
        c.checkpoint
    );
    println!("ε is in {}", c.units);
    match &c.range {
        Some(r) => println!("adversarial examples are clipped to the valid input range {r}"),
        None => {
            println!(
                "embedding-space attack: the perturbation is added to the token embeddings, so \
                 `accuracy` and `success rate` are measured on inputs that are not text (no sentence \
                 embeds to them); `words` is the accuracy once each perturbed embedding is replaced by \
                 its nearest word, a real text the model can be sent (the detector's columns are about \
                 those texts). `--method hotflip` swaps whole tokens instead."
            );
            if let Some((l2, linf)) = scale {
                println!(
                    "for scale: a token embedding of this model has a mean L2 norm of {l2:.3} and a mean \
                     largest |value| of {linf:.3}"
                );
            }
        }
    }
    let norm = match c.norm {
        Norm::Linf => "mean ‖δ‖∞",
        Norm::L2 => "mean ‖δ‖₂",
    };
    let text = c.points.iter().any(|p| p.word_accuracy.is_some());
    let mut headers = vec!["ε", "accuracy", "success rate", norm];
    if text {
        headers.push("words");
    }
    if det.is_some() {
        headers.push("flagged");
        headers.push("flagged (successful)");
    }
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(headers.iter().map(Cell::new));
    let pct = |v: f64| format!("{:.2}%", 100.0 * v);
    for p in &c.points {
        let mut row =
            vec![fmt_num(p.eps), pct(p.accuracy), pct(p.success_rate), format!("{:.4}", p.mean_norm)];
        if text {
            row.push(p.word_accuracy.map(pct).unwrap_or_default());
        }
        if det.is_some() {
            row.push(p.detected.map(pct).unwrap_or_default());
            row.push(p.detected_successful.map(pct).unwrap_or_else(|| "-".into()));
        }
        t.add_row(row);
    }
    for i in 0..t.column_count() {
        if let Some(col) = t.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{t}");
    match c.target {
        Some(_) => println!(
            "success rate: the share of examples not of the target class that end up predicted as it"
        ),
        None => println!(
            "success rate: the share of the examples the model got right that the attack makes it get wrong"
        ),
    }
    if let Some(d) = det {
        println!(
            "flagged: the share of the attacked inputs the run's {} detector flags (at ε = 0, its false \
             positives on this split; calibrated to {:.1}% on validation, {:.2}% there)",
            d.kind.name(),
            100.0 * d.calibrated_fpr(),
            100.0 * d.validation_fpr
        );
        if let Some(line) = detector_line(c) {
            println!("{line}");
        }
    }
    if saved {
        println!(
            "adversarial examples saved in {} (the console's Explain view shows them: 7, then a)",
            store.root().join(run).join("attacks").join(&c.key).display()
        );
    }
}

/// The detector's two figures side by side: its false-positive rate on benign traffic and its
/// detection rate on this attack at the ε nearest 0.1; `None` without both.
pub fn detector_line(c: &crate::ml::attack::curve::Curve) -> Option<String> {
    let (benign, detected, eps) = c.detector_figures()?;
    Some(format!(
        "input detector: flags {:.2}% of benign traffic (test inputs shifted and noised) and {:.2}% of \
         these attacked inputs at ε = {}",
        100.0 * benign,
        100.0 * detected,
        crate::ml::attack::fmt_num(eps)
    ))
}
