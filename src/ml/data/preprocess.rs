//! Preprocessing: missing values, scaling and tokenising, fitted on the training split only and
//! saved with the run as a [`Pipeline`], so that evaluation and serving apply exactly the same
//! transform to new inputs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Dataset, Features, InputShape, RawInputs, SplitIndices, split};
use crate::error::{Error, Result};
use crate::ml::spec::{ExperimentSpec, ImputeStrategy, Preprocess, Scope};

/// Token id of padding.
pub const PAD: u32 = 0;
/// Token id of a word not in the vocabulary.
pub const UNK: u32 = 1;

/// A text model's vocabulary as attacks see it ([`Pipeline::token_words`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenWords {
    /// Each id's token.
    pub words: Vec<String>,
    /// Ids no attack may remove or put in.
    pub special: Vec<bool>,
    /// WordPiece tokens (`##ing` continues the word before it) rather than whole words.
    pub pieces: bool,
}

impl TokenWords {
    /// The readable text of `ids`: padding and special tokens left out, word pieces joined,
    /// and the tokens at positions `marked` in `*stars*`.
    pub fn text(&self, ids: &[u32], marked: &[usize]) -> String {
        let mut out = String::new();
        for (i, &id) in ids.iter().enumerate() {
            let w = self.words.get(id as usize).map(String::as_str).unwrap_or("<unk>");
            // Padding, and BERT's markers ([CLS], [SEP]), are not part of the text; an unknown
            // word stays, as `<unk>` or `[UNK]`, since it stands for a word of the sentence.
            let marker =
                self.pieces && self.special.get(id as usize).copied().unwrap_or(true) && w != "[UNK]";
            if (id == PAD || marker) && !marked.contains(&i) {
                continue;
            }
            let (w, glued) = match w.strip_prefix("##") {
                Some(rest) if self.pieces => (rest, true),
                _ => (w, false),
            };
            if !out.is_empty() && !glued {
                out.push(' ');
            }
            if marked.contains(&i) {
                out.push('*');
                out.push_str(w);
                out.push('*');
            } else {
                out.push_str(w);
            }
        }
        out
    }
}

/// A fitted preprocessing step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FittedStep {
    /// Inputs with a missing value are refused.
    DropMissing,
    /// Missing values are replaced by these (one per feature).
    Impute { values: Vec<f32> },
    /// `(x - mean) / std`; one value each when global.
    Standardize { mean: Vec<f32>, std: Vec<f32> },
    /// `(x - min) / range`; one value each when global.
    MinMax { min: Vec<f32>, range: Vec<f32> },
    /// Words to ids; `vocab[0]` is padding and `vocab[1]` the unknown word.
    Tokenize { vocab: Vec<String>, lowercase: bool, max_len: usize },
    /// A pretrained encoder's own tokenizer (`tokenizer.json`, by absolute path): word pieces
    /// with its special tokens, cut or padded to `max_len` ids. Nothing is fitted.
    WordPieces { tokenizer: String, max_len: usize },
}

/// Everything needed to turn a raw input into what the model takes, saved as
/// `preprocess.json` in the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Shape of a raw numeric input (`None` for text).
    pub raw_shape: Option<InputShape>,
    /// Shape of the model's input.
    pub input: InputShape,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    pub steps: Vec<FittedStep>,
    /// Range of each raw feature on the training split, to refuse wildly out-of-range inputs.
    #[serde(default)]
    pub raw_range: Option<(f32, f32)>,
}

/// What happened to the data on the way in, for the run's log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    pub origin: String,
    pub examples: usize,
    pub dropped_missing: usize,
    pub imputed_values: usize,
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub vocabulary: Option<usize>,
}

/// One split, ready for the model.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub features: Features,
    pub labels: Vec<u32>,
}

/// A data set loaded, split and preprocessed.
#[derive(Debug, Clone)]
pub struct PreparedData {
    pub pipeline: Pipeline,
    pub train: Prepared,
    pub validation: Prepared,
    pub test: Prepared,
    pub report: DataReport,
    /// What each input value becomes when the raw value is zero: the fill for pixels that
    /// augmentation shifts in.
    pub zero_fill: Option<Vec<f32>>,
    /// Which examples went to which split, and of how many ([`super::splits`] records them).
    pub indices: SplitIndices,
    pub examples: usize,
}

impl PreparedData {
    /// Loads the spec's data, splits it by the spec's seed and fits the preprocessing on the
    /// training split, or applies `fitted` (a run's saved pipeline) instead of fitting.
    pub fn build(spec: &ExperimentSpec, fitted: Option<&Pipeline>) -> Result<Self> {
        Self::build_with(spec, fitted, None)
    }

    /// [`Self::build`] with the splits a run recorded instead of splitting anew.
    pub fn build_with(
        spec: &ExperimentSpec,
        fitted: Option<&Pipeline>,
        recorded: Option<&super::splits::RecordedSplits>,
    ) -> Result<Self> {
        let (mut ds, mut parts) = super::load_data(&spec.data)?;
        let mut report = DataReport { origin: ds.origin.clone(), examples: ds.len(), ..Default::default() };
        let drops = spec.preprocess.iter().any(|p| matches!(p, Preprocess::DropMissing));
        let imputes = spec.preprocess.iter().any(|p| matches!(p, Preprocess::Impute(_)));
        if let RawInputs::Dense { values, shape } = &ds.inputs {
            let d = shape.numel();
            let missing_rows: Vec<bool> =
                values.chunks(d).map(|row| row.iter().any(|v| v.is_nan())).collect();
            let n_missing = missing_rows.iter().filter(|m| **m).count();
            if n_missing > 0 && drops {
                ds.retain(|i| !missing_rows[i]);
                let mut kept = missing_rows.iter().map(|m| !m);
                parts.retain(|_| kept.next().unwrap_or(true));
                report.dropped_missing = n_missing;
            } else if n_missing > 0 && !imputes {
                let first = missing_rows.iter().position(|m| *m).unwrap_or(0);
                let col = values[first * d..(first + 1) * d].iter().position(|v| v.is_nan()).unwrap_or(0);
                return Err(Error::unsuitable(format!(
                    "{}: {n_missing} examples have missing values (the first is example {} at \
                     feature {}); add DropMissing or Impute(Mean|Median|Zero) to `preprocess`",
                    ds.origin,
                    first + 1,
                    col + 1
                )));
            }
        }
        if ds.len() < 10 {
            return Err(Error::unsuitable(format!(
                "{}: {} examples are too few to split into train, validation and test",
                ds.origin,
                ds.len()
            )));
        }
        let idx = match recorded {
            None => {
                let seed = spec.data.split.seed();
                super::split_parts(&ds.labels, &parts, ds.classes.len(), &spec.data.split, seed)
            }
            Some(r) => {
                let largest =
                    r.indices.train.iter().chain(&r.indices.validation).chain(&r.indices.test).max();
                if r.examples != ds.len() || largest.is_some_and(|&i| i >= ds.len()) {
                    return Err(Error::unsuitable(format!(
                        "{}: {} examples, but the run's recorded splits are of {}",
                        ds.origin,
                        ds.len(),
                        r.examples
                    )));
                }
                r.indices.clone()
            }
        };
        report.train = idx.train.len();
        report.validation = idx.validation.len();
        report.test = idx.test.len();
        let pipeline = match (fitted, &spec.model) {
            (Some(p), _) => p.clone(),
            (None, crate::ml::spec::ModelSpec::Pretrained { path, max_len, .. }) => {
                Pipeline::word_pieces(&crate::ml::model::pretrained::resolve(path), *max_len, &ds)?
            }
            (None, _) => Pipeline::fit(&spec.preprocess, &ds, &idx.train)?,
        };
        if pipeline.classes != ds.classes {
            return Err(Error::unsuitable(format!(
                "{}: the data's classes {:?} differ from the run's {:?}",
                ds.origin, ds.classes, pipeline.classes
            )));
        }
        let all = pipeline.apply_dataset(&ds, &mut report)?;
        if let Some(v) = pipeline.vocabulary() {
            report.vocabulary = Some(v);
        }
        let part = |ids: &[usize]| Prepared {
            features: all.select(ids),
            labels: ids.iter().map(|&i| ds.labels[i]).collect(),
        };
        let zero_fill = pipeline
            .raw_shape
            .as_ref()
            .map(|s| pipeline.transform(&vec![0.0; s.numel()]))
            .transpose()
            .map_err(Error::unsuitable)?;
        Ok(PreparedData {
            train: part(&idx.train),
            validation: part(&idx.validation),
            test: part(&idx.test),
            pipeline,
            report,
            zero_fill,
            examples: ds.len(),
            indices: idx,
        })
    }

    /// The split indices for a spec, without preprocessing (used to look up raw examples).
    pub fn split_of(spec: &ExperimentSpec, ds: &Dataset) -> SplitIndices {
        let seed = spec.data.split.seed();
        split(&ds.labels, ds.classes.len(), &spec.data.split, seed)
    }
}

impl Pipeline {
    /// The pipeline of a pretrained encoder in `folder`: its tokenizer, `max_len` ids a text.
    pub fn word_pieces(folder: &std::path::Path, max_len: usize, ds: &Dataset) -> Result<Self> {
        let encoder = crate::ml::model::pretrained::Folder::open(folder)?;
        encoder.tokenizer(max_len)?;
        let tokenizer = std::path::absolute(folder.join(crate::ml::model::pretrained::TOKENIZER))
            .map_err(|e| Error::io(folder, e))?;
        Ok(Pipeline {
            raw_shape: None,
            input: InputShape::Text { max_len },
            classes: ds.classes.clone(),
            steps: vec![FittedStep::WordPieces { tokenizer: tokenizer.display().to_string(), max_len }],
            raw_range: None,
        })
    }

    /// Fits every step on the training rows `train`.
    pub fn fit(steps: &[Preprocess], ds: &Dataset, train: &[usize]) -> Result<Self> {
        match &ds.inputs {
            RawInputs::Text(texts) => {
                let tok = steps
                    .iter()
                    .find_map(|s| match s {
                        Preprocess::Tokenize(t) => Some(t),
                        _ => None,
                    })
                    .ok_or_else(|| Error::unsuitable("text data needs a Tokenize step in `preprocess`"))?;
                let mut counts: HashMap<String, usize> = HashMap::new();
                for &i in train {
                    for w in words(&texts[i], tok.lowercase) {
                        *counts.entry(w).or_default() += 1;
                    }
                }
                let mut ranked: Vec<(String, usize)> =
                    counts.into_iter().filter(|(_, c)| *c >= tok.min_count).collect();
                ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let mut vocab = vec!["<pad>".to_string(), "<unk>".to_string()];
                vocab.extend(ranked.into_iter().take(tok.max_vocab.saturating_sub(2)).map(|(w, _)| w));
                Ok(Pipeline {
                    raw_shape: None,
                    input: InputShape::Text { max_len: tok.max_len },
                    classes: ds.classes.clone(),
                    steps: vec![FittedStep::Tokenize {
                        vocab,
                        lowercase: tok.lowercase,
                        max_len: tok.max_len,
                    }],
                    raw_range: None,
                })
            }
            RawInputs::Dense { values, shape } => {
                let d = shape.numel();
                let mut work: Vec<f32> = Vec::with_capacity(train.len() * d);
                for &i in train {
                    work.extend_from_slice(&values[i * d..(i + 1) * d]);
                }
                let finite = work.iter().copied().filter(|v| v.is_finite());
                let raw_range = finite.fold(None, |acc: Option<(f32, f32)>, v| {
                    Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
                });
                let mut fitted = Vec::new();
                for step in steps {
                    let f = match step {
                        Preprocess::DropMissing => FittedStep::DropMissing,
                        Preprocess::Impute(strategy) => {
                            FittedStep::Impute { values: impute_values(&work, d, *strategy) }
                        }
                        Preprocess::Standardize(scope) => {
                            let (mean, std) = moments(&work, d, *scope);
                            FittedStep::Standardize { mean, std }
                        }
                        Preprocess::MinMax(scope) => {
                            let (min, range) = min_range(&work, d, *scope);
                            FittedStep::MinMax { min, range }
                        }
                        Preprocess::Tokenize(_) => {
                            return Err(Error::unsuitable(
                                "Tokenize applies to text data, and this data is numeric",
                            ));
                        }
                    };
                    for row in work.chunks_mut(d) {
                        apply_step(&f, row);
                    }
                    fitted.push(f);
                }
                Ok(Pipeline {
                    raw_shape: Some(shape.clone()),
                    input: shape.clone(),
                    classes: ds.classes.clone(),
                    steps: fitted,
                    raw_range,
                })
            }
        }
    }

    /// Transforms one raw numeric input; the error says which feature cannot be used.
    pub fn transform(&self, raw: &[f32]) -> std::result::Result<Vec<f32>, String> {
        let expected = self.raw_shape.as_ref().ok_or("this model takes text, not numbers")?.numel();
        if raw.len() != expected {
            return Err(format!("expected {expected} values ({}), got {}", self.input.describe(), raw.len()));
        }
        let mut row = raw.to_vec();
        for step in &self.steps {
            if matches!(step, FittedStep::DropMissing)
                && let Some(j) = row.iter().position(|v| v.is_nan())
            {
                return Err(format!("value {j} is missing"));
            }
            apply_step(step, &mut row);
        }
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(format!("value {j} is missing or not finite"));
        }
        Ok(row)
    }

    /// The raw input that [`Self::transform`] maps to `values` (the model's input): scaling
    /// steps undone in reverse order. Filled-in values cannot be told from given ones, so they
    /// come back as given. Text models have no numeric inverse.
    pub fn untransform(&self, values: &[f32]) -> std::result::Result<Vec<f32>, String> {
        if self.raw_shape.is_none() {
            return Err("this model takes text: its inputs have no numeric raw form".into());
        }
        let pick = |v: &[f32], j: usize| if v.len() == 1 { v[0] } else { v[j] };
        let mut row = values.to_vec();
        for step in self.steps.iter().rev() {
            match step {
                FittedStep::Standardize { mean, std } => {
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = *x * pick(std, j) + pick(mean, j);
                    }
                }
                FittedStep::MinMax { min, range } => {
                    for (j, x) in row.iter_mut().enumerate() {
                        *x = *x * pick(range, j) + pick(min, j);
                    }
                }
                FittedStep::DropMissing
                | FittedStep::Impute { .. }
                | FittedStep::Tokenize { .. }
                | FittedStep::WordPieces { .. } => {}
            }
        }
        Ok(row)
    }

    /// Token ids for one text, padded or cut to the model's length.
    pub fn encode(&self, text: &str) -> std::result::Result<Vec<u32>, String> {
        if let Some(FittedStep::WordPieces { tokenizer, max_len }) = self.steps.first() {
            let pieces = crate::ml::model::pretrained::WordPieces::open(tokenizer.as_ref(), *max_len)
                .map_err(|e| e.to_string())?;
            return pieces.encode(text);
        }
        let Some(FittedStep::Tokenize { vocab, lowercase, max_len }) = self.steps.first() else {
            return Err("this model takes numbers, not text".into());
        };
        // A map per call is wasteful but this only runs when building data or serving one text;
        // the vocabulary lookups dominate and stay linear.
        let index: HashMap<&str, u32> =
            vocab.iter().enumerate().map(|(i, w)| (w.as_str(), i as u32)).collect();
        Ok(encode_with(&index, text, *lowercase, *max_len))
    }

    /// The vocabulary size of a text pipeline.
    pub fn vocabulary(&self) -> Option<usize> {
        self.steps.iter().find_map(|s| match s {
            FittedStep::Tokenize { vocab, .. } => Some(vocab.len()),
            _ => None,
        })
    }

    /// The vocabulary of a text pipeline, indexed by token id.
    pub fn vocab(&self) -> Option<&[String]> {
        self.steps.iter().find_map(|s| match s {
            FittedStep::Tokenize { vocab, .. } => Some(vocab.as_slice()),
            _ => None,
        })
    }

    /// A text pipeline's tokens by id, and which of them are special (padding, the unknown
    /// word, BERT's `[CLS]`, `[SEP]`, `[MASK]` and `[unused…]`): what an attack may put into a
    /// sentence and what it must leave where it is. `rows` is the model's embedding table size;
    /// ids beyond the tokenizer's vocabulary count as special. `None` for numeric pipelines.
    pub fn token_words(&self, rows: usize) -> Result<Option<TokenWords>> {
        let (mut words, mut special): (Vec<String>, Vec<bool>) = match self.steps.first() {
            Some(FittedStep::Tokenize { vocab, .. }) => {
                (vocab.clone(), (0..vocab.len()).map(|i| i as u32 == PAD || i as u32 == UNK).collect())
            }
            Some(FittedStep::WordPieces { tokenizer, max_len }) => {
                let t =
                    crate::ml::model::pretrained::WordPieces::open(tokenizer.as_ref(), *max_len)?.tokenizer;
                let added = t.get_added_tokens_decoder();
                (0..rows as u32)
                    .map(|id| match t.id_to_token(id) {
                        Some(w) => {
                            // BERT's vocab.txt lists its specials (and [unused0..]) as plain words.
                            let bracketed = w.len() > 2 && w.starts_with('[') && w.ends_with(']');
                            let s = id == PAD || added.get(&id).is_some_and(|a| a.special) || bracketed;
                            (w, s)
                        }
                        None => (format!("<{id}>"), true),
                    })
                    .unzip()
            }
            _ => return Ok(None),
        };
        words.resize_with(rows, || "<none>".into());
        special.resize(rows, true);
        Ok(Some(TokenWords {
            words,
            special,
            pieces: matches!(self.steps.first(), Some(FittedStep::WordPieces { .. })),
        }))
    }

    /// Applies the pipeline to every example of a data set.
    fn apply_dataset(&self, ds: &Dataset, report: &mut DataReport) -> Result<Features> {
        match &ds.inputs {
            RawInputs::Text(texts) if matches!(self.steps.first(), Some(FittedStep::WordPieces { .. })) => {
                let Some(FittedStep::WordPieces { tokenizer, max_len }) = self.steps.first() else {
                    unreachable!("matched above")
                };
                let pieces = crate::ml::model::pretrained::WordPieces::open(tokenizer.as_ref(), *max_len)?;
                let mut ids = Vec::with_capacity(texts.len() * max_len);
                for (i, t) in texts.iter().enumerate() {
                    ids.extend(
                        pieces
                            .encode(t)
                            .map_err(|e| Error::data(&ds.origin, format!("example {}: {e}", i + 1)))?,
                    );
                }
                Ok(Features::Tokens { ids, len: *max_len })
            }
            RawInputs::Text(texts) => {
                let Some(FittedStep::Tokenize { vocab, lowercase, max_len }) = self.steps.first() else {
                    return Err(Error::unsuitable("text data needs a Tokenize step"));
                };
                let index: HashMap<&str, u32> =
                    vocab.iter().enumerate().map(|(i, w)| (w.as_str(), i as u32)).collect();
                let mut ids = Vec::with_capacity(texts.len() * max_len);
                for t in texts {
                    ids.extend(encode_with(&index, t, *lowercase, *max_len));
                }
                Ok(Features::Tokens { ids, len: *max_len })
            }
            RawInputs::Dense { values, shape } => {
                let d = shape.numel();
                report.imputed_values = values.iter().filter(|v| v.is_nan()).count();
                let mut out = values.clone();
                for row in out.chunks_mut(d) {
                    for step in &self.steps {
                        apply_step(step, row);
                    }
                }
                Ok(Features::Dense { values: out, dims: self.input.dims() })
            }
        }
    }
}

fn apply_step(step: &FittedStep, row: &mut [f32]) {
    let pick = |v: &[f32], j: usize| if v.len() == 1 { v[0] } else { v[j] };
    match step {
        FittedStep::DropMissing | FittedStep::Tokenize { .. } | FittedStep::WordPieces { .. } => {}
        FittedStep::Impute { values } => {
            for (j, x) in row.iter_mut().enumerate() {
                if x.is_nan() {
                    *x = values[j];
                }
            }
        }
        FittedStep::Standardize { mean, std } => {
            for (j, x) in row.iter_mut().enumerate() {
                *x = (*x - pick(mean, j)) / pick(std, j);
            }
        }
        FittedStep::MinMax { min, range } => {
            for (j, x) in row.iter_mut().enumerate() {
                *x = (*x - pick(min, j)) / pick(range, j);
            }
        }
    }
}

fn column(work: &[f32], d: usize, j: usize) -> impl Iterator<Item = f32> + '_ {
    work.iter().skip(j).step_by(d).copied().filter(|v| !v.is_nan())
}

fn impute_values(work: &[f32], d: usize, strategy: ImputeStrategy) -> Vec<f32> {
    (0..d)
        .map(|j| match strategy {
            ImputeStrategy::Zero => 0.0,
            ImputeStrategy::Mean => {
                let (s, n) = column(work, d, j).fold((0.0f64, 0usize), |(s, n), v| (s + v as f64, n + 1));
                if n == 0 { 0.0 } else { (s / n as f64) as f32 }
            }
            ImputeStrategy::Median => {
                let mut v: Vec<f32> = column(work, d, j).collect();
                if v.is_empty() {
                    return 0.0;
                }
                v.sort_by(|a, b| a.total_cmp(b));
                let m = v.len() / 2;
                if v.len().is_multiple_of(2) { (v[m - 1] + v[m]) / 2.0 } else { v[m] }
            }
        })
        .collect()
}

/// Mean and population standard deviation (as scikit-learn's StandardScaler); a constant
/// feature gets a deviation of 1 so that it maps to 0 instead of NaN.
fn moments(work: &[f32], d: usize, scope: Scope) -> (Vec<f32>, Vec<f32>) {
    let stats = |it: &mut dyn Iterator<Item = f32>| {
        let (mut n, mut s, mut s2) = (0f64, 0f64, 0f64);
        for v in it {
            n += 1.0;
            s += v as f64;
            s2 += (v as f64) * (v as f64);
        }
        let mean = if n > 0.0 { s / n } else { 0.0 };
        let var = if n > 0.0 { (s2 / n - mean * mean).max(0.0) } else { 0.0 };
        let std = var.sqrt();
        (mean as f32, if std < 1e-8 { 1.0 } else { std as f32 })
    };
    match scope {
        Scope::Global => {
            let (m, s) = stats(&mut work.iter().copied().filter(|v| !v.is_nan()));
            (vec![m], vec![s])
        }
        Scope::PerFeature => (0..d).map(|j| stats(&mut column(work, d, j))).unzip(),
    }
}

fn min_range(work: &[f32], d: usize, scope: Scope) -> (Vec<f32>, Vec<f32>) {
    let stats = |it: &mut dyn Iterator<Item = f32>| {
        let (lo, hi) = it.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if !lo.is_finite() {
            return (0.0, 1.0);
        }
        let r = hi - lo;
        (lo, if r < 1e-8 { 1.0 } else { r })
    };
    match scope {
        Scope::Global => {
            let (m, r) = stats(&mut work.iter().copied().filter(|v| !v.is_nan()));
            (vec![m], vec![r])
        }
        Scope::PerFeature => (0..d).map(|j| stats(&mut column(work, d, j))).unzip(),
    }
}

/// Words of a text: runs of letters, digits and apostrophes.
pub fn words(text: &str, lowercase: bool) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(move |w| if lowercase { w.to_lowercase() } else { w.to_string() })
}

fn encode_with(index: &HashMap<&str, u32>, text: &str, lowercase: bool, max_len: usize) -> Vec<u32> {
    let mut ids: Vec<u32> =
        words(text, lowercase).take(max_len).map(|w| index.get(w.as_str()).copied().unwrap_or(UNK)).collect();
    ids.resize(max_len, PAD);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tabular(values: Vec<f32>, d: usize, labels: Vec<u32>) -> Dataset {
        Dataset {
            origin: "test".into(),
            inputs: RawInputs::Dense { values, shape: InputShape::Tabular { features: d } },
            labels,
            classes: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn standardize_is_fitted_on_train_rows_only() {
        // Rows 0 and 1 train; row 2 is an outlier that must not move the statistics.
        let ds = tabular(vec![1.0, 10.0, 3.0, 30.0, 1000.0, 5000.0], 2, vec![0, 1, 0]);
        let p = Pipeline::fit(&[Preprocess::Standardize(Scope::PerFeature)], &ds, &[0, 1]).unwrap();
        assert_eq!(p.steps[0], FittedStep::Standardize { mean: vec![2.0, 20.0], std: vec![1.0, 10.0] });
        assert_eq!(p.transform(&[3.0, 10.0]).unwrap(), vec![1.0, -1.0]);
    }

    /// `untransform` undoes the scaling steps in reverse order, per feature and global.
    #[test]
    fn untransform_inverts_the_scaling_steps() {
        let ds = tabular(vec![1.0, 10.0, 3.0, 30.0, 5.0, 20.0], 2, vec![0, 1, 0]);
        let p = Pipeline::fit(
            &[Preprocess::Standardize(Scope::PerFeature), Preprocess::MinMax(Scope::Global)],
            &ds,
            &[0, 1, 2],
        )
        .unwrap();
        for raw in [[2.0f32, 15.0], [-4.0, 100.0], [5.0, 20.0]] {
            let back = p.untransform(&p.transform(&raw).unwrap()).unwrap();
            for (a, b) in back.iter().zip(raw) {
                assert!((a - b).abs() < 1e-4, "{back:?} vs {raw:?}");
            }
        }
    }

    #[test]
    fn impute_median_then_minmax() {
        let ds = tabular(vec![f32::NAN, 0.0, 2.0, 4.0, 4.0, 8.0, 6.0, f32::NAN], 2, vec![0, 1, 0, 1]);
        let p = Pipeline::fit(
            &[Preprocess::Impute(ImputeStrategy::Median), Preprocess::MinMax(Scope::PerFeature)],
            &ds,
            &[0, 1, 2, 3],
        )
        .unwrap();
        // Column medians: [4, 4]; after imputing, column 0 spans 2..6 and column 1 spans 0..8.
        assert_eq!(p.steps[0], FittedStep::Impute { values: vec![4.0, 4.0] });
        assert_eq!(p.transform(&[f32::NAN, 8.0]).unwrap(), vec![0.5, 1.0]);
    }

    #[test]
    fn drop_missing_pipelines_refuse_missing_inputs() {
        let ds = tabular(vec![1.0, 2.0, 3.0, 4.0], 2, vec![0, 1]);
        let p = Pipeline::fit(&[Preprocess::DropMissing], &ds, &[0, 1]).unwrap();
        assert_eq!(p.transform(&[1.0, f32::NAN]).unwrap_err(), "value 1 is missing");
        assert!(p.transform(&[1.0]).unwrap_err().contains("expected 2 values"));
    }

    #[test]
    fn tokenizer_ranks_by_count_and_pads() {
        let ds = Dataset {
            origin: "t".into(),
            inputs: RawInputs::Text(vec!["b a a".into(), "c b a".into(), "zzz".into()]),
            labels: vec![0, 1, 0],
            classes: vec!["x".into(), "y".into()],
        };
        let tok = crate::ml::spec::Tokenize { lowercase: true, max_vocab: 4, min_count: 1, max_len: 4 };
        let p = Pipeline::fit(&[Preprocess::Tokenize(tok)], &ds, &[0, 1]).unwrap();
        assert_eq!(p.vocab().unwrap(), &["<pad>", "<unk>", "a", "b"]);
        assert_eq!(p.encode("A b c").unwrap(), vec![2, 3, UNK, PAD]);
    }
}
