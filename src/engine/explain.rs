//! The explanation engine behind the console's Explain view. It loads a run's best checkpoint and
//! test split once, predicts every test example (for "jump to misclassified" and the class
//! filter), then computes one explanation per request, on its own thread: candle work never runs
//! on the async runtime, and the view only ever receives plain data. It also lists the adversarial
//! examples `vigil attack` saved with the run, and explains one beside its clean input.

use std::sync::mpsc;

use serde::Serialize;

use crate::ml::attack::curve::{AdversarialSet, load_set};
use crate::ml::data::InputShape;
use crate::ml::data::preprocess::{Prepared, PreparedData};
use crate::ml::explain::{Explainer, Explanation, Method};
use crate::ml::train::{Trained, load_trained, predict};
use crate::store::{RunStore, Which};

/// What the console asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ExplainCommand {
    /// Load a run's model and test split.
    Open(String),
    /// Explain test example `index` of the open run with a method by name.
    Explain { run: String, index: usize, method: String },
    /// Explain test example `index` and its adversarial version from a saved attack, both with
    /// a method by name.
    Adversarial { run: String, index: usize, method: String, attack: AttackChoice },
}

/// One saved set of adversarial examples of a run: a curve's radius.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackChoice {
    /// The curve's key (`pgd-linf-20`).
    pub curve: String,
    /// `PGD L∞ 20 steps`.
    pub label: String,
    pub eps: f32,
    /// The model's accuracy on the split under this attack.
    pub accuracy: f64,
}

impl AttackChoice {
    /// `PGD L∞ 20 steps ε=0.1`.
    pub fn describe(&self) -> String {
        format!("{} ε={}", self.label, crate::ml::attack::fmt_num(self.eps))
    }
}

/// A test example and its adversarial version, each explained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdversarialResult {
    pub run: String,
    pub index: usize,
    pub attack: AttackChoice,
    pub clean: Explanation,
    pub adversarial: Explanation,
    /// The perturbation's norm (in the curve's norm; embedding space for text).
    pub norm: f32,
    /// `L∞` or `L2`.
    pub norm_name: String,
    /// Milliseconds both explanations took.
    pub millis: f64,
}

/// A test example as the navigation needs it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Example {
    pub label: usize,
    pub predicted: usize,
}

/// An opened run: its classes, input layout and every test example's label and prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainSet {
    pub run: String,
    pub classes: Vec<String>,
    pub layout: InputShape,
    pub examples: Vec<Example>,
}

/// One explanation, ready to draw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainResult {
    pub run: String,
    pub index: usize,
    pub explanation: Explanation,
    /// Milliseconds it took.
    pub millis: f64,
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ExplainEvent {
    Opened(Box<ExplainSet>),
    Explained(Box<ExplainResult>),
    /// The saved attacks of the run just opened (radius 0 left out), after `Opened`.
    Attacks {
        run: String,
        attacks: Vec<AttackChoice>,
    },
    ExplainedAdversarial(Box<AdversarialResult>),
    Failed(String),
}

struct Loaded {
    run: String,
    dir: crate::store::RunDir,
    trained: Trained,
    test: Prepared,
    /// Adversarial sets read so far, by curve and radius.
    sets: Vec<(AttackChoice, AdversarialSet)>,
}

/// The saved attacks on the test split of a run, every radius but 0.
fn attacks_of(dir: &crate::store::RunDir) -> Vec<AttackChoice> {
    let Ok(index) = crate::ml::attack::curve::index(dir) else { return vec![] };
    index
        .curves
        .iter()
        .filter(|c| c.split == "test")
        .flat_map(|c| {
            c.points.iter().filter(|p| p.eps > 0.0 && p.file.is_some()).map(|p| AttackChoice {
                curve: c.key.clone(),
                label: c.label(),
                eps: p.eps,
                accuracy: p.accuracy,
            })
        })
        .collect()
}

fn open(store: &RunStore, run: &str) -> crate::error::Result<(Loaded, ExplainSet)> {
    let dir = store.resolve(run)?;
    let trained = load_trained(&dir, Which::Best)?;
    let data = PreparedData::build(&trained.spec, Some(&trained.pipeline))?;
    let (_, preds, _) = predict(&trained.network, &data.test)?;
    let examples = data
        .test
        .labels
        .iter()
        .zip(&preds)
        .map(|(&l, &p)| Example { label: l as usize, predicted: p as usize })
        .collect();
    let set = ExplainSet {
        run: dir.id.clone(),
        classes: trained.pipeline.classes.clone(),
        layout: trained.pipeline.input.clone(),
        examples,
    };
    Ok((Loaded { run: dir.id.clone(), dir, trained, test: data.test, sets: vec![] }, set))
}

fn explain(l: &Loaded, index: usize, method: &str) -> crate::error::Result<ExplainResult> {
    let t0 = std::time::Instant::now();
    let net = &l.trained.network;
    let m = Method::named(method, &net.input)?;
    let x = l.test.features.batch(&[index], net.device())?;
    let mut e = Explainer::new(net).explain(&x, &m, None)?.remove(0);
    if let Some(v) = l.trained.pipeline.vocab() {
        e = e.with_words(v);
    }
    Ok(ExplainResult {
        run: l.run.clone(),
        index,
        explanation: e,
        millis: t0.elapsed().as_secs_f64() * 1000.0,
    })
}

fn explain_adversarial(
    l: &mut Loaded,
    index: usize,
    method: &str,
    attack: &AttackChoice,
) -> crate::error::Result<AdversarialResult> {
    let t0 = std::time::Instant::now();
    if !l.sets.iter().any(|(c, _)| c == attack) {
        let idx = crate::ml::attack::curve::index(&l.dir)?;
        let point = idx
            .curves
            .iter()
            .filter(|c| c.key == attack.curve)
            .flat_map(|c| c.points.iter())
            .find(|p| p.eps == attack.eps)
            .ok_or_else(|| {
                crate::error::Error::Invalid(format!(
                    "{} has no saved attack {}: run `vigil attack` again",
                    l.run,
                    attack.describe()
                ))
            })?;
        let set = load_set(&l.dir, point)?;
        // A handful of sets is plenty to flip between; the oldest goes first.
        if l.sets.len() >= 8 {
            l.sets.remove(0);
        }
        l.sets.push((attack.clone(), set));
    }
    let (_, set) = l.sets.iter().find(|(c, _)| c == attack).expect("loaded above");
    let row = set.row_of(index).ok_or_else(|| {
        crate::error::Error::Invalid(format!(
            "the saved attack {} has no test example {index}",
            attack.describe()
        ))
    })?;
    let net = &l.trained.network;
    let m = Method::named(method, &net.input)?;
    let explainer = Explainer::new(net);
    let mut clean = explainer.explain(&set.clean.batch(&[row], net.device())?, &m, None)?.remove(0);
    let mut adversarial =
        explainer.explain(&set.adversarial.batch(&[row], net.device())?, &m, None)?.remove(0);
    if let Some(v) = l.trained.pipeline.vocab() {
        clean = clean.with_words(v);
        adversarial = adversarial.with_words(v);
    }
    let norm_name = crate::ml::attack::curve::index(&l.dir)
        .ok()
        .and_then(|i| i.curves.into_iter().find(|c| c.key == attack.curve))
        .map_or("L∞", |c| crate::ml::attack::norm_name(c.norm));
    Ok(AdversarialResult {
        run: l.run.clone(),
        index,
        attack: attack.clone(),
        clean,
        adversarial,
        norm: set.norms[row],
        norm_name: norm_name.into(),
        millis: t0.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Serves commands until the sender is dropped. Only the newest request of a burst is computed
/// (holding a key down skips the examples in between).
pub fn serve(
    store: RunStore,
    commands: mpsc::Receiver<ExplainCommand>,
    events: impl Fn(ExplainEvent) -> bool,
) {
    let mut loaded: Option<Loaded> = None;
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        while let Ok(next) = commands.try_recv() {
            batch.push(next);
        }
        let last_explain = batch
            .iter()
            .rposition(|c| matches!(c, ExplainCommand::Explain { .. } | ExplainCommand::Adversarial { .. }));
        for (i, cmd) in batch.into_iter().enumerate() {
            let ok = match cmd {
                ExplainCommand::Open(run) => handle_open(&store, &run, &mut loaded, &events),
                // Superseded by a later request in the same burst.
                ExplainCommand::Explain { .. } | ExplainCommand::Adversarial { .. }
                    if Some(i) != last_explain =>
                {
                    true
                }
                ExplainCommand::Explain { run, index, method } => {
                    if loaded.as_ref().is_none_or(|l| l.run != run)
                        && !handle_open(&store, &run, &mut loaded, &events)
                    {
                        return;
                    }
                    match loaded.as_ref() {
                        Some(l) if index < l.test.labels.len() => match explain(l, index, &method) {
                            Ok(r) => events(ExplainEvent::Explained(Box::new(r))),
                            Err(e) => events(ExplainEvent::Failed(format!("explaining {run} #{index}: {e}"))),
                        },
                        Some(l) => events(ExplainEvent::Failed(format!(
                            "{run} has {} test examples",
                            l.test.labels.len()
                        ))),
                        None => true,
                    }
                }
                ExplainCommand::Adversarial { run, index, method, attack } => {
                    if loaded.as_ref().is_none_or(|l| l.run != run)
                        && !handle_open(&store, &run, &mut loaded, &events)
                    {
                        return;
                    }
                    match loaded.as_mut() {
                        Some(l) => match explain_adversarial(l, index, &method, &attack) {
                            Ok(r) => events(ExplainEvent::ExplainedAdversarial(Box::new(r))),
                            Err(e) => events(ExplainEvent::Failed(format!(
                                "explaining {run} #{index} under {}: {e}",
                                attack.describe()
                            ))),
                        },
                        None => true,
                    }
                }
            };
            if !ok {
                return;
            }
        }
    }
}

fn handle_open(
    store: &RunStore,
    run: &str,
    loaded: &mut Option<Loaded>,
    events: &impl Fn(ExplainEvent) -> bool,
) -> bool {
    if loaded.as_ref().is_some_and(|l| l.run == run) {
        return true;
    }
    match open(store, run) {
        Ok((l, set)) => {
            let attacks = attacks_of(&l.dir);
            let run = l.run.clone();
            *loaded = Some(l);
            events(ExplainEvent::Opened(Box::new(set))) && events(ExplainEvent::Attacks { run, attacks })
        }
        Err(e) => {
            *loaded = None;
            events(ExplainEvent::Failed(format!("cannot explain {run}: {e}")))
        }
    }
}
