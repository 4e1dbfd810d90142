//! Data sets in memory: loading them (built in, generated, or from the files users bring),
//! the seeded stratified split, and batching into tensors. Preprocessing lives in
//! [`preprocess`], augmentation in [`augment`], the splits a run fixed when it trained in
//! [`splits`] (the one module here that reads and writes a run's folder: its `splits.json`).
//! Nothing here trains.

pub mod augment;
pub mod loaders;
pub mod preprocess;
pub mod splits;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ml::spec::{DataSource, DataSpec, Split};

/// The shape of one example as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputShape {
    /// A vector of numeric features.
    Tabular { features: usize },
    /// An image, channels first.
    Image { channels: usize, height: usize, width: usize },
    /// A sequence of `steps` vectors of `features` values.
    Sequence { steps: usize, features: usize },
    /// Text, tokenised to `max_len` ids (0 pads, 1 is the unknown word).
    Text { max_len: usize },
}

impl InputShape {
    /// The per-example tensor dimensions.
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            InputShape::Tabular { features } => vec![features],
            InputShape::Image { channels, height, width } => vec![channels, height, width],
            InputShape::Sequence { steps, features } => vec![steps, features],
            InputShape::Text { max_len } => vec![max_len],
        }
    }

    /// Values per example.
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// A short description such as `1x8x8 image`.
    pub fn describe(&self) -> String {
        match *self {
            InputShape::Tabular { features } => format!("{features} features"),
            InputShape::Image { channels, height, width } => format!("{channels}x{height}x{width} image"),
            InputShape::Sequence { steps, features } => {
                format!("sequence of {steps} x {features}")
            }
            InputShape::Text { max_len } => format!("text (up to {max_len} tokens)"),
        }
    }
}

/// Inputs as loaded, before preprocessing. Missing numeric values are NaN.
#[derive(Debug, Clone)]
pub enum RawInputs {
    Dense { values: Vec<f32>, shape: InputShape },
    Text(Vec<String>),
}

/// A labelled data set held in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where it came from, for messages.
    pub origin: String,
    pub inputs: RawInputs,
    /// Class index of each example.
    pub labels: Vec<u32>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether it holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The raw per-example shape, or `None` for text.
    pub fn dense_shape(&self) -> Option<&InputShape> {
        match &self.inputs {
            RawInputs::Dense { shape, .. } => Some(shape),
            RawInputs::Text(_) => None,
        }
    }

    /// Appends the examples of `other` (a separate validation or test source), its labels
    /// mapped to this set's classes by name. Refused when its examples have another shape or
    /// it has a class this set lacks.
    pub fn append(&mut self, other: Dataset) -> Result<()> {
        let refuse = |msg: String| Err(crate::error::Error::data(other.origin.clone(), msg));
        if let Some(c) = other.classes.iter().find(|c| !self.classes.contains(c)) {
            return refuse(format!(
                "class {c:?} does not occur in the training data {} (its classes: {})",
                self.origin,
                self.classes.join(", ")
            ));
        }
        let map: Vec<u32> = other
            .classes
            .iter()
            .map(|c| self.classes.iter().position(|s| s == c).expect("checked above") as u32)
            .collect();
        match (&mut self.inputs, other.inputs) {
            (RawInputs::Dense { values, shape }, RawInputs::Dense { values: more, shape: theirs }) => {
                if *shape != theirs {
                    return refuse(format!(
                        "its examples are {}, those of {} are {}",
                        theirs.describe(),
                        self.origin,
                        shape.describe()
                    ));
                }
                values.extend(more);
            }
            (RawInputs::Text(texts), RawInputs::Text(more)) => texts.extend(more),
            _ => {
                return refuse(format!("its examples and those of {} are not of the same kind", self.origin));
            }
        }
        self.labels.extend(other.labels.iter().map(|&l| map[l as usize]));
        Ok(())
    }

    /// Keeps only the examples whose index `keep` returns true for.
    pub fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        let kept: Vec<usize> = (0..self.len()).filter(|&i| keep(i)).collect();
        self.labels = kept.iter().map(|&i| self.labels[i]).collect();
        match &mut self.inputs {
            RawInputs::Dense { values, shape } => {
                let d = shape.numel();
                *values = kept.iter().flat_map(|&i| values[i * d..(i + 1) * d].to_vec()).collect();
            }
            RawInputs::Text(texts) => {
                *texts = kept.iter().map(|&i| texts[i].clone()).collect();
            }
        }
    }
}

/// Loads a data set named in a spec.
pub fn load(source: &DataSource) -> Result<Dataset> {
    match source {
        DataSource::Digits => loaders::digits(),
        DataSource::Topics => loaders::topics(),
        DataSource::Waveforms { samples, length, noise } => {
            Ok(loaders::waveforms(*samples, *length, *noise, 0x005e_ed0f_3a7e))
        }
        DataSource::Csv { path, label, header } => loaders::csv(path.as_ref(), label, *header),
        DataSource::Idx { images, labels, limit } => loaders::idx(images.as_ref(), labels.as_ref(), *limit),
        DataSource::Tsv { path } => loaders::tsv(path.as_ref()),
    }
}

/// Which source an example of a data set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The spec's `source`, split by `split`.
    Main,
    /// The spec's separate `validation` source.
    Validation,
    /// The spec's separate `test` source.
    Test,
}

/// Loads a spec's data: its source, then the examples of its separate validation and test
/// sources (if given) appended, with the part each example came from.
pub fn load_data(data: &DataSpec) -> Result<(Dataset, Vec<Part>)> {
    let mut ds = load(&data.source)?;
    let mut parts = vec![Part::Main; ds.len()];
    for (part, source) in [(Part::Validation, &data.validation), (Part::Test, &data.test)] {
        if let Some(source) = source {
            let extra = load(source)?;
            let n = extra.len();
            ds.append(extra)?;
            parts.extend(std::iter::repeat_n(part, n));
        }
    }
    Ok((ds, parts))
}

/// [`split`] of the main part's examples, with the separate validation and test parts as
/// their splits: a part given replaces its fraction of the main source.
pub fn split_parts(labels: &[u32], parts: &[Part], classes: usize, s: &Split, seed: u64) -> SplitIndices {
    let of = |p: Part| -> Vec<usize> { (0..labels.len()).filter(|&i| parts[i] == p).collect() };
    let (main, validation, test) = (of(Part::Main), of(Part::Validation), of(Part::Test));
    let fractions = Split {
        validation: if validation.is_empty() { s.validation } else { 0.0 },
        test: if test.is_empty() { s.test } else { 0.0 },
        seed: s.seed,
    };
    let main_labels: Vec<u32> = main.iter().map(|&i| labels[i]).collect();
    let inner = split(&main_labels, classes, &fractions, seed);
    let map = |ids: Vec<usize>| -> Vec<usize> { ids.into_iter().map(|i| main[i]).collect() };
    SplitIndices {
        train: map(inner.train),
        validation: if validation.is_empty() { map(inner.validation) } else { validation },
        test: if test.is_empty() { map(inner.test) } else { test },
    }
}

/// Indices of the examples in each split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

/// Splits examples by class so that every split keeps the class proportions, deterministically
/// for a given seed.
pub fn split(labels: &[u32], classes: usize, split: &Split, seed: u64) -> SplitIndices {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SPLIT_SALT);
    let mut out = SplitIndices { train: vec![], validation: vec![], test: vec![] };
    for class in 0..classes as u32 {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        let n = members.len();
        let n_test = ((n as f64) * split.test).round() as usize;
        let n_val = ((n as f64) * split.validation).round() as usize;
        // Every split needs examples of a class that has enough; tiny classes train first.
        let (n_test, n_val) =
            if n_test + n_val >= n { (n.saturating_sub(1).min(n_test), 0) } else { (n_test, n_val) };
        out.test.extend_from_slice(&members[..n_test]);
        out.validation.extend_from_slice(&members[n_test..n_test + n_val]);
        out.train.extend_from_slice(&members[n_test + n_val..]);
    }
    out.train.shuffle(&mut rng);
    out.validation.sort_unstable();
    out.test.sort_unstable();
    out
}

/// Folded into the split seed so that the split and the initialisation, both drawn from the
/// experiment's seed, are not the same random stream.
const SPLIT_SALT: u64 = 0x5b11_7000_0000_0001;

/// Model-ready inputs: numbers after preprocessing, or token ids after tokenising.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    Dense { values: Vec<f32>, dims: Vec<usize> },
    Tokens { ids: Vec<u32>, len: usize },
}

impl Features {
    /// Values per example.
    pub fn width(&self) -> usize {
        match self {
            Features::Dense { dims, .. } => dims.iter().product(),
            Features::Tokens { len, .. } => *len,
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        let w = self.width().max(1);
        match self {
            Features::Dense { values, .. } => values.len() / w,
            Features::Tokens { ids, .. } => ids.len() / w,
        }
    }

    /// Whether it holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `idx` as one batch tensor: `(B, dims...)` f32, or `(B, len)` u32 ids.
    pub fn batch(&self, idx: &[usize], device: &Device) -> Result<Tensor> {
        let w = self.width();
        Ok(match self {
            Features::Dense { values, dims } => {
                let mut buf = Vec::with_capacity(idx.len() * w);
                for &i in idx {
                    buf.extend_from_slice(&values[i * w..(i + 1) * w]);
                }
                let mut shape = vec![idx.len()];
                shape.extend_from_slice(dims);
                Tensor::from_vec(buf, shape, device)?
            }
            Features::Tokens { ids, len } => {
                let mut buf = Vec::with_capacity(idx.len() * w);
                for &i in idx {
                    buf.extend_from_slice(&ids[i * w..(i + 1) * w]);
                }
                Tensor::from_vec(buf, (idx.len(), *len), device)?
            }
        })
    }

    /// A copy holding only the examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Features {
        let w = self.width();
        match self {
            Features::Dense { values, dims } => Features::Dense {
                values: idx.iter().flat_map(|&i| values[i * w..(i + 1) * w].iter().copied()).collect(),
                dims: dims.clone(),
            },
            Features::Tokens { ids, len } => Features::Tokens {
                ids: idx.iter().flat_map(|&i| ids[i * w..(i + 1) * w].iter().copied()).collect(),
                len: *len,
            },
        }
    }
}
