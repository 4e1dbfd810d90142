//! The input detector: a score of how unlike the training data an input looks to the network,
//! and a threshold calibrated so that 1% of the validation split is flagged. Two scores:
//!
//! - Mahalanobis (Lee et al., 2018), the default: class-conditional Gaussians with one shared
//!   covariance over a layer's features; a layer's distance is the smallest squared Mahalanobis
//!   distance to a class mean. Two layers are modelled, the input itself (when it is numeric
//!   and not too wide) and the penultimate layer ([`Network::penultimate`]); each distance is
//!   standardised by its median and spread on the validation split and the score is the larger
//!   of the two (Lee et al. combine layers too; they weight them with a classifier trained on
//!   adversarial examples, which an operator does not have before an attack). The Gaussians
//!   are fitted on the training split and the threshold on the validation split, so that the
//!   threshold is set on data the fit has not seen.
//! - Energy (Liu et al., 2020): `-logsumexp(logits)`; needs no fit, only the threshold.
//!
//! Benign use is not only the validation split as it is: a client's images sit a pixel off and
//! carry a little noise, the variation training augmented with and that `vigil traffic
//! --profile benign` sends. Fitted on the clean splits alone, the input layer's Gaussians saw
//! no variance at the always-blank pixels, and flagged 78% of that traffic. So the Gaussians are
//! fitted on the training split together with a varied copy of it, and the threshold is the
//! larger of the conformal thresholds of the clean and of the varied validation split: each of
//! the two kinds of benign input is flagged at most `target_fpr` of the time ([`VARIATION`]).
//!
//! Scores are computed on the host from each layer's features, with the quadratic form
//! expanded (`h'Ph − 2 (Pm)'h + m'Pm`, the class terms precomputed): one matrix-vector product
//! per input and layer instead of one per class, and no tensor per class, which for the single
//! inputs the service mostly sees was most of a request's CPU time.
//!
//! A detector is fitted at the end of every training run and stored as `detector.json` in the
//! run's folder; the service flags inputs that score above the threshold. Nothing here reads or
//! writes files but [`fit_for_run`] and [`load`].

use std::sync::OnceLock;

use candle_core::{D, DType, Tensor};
use nalgebra::DMatrix;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, InputError, Result};
use crate::ml::data::preprocess::{Prepared, PreparedData};
use crate::ml::data::{Features, InputShape};
use crate::ml::model::Network;
use crate::ml::spec::Augment;
use crate::store::{EventKind, RunDir, read_json, write_json};

/// The false-positive rate a detector is calibrated to on the validation split.
pub const TARGET_FPR: f64 = 0.01;

/// The largest false-positive bound a detector is fitted with when the validation split is too
/// small for [`TARGET_FPR`]: below 9 examples there is no threshold worth the name.
pub const MAX_FPR_BOUND: f64 = 0.1;

/// Examples scored at once.
const BATCH: usize = 512;

/// The variation a benign client's inputs show when the run's spec augments with none: images
/// a pixel off, and noise of 2% of the preprocessed range. `vigil traffic --profile benign`
/// sends the same (its noise is 2% of the raw range: the same thing for the digits specs' global
/// min-max scaling). A spec that augments calibrates on its own augmentation instead.
pub const VARIATION: Augment = Augment { shift: 1, noise: 0.02, probability: 1.0 };

/// The variation a detector is calibrated for: the spec's augmentation applied to every input
/// (training applies it to a share of batches; a benign client's every input may show it), or
/// [`VARIATION`].
pub fn variation_for(spec_augment: Option<&Augment>) -> Augment {
    match spec_augment {
        Some(a) if a.shift > 0 || a.noise > 0.0 => Augment { probability: 1.0, ..a.clone() },
        _ => VARIATION,
    }
}

/// A copy of a split with every example varied as benign inputs are (seeded, so fits repeat);
/// `None` for token inputs, which have no such variation.
pub fn varied(
    data: &Prepared,
    shape: &InputShape,
    fill: &[f32],
    aug: &Augment,
    seed: u64,
) -> Option<Prepared> {
    let Features::Dense { values, dims } = &data.features else { return None };
    let mut values = values.clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    crate::ml::data::augment::apply(&mut values, shape, fill, aug, &mut rng);
    Some(Prepared { features: Features::Dense { values, dims: dims.clone() }, labels: data.labels.clone() })
}

/// What a detector is calibrated on besides the clean splits: the benign variation, and the
/// training and validation splits varied by it. A one-pixel shift moves a digit's strokes as
/// far as an attack's perturbation moves its pixels, so Gaussians fitted on shifted images
/// accept both (a detector fitted that way flagged 0% of PGD inputs at ε = 0.1). So the input
/// layer is fitted on the training split and its noised copy (`train_noise`), and it scores an
/// image by its best alignment, the smallest distance over the shifts up to `aug.shift`; the
/// penultimate layer, which the network learnt to make shift-tolerant, is fitted on the
/// training split and its shifted-and-noised copy (`train`).
pub struct Variation {
    pub aug: Augment,
    /// The preprocessed value of a raw zero at each input position: what a shift brings in.
    pub fill: Vec<f32>,
    pub shape: InputShape,
    pub train: Prepared,
    pub train_noise: Prepared,
    pub validation: Prepared,
}

/// Two splits as one (dense features).
fn joined(a: &Prepared, b: &Prepared) -> Prepared {
    match (&a.features, &b.features) {
        (Features::Dense { values: va, dims }, Features::Dense { values: vb, .. }) => Prepared {
            features: Features::Dense { values: [va.as_slice(), vb.as_slice()].concat(), dims: dims.clone() },
            labels: [a.labels.as_slice(), b.labels.as_slice()].concat(),
        },
        _ => a.clone(),
    }
}

/// Which score a detector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Smallest Mahalanobis distance of the penultimate features to a class mean.
    Mahalanobis,
    /// Negative log-sum-exp of the logits.
    Energy,
}

impl DetectorKind {
    pub fn name(&self) -> &'static str {
        match self {
            DetectorKind::Mahalanobis => "mahalanobis",
            DetectorKind::Energy => "energy",
        }
    }
}

/// One layer's class-conditional Gaussians: class means and the inverse of their shared
/// covariance, and the spread of the layer's distances on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussianLayer {
    /// `input` (the preprocessed input, flattened) or `penultimate`.
    pub layer: String,
    pub features: usize,
    /// The class means fitted on the training split (classes × features).
    pub means: Vec<Vec<f32>>,
    /// The inverse of the shared covariance plus `ridge` times the identity, row-major.
    pub precision: Vec<f32>,
    /// Added to the covariance's diagonal: 1e-3 of its mean variance, so that values that never
    /// change (dead ReLUs, background pixels) do not make it singular.
    pub ridge: f64,
    /// Median and robust spread (1.4826 × the median absolute deviation) of the layer's
    /// distances on the validation split: the layers' distances are compared in these units.
    pub median: f64,
    pub spread: f64,
    /// The input layer of images: score each image at its best alignment (see [`Variation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align: Option<Align>,
    /// The expanded quadratic form's class terms, computed on first use.
    #[serde(skip)]
    quadratic: OnceLock<Quadratic>,
}

/// Shifts an image is scored at: every (dy, dx) up to `shift` pixels, positions shifted in
/// taking `fill`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Align {
    pub shift: usize,
    /// Channels, height, width.
    pub image: [usize; 3],
    pub fill: Vec<f32>,
}

/// `P` in f64, and per class `P m` and `m' P m`: the squared distance of `h` to class `c` is
/// then `h'Ph − 2 (Pm_c)'h + m_c'Pm_c`.
#[derive(Debug, Clone, PartialEq)]
struct Quadratic {
    /// `h'Ph` needs only the upper triangle of `P + P'`: row `i` holds `P_ii` then
    /// `P_ij + P_ji` for `j > i`, so that `h'Ph = Σ_i h_i (P_ii h_i + Σ_{j>i} U_ij h_j)`. That is
    /// half the products of `P h` (the detector's largest cost per request in `vigil serve`'s
    /// profile), and the same sum for any `P`, symmetric to the last bit or not.
    upper: Vec<Vec<f64>>,
    pm: Vec<Vec<f64>>,
    mpm: Vec<f64>,
}

impl Quadratic {
    /// The rows of [`Quadratic::upper`] for the `f` x `f` matrix `p`.
    fn upper_of(p: &[f64], f: usize) -> Vec<Vec<f64>> {
        (0..f)
            .map(|i| {
                (i..f).map(|j| if j == i { p[i * f + i] } else { p[i * f + j] + p[j * f + i] }).collect()
            })
            .collect()
    }

    /// `h'Ph`.
    fn hph(&self, h: &[f64]) -> f64 {
        self.upper.iter().enumerate().map(|(i, u)| h[i] * (u[0] * h[i] + dot(&u[1..], &h[i + 1..]))).sum()
    }
}

/// Inputs wider than this are not modelled at the input layer (the covariance would have
/// width² entries); the penultimate layer still is.
const MAX_INPUT_FEATURES: usize = 512;

/// A fitted detector: flag an input when its score exceeds `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    pub kind: DetectorKind,
    pub threshold: f64,
    /// The false-positive rate asked for on the validation split.
    pub target_fpr: f64,
    /// The share of the validation split flagged (at most the target).
    pub validation_fpr: f64,
    pub validation_examples: usize,
    /// The false-positive rate the threshold promises on new benign inputs when the validation
    /// split is too small for `target_fpr`: 1/(n + 1) for n validation examples, the threshold
    /// being their largest score (a 1% rate needs at least 99). `None`: the target holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpr_bound: Option<f64>,
    /// The benign variation the threshold is also calibrated on (see the module documentation);
    /// `None` for detectors fitted before it was, or on token inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation: Option<Augment>,
    /// The share of the test split flagged once each input is varied that way: the
    /// false-positive rate on benign traffic, measured when the detector was fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benign_fpr: Option<f64>,
    /// The share of the test split flagged, measured when the detector was fitted.
    #[serde(default)]
    pub test_fpr: Option<f64>,
    /// Mahalanobis: the layers modelled (the input when it is numeric and at most 512 values
    /// wide, and the penultimate layer). The score is the largest of their distances, each
    /// standardised by its median and spread on the validation split.
    #[serde(default)]
    pub layers: Vec<GaussianLayer>,
}

/// Features of a layer for a batch, `(B, width)`.
fn layer_features(net: &Network, layer: &str, x: &Tensor) -> Result<Tensor> {
    Ok(match layer {
        "input" => x.to_dtype(DType::F32)?.flatten_from(1)?,
        _ => crate::ml::kernels::inference(|| net.penultimate(x))?.to_dtype(DType::F32)?,
    })
}

/// Features (or logits) of a split, `(n, width)` on the host.
fn rows(net: &Network, data: &Prepared, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<(Vec<f32>, usize)> {
    let n = data.labels.len();
    let mut out = Vec::new();
    let mut width = 0;
    let idx: Vec<usize> = (0..n).collect();
    for c in idx.chunks(BATCH) {
        let x = data.features.batch(c, net.device())?;
        let h = f(&x)?;
        width = h.dim(1)?;
        out.extend(h.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((out, width))
}

/// The `q` quantile of `values` with linear interpolation between order statistics (NumPy's
/// default).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The threshold for a false-positive rate `fpr` from benign `scores` (inputs scoring strictly
/// above it are flagged): the ⌈(1 − fpr)(n + 1)⌉-th smallest score, the conformal quantile, so
/// that a new benign input, exchangeable with these, is flagged with probability at most
/// `fpr`. (The plain empirical quantile flags `fpr` of the calibration scores and about
/// `fpr` + 1/n of new ones.) With fewer than 1/`fpr` − 1 scores no order statistic promises
/// `fpr`: the largest score is the threshold and the rate it promises, 1/(n + 1), comes back
/// beside it. `None` for no scores.
pub fn calibrate(scores: &[f64], fpr: f64) -> Option<(f64, Option<f64>)> {
    let mut v: Vec<f64> = scores.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let rank = ((1.0 - fpr) * (n + 1) as f64).ceil() as usize;
    match rank {
        _ if n == 0 => None,
        0 => Some((v[0], None)),
        r if r > n => Some((v[n - 1], Some(1.0 / (n + 1) as f64))),
        r => Some((v[r - 1], None)),
    }
}

impl GaussianLayer {
    fn fit(net: &Network, layer: &str, train: &Prepared) -> Result<Self> {
        let (h, width) = rows(net, train, &|x| layer_features(net, layer, x))?;
        let n = train.labels.len();
        if n < 2 || width == 0 {
            return Err(Error::unsuitable("the training split is too small to fit the detector"));
        }
        let classes = net.classes;
        let mut sums = vec![vec![0f64; width]; classes];
        let mut counts = vec![0usize; classes];
        for (i, &y) in train.labels.iter().enumerate() {
            counts[y as usize] += 1;
            for (s, v) in sums[y as usize].iter_mut().zip(&h[i * width..(i + 1) * width]) {
                *s += *v as f64;
            }
        }
        let means: Vec<Vec<f64>> = sums
            .iter()
            .zip(&counts)
            .map(|(s, &c)| s.iter().map(|v| if c > 0 { v / c as f64 } else { 0.0 }).collect())
            .collect();
        let centred =
            DMatrix::from_fn(n, width, |i, j| h[i * width + j] as f64 - means[train.labels[i] as usize][j]);
        let mut cov = centred.transpose() * &centred / n as f64;
        let ridge = 1e-3 * cov.trace() / width as f64 + 1e-12;
        for j in 0..width {
            cov[(j, j)] += ridge;
        }
        let precision = cov
            .cholesky()
            .ok_or_else(|| Error::unsuitable("the features' covariance is not positive definite"))?
            .inverse();
        Ok(GaussianLayer {
            layer: layer.into(),
            features: width,
            means: means.iter().map(|m| m.iter().map(|v| *v as f32).collect()).collect(),
            // Symmetric, so nalgebra's column-major order is also row-major.
            precision: precision.iter().map(|v| *v as f32).collect(),
            ridge,
            median: 0.0,
            spread: 1.0,
            align: None,
            quadratic: OnceLock::new(),
        })
    }

    fn quadratic(&self) -> &Quadratic {
        self.quadratic.get_or_init(|| {
            let f = self.features;
            let precision: Vec<f64> = self.precision.iter().map(|v| *v as f64).collect();
            let pm: Vec<Vec<f64>> = self
                .means
                .iter()
                .map(|m| {
                    (0..f)
                        .map(|i| {
                            precision[i * f..(i + 1) * f].iter().zip(m).map(|(p, v)| p * *v as f64).sum()
                        })
                        .collect()
                })
                .collect();
            let mpm = self
                .means
                .iter()
                .zip(&pm)
                .map(|(m, pm)| m.iter().zip(pm).map(|(v, p)| *v as f64 * p).sum())
                .collect();
            Quadratic { upper: Quadratic::upper_of(&precision, f), pm, mpm }
        })
    }

    /// The log of the squared Mahalanobis distance to the nearest class mean of each row of
    /// `h` (`n × features`, row-major): squared distances are skewed like a χ², their logs
    /// nearly symmetric, which is what a median and a MAD describe well.
    ///
    /// With `settled_below`, an image whose unshifted log distance is already at most that is
    /// not realigned: alignment can only lower its distance, and the caller (flagging against a
    /// threshold) has its answer.
    fn log_distances(&self, h: &[f32], settled_below: Option<f64>) -> Result<Vec<f64>> {
        let f = self.features;
        if f == 0 || !h.len().is_multiple_of(f) {
            return Err(Error::unsuitable(format!(
                "the detector's {} layer was fitted on {} features, the network gives {} values",
                self.layer,
                f,
                h.len()
            )));
        }
        if self.means.is_empty() {
            return Err(Error::unsuitable("the detector has no class means"));
        }
        let q = self.quadratic();
        let mut wide = vec![0f64; f];
        let mut nearest = |row: &[f32]| -> f64 {
            for (w, v) in wide.iter_mut().zip(row) {
                *w = *v as f64;
            }
            let row = &wide;
            let hph = q.hph(row);
            q.pm.iter()
                .zip(&q.mpm)
                .map(|(pm, mpm)| hph - 2.0 * dot(row, pm) + mpm)
                .fold(f64::INFINITY, f64::min)
        };
        let (mut shifted, mut scratch) = (vec![0f32; f], vec![0f32; f]);
        Ok(h.chunks(f)
            .map(|row| {
                let unshifted = nearest(row);
                let settled = settled_below.is_some_and(|b| (unshifted.max(0.0) + 1e-6).ln() <= b);
                let best = match &self.align {
                    Some(a) if a.image.iter().product::<usize>() == f && a.fill.len() == f && !settled => {
                        let s = a.shift as i64;
                        let [c, hh, w] = a.image;
                        let mut best = unshifted;
                        for dy in -s..=s {
                            for dx in -s..=s {
                                if dy == 0 && dx == 0 {
                                    continue;
                                }
                                shifted.copy_from_slice(row);
                                crate::ml::data::augment::shift(
                                    &mut shifted,
                                    &mut scratch,
                                    c,
                                    hh,
                                    w,
                                    dy,
                                    dx,
                                    &a.fill,
                                );
                                best = best.min(nearest(&shifted));
                            }
                        }
                        best
                    }
                    _ => unshifted,
                };
                // Rounding can take a distance of (nearly) zero a hair below it.
                (best.max(0.0) + 1e-6).ln()
            })
            .collect())
    }

    /// The layer's distances standardised by its median and spread; with `threshold`, those
    /// that are at most it may come back higher than they are, still at most it (see
    /// [`Self::log_distances`]).
    fn standardised(&self, h: &[f32], threshold: Option<f64>) -> Result<Vec<f64>> {
        let settled = threshold.map(|t| t * self.spread + self.median);
        Ok(self.log_distances(h, settled)?.into_iter().map(|v| (v - self.median) / self.spread).collect())
    }
}

/// A dot product over 8 lanes: a plain `sum()` of f64 products is one long dependency chain
/// (the compiler may not reorder float additions), eight times slower than this for the
/// products the detector does per input.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut lanes = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// A layer's features of a batch on the host, from the input and (when already computed) the
/// penultimate features.
fn host_features(net: &Network, layer: &str, x: &Tensor, penultimate: Option<&Tensor>) -> Result<Vec<f32>> {
    let t = match (layer, penultimate) {
        ("input", _) => x.to_dtype(DType::F32)?.flatten_from(1)?,
        (_, Some(p)) => p.to_dtype(DType::F32)?.flatten_from(1)?,
        (_, None) => layer_features(net, layer, x)?,
    };
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

impl Detector {
    /// Fits a detector: the Gaussians (Mahalanobis) on `train`, the layers' spreads and the
    /// threshold on `validation`, flagging at most `target_fpr` of it.
    pub fn fit(
        net: &Network,
        train: &Prepared,
        validation: &Prepared,
        kind: DetectorKind,
        target_fpr: f64,
    ) -> Result<Detector> {
        Self::fit_varied(net, train, validation, None, kind, target_fpr)
    }

    /// [`Self::fit`], also calibrated on benign variation: `varied` holds the variation and the
    /// varied copies of the training and validation splits. The Gaussians are fitted on both
    /// training copies, the spreads on both validation copies, and the threshold is the larger
    /// of the two validation copies' thresholds, so that each flags at most `target_fpr`.
    pub fn fit_varied(
        net: &Network,
        train: &Prepared,
        validation: &Prepared,
        varied: Option<&Variation>,
        kind: DetectorKind,
        target_fpr: f64,
    ) -> Result<Detector> {
        if !(target_fpr > 0.0 && target_fpr < 1.0) {
            return Err(Error::argument(format!("a false-positive rate of {target_fpr} is not in (0, 1)")));
        }
        if validation.labels.is_empty() {
            return Err(Error::unsuitable("the validation split is empty: nothing to calibrate on"));
        }
        let mut d = Detector {
            kind,
            threshold: 0.0,
            target_fpr,
            validation_fpr: 0.0,
            validation_examples: validation.labels.len(),
            fpr_bound: None,
            variation: varied.map(|v| v.aug.clone()),
            benign_fpr: None,
            test_fpr: None,
            layers: vec![],
        };
        if kind == DetectorKind::Mahalanobis {
            let fit_on = varied.map(|v| joined(train, &v.train));
            let fit_on = fit_on.as_ref().unwrap_or(train);
            let fit_input_on = varied.map(|v| joined(train, &v.train_noise));
            let fit_input_on = fit_input_on.as_ref().unwrap_or(train);
            let spread_on = varied.map(|v| joined(validation, &v.validation));
            let spread_on = spread_on.as_ref().unwrap_or(validation);
            if !net.takes_tokens() && net.input.numel() <= MAX_INPUT_FEATURES {
                let mut input = GaussianLayer::fit(net, "input", fit_input_on)?;
                if let Some(v) = varied
                    && let InputShape::Image { channels, height, width } = &v.shape
                    && v.aug.shift > 0
                {
                    input.align = Some(Align {
                        shift: v.aug.shift,
                        image: [*channels, *height, *width],
                        fill: v.fill.clone(),
                    });
                }
                d.layers.push(input);
            }
            d.layers.push(GaussianLayer::fit(net, "penultimate", fit_on)?);
            for i in 0..d.layers.len() {
                let layer = d.layers[i].clone();
                let raw = split_values(net, spread_on, &|x| {
                    layer.log_distances(&host_features(net, &layer.layer, x, None)?, None)
                })?;
                let median = quantile(&raw, 0.5);
                let dev: Vec<f64> = raw.iter().map(|v| (v - median).abs()).collect();
                d.layers[i].median = median;
                d.layers[i].spread = (1.4826 * quantile(&dev, 0.5)).max(1e-12);
            }
        }
        let score = |data: &Prepared| split_values(net, data, &|x| d.scores_f64(net, x, None, None, false));
        let scores = score(validation)?;
        let n = scores.len();
        let (mut threshold, bound) = calibrate(&scores, target_fpr)
            .ok_or_else(|| Error::unsuitable("the validation split is empty: nothing to calibrate on"))?;
        if bound.is_some_and(|b| b > MAX_FPR_BOUND) {
            return Err(Error::unsuitable(format!(
                "the validation split has {n} examples, too few to calibrate a threshold (a {:.0}% \
                 false-positive rate needs at least {}, {:.0}% at least {})",
                100.0 * target_fpr,
                (1.0 / target_fpr).ceil() as usize - 1,
                100.0 * MAX_FPR_BOUND,
                (1.0 / MAX_FPR_BOUND).ceil() as usize - 1
            )));
        }
        if let Some(v) = varied
            && let Some((t, _)) = calibrate(&score(&v.validation)?, target_fpr)
        {
            threshold = threshold.max(t);
        }
        d.threshold = threshold;
        d.fpr_bound = bound;
        d.validation_fpr = scores.iter().filter(|s| **s > d.threshold).count() as f64 / scores.len() as f64;
        Ok(d)
    }

    /// The score of each input of a batch (as the network takes it); higher is stranger.
    pub fn scores(&self, net: &Network, x: &Tensor) -> Result<Vec<f32>> {
        Ok(self.scores_f64(net, x, None, None, false)?.into_iter().map(|v| v as f32).collect())
    }

    /// [`Self::scores`] from features the caller already has: the penultimate features
    /// (Mahalanobis) or the logits (energy) of the same inputs, so that a prediction and its
    /// detection share one pass through the network.
    pub fn scores_given(
        &self,
        net: &Network,
        x: &Tensor,
        penultimate: &Tensor,
        logits: &Tensor,
    ) -> Result<Vec<f32>> {
        Ok(self
            .scores_f64(net, x, Some(penultimate), Some(logits), false)?
            .into_iter()
            .map(|v| v as f32)
            .collect())
    }

    /// `for_flags`: only whether each score is above the threshold matters (see
    /// [`GaussianLayer::standardised`]).
    fn scores_f64(
        &self,
        net: &Network,
        x: &Tensor,
        penultimate: Option<&Tensor>,
        logits: Option<&Tensor>,
        for_flags: bool,
    ) -> Result<Vec<f64>> {
        match self.kind {
            DetectorKind::Energy => {
                let logits = match logits {
                    Some(l) => l.clone(),
                    None => net.infer(x)?,
                };
                let e = logits.to_dtype(DType::F32)?.log_sum_exp(D::Minus1)?.neg()?;
                Ok(e.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
            }
            DetectorKind::Mahalanobis => {
                let mut best: Option<Vec<f64>> = None;
                for l in &self.layers {
                    let z = l.standardised(
                        &host_features(net, &l.layer, x, penultimate)?,
                        for_flags.then_some(self.threshold),
                    )?;
                    best = Some(match best {
                        Some(b) => b.into_iter().zip(z).map(|(a, b)| a.max(b)).collect(),
                        None => z,
                    });
                }
                best.ok_or_else(|| Error::unsuitable("the detector models no layer"))
            }
        }
    }

    /// Whether each input of a batch is flagged.
    pub fn flags(&self, net: &Network, x: &Tensor) -> Result<Vec<bool>> {
        Ok(self.scores_f64(net, x, None, None, true)?.into_iter().map(|s| s > self.threshold).collect())
    }

    /// [`Self::flags`] from the penultimate features and logits the caller already has.
    pub fn flags_given(
        &self,
        net: &Network,
        x: &Tensor,
        penultimate: &Tensor,
        logits: &Tensor,
    ) -> Result<Vec<bool>> {
        let s = self.scores_f64(net, x, Some(penultimate), Some(logits), true)?;
        Ok(s.into_iter().map(|s| s > self.threshold).collect())
    }

    /// The share of a split flagged.
    pub fn flag_rate(&self, net: &Network, data: &Prepared) -> Result<f64> {
        let s = split_values(net, data, &|x| self.scores_f64(net, x, None, None, true))?;
        Ok(s.iter().filter(|v| **v > self.threshold).count() as f64 / s.len().max(1) as f64)
    }

    /// What the score is, in words.
    pub fn describe(&self) -> String {
        match self.kind {
            DetectorKind::Energy => "energy score".into(),
            DetectorKind::Mahalanobis => format!(
                "Mahalanobis distance on the {} layer{}",
                self.layers.iter().map(|l| l.layer.as_str()).collect::<Vec<_>>().join(" and "),
                if self.layers.len() > 1 { "s" } else { "" }
            ),
        }
    }

    /// The false-positive rate the threshold is calibrated to: the target, or the bound a small
    /// validation split allows.
    pub fn calibrated_fpr(&self) -> f64 {
        self.fpr_bound.unwrap_or(self.target_fpr)
    }

    /// What the threshold promises, in words: "1% false positives on validation data", or the
    /// bound a small validation split allows and why.
    pub fn calibration(&self) -> String {
        match self.fpr_bound {
            None => format!("{:.0}% false positives on validation data", 100.0 * self.target_fpr),
            Some(b) => format!(
                "at most {:.1}% false positives: the validation split's {} examples allow no lower \
                 rate (the target {:.0}% needs {})",
                100.0 * b,
                self.validation_examples,
                100.0 * self.target_fpr,
                (1.0 / self.target_fpr).ceil() as usize - 1
            ),
        }
    }

    /// One line for logs: the score, the threshold and the false-positive rates.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "input detector ({}): threshold {:.4} flags {:.2}% of the validation split (calibrated to {})",
            self.describe(),
            self.threshold,
            100.0 * self.validation_fpr,
            self.calibration()
        );
        if let Some(t) = self.test_fpr {
            s.push_str(&format!(" and {:.2}% of the test split", 100.0 * t));
        }
        if let Some(b) = self.benign_fpr {
            s.push_str(&format!(" ({:.2}% of it {})", 100.0 * b, self.variation_words()));
        }
        s
    }

    /// The benign variation calibrated on, in words: "shifted by up to 1 pixel and noised (σ 0.02)".
    pub fn variation_words(&self) -> String {
        match &self.variation {
            None => "as it is".into(),
            Some(a) => {
                let mut parts = Vec::new();
                if a.shift > 0 {
                    parts.push(format!(
                        "shifted by up to {} pixel{}",
                        a.shift,
                        if a.shift > 1 { "s" } else { "" }
                    ));
                }
                if a.noise > 0.0 {
                    parts.push(format!("noised (σ {})", a.noise));
                }
                parts.join(" and ")
            }
        }
    }
}

/// A per-input value over a whole split, in batches.
fn split_values(net: &Network, data: &Prepared, f: &dyn Fn(&Tensor) -> Result<Vec<f64>>) -> Result<Vec<f64>> {
    let n = data.labels.len();
    let idx: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(n);
    for c in idx.chunks(BATCH) {
        let x = data.features.batch(c, net.device())?;
        out.extend(f(&x)?);
    }
    Ok(out)
}

/// Where a run keeps its detector.
pub const FILE: &str = "detector.json";

/// What `detector.json` holds: a fitted detector, or the reason the run has none (fitting
/// failed on this run's data, e.g. a validation split too small to calibrate on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Fitted(Box<Detector>),
    Unavailable { unavailable: String },
}

/// The run's detector, or the reason it has none, in words for the user.
pub fn load(run: &RunDir) -> Result<std::result::Result<Detector, String>> {
    let path = run.file(FILE);
    if !path.exists() {
        return Ok(Err(format!(
            "run {} has no detector.json (trained before input detectors; `vigil attack {}` fits one)",
            run.id, run.id
        )));
    }
    let value: serde_json::Value = read_json(&path)?;
    // Earlier versions wrote a threshold they could not calibrate (too few validation examples)
    // as null.
    if value.get("threshold").is_some_and(|t| t.is_null()) {
        return Ok(Err(format!(
            "run {}'s detector has no threshold: its {} validation examples were too few to calibrate one",
            run.id,
            value.get("validation_examples").and_then(|v| v.as_u64()).unwrap_or(0)
        )));
    }
    let stored: Stored = serde_json::from_value(value)
        .map_err(|e| Error::Corrupt { path: path.clone(), msg: format!("not a detector: {e}") })?;
    Ok(match stored {
        Stored::Fitted(d) => Ok(*d),
        Stored::Unavailable { unavailable } => {
            Err(format!("run {} has no input detector: {unavailable}", run.id))
        }
    })
}

/// Fits the default detector (Mahalanobis, 1% on validation) for a trained network, measures
/// its false-positive rate on the test split, writes it to the run and logs it. Data that a
/// detector cannot be fitted on (a validation split too small, features whose covariance is
/// singular) leaves the reason in `detector.json` instead and gives `Err(reason)`: the run is
/// still served and attacked, without `ood` flags. The caller refreshes the manifest.
pub fn fit_for_run(
    run: &RunDir,
    net: &Network,
    data: &PreparedData,
) -> Result<std::result::Result<Detector, String>> {
    // The run's own augmentation, when its spec can be read (a detector is still fitted, on
    // the default variation, when it cannot).
    let augment = run.spec().ok().and_then(|s| s.augment);
    match fit_benign(net, data, augment.as_ref(), DetectorKind::Mahalanobis, TARGET_FPR) {
        Ok(d) => {
            write_json(&run.file(FILE), &Stored::Fitted(Box::new(d.clone())))?;
            run.log(EventKind::Detector, d.summary())?;
            Ok(Ok(d))
        }
        Err(Error::Input(InputError::Unsuitable(reason))) => {
            write_json(&run.file(FILE), &Stored::Unavailable { unavailable: reason.clone() })?;
            run.log(EventKind::Detector, format!("no input detector: {reason}"))?;
            Ok(Err(format!("run {} has no input detector: {reason}", run.id)))
        }
        Err(e) => Err(e),
    }
}

/// Fits a detector on a run's prepared data, calibrated on benign variation of its dense inputs
/// ([`variation_for`] the spec's augmentation), and measures its false-positive rates on the
/// test split as it is (`test_fpr`) and varied (`benign_fpr`).
pub fn fit_benign(
    net: &Network,
    data: &PreparedData,
    augment: Option<&Augment>,
    kind: DetectorKind,
    target_fpr: f64,
) -> Result<Detector> {
    let aug = variation_for(augment);
    let shape = &data.pipeline.input;
    let vary =
        |p: &Prepared, seed: u64| data.zero_fill.as_deref().and_then(|f| varied(p, shape, f, &aug, seed));
    // The input layer models noise, not shifts: it undoes them before scoring (see Variation).
    let noise_only = Augment { shift: 0, ..aug.clone() };
    let copies = match (&data.zero_fill, vary(&data.validation, 2), vary(&data.test, 3)) {
        (Some(fill), Some(validation), Some(test)) => {
            let train_noise =
                varied(&data.train, shape, fill, &noise_only, 4).expect("dense like the others");
            let train = vary(&data.train, 1).expect("dense like the others");
            Some((
                Variation {
                    aug: aug.clone(),
                    fill: fill.clone(),
                    shape: shape.clone(),
                    train,
                    train_noise,
                    validation,
                },
                test,
            ))
        }
        _ => None,
    };
    let mut d = Detector::fit_varied(
        net,
        &data.train,
        &data.validation,
        copies.as_ref().map(|c| &c.0),
        kind,
        target_fpr,
    )?;
    d.test_fpr = Some(d.flag_rate(net, &data.test)?);
    if let Some((_, test)) = &copies {
        d.benign_fpr = Some(d.flag_rate(net, test)?);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_triangle_gives_the_quadratic_form_of_the_whole_matrix() {
        // A matrix that is not symmetric, of a width that is not a multiple of the dot's lanes.
        let f = 11;
        let p: Vec<f64> = (0..f * f).map(|k| ((k * 37 % 19) as f64 - 9.0) / 7.0).collect();
        let h: Vec<f64> = (0..f).map(|i| (i as f64 - 4.5) / 3.0).collect();
        let naive: f64 = (0..f).map(|i| (0..f).map(|j| h[i] * p[i * f + j] * h[j]).sum::<f64>()).sum();
        let q = Quadratic { upper: Quadratic::upper_of(&p, f), pm: vec![], mpm: vec![] };
        assert!((q.hph(&h) - naive).abs() <= 1e-12 * naive.abs().max(1.0), "{} vs {naive}", q.hph(&h));
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.quantile([3, 1, 4, 1, 5, 9, 2, 6], [0, 0.5, 0.99, 1]) = [1, 3.5, 8.79, 9]
        let v = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert!((quantile(&v, 0.5) - 3.5).abs() < 1e-12);
        assert!((quantile(&v, 0.99) - 8.79).abs() < 1e-9);
        assert_eq!(quantile(&v, 1.0), 9.0);
    }
}

#[cfg(test)]
mod calibration_tests {
    use super::calibrate;

    #[test]
    fn enough_scores_give_the_conformal_quantile_and_too_few_the_largest_with_its_bound() {
        let scores: Vec<f64> = (1..=199).map(f64::from).collect();
        // ⌈0.99 × 200⌉ = 198: the 198th smallest.
        assert_eq!(calibrate(&scores, 0.01), Some((198.0, None)));
        let few: Vec<f64> = (1..=24).map(f64::from).collect();
        assert_eq!(calibrate(&few, 0.01), Some((24.0, Some(1.0 / 25.0))));
        assert_eq!(calibrate(&[], 0.01), None);
    }
}
