//! Explanations: why a network gave the output it gave, as attributions over its input.
//!
//! Methods (all batched, all for every model kind): vanilla gradient (saliency), gradient ×
//! input, integrated gradients (with its completeness gap), SmoothGrad and occlusion, following
//! Captum's definitions so that the numbers can be checked against it. The attribution target is
//! one output (a class's logit by default, or its probability), for the predicted class unless
//! another is asked for. Text models are attributed with respect to their token embeddings
//! ([`Network::embed`]) and report one value per token, the sum over its embedding dimensions
//! (occlusion removes whole tokens and reports the change in the output per token).
//!
//! [`sanity`] checks that explanations depend on the model (parameter randomisation) and are
//! faithful to it (deletion); [`picture`] draws an explanation as a PNG. This module uses only
//! the public [`Network`] API and candle's autograd with respect to inputs; it must not touch
//! the layers' internals, the run store, or any terminal-UI or HTTP crate.

pub mod bench;
mod gradients;
mod occlusion;
pub mod picture;
pub mod quadrature;
pub mod rollout;
pub mod sanity;

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ml::data::InputShape;
use crate::ml::model::{Network, token_mask};

pub use self::quadrature::Rule;

/// What an integrated-gradients path starts from, or what occlusion puts in a removed window.
/// Values are in the model's input space (after preprocessing), or the embedding space for text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// All zeros: a black image after MinMax scaling, the mean after standardising, an empty
    /// embedding for text.
    #[default]
    Zero,
    /// Every value set to this number.
    Constant(f32),
    /// One value per input value (per embedding value for text): `input.numel()` values.
    Custom(Vec<f32>),
}

/// An attribution method and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Method {
    /// The gradient of the target output with respect to the input (Simonyan et al., 2014);
    /// signed, as Captum's `Saliency(abs=False)`.
    Saliency,
    /// The gradient times the input (Shrikumar et al., 2016), as Captum's `InputXGradient`.
    GradInput,
    /// Integrated gradients (Sundararajan et al., 2017): the path integral of the gradient from
    /// the baseline to the input, by a quadrature `rule` with `steps` points.
    Ig { steps: usize, rule: Rule, baseline: Baseline },
    /// SmoothGrad (Smilkov et al., 2017): the gradient averaged over `samples` copies of the
    /// input with Gaussian noise of standard deviation `noise_level` × (max − min of the input).
    #[serde(rename = "smoothgrad")]
    SmoothGrad { noise_level: f32, samples: usize, seed: u64 },
    /// Occlusion (Zeiler and Fergus, 2014), as Captum's `Occlusion`: a window slides over the
    /// input with `stride`, is replaced by the baseline, and each value gets the mean drop in the
    /// target output over the windows that cover it. The window is `window`x`window` pixels over
    /// every channel for images, `window` steps over every feature for sequences, `window`
    /// features for tabular inputs and `window` tokens for text.
    Occlusion { window: usize, stride: usize, baseline: Baseline },
    /// Attention rollout (Abnar & Zuidema, 2020), attention models only: the share of the pooled
    /// representation that flows from each token through every layer's attention (heads
    /// averaged, identity added for the residual, rows renormalised, layers multiplied). Not a
    /// gradient and the same for every class ([`rollout`]).
    Rollout,
}

/// Which attribution method, without its settings: what a user names on the command line, in
/// the console and in the service's query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    Saliency,
    GradInput,
    Ig,
    SmoothGrad,
    Occlusion,
    Rollout,
}

impl MethodKind {
    /// Every method, in the order the command line and the console list them.
    pub const ALL: [MethodKind; 6] = [
        MethodKind::Saliency,
        MethodKind::GradInput,
        MethodKind::Ig,
        MethodKind::SmoothGrad,
        MethodKind::Occlusion,
        MethodKind::Rollout,
    ];

    /// The short name ([`METHOD_NAMES`]).
    pub const fn as_str(self) -> &'static str {
        match self {
            MethodKind::Saliency => "saliency",
            MethodKind::GradInput => "grad-input",
            MethodKind::Ig => "ig",
            MethodKind::SmoothGrad => "smoothgrad",
            MethodKind::Occlusion => "occlusion",
            MethodKind::Rollout => "rollout",
        }
    }

    /// The method by its short name or one of the longer names it is known by.
    pub fn parse(name: &str) -> Option<MethodKind> {
        Some(match name {
            "saliency" | "gradient" => MethodKind::Saliency,
            "grad-input" | "gradient-input" | "input-x-gradient" => MethodKind::GradInput,
            "ig" | "integrated-gradients" => MethodKind::Ig,
            "smoothgrad" => MethodKind::SmoothGrad,
            "occlusion" => MethodKind::Occlusion,
            "rollout" | "attention-rollout" => MethodKind::Rollout,
            _ => return None,
        })
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The methods by name, as the command line and the console list them.
pub const METHOD_NAMES: [&str; 6] = [
    MethodKind::ALL[0].as_str(),
    MethodKind::ALL[1].as_str(),
    MethodKind::ALL[2].as_str(),
    MethodKind::ALL[3].as_str(),
    MethodKind::ALL[4].as_str(),
    MethodKind::ALL[5].as_str(),
];

impl Method {
    /// The method by name (see [`METHOD_NAMES`]) with the default settings for `input`
    /// ([`Method::with_defaults`]).
    pub fn named(name: &str, input: &InputShape) -> Result<Method> {
        match MethodKind::parse(name) {
            Some(kind) => Ok(Method::with_defaults(kind, input)),
            None => Err(Error::not_found(format!(
                "unknown attribution method {name:?}; the methods are {}",
                METHOD_NAMES.join(", ")
            ))),
        }
    }

    /// A method with the default settings for `input`: 50 Gauss-Legendre steps from a zero
    /// baseline for IG (Captum's defaults), noise level 0.15 and 50 samples for SmoothGrad (the
    /// paper's), a window of a quarter of the image side (or a twelfth of the sequence, or one
    /// feature or token) with half of it as stride.
    pub fn with_defaults(kind: MethodKind, input: &InputShape) -> Method {
        let (window, stride) = default_window(input);
        match kind {
            MethodKind::Saliency => Method::Saliency,
            MethodKind::GradInput => Method::GradInput,
            MethodKind::Ig => Method::Ig { steps: 50, rule: Rule::GaussLegendre, baseline: Baseline::Zero },
            MethodKind::SmoothGrad => Method::SmoothGrad { noise_level: 0.15, samples: 50, seed: 0 },
            MethodKind::Occlusion => Method::Occlusion { window, stride, baseline: Baseline::Zero },
            MethodKind::Rollout => Method::Rollout,
        }
    }

    /// Which method this is.
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Saliency => MethodKind::Saliency,
            Method::GradInput => MethodKind::GradInput,
            Method::Ig { .. } => MethodKind::Ig,
            Method::SmoothGrad { .. } => MethodKind::SmoothGrad,
            Method::Occlusion { .. } => MethodKind::Occlusion,
            Method::Rollout => MethodKind::Rollout,
        }
    }

    /// The short name ([`METHOD_NAMES`]).
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// A description with the settings, for titles: `integrated gradients (50 steps, ...)`.
    pub fn describe(&self) -> String {
        match self {
            Method::Saliency => "saliency (gradient)".into(),
            Method::GradInput => "gradient x input".into(),
            Method::Ig { steps, rule, baseline } => {
                format!(
                    "integrated gradients ({steps} steps, {}, {} baseline)",
                    rule.name(),
                    baseline.describe()
                )
            }
            Method::SmoothGrad { noise_level, samples, .. } => {
                format!("SmoothGrad (noise {noise_level}, {samples} samples)")
            }
            Method::Occlusion { window, stride, baseline } => {
                format!("occlusion (window {window}, stride {stride}, {} fill)", baseline.describe())
            }
            Method::Rollout => "attention rollout (heads averaged, residual added, all layers)".into(),
        }
    }

    /// Whether the result is a gradient (how the output would change), rather than a share of
    /// the output given to each input value. Gradients are ranked by magnitude.
    pub fn is_gradient(&self) -> bool {
        matches!(self, Method::Saliency | Method::SmoothGrad { .. })
    }

    fn check(&self, input: &InputShape, width: usize) -> Result<()> {
        let bad = |msg: String| Err(Error::argument(msg));
        match self {
            Method::Ig { steps, rule, baseline } => {
                let least = if matches!(rule, Rule::GaussLegendre) { 1 } else { 2 };
                if *steps < least || *steps > 10_000 {
                    return bad(format!(
                        "integrated gradients needs between {least} and 10000 steps with the {} rule, not {steps}",
                        rule.name()
                    ));
                }
                baseline.check(width)
            }
            Method::SmoothGrad { noise_level, samples, .. } => {
                if !(noise_level.is_finite() && *noise_level >= 0.0) {
                    return bad(format!("the SmoothGrad noise level {noise_level} must be a number >= 0"));
                }
                if *samples == 0 || *samples > 10_000 {
                    return bad(format!("SmoothGrad needs between 1 and 10000 samples, not {samples}"));
                }
                Ok(())
            }
            Method::Occlusion { window, stride, baseline } => {
                let extent = match *input {
                    InputShape::Image { height, width, .. } => height.min(width),
                    InputShape::Sequence { steps, .. } => steps,
                    InputShape::Tabular { features } => features,
                    InputShape::Text { max_len } => max_len,
                };
                if *window == 0 || *window > extent {
                    return bad(format!(
                        "the occlusion window {window} must be between 1 and {extent} for a {}",
                        input.describe()
                    ));
                }
                if *stride == 0 || *stride > *window {
                    return bad(format!(
                        "the occlusion stride {stride} must be between 1 and the window ({window}), \
                         or some values would never be occluded"
                    ));
                }
                baseline.check(width)
            }
            Method::Saliency | Method::GradInput | Method::Rollout => Ok(()),
        }
    }
}

fn default_window(input: &InputShape) -> (usize, usize) {
    let window = match *input {
        InputShape::Image { height, width, .. } => (height.min(width) / 4).max(1),
        InputShape::Sequence { steps, .. } => (steps / 12).max(1),
        InputShape::Tabular { .. } | InputShape::Text { .. } => 1,
    };
    (window, (window / 2).max(1))
}

impl Baseline {
    /// `zero`, a number, or `custom`.
    pub fn describe(&self) -> String {
        match self {
            Baseline::Zero => "zero".into(),
            Baseline::Constant(v) => format!("{v}"),
            Baseline::Custom(_) => "custom".into(),
        }
    }

    fn check(&self, width: usize) -> Result<()> {
        match self {
            Baseline::Custom(v) if v.len() != width => Err(Error::argument(format!(
                "a custom baseline needs {width} values (one per input value), not {}",
                v.len()
            ))),
            Baseline::Custom(v) if v.iter().any(|x| !x.is_finite()) => {
                Err(Error::argument("a custom baseline holds a value that is not a finite number"))
            }
            Baseline::Constant(v) if !v.is_finite() => {
                Err(Error::argument(format!("the baseline {v} is not a finite number")))
            }
            _ => Ok(()),
        }
    }

    /// The baseline for a batch of `n` examples of `width` values, as `like`'s shape.
    fn tensor(&self, like: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Baseline::Zero => like.zeros_like()?,
            Baseline::Constant(v) => like.ones_like()?.affine(*v as f64, 0.0)?,
            Baseline::Custom(values) => {
                let n = like.dim(0)?;
                let one = Tensor::from_slice(values, values.len(), like.device())?;
                one.unsqueeze(0)?.repeat((n, 1))?.reshape(like.shape())?
            }
        })
    }
}

/// Which output of the network is attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// The target class's logit (what Captum attributes for a model that returns logits).
    #[default]
    Logit,
    /// The target class's softmax probability.
    Probability,
}

/// The input an explanation is about, as the model saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainedInput {
    /// Numbers after preprocessing, in the layout's order (channels first for images).
    Dense(Vec<f32>),
    /// Token ids (0 pads), and the words when a vocabulary was given.
    Tokens { ids: Vec<u32>, words: Option<Vec<String>> },
}

/// The completeness check of integrated gradients: the attributions should add up to the
/// difference the input makes to the output, `F(x) - F(baseline)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Completeness {
    /// Σ attributions.
    pub attribution_sum: f64,
    /// F(x).
    pub output: f64,
    /// F(baseline).
    pub baseline_output: f64,
    /// |Σ attributions − (F(x) − F(baseline))|: the absolute value of Captum's `delta`, which
    /// keeps the sign.
    pub gap: f64,
}

impl Completeness {
    /// The gap relative to |F(x) − F(baseline)| (the gap itself when that is below 1e-6).
    pub fn relative_gap(&self) -> f64 {
        let d = (self.output - self.baseline_output).abs();
        if d < 1e-6 { self.gap } else { self.gap / d }
    }
}

/// One input's explanation: plain data that the command line, the console and the service
/// render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub method: Method,
    pub output: Output,
    /// The input's shape; attributions follow it, except for text (one per token).
    pub layout: InputShape,
    pub input: ExplainedInput,
    /// The class whose output is attributed.
    pub target: usize,
    /// The class the network predicts.
    pub predicted: usize,
    /// Softmax probabilities of every class.
    pub probabilities: Vec<f32>,
    /// One value per input value (channels first), or per token for text (0 for padding).
    pub attributions: Vec<f32>,
    /// Integrated gradients only.
    pub completeness: Option<Completeness>,
}

impl Explanation {
    /// Indices of the `k` attributions largest in magnitude, largest first (padding excluded).
    pub fn top(&self, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.attributions.len())
            .filter(|&i| match &self.input {
                ExplainedInput::Tokens { ids, .. } => ids.get(i).is_some_and(|&t| t != 0),
                ExplainedInput::Dense(_) => true,
            })
            .collect();
        idx.sort_by(|&a, &b| self.attributions[b].abs().total_cmp(&self.attributions[a].abs()));
        idx.truncate(k);
        idx
    }

    /// The classes by probability, most likely first, with their probabilities.
    pub fn ranked_classes(&self) -> Vec<(usize, f32)> {
        let mut v: Vec<(usize, f32)> = self.probabilities.iter().copied().enumerate().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    /// Fills in the words of a text input from the run's vocabulary.
    pub fn with_words(mut self, vocab: &[String]) -> Self {
        if let ExplainedInput::Tokens { ids, words } = &mut self.input {
            *words = Some(
                ids.iter()
                    .map(|&i| vocab.get(i as usize).cloned().unwrap_or_else(|| "<unk>".into()))
                    .collect(),
            );
        }
        self
    }
}

/// Computes explanations for one network. Cheap to make; holds no tensors.
#[derive(Debug, Clone)]
pub struct Explainer<'a> {
    net: &'a Network,
    output: Output,
    /// Largest number of points (interpolation steps, noisy copies, occluded copies) sent
    /// through the network at once.
    max_points: usize,
}

impl<'a> Explainer<'a> {
    /// An explainer of `net`'s logits, sending at most 2048 points through it at once.
    pub fn new(net: &'a Network) -> Self {
        Explainer { net, output: Output::Logit, max_points: 2048 }
    }

    /// Attributes `output` instead of the logit.
    pub fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// Caps the points per forward pass (memory against speed); at least 1.
    pub fn max_points(mut self, n: usize) -> Self {
        self.max_points = n.max(1);
        self
    }

    /// The network being explained.
    pub fn network(&self) -> &Network {
        self.net
    }

    /// Explains a batch: `inputs` is `(B, dims...)` as the network takes it (token ids for text).
    /// `targets` gives one class per input; `None` attributes each input's predicted class.
    /// Each input's result is the same as when explained alone.
    pub fn explain(
        &self,
        inputs: &Tensor,
        method: &Method,
        targets: Option<&[usize]>,
    ) -> Result<Vec<Explanation>> {
        let space = Space::new(self.net, inputs)?;
        method.check(&self.net.input, space.width)?;
        let logits = self.net.forward(inputs, None)?;
        let probabilities = crate::ml::model::softmax(&logits)?.to_vec2::<f32>()?;
        let predicted: Vec<usize> =
            logits.argmax(D::Minus1)?.to_vec1::<u32>()?.into_iter().map(|p| p as usize).collect();
        let targets = match targets {
            Some(t) => {
                if t.len() != space.n {
                    return Err(Error::unsuitable(format!("{} targets for {} inputs", t.len(), space.n)));
                }
                if let Some(bad) = t.iter().find(|&&c| c >= self.net.classes) {
                    return Err(Error::argument(format!(
                        "target class {bad} does not exist: the model has {} classes (0 to {})",
                        self.net.classes,
                        self.net.classes - 1
                    )));
                }
                t.to_vec()
            }
            None => predicted.clone(),
        };
        let (attributions, completeness) = self.attributions(&space, method, &targets)?;
        let inputs_out: Vec<ExplainedInput> = match &space.ids {
            Some(ids) => ids
                .to_vec2::<u32>()?
                .into_iter()
                .map(|ids| ExplainedInput::Tokens { ids, words: None })
                .collect(),
            None => space
                .values
                .flatten_from(1)?
                .to_vec2::<f32>()?
                .into_iter()
                .map(ExplainedInput::Dense)
                .collect(),
        };
        Ok(inputs_out
            .into_iter()
            .enumerate()
            .map(|(i, input)| Explanation {
                method: method.clone(),
                output: self.output,
                layout: self.net.input.clone(),
                input,
                target: targets[i],
                predicted: predicted[i],
                probabilities: probabilities[i].clone(),
                attributions: attributions[i].clone(),
                completeness: completeness.as_ref().map(|c| c[i]),
            })
            .collect())
    }

    /// Raw attributions per input (per token for text) and, for IG, the completeness checks.
    pub(crate) fn attributions(
        &self,
        space: &Space,
        method: &Method,
        targets: &[usize],
    ) -> Result<Attributions> {
        let targets = Tensor::from_vec(
            targets.iter().map(|&t| t as u32).collect::<Vec<_>>(),
            space.n,
            space.values.device(),
        )?;
        let mut completeness = None;
        let per_value = match method {
            Method::Saliency => self.gradients(&space.values, space.mask.as_ref(), &targets)?.1,
            Method::GradInput => {
                self.gradients(&space.values, space.mask.as_ref(), &targets)?.1.mul(&space.values)?
            }
            Method::Ig { steps, rule, baseline } => {
                let (attr, checks) = self.integrated_gradients(space, &targets, *steps, *rule, baseline)?;
                completeness = Some(checks);
                attr
            }
            Method::SmoothGrad { noise_level, samples, seed } => {
                self.smoothgrad(space, &targets, *noise_level, *samples, *seed)?
            }
            Method::Occlusion { window, stride, baseline } => {
                return Ok((self.occlusion(space, &targets, *window, *stride, baseline)?, None));
            }
            Method::Rollout => {
                let inputs = space.ids.as_ref().unwrap_or(&space.values);
                return Ok((rollout::scores(self.net, inputs)?, None));
            }
        };
        Ok((space.per_feature(&per_value)?, completeness))
    }
}

/// Per-input attributions (per token for text) and, for integrated gradients, each input's
/// completeness check.
pub(crate) type Attributions = (Vec<Vec<f32>>, Option<Vec<Completeness>>);

/// A batch in the space attributions are taken in: the model's inputs, or the token embeddings
/// `(B, L, E)` of a text model, with its padding mask.
pub(crate) struct Space {
    /// `(B, dims...)` f32.
    pub values: Tensor,
    /// Text only: `(B, L)`, 1 for real tokens.
    pub mask: Option<Tensor>,
    /// Text only: the token ids `(B, L)`.
    pub ids: Option<Tensor>,
    /// Examples in the batch.
    pub n: usize,
    /// Values per example.
    pub width: usize,
}

impl Space {
    pub fn new(net: &Network, inputs: &Tensor) -> Result<Self> {
        let dims = net.input.dims();
        let got = inputs.dims();
        if got.len() != dims.len() + 1 || got[1..] != dims[..] {
            return Err(Error::unsuitable(format!(
                "the model takes inputs of shape {dims:?} ({}), not {:?}",
                net.input.describe(),
                got.get(1..).unwrap_or(&[])
            )));
        }
        let n = got[0];
        if n == 0 {
            return Err(Error::unsuitable("there are no inputs to explain"));
        }
        if net.takes_tokens() {
            let ids = inputs.to_dtype(DType::U32)?;
            let values = net.embed(&ids)?.detach();
            let width = values.elem_count() / n.max(1);
            Ok(Space { values, mask: Some(token_mask(&ids)?), ids: Some(ids), n, width })
        } else {
            let values = inputs.to_dtype(DType::F32)?.detach();
            Ok(Space { values, mask: None, ids: None, n, width: dims.iter().product() })
        }
    }

    /// Per-value attributions `(B, dims...)` to one list per input: per token for text (the
    /// sum over the embedding dimensions, 0 for padding).
    pub fn per_feature(&self, per_value: &Tensor) -> Result<Vec<Vec<f32>>> {
        Ok(match &self.mask {
            Some(mask) => per_value.sum(D::Minus1)?.mul(mask)?.to_vec2::<f32>()?,
            None => per_value.flatten_from(1)?.to_vec2::<f32>()?,
        })
    }
}
