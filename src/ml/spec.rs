//! Experiment specs: the RON files in `models/` that say what to train and how. This module owns
//! the spec's types, its defaults, parsing with errors that name the file, line, column and field,
//! and the checks that a parsed spec makes sense. It knows nothing of data, tensors or the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    /// A CSV file with a header: numeric feature columns and one label column chosen by name.
    Csv { path: String, label: String },
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
    /// Seed of the split; the experiment's seed when absent, so that changing the training seed
    /// can be asked to keep the same split.
    #[serde(default)]
    pub seed: Option<u64>,
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

const RON_EXTENSIONS: ron::extensions::Extensions =
    ron::extensions::Extensions::IMPLICIT_SOME.union(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES);

fn ron_options() -> ron::Options {
    // Implicit `Some` lets a spec say `early_stopping: (patience: 5)` instead of `Some((...))`,
    // and unwrapped variant newtypes `Tokenize(max_len: 24)` instead of `Tokenize((max_len: 24))`.
    ron::Options::default().with_default_extension(RON_EXTENSIONS)
}

impl ExperimentSpec {
    /// Parses and checks a spec from RON text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let spec: ExperimentSpec = ron_options().from_str(text).map_err(|e| {
            let (line, col) = (e.span.start.line, e.span.start.col);
            let mut msg = e.code.to_string();
            use ron::error::Error as E;
            // A value of the wrong type: say which field it is in (RON only says the type).
            let type_error = matches!(
                e.code,
                E::InvalidValueForType { .. }
                    | E::ExpectedFloat
                    | E::ExpectedInteger
                    | E::ExpectedBoolean
                    | E::ExpectedString
                    | E::ExpectedArray
                    | E::ExpectedOption
                    | E::ExpectedStructLike
                    | E::ExpectedIdentifier
                    | E::IntegerOutOfBounds
                    | E::ExpectedDifferentLength { .. }
            );
            if let Some(field) = field_before(text, line, col).filter(|_| type_error)
                && !msg.contains(&format!("`{field}`"))
            {
                msg = format!("in field `{field}`: {msg}");
            }
            // The two extensions change what RON users may be used to writing; say so.
            let here = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
            if here.contains("Some(") {
                msg.push_str(" (specs leave out `Some`: write `field: (...)` for an optional value)");
            } else if here.contains("((") {
                msg.push_str(" (write `Variant(field: ...)` rather than `Variant((field: ...))`)");
            }
            Error::Spec { path: origin.to_path_buf(), line, col, msg }
        })?;
        spec.validate(text, origin)?;
        Ok(spec)
    }

    /// Reads and parses a spec file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Serialises the spec as pretty RON, as stored with a run.
    pub fn to_ron(&self) -> String {
        let pretty = ron::ser::PrettyConfig::new()
            .extensions(RON_EXTENSIONS)
            .depth_limit(4)
            .struct_names(false)
            .enumerate_arrays(false);
        ron::ser::to_string_pretty(self, pretty).expect("a spec always serialises")
    }

    /// Checks the values serde cannot: positive sizes, fractions in range, compatible steps.
    fn validate(&self, text: &str, origin: &Path) -> Result<()> {
        let fail = |field: &str, msg: String| {
            let (line, col) = locate(text, field);
            Err(Error::Spec { path: origin.to_path_buf(), line, col, msg: format!("field `{field}`: {msg}") })
        };
        if self.name.trim().is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return fail(
                "name",
                format!("{:?} must be non-empty and use only letters, digits, '-' and '_'", self.name),
            );
        }
        if self.epochs == 0 {
            return fail("epochs", "must be at least 1".into());
        }
        let s = &self.data.split;
        if !(0.0..1.0).contains(&s.validation) || s.validation <= 0.0 {
            return fail(
                "validation",
                format!("{} must be in (0, 1): validation picks the best checkpoint", s.validation),
            );
        }
        if !(0.0..1.0).contains(&s.test) || s.test <= 0.0 {
            return fail("test", format!("{} must be in (0, 1)", s.test));
        }
        if s.validation + s.test >= 0.9 {
            return fail(
                "split",
                format!(
                    "validation + test = {} leaves too little to train on (at most 0.9)",
                    s.validation + s.test
                ),
            );
        }
        if let Batching::Mini(0) = self.batch {
            return fail("batch", "Mini(size) needs a size of at least 1".into());
        }
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return fail("lr", format!("{lr} must be a positive number"));
        }
        match &self.optimizer {
            Optimizer::Sgd { momentum, .. } if !(0.0..1.0).contains(momentum) => {
                return fail("momentum", format!("{momentum} must be in [0, 1)"));
            }
            Optimizer::Adam { beta1, beta2, .. } | Optimizer::AdamW { beta1, beta2, .. }
                if !(0.0..1.0).contains(beta1) || !(0.0..1.0).contains(beta2) =>
            {
                return fail("beta1", "beta1 and beta2 must be in [0, 1)".into());
            }
            _ => {}
        }
        if let Schedule::Step { every: 0, .. } = self.schedule {
            return fail("every", "a Step schedule needs `every` of at least 1 epoch".into());
        }
        let dropout_ok = |d: f32| (0.0..1.0).contains(&d);
        match &self.model {
            ModelSpec::Mlp { hidden, dropout, .. } => {
                if hidden.contains(&0) {
                    return fail("hidden", "layer widths must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::Cnn { channels, kernel, dense, dropout, .. } => {
                if channels.is_empty() || channels.contains(&0) {
                    return fail("channels", "needs at least one layer of at least 1 channel".into());
                }
                if *kernel == 0 || kernel % 2 == 0 {
                    return fail("kernel", format!("{kernel} must be odd (same padding)"));
                }
                if dense.contains(&0) {
                    return fail("dense", "layer widths must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::Rnn { hidden, layers, dropout, .. } => {
                if *hidden == 0 || *layers == 0 {
                    return fail("hidden", "hidden size and layers must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::Text { embed_dim, hidden, dropout, encoder } => {
                if *embed_dim == 0 || hidden.contains(&0) {
                    return fail("embed_dim", "sizes must be at least 1".into());
                }
                if let TextEncoder::Rnn { hidden: 0, .. } = encoder {
                    return fail("encoder", "the encoder's hidden size must be at least 1".into());
                }
                if !dropout_ok(*dropout) {
                    return fail("dropout", format!("{dropout} must be in [0, 1)"));
                }
            }
            ModelSpec::LogReg => {}
        }
        let tokenizes = self.preprocess.iter().any(|p| matches!(p, Preprocess::Tokenize(_)));
        let text_data = matches!(self.data.source, DataSource::Topics | DataSource::Tsv { .. });
        let text_model = matches!(self.model, ModelSpec::Text { .. });
        if text_model && !(text_data && tokenizes) {
            return fail("model", "a Text model needs text data (Topics or Tsv) and a Tokenize step".into());
        }
        if text_data && !text_model {
            return fail("model", "text data needs a Text model (other models take numeric inputs)".into());
        }
        if !text_data && tokenizes {
            return fail("preprocess", "Tokenize only applies to text data".into());
        }
        if let Some(a) = &self.augment {
            if text_data {
                return fail("augment", "augmentation applies to numeric inputs, not text".into());
            }
            if !(0.0..=1.0).contains(&a.probability) || a.noise < 0.0 {
                return fail("augment", "probability must be in [0, 1] and noise non-negative".into());
            }
        }
        if let Some(dp) = &self.privacy {
            let fail_dp = |field: &str, msg: String| {
                let (line, col) = locate_after(text, "privacy", field);
                Err(Error::Spec {
                    path: origin.to_path_buf(),
                    line,
                    col,
                    msg: format!("field `privacy.{field}`: {msg}"),
                })
            };
            if self.adversarial.is_some() {
                return fail(
                    "privacy",
                    "DP-SGD and adversarial training cannot be combined: the privacy accountant \
                     does not cover examples made from the current weights"
                        .into(),
                );
            }
            if !(dp.clip_norm.is_finite() && dp.clip_norm > 0.0) {
                return fail_dp(
                    "clip_norm",
                    format!(
                        "{} must be a positive number (the largest per-example gradient norm)",
                        dp.clip_norm
                    ),
                );
            }
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                return fail_dp("delta", format!("{} must be in (0, 1)", dp.delta));
            }
            match (dp.noise_multiplier, dp.target_epsilon) {
                (Some(_), Some(_)) | (None, None) => {
                    return fail(
                        "privacy",
                        "give exactly one of `noise_multiplier` and `target_epsilon`".into(),
                    );
                }
                (Some(sigma), None) if !(sigma.is_finite() && sigma > 0.0) => {
                    return fail_dp("noise_multiplier", format!("{sigma} must be a positive number"));
                }
                (None, Some(eps)) if !(eps.is_finite() && eps > 0.0) => {
                    return fail_dp("target_epsilon", format!("{eps} must be a positive number"));
                }
                _ => {}
            }
        }
        if let Some(a) = &self.adversarial {
            let fail_adv = |field: &str, msg: String| {
                let (line, col) = locate_after(text, "adversarial", field);
                Err(Error::Spec {
                    path: origin.to_path_buf(),
                    line,
                    col,
                    msg: format!("field `adversarial.{field}`: {msg}"),
                })
            };
            if text_data {
                return fail(
                    "adversarial",
                    "adversarial training perturbs numeric inputs, and a text model takes token ids \
                     (`vigil attack` attacks text models in their embedding space)"
                        .into(),
                );
            }
            if !(a.eps.is_finite() && a.eps > 0.0) {
                return fail_adv(
                    "eps",
                    format!("{} must be a positive number (the perturbation's radius)", a.eps),
                );
            }
            if !(a.share > 0.0 && a.share <= 1.0) {
                return fail_adv(
                    "share",
                    format!("{} must be in (0, 1]: the share of each batch attacked", a.share),
                );
            }
            match (a.method, a.steps) {
                (AttackMethod::Fgsm, Some(s)) if s != 1 => {
                    return fail_adv(
                        "steps",
                        format!("FGSM takes one step of eps, not {s}; use Pgd for more"),
                    );
                }
                (AttackMethod::Pgd, Some(s)) if s == 0 || s > 1000 => {
                    return fail_adv("steps", format!("{s} must be between 1 and 1000"));
                }
                _ => {}
            }
            if let Some(s) = a.step_size
                && !(s.is_finite() && s > 0.0)
            {
                return fail_adv("step_size", format!("{s} must be a positive number"));
            }
        }
        if let DataSource::Waveforms { samples, length, .. } = self.data.source
            && (samples < 40 || length < 8)
        {
            return fail("source", "Waveforms needs samples >= 40 and length >= 8".into());
        }
        if let DeviceSpec::Cuda(_) = self.device
            && !cfg!(feature = "cuda")
        {
            return fail("device", "Cuda needs a build with `--features cuda`; use Auto or Cpu".into());
        }
        Ok(())
    }

    /// The spec as flat `dotted.key = value` pairs, for tables, comparisons and filters.
    pub fn params(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let value = serde_json::to_value(self).expect("a spec always serialises");
        flatten("", &value, &mut out);
        out.remove("description");
        out
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    use serde_json::Value;
    let key = |k: &str| {
        if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") }
    };
    match v {
        Value::Object(map) => {
            // Externally tagged enums serialise as {"Variant": {...}}: keep the variant as the
            // value of the prefix and flatten its fields beside it.
            if map.len() == 1 && !prefix.is_empty() {
                let (variant, inner) = map.iter().next().expect("one entry");
                if variant.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                    out.insert(prefix.to_string(), variant.clone());
                    if let Value::Object(_) = inner {
                        flatten(prefix, inner, out);
                    } else {
                        out.insert(prefix.to_string(), format!("{variant}({})", scalar(inner)));
                    }
                    return;
                }
            }
            for (k, inner) in map {
                flatten(&key(k), inner, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object()) => {
            let parts: Vec<String> = items.iter().map(scalar).collect();
            out.insert(prefix.to_string(), format!("[{}]", parts.join(", ")));
        }
        other => {
            out.insert(prefix.to_string(), scalar(other));
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        // f32 fields (noise, dropout) widen to f64 in JSON: print the short f32 form, 0.02
        // rather than 0.019999999552965164.
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            if (x as f32) as f64 == x { (x as f32).to_string() } else { x.to_string() }
        }
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(scalar).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    if v.is_object() || k.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                        if v.is_null() { k.clone() } else { format!("{k}({})", scalar(v)) }
                    } else {
                        format!("{k}: {}", scalar(v))
                    }
                })
                .collect();
            parts.join(", ")
        }
        other => other.to_string(),
    }
}

/// The identifier of the `field:` nearest before a (1-based) line and column, so that a type
/// error deep in a spec can say which field it is in.
fn field_before(text: &str, line: usize, col: usize) -> Option<String> {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            offset += l.char_indices().nth(col.saturating_sub(1)).map_or(l.len(), |(b, _)| b);
            break;
        }
        offset += l.len();
    }
    let before = &text[..offset.min(text.len())];
    let colon = before.rfind(':')?;
    let ident: String = before[..colon]
        .trim_end()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!ident.is_empty() && ident.chars().next().is_some_and(|c| !c.is_ascii_digit())).then_some(ident)
}

/// The 1-based line and column of `field:` in the text, or 1:1 when it is not written there
/// (a default value that another field made invalid).
fn locate(text: &str, field: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut search = 0;
        while let Some(pos) = code[search..].find(field) {
            let start = search + pos;
            let end = start + field.len();
            let before_ok = start == 0
                || !code[..start].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let after = code[end..].trim_start();
            if before_ok && (after.starts_with(':') || after.starts_with('(')) {
                return (i + 1, code[..start].chars().count() + 1);
            }
            search = end;
        }
    }
    (1, 1)
}

/// Like [`locate`], but for a field written after `anchor` (a field of a nested struct whose
/// name another struct also uses, such as `eps`); at the anchor when the field is not written.
fn locate_after(text: &str, anchor: &str, field: &str) -> (usize, usize) {
    let (line, col) = locate(text, anchor);
    if (line, col) == (1, 1) && !text.starts_with(anchor) {
        return (1, 1);
    }
    let rest: String = text.lines().skip(line - 1).collect::<Vec<_>>().join("\n");
    match locate(&rest, field) {
        (1, 1) if !rest.trim_start().starts_with(field) => (line, col),
        (l, c) => (line + l - 1, c),
    }
}

/// A spec shipped inside the binary.
pub struct BuiltinSpec {
    pub file: &'static str,
    pub text: &'static str,
}

/// The specs in `models/`, embedded so that `vigil` works from any directory.
pub const BUILTIN_SPECS: &[BuiltinSpec] = &[
    BuiltinSpec { file: "digits-mlp.ron", text: include_str!("../../models/digits-mlp.ron") },
    BuiltinSpec { file: "digits-mlp-pgd.ron", text: include_str!("../../models/digits-mlp-pgd.ron") },
    BuiltinSpec { file: "digits-mlp-dp.ron", text: include_str!("../../models/digits-mlp-dp.ron") },
    BuiltinSpec { file: "digits-cnn.ron", text: include_str!("../../models/digits-cnn.ron") },
    BuiltinSpec { file: "digits-logreg.ron", text: include_str!("../../models/digits-logreg.ron") },
    BuiltinSpec { file: "waves-lstm.ron", text: include_str!("../../models/waves-lstm.ron") },
    BuiltinSpec { file: "waves-gru.ron", text: include_str!("../../models/waves-gru.ron") },
    BuiltinSpec { file: "topics-text.ron", text: include_str!("../../models/topics-text.ron") },
];

/// The default experiment, run by the console on an empty store.
pub const DEFAULT_SPEC: &str = "digits-mlp";

/// Where a spec was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecOrigin {
    /// A file on disk (in `models/` or given by path).
    File(PathBuf),
    /// Embedded in the binary.
    Builtin(&'static str),
}

impl std::fmt::Display for SpecOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecOrigin::File(p) => write!(f, "{}", p.display()),
            SpecOrigin::Builtin(name) => write!(f, "built-in {name}"),
        }
    }
}

/// One spec that `vigil models` lists.
#[derive(Debug, Clone)]
pub struct SpecEntry {
    pub name: String,
    pub origin: SpecOrigin,
    pub spec: Result<ExperimentSpec, String>,
}

/// Finds a spec by path (`models/x.ron`), or by name in `models_dir` and then among the built-in
/// ones. A user's file overrides the built-in spec of the same file name.
pub fn resolve(name_or_path: &str, models_dir: &Path) -> Result<(ExperimentSpec, SpecOrigin)> {
    let as_path = Path::new(name_or_path);
    let looks_like_path = name_or_path.ends_with(".ron") || name_or_path.contains('/');
    if looks_like_path && as_path.exists() {
        return Ok((ExperimentSpec::load(as_path)?, SpecOrigin::File(as_path.to_path_buf())));
    }
    let stem = as_path.file_name().and_then(|s| s.to_str()).unwrap_or(name_or_path).trim_end_matches(".ron");
    let local = models_dir.join(format!("{stem}.ron"));
    if local.exists() {
        return Ok((ExperimentSpec::load(&local)?, SpecOrigin::File(local)));
    }
    if let Some(b) = BUILTIN_SPECS.iter().find(|b| b.file.trim_end_matches(".ron") == stem) {
        let origin = Path::new("built-in").join(b.file);
        return Ok((ExperimentSpec::parse(b.text, &origin)?, SpecOrigin::Builtin(b.file)));
    }
    if looks_like_path {
        return Err(Error::Invalid(format!("spec file {name_or_path} does not exist")));
    }
    let known: Vec<String> = list(models_dir).into_iter().map(|e| e.name).collect();
    Err(Error::Invalid(format!(
        "no spec named {stem:?} in {} or built in; known specs: {}",
        models_dir.display(),
        known.join(", ")
    )))
}

/// Every spec in `models_dir` and every built-in one not overridden there, sorted by name.
pub fn list(models_dir: &Path) -> Vec<SpecEntry> {
    let mut out: BTreeMap<String, SpecEntry> = BTreeMap::new();
    for b in BUILTIN_SPECS {
        let name = b.file.trim_end_matches(".ron").to_string();
        let origin = Path::new("built-in").join(b.file);
        out.insert(
            name.clone(),
            SpecEntry {
                name,
                origin: SpecOrigin::Builtin(b.file),
                spec: ExperimentSpec::parse(b.text, &origin).map_err(|e| e.to_string()),
            },
        );
    }
    if let Ok(dir) = std::fs::read_dir(models_dir) {
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("ron") {
                continue;
            }
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            out.insert(
                name.clone(),
                SpecEntry {
                    name,
                    spec: ExperimentSpec::load(&path).map_err(|e| e.to_string()),
                    origin: SpecOrigin::File(path),
                },
            );
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_before_finds_the_enclosing_field() {
        let text = "(\n  lr: \"fast\",\n)";
        assert_eq!(field_before(text, 2, 7).as_deref(), Some("lr"));
    }

    #[test]
    fn locate_skips_substrings_and_comments() {
        let text = "// epochs: 3\n(\n  max_epochs: 2,\n  epochs: 0,\n)";
        assert_eq!(locate(text, "epochs"), (4, 3));
    }
}
