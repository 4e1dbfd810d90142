//! Sanity and faithfulness checks of attribution methods, on a set of inputs:
//!
//! - The model-parameter randomisation test (Adebayo et al., 2018, "cascading"): re-initialise
//!   the layers one by one from the output down and, after each, take the Spearman rank
//!   correlation of |attributions| between the trained and the randomised network. An
//!   explanation of the model must change when the model does: a method passes when the mean
//!   correlation after full randomisation is below [`RANDOMISATION_THRESHOLD`]. The correlation
//!   is taken over the input's non-zero values (real tokens for text): gradient × input,
//!   integrated gradients and occlusion give a value equal to the zero baseline exactly zero
//!   attribution under every model, so on inputs that are half zeros (the digits' background)
//!   counting those values measures the input's zero pattern, not the model. The correlation
//!   over all values is reported beside it.
//! - The deletion test (Petsiuk et al., 2018): remove the input's features (set them to the zero
//!   baseline) in the order of their attributions, most important first, and in random order,
//!   and compare the areas under the accuracy curves: a faithful ranking makes accuracy fall
//!   faster than chance.
//!
//! Both run a model-independent control alongside the methods (an edge detector for images,
//! step-to-step change for sequences, magnitude for tabular inputs, word rarity for text), which
//! the randomisation test must report as failing. In the deletion test the control is a
//! reference, never a pass: a ranking that ignores the model can still beat random order (edges
//! carry the digits), so a method shows its faithfulness by beating both random order and the
//! control. Nothing here changes the network it is given: randomisation works on a copy.

use candle_core::{D, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Explainer, Method, Space};
use crate::error::{Error, Result};
use crate::ml::data::InputShape;
use crate::ml::model::Network;
use crate::ml::spec::Init;

/// A method passes the randomisation test when its mean rank correlation after every layer has
/// been re-initialised is below this.
pub const RANDOMISATION_THRESHOLD: f64 = 0.5;

/// The name the control goes by in reports.
pub const CONTROL_NAME: &str = "control";

/// One method's (or the control's) rank correlations as the layers are randomised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomisationCurve {
    /// A method name, or [`CONTROL_NAME`].
    pub name: String,
    /// What the control is, for the control.
    pub control: Option<String>,
    /// Mean Spearman correlation of |attributions| with the trained network's over the input's
    /// non-zero values, after each layer of [`RandomisationReport::layers`] has been
    /// re-initialised (cumulatively). `None` when the attributions rank nothing (all equal).
    pub correlations: Vec<Option<f64>>,
    /// The same over every value, zeros included.
    pub correlations_all_values: Vec<Option<f64>>,
    /// Whether the last correlation is below the threshold.
    pub passed: bool,
}

/// The result of the model-parameter randomisation test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomisationReport {
    pub inputs: usize,
    pub threshold: f64,
    /// Layers in the order they were re-initialised: output first.
    pub layers: Vec<String>,
    pub curves: Vec<RandomisationCurve>,
}

/// Accuracy as features are removed in one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionCurve {
    /// A method name, [`CONTROL_NAME`], or `random`.
    pub name: String,
    /// Accuracy after removing each fraction of [`DeletionReport::fractions`].
    pub accuracy: Vec<f64>,
    /// Area under the accuracy curve (trapezoid rule over the fractions); lower is more faithful.
    pub auc: f64,
    /// Whether the area is below the random order's (always false for `random` itself and
    /// for the control, which is a reference: see [`DeletionCurve::beats_control`]).
    pub passed: bool,
    /// For a method: whether its area is also below the model-independent control's.
    #[serde(default)]
    pub beats_control: bool,
}

/// The result of the deletion test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionReport {
    pub inputs: usize,
    /// Fractions of each input's features removed, from 0 to 1.
    pub fractions: Vec<f64>,
    /// Features removed in random order (the mean over several orders).
    pub random: DeletionCurve,
    pub curves: Vec<DeletionCurve>,
}

/// Both tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SanityReport {
    pub randomisation: RandomisationReport,
    pub deletion: DeletionReport,
}

/// Runs both tests on `inputs` (`(B, dims...)` as the network takes them) with true `labels`,
/// for `methods` and the control. `init` is the spec's initialisation scheme (randomised layers
/// are drawn from it) and `seed` seeds re-initialisation and the random deletion orders.
pub fn sanity(
    explainer: &Explainer,
    init: Init,
    inputs: &Tensor,
    labels: &[u32],
    methods: &[Method],
    seed: u64,
) -> Result<SanityReport> {
    Ok(SanityReport {
        randomisation: randomisation_test(explainer, init, inputs, methods, seed)?,
        deletion: deletion_test(explainer, inputs, labels, methods, 20, seed)?,
    })
}

/// The model-parameter randomisation test, attributing each input's class as predicted by the
/// trained network throughout.
pub fn randomisation_test(
    explainer: &Explainer,
    init: Init,
    inputs: &Tensor,
    methods: &[Method],
    seed: u64,
) -> Result<RandomisationReport> {
    let net = explainer.network();
    let space = Space::new(net, inputs)?;
    let targets = predicted(net, inputs)?;
    let control = control_attributions(net, &space)?;
    let trained: Vec<Vec<Vec<f32>>> =
        methods.iter().map(|m| Ok(explainer.attributions(&space, m, &targets)?.0)).collect::<Result<_>>()?;

    let copy = duplicate(net, init)?;
    let randomised = Explainer { net: &copy, output: explainer.output, max_points: explainer.max_points };
    let mut layers = copy.layer_names();
    layers.reverse();
    let (set, all) = (feature_lists(&space, true)?, feature_lists(&space, false)?);
    let mut correlations = vec![(Vec::new(), Vec::new()); methods.len()];
    let mut control_correlations = (Vec::new(), Vec::new());
    for (k, layer) in layers.iter().enumerate() {
        copy.reinit_layer(layer, init, seed.wrapping_add(k as u64 + 1))?;
        // A text model's embeddings change with its embedding layer, so embed again.
        let space_k = Space::new(&copy, inputs)?;
        for (m, method) in methods.iter().enumerate() {
            let after = randomised.attributions(&space_k, method, &targets)?.0;
            correlations[m].0.push(mean_correlation(&trained[m], &after, &set));
            correlations[m].1.push(mean_correlation(&trained[m], &after, &all));
        }
        // The control never looks at the network: computed again, it is the same.
        let after = control_attributions(&copy, &space_k)?;
        control_correlations.0.push(mean_correlation(&control, &after, &set));
        control_correlations.1.push(mean_correlation(&control, &after, &all));
    }
    let curve = |name: &str, control: Option<String>, (c, all): (Vec<Option<f64>>, Vec<Option<f64>>)| {
        RandomisationCurve {
            name: name.into(),
            control,
            passed: c.last().is_some_and(|r| r.is_some_and(|r| r < RANDOMISATION_THRESHOLD)),
            correlations: c,
            correlations_all_values: all,
        }
    };
    let mut curves: Vec<RandomisationCurve> =
        methods.iter().zip(correlations).map(|(m, c)| curve(m.name(), None, c)).collect();
    curves.push(curve(CONTROL_NAME, Some(control_description(&net.input).into()), control_correlations));
    Ok(RandomisationReport { inputs: space.n, threshold: RANDOMISATION_THRESHOLD, layers, curves })
}

/// The deletion test with `steps` + 1 fractions from 0 to 1, attributing each input's predicted
/// class; accuracy is against `labels`.
pub fn deletion_test(
    explainer: &Explainer,
    inputs: &Tensor,
    labels: &[u32],
    methods: &[Method],
    steps: usize,
    seed: u64,
) -> Result<DeletionReport> {
    let net = explainer.network();
    let space = Space::new(net, inputs)?;
    if labels.len() != space.n {
        return Err(Error::unsuitable(format!("{} labels for {} inputs", labels.len(), space.n)));
    }
    let steps = steps.max(1);
    let targets = predicted(net, inputs)?;
    let fractions: Vec<f64> = (0..=steps).map(|k| k as f64 / steps as f64).collect();
    let features = feature_lists(&space, false)?;

    let mut curves = Vec::new();
    for method in methods {
        let a = explainer.attributions(&space, method, &targets)?.0;
        let orders = rank_orders(&a, &features, method.is_gradient());
        let accuracy = deletion_curve(explainer, &space, labels, &[orders], &fractions)?;
        curves.push((method.name().to_string(), accuracy));
    }
    let control = control_attributions(net, &space)?;
    let accuracy =
        deletion_curve(explainer, &space, labels, &[rank_orders(&control, &features, false)], &fractions)?;
    curves.push((CONTROL_NAME.to_string(), accuracy));

    // Several random orders, averaged, so that the reference curve is not one draw's luck.
    let random_orders: Vec<Vec<Vec<usize>>> = (0..5u64)
        .map(|r| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0xde1e_7e00 + r));
            features
                .iter()
                .map(|f| {
                    let mut order = f.clone();
                    order.shuffle(&mut rng);
                    order
                })
                .collect()
        })
        .collect();
    let random_accuracy = deletion_curve(explainer, &space, labels, &random_orders, &fractions)?;
    let random_auc = auc(&fractions, &random_accuracy);
    let random = DeletionCurve {
        name: "random".into(),
        auc: random_auc,
        accuracy: random_accuracy,
        passed: false,
        beats_control: false,
    };
    let control_auc = curves.last().map_or(f64::INFINITY, |(_, acc)| auc(&fractions, acc));
    let curves = curves
        .into_iter()
        .map(|(name, accuracy)| {
            let a = auc(&fractions, &accuracy);
            let is_control = name == CONTROL_NAME;
            DeletionCurve {
                name,
                accuracy,
                auc: a,
                passed: !is_control && a < random_auc,
                beats_control: !is_control && a < control_auc,
            }
        })
        .collect();
    Ok(DeletionReport { inputs: space.n, fractions, random, curves })
}

impl RandomisationCurve {
    /// The verdict as the reports write it, with the number it is judged on and the threshold,
    /// so that the words and the logic cannot disagree: `pass (0.452 < 0.5)`.
    pub fn verdict(&self, threshold: f64) -> String {
        match self.correlations.last() {
            None | Some(None) => "n/a (all attributions equal: nothing ranked)".into(),
            Some(Some(r)) if self.passed => format!("pass ({r:.3} < {threshold})"),
            Some(Some(r)) if self.control.is_some() => {
                format!("FAIL ({r:.3} >= {threshold}), as it must: it does not depend on the model")
            }
            Some(Some(r)) => format!("FAIL ({r:.3} >= {threshold})"),
        }
    }
}

impl DeletionCurve {
    /// The verdict as the reports write it: methods against random order and the control; the
    /// control only as the reference it is.
    pub fn verdict(&self, random: &DeletionCurve, control: Option<&DeletionCurve>) -> String {
        let ratio = self.auc / random.auc.max(1e-12);
        if self.name == "random" {
            return String::new();
        }
        if self.name == CONTROL_NAME {
            return format!("reference, not judged ({ratio:.2}x random): methods must beat it");
        }
        match (self.passed, control) {
            (false, _) => format!("FAIL ({ratio:.2}x random: no better than random)"),
            (true, Some(c)) if !self.beats_control => {
                format!(
                    "weak ({ratio:.2}x random, but no better than the control's {:.2}x)",
                    c.auc / random.auc.max(1e-12)
                )
            }
            (true, _) => format!("pass ({ratio:.2}x random, below the control)"),
        }
    }
}

/// The classes the network predicts for `inputs`.
fn predicted(net: &Network, inputs: &Tensor) -> Result<Vec<usize>> {
    Ok(net
        .forward(inputs, None)?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|c| c as usize)
        .collect())
}

/// A copy of the network with its own parameters (cloning a `Network` shares them).
fn duplicate(net: &Network, init: Init) -> Result<Network> {
    let vocab = net.vars().iter().find(|(n, _)| n == "embedding.weight").map(|(_, v)| v.dims()[0]);
    let copy = Network::build(&net.spec, &net.input, net.classes, vocab, init, 0, net.device())?;
    copy.load_safetensors(&net.to_safetensors()?, "the network being checked")?;
    Ok(copy)
}

/// The features each input has: every value (or only the non-zero ones when `set_only`), or
/// the real (non-padding) tokens for text.
fn feature_lists(space: &Space, set_only: bool) -> Result<Vec<Vec<usize>>> {
    Ok(match &space.mask {
        Some(mask) => mask
            .to_vec2::<f32>()?
            .into_iter()
            .map(|m| m.iter().enumerate().filter(|(_, v)| **v > 0.5).map(|(i, _)| i).collect())
            .collect(),
        None if set_only => space
            .values
            .flatten_from(1)?
            .to_vec2::<f32>()?
            .into_iter()
            .map(|x| x.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, _)| i).collect())
            .collect(),
        None => vec![(0..space.width).collect(); space.n],
    })
}

/// Each input's features, most important first: by attribution (positive evidence for the
/// target first), or by magnitude for gradients.
fn rank_orders(attributions: &[Vec<f32>], features: &[Vec<usize>], by_magnitude: bool) -> Vec<Vec<usize>> {
    attributions
        .iter()
        .zip(features)
        .map(|(a, f)| {
            let key = |i: usize| if by_magnitude { a[i].abs() } else { a[i] };
            let mut order = f.clone();
            order.sort_by(|&x, &y| key(y).total_cmp(&key(x)).then(x.cmp(&y)));
            order
        })
        .collect()
}

/// Accuracy after removing each fraction of features in the given orders (averaged over the
/// sets of orders).
fn deletion_curve(
    explainer: &Explainer,
    space: &Space,
    labels: &[u32],
    order_sets: &[Vec<Vec<usize>>],
    fractions: &[f64],
) -> Result<Vec<f64>> {
    let values = space.values.flatten_from(1)?.to_vec2::<f32>()?;
    // A feature is one value, or a token's whole embedding row.
    let span = match &space.ids {
        Some(ids) => space.width / ids.dim(1)?,
        None => 1,
    };
    let mut points = Vec::with_capacity(order_sets.len() * fractions.len() * space.n * space.width);
    for orders in order_sets {
        for &f in fractions {
            for (x, order) in values.iter().zip(orders) {
                let start = points.len();
                points.extend_from_slice(x);
                let k = (f * order.len() as f64).round() as usize;
                for &feature in &order[..k.min(order.len())] {
                    for v in &mut points[start + feature * span..start + (feature + 1) * span] {
                        *v = 0.0;
                    }
                }
            }
        }
    }
    let copies = order_sets.len() * fractions.len();
    let mut shape = vec![copies * space.n];
    shape.extend_from_slice(&space.values.dims()[1..]);
    let device = space.values.device();
    let points = Tensor::from_vec(points, shape, device)?;
    let mask = match &space.mask {
        Some(m) => Some(m.repeat((copies, 1))?),
        None => None,
    };
    let predictions = explainer.predictions(&points, mask.as_ref())?;
    let mut accuracy = vec![0.0; fractions.len()];
    for (c, chunk) in predictions.chunks(space.n).enumerate() {
        let correct = chunk.iter().zip(labels).filter(|(p, l)| p == l).count();
        accuracy[c % fractions.len()] += correct as f64 / space.n as f64 / order_sets.len() as f64;
    }
    Ok(accuracy)
}

/// Area under a curve by the trapezoid rule.
fn auc(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2).zip(y.windows(2)).map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0).sum()
}

/// What the control is for an input kind.
pub fn control_description(input: &InputShape) -> &'static str {
    match input {
        InputShape::Image { .. } => "Sobel edge magnitude of the input",
        InputShape::Sequence { .. } => "change from the previous step",
        InputShape::Tabular { .. } => "magnitude of each feature",
        InputShape::Text { .. } => "word rarity (vocabulary rank)",
    }
}

/// The control's "attributions": computed from the input alone, never from the network (the
/// network is only asked for the input's layout).
fn control_attributions(net: &Network, space: &Space) -> Result<Vec<Vec<f32>>> {
    if let Some(ids) = &space.ids {
        // Ids are assigned by frequency rank on the training split: a higher id is a rarer word.
        return Ok(ids
            .to_vec2::<u32>()?
            .into_iter()
            .map(|row| row.into_iter().map(|id| if id == 0 { 0.0 } else { id as f32 }).collect())
            .collect());
    }
    let values = space.values.flatten_from(1)?.to_vec2::<f32>()?;
    Ok(values
        .iter()
        .map(|x| match net.input {
            InputShape::Image { channels, height, width } => sobel(x, channels, height, width),
            InputShape::Sequence { steps, features } => (0..steps * features)
                .map(|i| if i < features { 0.0 } else { (x[i] - x[i - features]).abs() })
                .collect(),
            InputShape::Tabular { .. } | InputShape::Text { .. } => x.iter().map(|v| v.abs()).collect(),
        })
        .collect())
}

/// Sobel gradient magnitude per channel, with zero padding.
fn sobel(x: &[f32], channels: usize, h: usize, w: usize) -> Vec<f32> {
    let at = |c: usize, i: isize, j: isize| -> f32 {
        if i < 0 || j < 0 || i >= h as isize || j >= w as isize {
            0.0
        } else {
            x[c * h * w + i as usize * w + j as usize]
        }
    };
    let mut out = vec![0.0; channels * h * w];
    for c in 0..channels {
        for i in 0..h as isize {
            for j in 0..w as isize {
                let gx = at(c, i - 1, j + 1) + 2.0 * at(c, i, j + 1) + at(c, i + 1, j + 1)
                    - at(c, i - 1, j - 1)
                    - 2.0 * at(c, i, j - 1)
                    - at(c, i + 1, j - 1);
                let gy = at(c, i + 1, j - 1) + 2.0 * at(c, i + 1, j) + at(c, i + 1, j + 1)
                    - at(c, i - 1, j - 1)
                    - 2.0 * at(c, i - 1, j)
                    - at(c, i - 1, j + 1);
                out[c * h * w + i as usize * w + j as usize] = (gx * gx + gy * gy).sqrt();
            }
        }
    }
    out
}

/// Mean Spearman correlation of |a| and |b| over the inputs whose correlation is defined, on
/// each input's `features`; `None` when it is defined for none.
fn mean_correlation(a: &[Vec<f32>], b: &[Vec<f32>], features: &[Vec<usize>]) -> Option<f64> {
    let defined: Vec<f64> = a
        .iter()
        .zip(b)
        .zip(features)
        .filter_map(|((a, b), f)| {
            let x: Vec<f64> = f.iter().map(|&i| a[i].abs() as f64).collect();
            let y: Vec<f64> = f.iter().map(|&i| b[i].abs() as f64).collect();
            spearman(&x, &y)
        })
        .collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

/// Spearman's rank correlation with tied values given their mean rank (as SciPy's
/// `spearmanr`); `None` when either side is constant or there are fewer than two values
/// (SciPy returns NaN).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    if n < 2.0 {
        return None;
    }
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference (SciPy 1.x): scipy.stats.spearmanr([1, 2, 2, 5, 3], [2, 1, 4, 4, 6]).statistic
    //   = 0.605263157894737
    #[test]
    fn spearman_matches_scipy_with_ties() {
        let r = spearman(&[1.0, 2.0, 2.0, 5.0, 3.0], &[2.0, 1.0, 4.0, 4.0, 6.0]).unwrap();
        assert!((r - 0.605_263_157_894_737).abs() < 1e-12, "{r}");
        assert!((spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]).unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn sobel_finds_a_vertical_edge() {
        // A 4x4 image, left half 0, right half 1: the edge lies between columns 1 and 2.
        let x: Vec<f32> = (0..16).map(|i| if i % 4 >= 2 { 1.0 } else { 0.0 }).collect();
        let s = sobel(&x, 1, 4, 4);
        // Interior rows: columns 1 and 2 see the edge with |gx| = 4, column 0 sees none.
        assert_eq!(s[4 + 1], 4.0);
        assert_eq!(s[4 + 2], 4.0);
        assert_eq!(s[4], 0.0);
    }

    #[test]
    fn verdicts_say_the_number_and_agree_with_the_logic() {
        let curve = |name: &str, control: bool, last: f64| RandomisationCurve {
            name: name.into(),
            control: control.then(|| "edges".into()),
            correlations: vec![Some(0.9), Some(last)],
            correlations_all_values: vec![Some(0.9), Some(0.556)],
            passed: last < RANDOMISATION_THRESHOLD,
        };
        assert_eq!(curve("ig", false, 0.452).verdict(0.5), "pass (0.452 < 0.5)");
        // 0.556 never passes under "below 0.5", whichever column it is in.
        assert_eq!(curve("ig", false, 0.556).verdict(0.5), "FAIL (0.556 >= 0.5)");
        assert!(curve(CONTROL_NAME, true, 1.0).verdict(0.5).starts_with("FAIL (1.000 >= 0.5), as it must"));
        let d = |name: &str, auc: f64, passed: bool, beats: bool| DeletionCurve {
            name: name.into(),
            accuracy: vec![],
            auc,
            passed,
            beats_control: beats,
        };
        let random = d("random", 0.5, false, false);
        let control = d(CONTROL_NAME, 0.4, false, false);
        let v = control.verdict(&random, Some(&control));
        assert!(v.starts_with("reference, not judged") && !v.contains("pass"), "{v}");
        assert!(d("ig", 0.05, true, true).verdict(&random, Some(&control)).starts_with("pass (0.10x random"));
        assert!(d("saliency", 0.45, true, false).verdict(&random, Some(&control)).starts_with("weak"));
        assert!(d("x", 0.6, false, false).verdict(&random, Some(&control)).starts_with("FAIL"));
    }

    #[test]
    fn trapezoid_area() {
        assert!((auc(&[0.0, 0.5, 1.0], &[1.0, 0.5, 0.0]) - 0.5).abs() < 1e-12);
    }
}
