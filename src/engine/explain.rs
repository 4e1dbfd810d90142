//! The explanation engine behind the console's Explain view. It loads a run's best checkpoint and
//! test split once, predicts every test example (for "jump to misclassified" and the class
//! filter), then computes one explanation per request, on its own thread: candle work never runs
//! on the async runtime, and the view only ever receives plain data. It also lists the adversarial
//! examples `vigil attack` saved with the run, and explains one beside its clean input; and it
//! explains inputs of requests from the service's access log (when the service logged them raw),
//! through the same checks and preprocessing the service applied to them.

use serde::Serialize;

use super::{Commands, Handle, Sink};

use crate::ml::attack::curve::{AdversarialSet, load_set};
use crate::ml::data::InputShape;
use crate::ml::data::preprocess::Prepared;
use crate::ml::explain::{Explainer, Explanation, Method};
use crate::ml::train::{Trained, load_trained, predict};
use crate::serve::access_log::AccessRecord;
use crate::serve::model::{PredictBody, ServedModel};
use crate::store::{CheckpointKind, RunDir, RunId, RunStore};

/// What the console asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ExplainCommand {
    /// Load a run's model and test split.
    Open(RunId),
    /// Explain test example `index` of the open run with a method by name.
    Explain { run: RunId, index: usize, method: String },
    /// Explain test example `index` and its adversarial version from a saved attack, both with
    /// a method by name.
    Adversarial { run: RunId, index: usize, method: String, attack: AttackChoice },
    /// Explain one input of a logged request with a method by name.
    Request { input: Box<LoggedInput>, method: String },
}

/// One input of a request in the service's access log, as the Explain view picks it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedInput {
    pub request_id: String,
    pub time: String,
    pub key: Option<String>,
    /// The model's served name (its spec's name).
    pub model: String,
    /// The served checkpoint's version: the first characters of its SHA-256 (of the variant's
    /// file, for a variant).
    pub version: String,
    /// The variant that answered (`vigil optimize`), if not the run's own checkpoint.
    pub variant: Option<String>,
    /// Which input of the request (a request may carry a batch), and how many it carried.
    pub input: usize,
    pub inputs: usize,
    /// The input as the service received it: an array of numbers (null for a missing value) or
    /// a text.
    pub raw: serde_json::Value,
    /// The label the service answered for it, when it answered.
    pub answered: Option<String>,
}

impl LoggedInput {
    /// The inputs of a logged request that can be explained: those of an answered request to a
    /// model whose raw inputs were logged (by default the log keeps only their hashes).
    pub fn of_record(r: &AccessRecord) -> Vec<LoggedInput> {
        let (Some(model), Some(version), Some(raw)) = (&r.model, &r.version, explainable(r)) else {
            return vec![];
        };
        raw.iter()
            .enumerate()
            .map(|(i, v)| LoggedInput {
                request_id: r.request_id.clone(),
                time: r.time.clone(),
                key: r.key.clone(),
                model: model.clone(),
                version: version.clone(),
                variant: r.variant.clone(),
                input: i,
                inputs: raw.len(),
                raw: v.clone(),
                answered: r.labels.get(i).cloned(),
            })
            .collect()
    }

    /// How many inputs of a logged request can be explained ([`Self::of_record`]'s length,
    /// without copying them).
    pub fn count(r: &AccessRecord) -> usize {
        explainable(r).map_or(0, Vec::len)
    }

    /// `451aeb0a00000002 #2/3` (the request id, as the caller's `X-Request-Id` header had it,
    /// and the input when there are several).
    pub fn label(&self) -> String {
        let id = &self.request_id;
        if self.inputs > 1 { format!("{id} #{}/{}", self.input + 1, self.inputs) } else { id.clone() }
    }
}

/// The raw inputs of an answered request to a model, when the log kept them.
fn explainable(r: &AccessRecord) -> Option<&Vec<serde_json::Value>> {
    match (&r.model, &r.version, &r.raw_inputs) {
        (Some(_), Some(_), Some(serde_json::Value::Array(raw))) if (200..300).contains(&r.status) => {
            Some(raw)
        }
        _ => None,
    }
}

/// A logged request's input, explained by the run that served it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestResult {
    pub input: LoggedInput,
    pub classes: Vec<String>,
    /// The explanation; its `run` is the run whose checkpoint answered the request and its
    /// `index` the input's place in the request.
    pub result: ExplainResult,
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
    pub run: RunId,
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
    pub run: RunId,
    pub classes: Vec<String>,
    pub layout: InputShape,
    pub examples: Vec<Example>,
    /// The model has attention layers, so attention rollout applies.
    pub attention: bool,
}

/// One explanation, ready to draw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainResult {
    pub run: RunId,
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
        run: RunId,
        attacks: Vec<AttackChoice>,
    },
    ExplainedAdversarial(Box<AdversarialResult>),
    ExplainedRequest(Box<RequestResult>),
    Failed(String),
}

struct Loaded {
    run: RunId,
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
    let trained = load_trained(&dir, CheckpointKind::Best)?;
    let data = crate::ml::data::splits::for_run(&dir, &trained.spec, &trained.pipeline, false)?;
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
        attention: trained.network.encoder().is_some(),
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
                crate::error::Error::not_found(format!(
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
        crate::error::Error::not_found(format!(
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

/// The run whose best checkpoint (or `variant` of it) a service served as `model` at `version`
/// (the version is the start of the served file's SHA-256, as the access log records it).
pub fn served_run(
    store: &RunStore,
    model: &str,
    version: &str,
    variant: Option<&str>,
) -> crate::error::Result<RunDir> {
    let matches =
        |sha: Option<&String>| sha.is_some_and(|sha| !version.is_empty() && sha.starts_with(version));
    let found = store.dirs().into_iter().find(|dir| {
        dir.info().is_ok_and(|i| i.spec == model)
            && match variant {
                None => dir.manifest().is_ok_and(|m| matches(m.files.get(CheckpointKind::Best.file()))),
                Some(v) => crate::store::read_json::<crate::store::Manifest>(
                    &crate::ml::variants::variant_dir(dir, v).join("manifest.json"),
                )
                .is_ok_and(|m| m.files.iter().any(|(f, sha)| f.starts_with("model.") && matches(Some(sha)))),
            }
    });
    found.ok_or_else(|| {
        crate::error::Error::not_found(format!(
            "no run in {} has model {model} at version {version}: the run that answered the request \
             was deleted, or its best checkpoint changed since",
            store.root().display()
        ))
    })
}

/// The model a logged request went to, kept loaded between requests to the same version.
struct Served {
    model: String,
    version: String,
    variant: Option<String>,
    run: RunId,
    served: ServedModel,
}

fn explain_request(
    store: &RunStore,
    cache: &mut Option<Served>,
    input: &LoggedInput,
    method: &str,
) -> crate::error::Result<RequestResult> {
    let t0 = std::time::Instant::now();
    if !cache
        .as_ref()
        .is_some_and(|c| c.model == input.model && c.version == input.version && c.variant == input.variant)
    {
        let dir = served_run(store, &input.model, &input.version, input.variant.as_deref())?;
        let served = ServedModel::load_variant(&dir, input.variant.as_deref())?;
        *cache = Some(Served {
            model: input.model.clone(),
            version: input.version.clone(),
            variant: input.variant.clone(),
            run: dir.id.clone(),
            served,
        });
    }
    let c = cache.as_ref().expect("loaded above");
    if let Some(why) = c.served.cannot_explain() {
        return Err(crate::error::Error::unsuitable(why));
    }
    let body = match &input.raw {
        serde_json::Value::String(text) => PredictBody { inputs: None, texts: Some(vec![text.clone()]) },
        raw => {
            let row: Vec<Option<f64>> = serde_json::from_value(raw.clone()).map_err(|e| {
                crate::error::Error::unsuitable(format!(
                    "request {}: the logged input is neither a text nor an array of numbers: {e}",
                    input.request_id
                ))
            })?;
            PredictBody { inputs: Some(vec![row]), texts: None }
        }
    };
    // The service's own checks and preprocessing, so the explanation is of what it computed.
    let (batch, _) = c
        .served
        .prepare(body, 1)
        .map_err(|e| crate::error::Error::unsuitable(format!("request {}: {}", input.request_id, e.0)))?;
    let m = Method::named(method, &c.served.pipeline.input)?;
    let mut e = c.served.explain(batch, &m, None)?.remove(0);
    if let Some(v) = c.served.pipeline.vocab() {
        e = e.with_words(v);
    }
    Ok(RequestResult {
        input: input.clone(),
        classes: c.served.classes.to_vec(),
        result: ExplainResult {
            run: c.run.clone(),
            index: input.input,
            explanation: e,
            millis: t0.elapsed().as_secs_f64() * 1000.0,
        },
    })
}

/// Starts the explanation engine on a thread of its own (candle work stays off the async
/// runtime). It serves commands until the sender is dropped or the sink closes.
pub fn spawn(store: RunStore, sink: impl Sink<ExplainEvent>) -> crate::error::Result<Handle<ExplainCommand>> {
    let (commands, rx) = super::channel();
    let join = super::thread("vigil-explain", "the explanation engine", move || serve(store, rx, sink))?;
    Ok(Handle { commands, join })
}

/// Serves commands until the sender is dropped. Only the newest request of a burst is computed
/// (holding a key down skips the examples in between).
fn serve(store: RunStore, mut commands: Commands<ExplainCommand>, events: impl Fn(ExplainEvent) -> bool) {
    let mut loaded: Option<Loaded> = None;
    let mut served: Option<Served> = None;
    while let Some(first) = commands.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(next) = commands.try_recv() {
            batch.push(next);
        }
        let last_explain = batch.iter().rposition(|c| {
            matches!(
                c,
                ExplainCommand::Explain { .. }
                    | ExplainCommand::Adversarial { .. }
                    | ExplainCommand::Request { .. }
            )
        });
        for (i, cmd) in batch.into_iter().enumerate() {
            let ok = match cmd {
                ExplainCommand::Open(run) => handle_open(&store, &run, &mut loaded, &events),
                // Superseded by a later request in the same burst.
                ExplainCommand::Explain { .. }
                | ExplainCommand::Adversarial { .. }
                | ExplainCommand::Request { .. }
                    if Some(i) != last_explain =>
                {
                    true
                }
                ExplainCommand::Request { input, method } => {
                    match explain_request(&store, &mut served, &input, &method) {
                        Ok(r) => events(ExplainEvent::ExplainedRequest(Box::new(r))),
                        Err(e) => {
                            events(ExplainEvent::Failed(format!("explaining request {}: {e}", input.label())))
                        }
                    }
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
