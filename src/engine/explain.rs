//! The explanation engine behind the console's Explain view. It loads a run's best checkpoint and
//! test split once, predicts every test example (for "jump to misclassified" and the class
//! filter), then computes one explanation per request, on its own thread: candle work never runs
//! on the async runtime, and the view only ever receives plain data.

use std::sync::mpsc;

use serde::Serialize;

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
    Failed(String),
}

struct Loaded {
    run: String,
    trained: Trained,
    test: Prepared,
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
    Ok((Loaded { run: dir.id, trained, test: data.test }, set))
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
        let last_explain = batch.iter().rposition(|c| matches!(c, ExplainCommand::Explain { .. }));
        for (i, cmd) in batch.into_iter().enumerate() {
            let ok = match cmd {
                ExplainCommand::Open(run) => handle_open(&store, &run, &mut loaded, &events),
                // Superseded by a later request in the same burst.
                ExplainCommand::Explain { .. } if Some(i) != last_explain => true,
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
            *loaded = Some(l);
            events(ExplainEvent::Opened(Box::new(set)))
        }
        Err(e) => {
            *loaded = None;
            events(ExplainEvent::Failed(format!("cannot explain {run}: {e}")))
        }
    }
}
