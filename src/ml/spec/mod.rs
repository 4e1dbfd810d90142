//! Experiment specs: the RON files in `models/` that say what to train and how. This module owns
//! the spec's types, its defaults, parsing with errors that name the file, line, column and field,
//! and the checks that a parsed spec makes sense. It knows nothing of data, tensors or the store.
//!
//! - this file: the spec's types and their defaults;
//! - `parse.rs`: reading RON, the checks serde cannot make, and the flat `params` view;
//! - `builtin.rs`: the specs embedded from `models/`, and finding a spec by name or path.

use serde::{Deserialize, Serialize};
use std::path::Path;

mod builtin;
mod parse;

pub use builtin::{BUILTIN_SPECS, BuiltinSpec, DEFAULT_SPEC, SpecEntry, SpecOrigin, list, resolve};

/// One experiment: data, preprocessing, model, optimisation and stopping rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Short name, used for run ids and as the served model's name.
    pub name: String,
    /// One line a person reads in `vigil models`.
    #[serde(default)]
    pub description: String,
    pub data: DataSpec,
    /// Applied in order; fitted on the training split only.
    #[serde(default)]
    pub preprocess: Vec<Preprocess>,
    /// Random changes to training batches (never to validation or test data).
    #[serde(default)]
    pub augment: Option<Augment>,
    /// Adversarial training: part of every training batch is replaced by attacks on the current
    /// weights (see [`crate::ml::attack`]). Left out of stored specs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversarial: Option<AdversarialTraining>,
    /// Differentially private training (DP-SGD, Abadi et al., 2016). Left out of stored specs
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<DpSgd>,
    pub model: ModelSpec,
    #[serde(default)]
    pub init: Init,
    pub optimizer: Optimizer,
    #[serde(default)]
    pub schedule: Schedule,
    pub batch: Batching,
    pub epochs: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    #[serde(default)]
    pub checkpoint: CheckpointPolicy,
    #[serde(default)]
    pub device: DeviceSpec,
}

fn default_seed() -> u64 {
    42
}

/// Where the examples come from and how they are split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub source: DataSource,
    #[serde(default)]
    pub split: Split,
    /// A separate source of validation examples (a given `valid.csv`); `split.validation` of
    /// `source` when absent.
    #[serde(default)]
    pub validation: Option<DataSource>,
    /// A separate source of test examples (MNIST's t10k files, a given `test.csv`): the test
    /// split is exactly these, and `split.test` is not taken from `source`.
    #[serde(default)]
    pub test: Option<DataSource>,
}

impl DataSpec {
    /// Every source: the main one, then the validation and test sources given.
    pub fn sources(&self) -> impl Iterator<Item = &DataSource> {
        std::iter::once(&self.source).chain(self.validation.as_ref()).chain(self.test.as_ref())
    }
}

/// A data set: built in, generated, or a file the user brings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum DataSource {
    /// The UCI optical-recognition handwritten digits (1,797 8x8 images), embedded in the binary.
    Digits,
    /// Five-topic labelled sentences (`data/topics.tsv`), embedded in the binary.
    Topics,
    /// Generated waveforms (pulse, sawtooth, sine, square) to classify from their samples.
    Waveforms {
        samples: usize,
        length: usize,
        #[serde(default = "default_noise")]
        noise: f32,
    },
    /// A CSV file: numeric feature columns and one label column, chosen by name (or, in a file
    /// without a header, by its position from 0). `header` says whether the first line names
    /// the columns; without it a first line of numbers is read as data and anything else as
    /// the header.
    Csv {
        path: String,
        label: String,
        #[serde(default)]
        header: Option<bool>,
    },
    /// MNIST-style IDX files (`*-ubyte`, gzipped or not).
    Idx {
        images: String,
        labels: String,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// A text file of `label<TAB>text` lines.
    Tsv { path: String },
}

impl DataSource {
    /// Makes the files it names absolute, resolving relative ones against `base` (the spec's
    /// folder). A relative path found only from the current directory is kept as that: specs and
    /// runs written before paths were resolved against the spec meant it so.
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut String| {
            let given = Path::new(p.as_str());
            if given.is_absolute() {
                return;
            }
            let beside = base.join(given);
            let chosen = if !beside.exists() && given.exists() { given.to_path_buf() } else { beside };
            let absolute = std::path::absolute(&chosen).unwrap_or(chosen);
            *p = absolute.display().to_string();
        };
        match self {
            DataSource::Csv { path, .. } | DataSource::Tsv { path } => resolve(path),
            DataSource::Idx { images, labels, .. } => {
                resolve(images);
                resolve(labels);
            }
            DataSource::Digits | DataSource::Topics | DataSource::Waveforms { .. } => {}
        }
    }
}

fn default_noise() -> f32 {
    0.1
}

/// Fractions held out for validation and test; the rest trains. Stratified by class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    #[serde(default = "default_validation")]
    pub validation: f64,
    #[serde(default = "default_test")]
    pub test: f64,
    /// Seed of the split; [`DEFAULT_SPLIT_SEED`] when absent, not the experiment's seed, so that
    /// `--seed` (a new initialisation and batch order) keeps the same test split.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// The split's seed when a spec names none.
pub const DEFAULT_SPLIT_SEED: u64 = 42;

impl Split {
    /// The seed the examples are split with.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(DEFAULT_SPLIT_SEED)
    }
}

fn default_validation() -> f64 {
    0.15
}
fn default_test() -> f64 {
    0.2
}

impl Default for Split {
    fn default() -> Self {
        Split { validation: default_validation(), test: default_test(), seed: None }
    }
}

/// A preprocessing step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Preprocess {
    /// Drop every example with a missing value (reported in the run's log).
    DropMissing,
    /// Fill missing values with a statistic of the training split.
    Impute(ImputeStrategy),
    /// Subtract the mean and divide by the standard deviation.
    Standardize(Scope),
    /// Scale into [0, 1] using the minimum and maximum.
    MinMax(Scope),
    /// Split text into words and map them to ids from a vocabulary built on the training split.
    Tokenize(Tokenize),
}

/// How `Impute` fills a missing value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImputeStrategy {
    Mean,
    Median,
    Zero,
}

/// Whether a scaling step keeps statistics per feature or one for the whole input (images).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    PerFeature,
    Global,
}

/// Text tokenisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokenize {
    #[serde(default = "yes")]
    pub lowercase: bool,
    #[serde(default = "default_max_vocab")]
    pub max_vocab: usize,
    #[serde(default = "one")]
    pub min_count: usize,
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn default_max_vocab() -> usize {
    10_000
}
fn default_max_len() -> usize {
    32
}

/// Image augmentation for training batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Largest shift in pixels, in each direction.
    #[serde(default)]
    pub shift: usize,
    /// Standard deviation of Gaussian noise added to each input value.
    #[serde(default)]
    pub noise: f32,
    /// Share of training examples that get augmented.
    #[serde(default = "one_f32")]
    pub probability: f32,
}

fn one_f32() -> f32 {
    1.0
}

/// An evasion attack: the fast gradient sign method (Goodfellow et al., 2015) or projected
/// gradient descent (Madry et al., 2018).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttackMethod {
    /// One step of size ε along the gradient's sign (L∞) or direction (L2).
    Fgsm,
    /// Several smaller steps, each projected back into the ε-ball, from a random start.
    Pgd,
}

/// The norm that bounds a perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Norm {
    /// Every value moves by at most ε.
    #[default]
    Linf,
    /// The perturbation's Euclidean length is at most ε.
    L2,
}

/// Adversarial training (Madry et al., 2018): a share of every training batch is replaced by
/// adversarial examples made against the current weights, with the true labels kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdversarialTraining {
    pub method: AttackMethod,
    /// Radius of the perturbation, in the units of the preprocessed input.
    pub eps: f32,
    #[serde(default)]
    pub norm: Norm,
    /// PGD iterations (7 when absent); FGSM takes one step of ε.
    #[serde(default)]
    pub steps: Option<usize>,
    /// PGD step size (2.5 ε / steps when absent).
    #[serde(default)]
    pub step_size: Option<f32>,
    /// Share of each batch replaced by adversarial examples, in (0, 1].
    #[serde(default = "half")]
    pub share: f32,
    /// PGD starts from a random point of the ε-ball.
    #[serde(default = "yes")]
    pub random_start: bool,
}

/// DP-SGD as Opacus does it: each example's gradient is clipped to `clip_norm`, Gaussian noise
/// of standard deviation `noise_multiplier × clip_norm` is added to their sum, and batches are
/// drawn by Poisson sampling (each example independently, with probability batch / N), which is
/// what the privacy accountant assumes. Give either the noise multiplier or a target ε, from
/// which the noise multiplier is found for the spec's epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSgd {
    /// Largest L2 norm of one example's gradient (all parameters together).
    pub clip_norm: f64,
    /// σ: the noise's standard deviation in units of `clip_norm`.
    #[serde(default)]
    pub noise_multiplier: Option<f64>,
    /// ε to spend over the spec's epochs; σ is computed from it.
    #[serde(default)]
    pub target_epsilon: Option<f64>,
    /// δ of the (ε, δ) guarantee; well below 1 / the number of training examples.
    #[serde(default = "default_delta")]
    pub delta: f64,
}

fn default_delta() -> f64 {
    1e-5
}

fn half() -> f32 {
    0.5
}

impl AdversarialTraining {
    /// PGD iterations per batch (1 for FGSM).
    pub fn iterations(&self) -> usize {
        match self.method {
            AttackMethod::Fgsm => 1,
            AttackMethod::Pgd => self.steps.unwrap_or(7),
        }
    }
}

/// The network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ModelSpec {
    /// Softmax regression: one linear layer.
    LogReg,
    /// Multi-layer perceptron.
    Mlp {
        hidden: Vec<usize>,
        #[serde(default)]
        activation: Activation,
        #[serde(default)]
        dropout: f32,
    },
    /// Convolutions (same padding) with max pooling, then dense layers.
    Cnn {
        channels: Vec<usize>,
        #[serde(default = "default_kernel")]
        kernel: usize,
        #[serde(default)]
        dense: Vec<usize>,
        #[serde(default)]
        activation: Activation,
        #[serde(default)]
        dropout: f32,
    },
    /// A recurrent classifier over sequences: the last hidden state feeds the output layer.
    Rnn {
        cell: Cell,
        hidden: usize,
        #[serde(default = "one")]
        layers: usize,
        #[serde(default)]
        dropout: f32,
    },
    /// A text classifier: token embeddings, an encoder, then dense layers.
    Text {
        embed_dim: usize,
        #[serde(default)]
        encoder: TextEncoder,
        #[serde(default)]
        hidden: Vec<usize>,
        #[serde(default)]
        dropout: f32,
    },
    /// A convolutional text classifier (Kim, 2014): token embeddings, parallel 1-D convolutions
    /// of each width in `widths` with `filters` filters each, ReLU, max-over-time pooling over
    /// the windows that start on a real token, concatenation, dropout, then the output layer.
    TextCnn {
        embed: usize,
        widths: Vec<usize>,
        filters: usize,
        #[serde(default)]
        dropout: f32,
    },
    /// A Transformer encoder trained from scratch: token embeddings (text) or an input
    /// projection (sequences of numbers), learned positions, `layers` encoder layers of `heads`
    /// attention heads and a GELU feed-forward block of width `ff`, pooled into one vector, then
    /// the dense layers of `head` and the output layer.
    Transformer {
        dim: usize,
        heads: usize,
        layers: usize,
        ff: usize,
        #[serde(default)]
        dropout: f32,
        #[serde(default)]
        pooling: Pooling,
        #[serde(default)]
        norm: NormPlacement,
        #[serde(default)]
        head: Vec<usize>,
        /// For numeric sequences: this many consecutive steps make one token (a patch, as a
        /// Vision Transformer's), which shortens the sequence attention runs over. 1 for text.
        #[serde(default = "one")]
        patch: usize,
    },
    /// A pretrained BERT-family encoder from a Hugging Face folder (`config.json`,
    /// `model.safetensors`, `tokenizer.json`), its own tokeniser cutting texts to `max_len`
    /// tokens, pooled, then the dense layers of `head` and an output layer trained on the data.
    /// `path` may start with `cache:` for the model cache (`scripts/fetch_models.sh minilm`).
    Pretrained {
        path: String,
        #[serde(default)]
        pooling: Pooling,
        #[serde(default)]
        head: Vec<usize>,
        /// Keep the encoder's weights as loaded and train the head only.
        #[serde(default = "yes")]
        freeze: bool,
        #[serde(default = "default_pretrained_len")]
        max_len: usize,
        #[serde(default)]
        dropout: f32,
    },
}

fn default_pretrained_len() -> usize {
    128
}

/// How a Transformer turns its sequence of outputs into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Pooling {
    /// The mean of the real tokens' outputs (sentence-transformers' choice).
    #[default]
    Mean,
    /// The output at the first position: BERT's [CLS] token, or a learned vector put before the
    /// sequence in a model trained here.
    Cls,
}

/// Where a Transformer layer normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NormPlacement {
    /// After each residual sum, as in the original Transformer, BERT and PyTorch's default.
    #[default]
    Post,
    /// Before each block, inside the residual (steadier for deep models trained from scratch).
    Pre,
}

fn default_kernel() -> usize {
    3
}

impl ModelSpec {
    /// The architecture's family name, as shown in tables.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::LogReg => "logreg",
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::Cnn { .. } => "cnn",
            ModelSpec::Rnn { cell: Cell::Lstm, .. } => "lstm",
            ModelSpec::Rnn { cell: Cell::Gru, .. } => "gru",
            ModelSpec::Text { .. } => "text",
            ModelSpec::TextCnn { .. } => "textcnn",
            ModelSpec::Transformer { .. } => "transformer",
            ModelSpec::Pretrained { .. } => "pretrained",
        }
    }
}

/// Hidden-layer non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
    Sigmoid,
    Gelu,
}

/// Recurrent cell type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cell {
    Lstm,
    Gru,
}

/// How a text model turns a sequence of token embeddings into one vector.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum TextEncoder {
    /// Average of the embeddings of the non-padding tokens.
    #[default]
    MeanPool,
    /// A recurrent layer over the embeddings; its last state is the encoding.
    Rnn { cell: Cell, hidden: usize },
}

/// Weight initialisation (biases start at zero; embeddings at N(0, 1)).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum Init {
    /// U(-b, b) with b = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010).
    #[default]
    XavierUniform,
    /// N(0, 2 / (fan_in + fan_out)).
    XavierNormal,
    /// U(-b, b) with b = sqrt(6 / fan_in), for ReLU networks (He et al., 2015).
    KaimingUniform,
    /// N(0, 2 / fan_in).
    KaimingNormal,
    /// N(0, std²).
    Normal(f64),
    /// U(-bound, bound).
    Uniform(f64),
}

/// The optimiser and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Optimizer {
    /// Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.
    Sgd {
        lr: f64,
        #[serde(default)]
        momentum: f64,
        #[serde(default)]
        weight_decay: f64,
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam with L2 weight decay added to the gradient.
    Adam {
        lr: f64,
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay (Loshchilov and Hutter, 2019).
    AdamW {
        lr: f64,
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
    },
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_decay() -> f64 {
    0.01
}

impl Optimizer {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } | Optimizer::AdamW { lr, .. } => *lr,
        }
    }

    /// Changes the base learning rate (used by edits from the command line or the console).
    pub fn set_lr(&mut self, value: f64) {
        match self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } | Optimizer::AdamW { lr, .. } => {
                *lr = value
            }
        }
    }

    /// Short name for tables.
    pub fn kind(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
            Optimizer::AdamW { .. } => "adamw",
        }
    }
}

/// Learning-rate schedule over the run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Schedule {
    #[default]
    Constant,
    /// Multiply the rate by `gamma` every `every` epochs.
    Step { every: usize, gamma: f64 },
    /// Cosine decay from the base rate to `min_lr` over all steps, after a linear warm-up.
    Cosine {
        #[serde(default)]
        min_lr: f64,
        #[serde(default)]
        warmup_epochs: usize,
    },
}

/// How many examples each gradient step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Batching {
    /// The whole training split in every step (full-batch gradient descent).
    Full,
    /// Mini-batches of this size.
    Mini(usize),
    /// One example per step (stochastic gradient descent).
    Stochastic,
}

impl Batching {
    /// The batch size for a training split of `n` examples.
    pub fn size(&self, n: usize) -> usize {
        match self {
            Batching::Full => n.max(1),
            Batching::Mini(b) => (*b).max(1),
            Batching::Stochastic => 1,
        }
    }
}

/// Stop when the monitored validation metric has not improved for `patience` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    #[serde(default)]
    pub monitor: Monitor,
    pub patience: usize,
    #[serde(default)]
    pub min_delta: f64,
}

/// A validation metric that decides "best".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Monitor {
    #[default]
    ValLoss,
    ValAccuracy,
    ValMacroF1,
}

impl Monitor {
    /// Whether larger values are better.
    pub fn maximise(&self) -> bool {
        !matches!(self, Monitor::ValLoss)
    }
}

/// Which checkpoints to keep. The best (by `monitor`) and the last are always kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPolicy {
    #[serde(default = "accuracy_monitor")]
    pub monitor: Monitor,
    /// Save the "last" checkpoint every this many epochs (and always at the end).
    #[serde(default = "one")]
    pub every: usize,
}

fn accuracy_monitor() -> Monitor {
    Monitor::ValAccuracy
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy { monitor: Monitor::ValAccuracy, every: 1 }
    }
}

/// Where tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeviceSpec {
    /// The first CUDA device when built with CUDA and one is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}
