//! A trained model as the service holds it: loaded once from the run store (the best checkpoint,
//! checked against the run's manifest), with the run's saved preprocessing, and the checks that
//! turn a request's raw inputs into a batch the network can take, or into a 422 message that
//! says which input is wrong and why.
//!
//! Nothing here knows HTTP; the service only ever loads models from run folders it was started
//! with, never from a path or URL a client names.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ml::data::InputShape;
use crate::ml::data::preprocess::{FittedStep, PAD, Pipeline, UNK, words};
use crate::ml::explain::{Explainer, Explanation, Method};
use crate::ml::model::Network;
use crate::ml::model::pretrained::{SentenceEncoder, WordPieces};
use crate::ml::train::load_trained;
use crate::store::{CheckpointKind, RunDir, RunId};

/// Length of the version string: a prefix of the checkpoint's SHA-256.
pub const VERSION_LEN: usize = 12;
/// Characters per text beyond which a text is refused (the tokeniser keeps only `max_len`
/// words anyway; this bounds the work per request).
pub const MAX_TEXT_CHARS: usize = 100_000;

/// What `GET /v1/models` says about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name it is served under (its spec's name).
    pub name: String,
    /// The checkpoint's SHA-256 prefix (the variant file's, for a variant).
    pub version: String,
    /// The variant served (`q8_0`, `prune50-q4_0`), when not the run's own f32 checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The run it comes from.
    pub run: RunId,
    /// The model family (mlp, cnn, rnn, text, logreg).
    pub kind: String,
    /// `inputs` (numbers) or `texts`.
    pub accepts: String,
    /// Values per input (flat), for numeric models.
    pub values: Option<usize>,
    /// The input as the model sees it, e.g. `1x8x8 image`.
    pub input: String,
    pub classes: Vec<String>,
    /// The accepted range of each raw value, for numeric models.
    pub input_range: Option<(f32, f32)>,
    /// The width of the sentence embeddings `POST /v1/models/{name}/embed` gives, for a model
    /// that gives them (a Transformer or Pretrained encoder); absent otherwise, so a client can
    /// tell which models embed before it asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dim: Option<usize>,
}

/// A model loaded for serving.
#[derive(Debug)]
pub struct ServedModel {
    pub info: ModelInfo,
    /// The full SHA-256 of the checkpoint.
    pub sha256: String,
    pub classes: Arc<Vec<String>>,
    pub pipeline: Pipeline,
    network: Network,
    /// Values per raw numeric input.
    width: usize,
    /// Accepted raw range (the training data's range widened by its span on each side).
    range: Option<(f64, f64)>,
    /// The training data's raw range, for messages.
    trained_range: Option<(f32, f32)>,
    /// Whether a missing value (JSON null) can be filled in by an Impute step.
    imputes: bool,
    /// Word → token id, for text models.
    vocab_index: Option<HashMap<String, u32>>,
    /// A pretrained encoder's tokenizer, for runs that tokenise into word pieces (read once
    /// here: serving a text must not parse `tokenizer.json`).
    pieces: Option<WordPieces>,
    parameters: usize,
    /// The run's input detector (`vigil attack` or training fit it), which flags inputs unlike
    /// the training data, or why the run has none.
    detector: std::result::Result<crate::ml::attack::detector::Detector, String>,
    /// The sentence encoder of a Transformer or Pretrained model (the embed route), or why the
    /// model has none.
    embedder: std::result::Result<SentenceEncoder, String>,
}

/// A request's inputs, checked and preprocessed, ready for the network.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// `n` preprocessed inputs, flat.
    Dense { n: usize, values: Vec<f32> },
    /// `n` token-id sequences, flat.
    Tokens { n: usize, ids: Vec<u32> },
}

impl Batch {
    /// Number of inputs.
    pub fn len(&self) -> usize {
        match self {
            Batch::Dense { n, .. } | Batch::Tokens { n, .. } => *n,
        }
    }

    /// Whether it holds no input.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The raw inputs of a request as received (before preprocessing), kept for the access log's
/// per-input hashes.
#[derive(Debug, Clone, PartialEq)]
pub enum RawBatch {
    /// Flat values, `width` per input; a JSON null is NaN.
    Dense {
        width: usize,
        values: Vec<f32>,
    },
    Texts(Vec<String>),
}

impl RawBatch {
    /// Number of inputs.
    pub fn len(&self) -> usize {
        match self {
            RawBatch::Dense { width, values } => values.len() / (*width).max(1),
            RawBatch::Texts(t) => t.len(),
        }
    }

    /// Whether it holds no input.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The body of `POST /v1/models/{name}/predict`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictBody {
    /// Numeric inputs, one flat array each; `null` marks a missing value.
    #[serde(default)]
    pub inputs: Option<Vec<Vec<Option<f64>>>>,
    /// Texts, for text models.
    #[serde(default)]
    pub texts: Option<Vec<String>>,
}

/// Why a request's inputs cannot be used: always the caller's fault (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl ServedModel {
    /// Loads a run's best checkpoint (refused by name when it does not match the manifest) and
    /// its preprocessing.
    pub fn load(run: &RunDir) -> Result<Self> {
        Self::load_variant(run, None)
    }

    /// Loads a run's best checkpoint, or a variant of it made by `vigil optimize` (checked
    /// against the variant's manifest and the checkpoint it was made from).
    pub fn load_variant(run: &RunDir, variant: Option<&str>) -> Result<Self> {
        // The checkpoint is checked by `load_trained`; the spec and the preprocessing decide
        // what the weights are applied to, so they must be the files training wrote too.
        let manifest = run.manifest()?;
        for rel in ["spec.ron", "preprocess.json"] {
            let path = run.file(rel);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            manifest.vouch(rel, &path, &bytes)?;
        }
        let (trained, sha256) = match variant {
            None => {
                let sha = manifest.files.get(CheckpointKind::Best.file()).cloned().ok_or_else(|| {
                    Error::Corrupt {
                        path: run.file(CheckpointKind::Best.file()),
                        msg: "is not listed in the run's manifest".into(),
                    }
                })?;
                (load_trained(run, CheckpointKind::Best)?, sha)
            }
            Some(name) => {
                let v = crate::ml::variants::load_variant(run, name)?;
                (v.trained, v.sha256)
            }
        };
        let pipeline = trained.pipeline;
        let text = matches!(pipeline.input, InputShape::Text { .. });
        let width = pipeline.raw_shape.as_ref().map_or(0, |s| s.numel());
        let trained_range = pipeline.raw_range;
        let range = trained_range.map(|(lo, hi)| {
            // Generous: anything within one training span of the training range passes, so
            // honest inputs from a slightly different source are not refused, while values
            // that are nonsense for this model (1e30, -5000 pixels) are.
            let span = ((hi - lo) as f64).max(1.0);
            (lo as f64 - span, hi as f64 + span)
        });
        let imputes = pipeline.steps.iter().any(|s| matches!(s, FittedStep::Impute { .. }));
        let vocab_index =
            pipeline.vocab().map(|v| v.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect());
        let pieces = match pipeline.steps.first() {
            Some(FittedStep::WordPieces { tokenizer, max_len }) => {
                Some(WordPieces::open(std::path::Path::new(tokenizer), *max_len)?)
            }
            _ => None,
        };
        let detector = crate::ml::attack::detector::load(run)?;
        let embedder = SentenceEncoder::from_network(&trained.network, &pipeline);
        let spec = trained.spec;
        let info = ModelInfo {
            name: spec.name.clone(),
            version: sha256.chars().take(VERSION_LEN).collect(),
            variant: variant.map(String::from),
            run: run.id.clone(),
            kind: spec.model.kind().to_string(),
            accepts: if text { "texts".into() } else { "inputs".into() },
            values: (!text).then_some(width),
            input: pipeline.input.describe(),
            classes: pipeline.classes.clone(),
            input_range: range.map(|(lo, hi)| (lo as f32, hi as f32)),
            embedding_dim: embedder.as_ref().ok().map(|e| e.encoder.dim()),
        };
        Ok(ServedModel {
            info,
            sha256,
            classes: Arc::new(pipeline.classes.clone()),
            parameters: trained.network.parameter_count(),
            network: trained.network,
            pipeline,
            width,
            range,
            trained_range,
            imputes,
            vocab_index,
            pieces,
            detector,
            embedder,
        })
    }

    /// The name it is served under.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Whether the model takes texts.
    pub fn takes_text(&self) -> bool {
        self.vocab_index.is_some() || self.pieces.is_some()
    }

    /// Multiply-adds (roughly) to predict `n` inputs: decides whether the work is short enough
    /// to run on the async worker or goes to a blocking thread.
    pub fn cost(&self, n: usize) -> usize {
        n.saturating_mul(self.parameters)
    }

    /// Checks a parsed body against the model (which field, how many values, finite, in range)
    /// and preprocesses it. `max_inputs` bounds the batch.
    pub fn prepare(
        &self,
        body: PredictBody,
        max_inputs: usize,
    ) -> std::result::Result<(Batch, RawBatch), InputError> {
        let bad = |m: String| Err(InputError(m));
        match (body.inputs, body.texts) {
            (Some(_), Some(_)) => bad("send either `inputs` or `texts`, not both".into()),
            (None, None) => bad(if self.takes_text() {
                "the body needs `texts`: {\"texts\": [\"...\", ...]}".into()
            } else {
                format!("the body needs `inputs`: {{\"inputs\": [[{} numbers], ...]}}", self.width)
            }),
            (Some(_), None) if self.takes_text() => {
                bad(format!("model {} takes texts: send {{\"texts\": [\"...\"]}}", self.info.name))
            }
            (None, Some(_)) if !self.takes_text() => bad(format!(
                "model {} takes numbers: send {{\"inputs\": [[{} numbers], ...]}}",
                self.info.name, self.width
            )),
            (Some(inputs), None) => {
                check_count(inputs.len(), max_inputs)?;
                self.prepare_dense(inputs)
            }
            (None, Some(texts)) => {
                check_count(texts.len(), max_inputs)?;
                self.prepare_texts(texts)
            }
        }
    }

    fn prepare_dense(
        &self,
        inputs: Vec<Vec<Option<f64>>>,
    ) -> std::result::Result<(Batch, RawBatch), InputError> {
        let n = inputs.len();
        let w = self.width;
        let mut raw = Vec::with_capacity(n * w);
        let mut values = Vec::with_capacity(n * w);
        for (i, input) in inputs.iter().enumerate() {
            if input.len() != w {
                return Err(InputError(format!(
                    "inputs[{i}]: expected {w} values ({}), got {}",
                    self.info.input,
                    input.len()
                )));
            }
            let start = raw.len();
            for (j, v) in input.iter().enumerate() {
                let x = match v {
                    None if self.imputes => f32::NAN,
                    None => {
                        return Err(InputError(format!(
                            "inputs[{i}][{j}] is null, and this model was trained without imputation: \
                             every value is needed"
                        )));
                    }
                    Some(x) => {
                        if let Some((lo, hi)) = self.range
                            && !(lo..=hi).contains(x)
                        {
                            let (tlo, thi) = self.trained_range.unwrap_or_default();
                            return Err(InputError(format!(
                                "inputs[{i}][{j}] = {x} is outside the range this model accepts \
                                 ({lo} to {hi}; its training data spans {tlo} to {thi})"
                            )));
                        }
                        *x as f32
                    }
                };
                raw.push(x);
            }
            let row = self
                .pipeline
                .transform(&raw[start..])
                .map_err(|m| InputError(format!("inputs[{i}]: {m}")))?;
            values.extend_from_slice(&row);
        }
        Ok((Batch::Dense { n, values }, RawBatch::Dense { width: w, values: raw }))
    }

    fn prepare_texts(&self, texts: Vec<String>) -> std::result::Result<(Batch, RawBatch), InputError> {
        check_lengths(&texts, "texts")?;
        if let Some(pieces) = &self.pieces {
            let mut ids = Vec::with_capacity(texts.len() * pieces.max_len);
            for (i, t) in texts.iter().enumerate() {
                ids.extend(pieces.encode(t).map_err(|m| InputError(format!("texts[{i}]: {m}")))?);
            }
            return Ok((Batch::Tokens { n: texts.len(), ids }, RawBatch::Texts(texts)));
        }
        let Some(index) = &self.vocab_index else {
            return Err(InputError("this model takes numbers".into()));
        };
        let Some(FittedStep::Tokenize { lowercase, max_len, .. }) = self.pipeline.steps.first() else {
            return Err(InputError("this model has no tokeniser".into()));
        };
        let n = texts.len();
        let mut ids = Vec::with_capacity(n * max_len);
        for t in &texts {
            // The same tokenisation as training (`Pipeline::encode`), with the index built once
            // at load instead of once per call.
            let start = ids.len();
            ids.extend(
                words(t, *lowercase).take(*max_len).map(|w| index.get(w.as_str()).copied().unwrap_or(UNK)),
            );
            ids.resize(start + max_len, PAD);
        }
        Ok((Batch::Tokens { n, ids }, RawBatch::Texts(texts)))
    }

    /// Why the model cannot give sentence embeddings, if it cannot.
    pub fn cannot_embed(&self) -> Option<&str> {
        self.embedder.as_ref().err().map(String::as_str)
    }

    /// Checks the texts of an embed request: how many, and how long each.
    pub fn check_texts(&self, texts: &[String], max_inputs: usize) -> std::result::Result<(), InputError> {
        check_count(texts.len(), max_inputs)?;
        check_lengths(texts, "inputs")
    }

    /// Unit-length sentence embeddings (mean pooling), one per text, as `vigil embed` gives
    /// them.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        match &self.embedder {
            Ok(e) => e.embed(texts),
            Err(why) => Err(Error::unsuitable(why.clone())),
        }
    }

    /// The width of the embeddings, for a model that gives them.
    pub fn embedding_dim(&self) -> Option<usize> {
        self.info.embedding_dim
    }

    /// Class probabilities for a batch, `classes` per input, flat.
    pub fn predict(&self, batch: Batch) -> Result<Vec<f32>> {
        self.probabilities(&self.tensor(batch)?)
    }

    fn probabilities(&self, x: &Tensor) -> Result<Vec<f32>> {
        self.softmax(&self.network.infer(x)?)
    }

    fn softmax(&self, logits: &Tensor) -> Result<Vec<f32>> {
        let probs = candle_nn::ops::softmax_last_dim(logits).or_else(|_| {
            // softmax_last_dim has no kernel on some devices; the generic one always works.
            candle_nn::ops::softmax(logits, D::Minus1)
        })?;
        Ok(probs.flatten_all()?.to_vec1::<f32>()?)
    }

    /// [`Self::predict`] together with the run's input detector's verdict on each input (all
    /// false without a detector), from one input tensor.
    pub fn predict_guarded(&self, batch: &Batch) -> Result<(Vec<f32>, Vec<bool>)> {
        let x = self.tensor(batch.clone())?;
        match &self.detector {
            // One pass: the detector reads the penultimate features the answer comes from.
            Ok(d) => {
                let (penultimate, logits) = self.network.penultimate_and_logits(&x)?;
                let flags = d.flags_given(&self.network, &x, &penultimate, &logits)?;
                Ok((self.softmax(&logits)?, flags))
            }
            Err(_) => Ok((self.probabilities(&x)?, vec![false; batch.len()])),
        }
    }

    /// The run's input detector, or why it has none.
    pub fn detector(&self) -> std::result::Result<&crate::ml::attack::detector::Detector, &str> {
        self.detector.as_ref().map_err(String::as_str)
    }

    /// Why this model cannot explain its predictions, if it cannot: on the CPU a quantised layer
    /// that needs a gradient widens its weight for the call (see `QuantWeight::forward`), but on
    /// another device candle's quantised product runs, which has no gradient to attribute with.
    pub fn cannot_explain(&self) -> Option<String> {
        let variant = self.info.variant.as_deref()?;
        (!self.network.quantized().is_empty() && !self.network.device().is_cpu()).then(|| {
            format!(
                "{} is served as its {variant} variant on a GPU, where quantised weights have no \
                 gradients to attribute with; explain with the f32 model (serve {} without @{variant})",
                self.info.name, self.info.run
            )
        })
    }

    /// Attributions of each input's `target` class (its predicted class when `None`), as
    /// `vigil explain` computes them for a test example.
    pub fn explain(&self, batch: Batch, method: &Method, target: Option<usize>) -> Result<Vec<Explanation>> {
        let n = batch.len();
        let x = self.tensor(batch)?;
        let targets = target.map(|t| vec![t; n]);
        Explainer::new(&self.network).explain(&x, method, targets.as_deref())
    }

    /// A prepared batch as the network's input tensor.
    fn tensor(&self, batch: Batch) -> Result<Tensor> {
        let device = self.network.device();
        Ok(match batch {
            Batch::Dense { n, values } => {
                let mut shape = vec![n];
                shape.extend(self.pipeline.input.dims());
                Tensor::from_vec(values, shape, device)?
            }
            Batch::Tokens { n, ids } => {
                let len = ids.len() / n.max(1);
                Tensor::from_vec(ids, (n, len), device)?
            }
        })
    }
}

/// Every text within the service's length limit (checked before any is tokenised).
fn check_lengths(texts: &[String], field: &str) -> std::result::Result<(), InputError> {
    for (i, t) in texts.iter().enumerate() {
        let chars = t.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(InputError(format!(
                "{field}[{i}] has {chars} characters; at most {MAX_TEXT_CHARS} are accepted"
            )));
        }
    }
    Ok(())
}

fn check_count(n: usize, max: usize) -> std::result::Result<(), InputError> {
    if n == 0 {
        return Err(InputError("the batch is empty: send at least one input".into()));
    }
    if n > max {
        return Err(InputError(format!(
            "this request has {n} inputs; the service takes at most {max} per request: split the batch"
        )));
    }
    Ok(())
}
