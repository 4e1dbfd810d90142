//! The attack lab: evasion attacks on a run's network, the defences against them, and the
//! statistics that detect model extraction.
//!
//! - Evasion (this file): FGSM (Goodfellow et al., 2015) and PGD (Madry et al., 2018) under the
//!   L∞ or L2 norm, untargeted or targeted, as IBM's Adversarial Robustness Toolbox defines them:
//!   a step along the sign (L∞) or the unit direction (L2) of the loss gradient with respect to
//!   the input, projected back into the ε-ball around the clean input and clipped to the valid
//!   range of the model's preprocessed input ([`InputRange`], derived from the run's pipeline).
//!   ε is in the units of the preprocessed input ([`units`] says which). Text models are
//!   attacked in their token-embedding space, where gradients exist, and the perturbed
//!   embeddings are then snapped to the nearest words so that a real text comes out.
//! - [`curve`]: robustness curves over a split (accuracy, success rate, mean perturbation norm
//!   per ε) and the adversarial examples saved with the run for the console.
//! - [`detector`]: an input detector (Mahalanobis distance on the penultimate layer, or the energy
//!   score) whose threshold is calibrated to 1% false positives on the validation split.
//! - [`adversarial_batch`]: the hook of adversarial training in the training loop.
//! - [`shapiro`] and [`prada`]: the Shapiro–Wilk test and the PRADA extraction detector;
//!   [`extraction`]: the thief PRADA is meant to catch, and the benign clients it must not.
//!
//! Everything here works through the public [`Network`] API (`forward`, `embed`,
//! `forward_embedded`, `penultimate`) and candle's autograd with respect to inputs; it must not
//! touch the layers' internals, and it imports no terminal-UI or HTTP crate.

pub mod curve;
pub mod detector;
pub mod extraction;
pub mod hotflip;
pub mod prada;
pub mod shapiro;

use candle_core::{D, DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ml::data::preprocess::{FittedStep, Pipeline};
use crate::ml::model::{Network, token_mask};
use crate::ml::spec::AdversarialTraining;
pub use crate::ml::spec::{AttackMethod, Norm};

/// An evasion attack and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attack {
    pub method: AttackMethod,
    pub norm: Norm,
    /// Radius of the perturbation, in the units of the preprocessed input.
    pub eps: f32,
    /// Gradient steps (1 for FGSM).
    pub steps: usize,
    /// Length of each step (ε for FGSM).
    pub step_size: f32,
    /// PGD starts from a uniformly random point of the ε-ball.
    pub random_start: bool,
    /// Targeted: every input is pushed toward this class; untargeted (away from its true
    /// class) when `None`.
    pub target: Option<usize>,
    /// Seed of the random start.
    pub seed: u64,
    /// An example that is misclassified (or reaches the target) at some iterate keeps that
    /// iterate, as AutoAttack keeps its best point, instead of the last one; training turns it
    /// off so that every example gets every step.
    pub keep_first_success: bool,
}

impl Attack {
    /// FGSM: one step of ε.
    pub fn fgsm(norm: Norm, eps: f32) -> Self {
        Attack {
            method: AttackMethod::Fgsm,
            norm,
            eps,
            steps: 1,
            step_size: eps,
            random_start: false,
            target: None,
            seed: 0,
            keep_first_success: false,
        }
    }

    /// PGD with `steps` steps of 2.5 ε / steps (Madry et al.) from a random start.
    pub fn pgd(norm: Norm, eps: f32, steps: usize) -> Self {
        Attack {
            method: AttackMethod::Pgd,
            norm,
            eps,
            steps,
            step_size: default_step(eps, steps),
            random_start: true,
            target: None,
            seed: 0,
            keep_first_success: true,
        }
    }

    /// The same attack with another radius; the step size follows unless `fixed_step`.
    pub fn with_eps(&self, eps: f32, fixed_step: Option<f32>) -> Self {
        let step_size = match (self.method, fixed_step) {
            (AttackMethod::Fgsm, _) => eps,
            (AttackMethod::Pgd, Some(s)) => s,
            (AttackMethod::Pgd, None) => default_step(eps, self.steps),
        };
        Attack { eps, step_size, ..self.clone() }
    }

    /// Refuses settings that cannot be run, saying which and why.
    pub fn check(&self, classes: usize) -> Result<()> {
        let bad = |m: String| Err(Error::argument(m));
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad(format!("ε = {} must be a number >= 0", self.eps));
        }
        if self.steps == 0 || self.steps > 10_000 {
            return bad(format!("{} steps: an attack takes between 1 and 10000 steps", self.steps));
        }
        if self.method == AttackMethod::Fgsm && self.steps != 1 {
            return bad("FGSM takes one step of ε; --steps is for PGD".into());
        }
        if !(self.step_size.is_finite() && self.step_size >= 0.0) {
            return bad(format!("the step size {} must be a number >= 0", self.step_size));
        }
        if let Some(t) = self.target
            && t >= classes
        {
            return bad(format!(
                "target class {t} does not exist: the model has {classes} classes (0 to {})",
                classes - 1
            ));
        }
        Ok(())
    }

    /// `PGD (L∞, untargeted, 20 steps of 0.0125, random start)`.
    pub fn describe(&self) -> String {
        let goal = match self.target {
            Some(t) => format!("targeted at class {t}"),
            None => "untargeted".into(),
        };
        match self.method {
            AttackMethod::Fgsm => format!("FGSM ({}, {goal})", norm_name(self.norm)),
            AttackMethod::Pgd => format!(
                "PGD ({}, {goal}, {} steps of {}{})",
                norm_name(self.norm),
                self.steps,
                fmt_num(self.step_size),
                if self.random_start { ", random start" } else { "" }
            ),
        }
    }
}

fn default_step(eps: f32, steps: usize) -> f32 {
    2.5 * eps / steps.max(1) as f32
}

/// `L∞` or `L2`.
pub fn norm_name(n: Norm) -> &'static str {
    match n {
        Norm::Linf => "L∞",
        Norm::L2 => "L2",
    }
}

/// A number without trailing zeros: 0.1, 0.0125, 2.
pub fn fmt_num(v: f32) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" { "0".into() } else { s.to_string() }
}

/// The valid values of the model's preprocessed input: what the run's preprocessing makes of
/// the smallest and largest raw values of the training split (0 and 1 for digits scaled by
/// `MinMax(Global)`). Attacks clip their examples to it, so an adversarial example is always an
/// input the preprocessing could have produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRange {
    /// Per input value, in the layout's order.
    pub lo: Vec<f32>,
    pub hi: Vec<f32>,
}

impl InputRange {
    /// The range for a numeric pipeline; `None` for text (embeddings have no natural bounds).
    pub fn of(p: &Pipeline) -> Option<InputRange> {
        let shape = p.raw_shape.as_ref()?;
        let (raw_lo, raw_hi) = p.raw_range?;
        let n = shape.numel();
        let a = p.transform(&vec![raw_lo; n]).ok()?;
        let b = p.transform(&vec![raw_hi; n]).ok()?;
        // Every step is increasing, so the extremes map to the extremes; min and max keep the
        // range the right way round whatever a future step does.
        let lo = a.iter().zip(&b).map(|(x, y)| x.min(*y)).collect();
        let hi = a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect();
        Some(InputRange { lo, hi })
    }

    /// The smallest lower and the largest upper bound.
    pub fn extent(&self) -> (f32, f32) {
        let lo = self.lo.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = self.hi.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (lo, hi)
    }

    /// `[0, 1]`, or `per value, within [-1.7, 2.4]` when the bounds differ between values.
    pub fn describe(&self) -> String {
        let (lo, hi) = self.extent();
        let uniform = self.lo.iter().all(|v| *v == lo) && self.hi.iter().all(|v| *v == hi);
        // Three decimals are plenty to read a range by; ε keeps its own precision.
        let short = |v: f32| fmt_num((v * 1000.0).round() / 1000.0);
        if uniform {
            format!("[{}, {}]", short(lo), short(hi))
        } else {
            format!("per value, within [{}, {}]", short(lo), short(hi))
        }
    }

    /// The bounds as `(1, dims...)` tensors, to broadcast over a batch.
    pub fn tensors(&self, dims: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let mut shape = vec![1];
        shape.extend_from_slice(dims);
        Ok((
            Tensor::from_slice(&self.lo, shape.as_slice(), device)?,
            Tensor::from_slice(&self.hi, shape.as_slice(), device)?,
        ))
    }
}

/// The units ε is measured in, for a run's pipeline, in words.
pub fn units(p: &Pipeline) -> String {
    if p.raw_shape.is_none() {
        return "token-embedding units: a text model is attacked in its embedding space".into();
    }
    let raw = p.raw_range.map(|(a, b)| format!(" (raw values {}..{})", fmt_num(a), fmt_num(b)));
    let last = p
        .steps
        .iter()
        .rev()
        .find(|s| matches!(s, FittedStep::MinMax { .. } | FittedStep::Standardize { .. }));
    match last {
        Some(FittedStep::MinMax { min, .. }) if min.len() == 1 => format!(
            "the model's input after MinMax(Global): 1.0 is the training split's full range{}",
            raw.unwrap_or_default()
        ),
        Some(FittedStep::MinMax { .. }) => {
            "the model's input after MinMax(PerFeature): 1.0 is each feature's training range".into()
        }
        Some(FittedStep::Standardize { mean, .. }) if mean.len() == 1 => {
            "the model's input after Standardize(Global): 1.0 is one standard deviation of the training split"
                .into()
        }
        Some(_) => {
            "the model's input after Standardize(PerFeature): 1.0 is one standard deviation of each feature"
                .into()
        }
        None => format!("raw input units (the pipeline does not scale){}", raw.unwrap_or_default()),
    }
}

/// A batch in the space an attack works in: the model's inputs, or a text model's token
/// embeddings `(B, L, E)` with the padding mask (padding is never perturbed).
pub struct AttackSpace {
    /// `(B, dims...)` f32.
    pub values: Tensor,
    /// Text only: `(B, L)`, 1 for real tokens.
    pub mask: Option<Tensor>,
    /// Text only: the token ids.
    pub ids: Option<Tensor>,
}

impl AttackSpace {
    /// The batch `inputs` as the network takes it (token ids for text).
    pub fn new(net: &Network, inputs: &Tensor) -> Result<Self> {
        if net.takes_tokens() {
            let ids = inputs.to_dtype(DType::U32)?;
            let values = net.embed(&ids)?.detach();
            Ok(AttackSpace { values, mask: Some(token_mask(&ids)?), ids: Some(ids) })
        } else {
            Ok(AttackSpace { values: inputs.to_dtype(DType::F32)?.detach(), mask: None, ids: None })
        }
    }

    /// Logits of points in this space (embeddings with the mask for text), dropout off.
    pub fn logits(&self, net: &Network, points: &Tensor) -> Result<Tensor> {
        match &self.mask {
            Some(m) => net.forward_embedded(points, m, None),
            None => net.forward(points, None),
        }
    }

    /// The mask broadcast to the values' shape, `(B, L, 1)`, or `None` for numeric inputs.
    fn value_mask(&self) -> Result<Option<Tensor>> {
        Ok(match &self.mask {
            Some(m) => Some(m.unsqueeze(2)?),
            None => None,
        })
    }
}

/// Per-example norm of a `(B, ...)` tensor, `(B)`.
pub fn norms(t: &Tensor, norm: Norm) -> Result<Tensor> {
    let flat = t.flatten_from(1)?;
    Ok(match norm {
        Norm::Linf => flat.abs()?.max(D::Minus1)?,
        Norm::L2 => flat.sqr()?.sum(D::Minus1)?.sqrt()?,
    })
}

/// `(B)` → `(B, 1, 1, ...)` with as many dimensions as `like`, to broadcast per example.
fn per_example(v: &Tensor, like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![v.dim(0)?];
    shape.extend(std::iter::repeat_n(1, like.rank() - 1));
    Ok(v.reshape(shape)?)
}

/// Projects perturbations `(B, ...)` into the ε-ball of `norm`.
fn project(delta: &Tensor, eps: f32, norm: Norm) -> Result<Tensor> {
    Ok(match norm {
        Norm::Linf => delta.clamp(-eps, eps)?,
        Norm::L2 => {
            let n = norms(delta, Norm::L2)?;
            // min(1, ε / ‖δ‖): shrink only what lies outside the ball.
            let scale = n.affine(1.0, 1e-12)?.recip()?.affine(eps as f64, 0.0)?.clamp(0.0, 1.0)?;
            delta.broadcast_mul(&per_example(&scale, delta)?)?
        }
    })
}

/// A step of length `size` along `grad`: its sign (L∞) or its unit direction (L2).
fn step_along(grad: &Tensor, size: f32, norm: Norm) -> Result<Tensor> {
    Ok(match norm {
        Norm::Linf => grad.sign()?.affine(size as f64, 0.0)?,
        Norm::L2 => {
            let n = norms(grad, Norm::L2)?.affine(1.0, 1e-12)?;
            grad.broadcast_div(&per_example(&n, grad)?)?.affine(size as f64, 0.0)?
        }
    })
}

/// A uniformly random point of the ε-ball for each example, `like`'s shape.
fn random_start(like: &Tensor, eps: f32, norm: Norm, rng: &mut ChaCha8Rng) -> Result<Tensor> {
    let n = like.dim(0)?;
    let d = like.elem_count() / n.max(1);
    let values: Vec<f32> = match norm {
        Norm::Linf => (0..n * d).map(|_| rng.random_range(-1.0f32..=1.0) * eps).collect(),
        Norm::L2 => {
            // A Gaussian direction, and a radius ε u^(1/d): uniform in the ball's volume.
            let mut out = Vec::with_capacity(n * d);
            for _ in 0..n {
                let g: Vec<f32> = (0..d).map(|_| StandardNormal.sample(rng)).collect();
                let len = g.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                let r = eps * rng.random::<f32>().powf(1.0 / d as f32);
                out.extend(g.iter().map(|v| v / len * r));
            }
            out
        }
    };
    Ok(Tensor::from_vec(values, like.shape(), like.device())?)
}

/// Whether each prediction is a success for the attack: away from the label, or at the target.
fn successes(preds: &[u32], labels: &[u32], target: Option<usize>) -> Vec<bool> {
    preds
        .iter()
        .zip(labels)
        .map(|(&p, &y)| match target {
            Some(t) => p as usize == t,
            None => p != y,
        })
        .collect()
}

/// Adversarial versions of a batch in its attack space (`space.values`), against the true
/// `labels`. `range` clips every iterate to the valid input (none for embeddings).
pub fn perturb(
    net: &Network,
    space: &AttackSpace,
    labels: &[u32],
    attack: &Attack,
    range: Option<&InputRange>,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let x = &space.values;
    let n = x.dim(0)?;
    if labels.len() != n {
        return Err(Error::unsuitable(format!("{} labels for {n} inputs", labels.len())));
    }
    if attack.eps == 0.0 || n == 0 {
        return Ok(x.clone());
    }
    let device = x.device();
    let bounds = match range {
        Some(r) => Some(r.tensors(&x.dims()[1..], device)?),
        None => None,
    };
    let clip = |t: Tensor| -> Result<Tensor> {
        Ok(match &bounds {
            Some((lo, hi)) => t.broadcast_maximum(lo)?.broadcast_minimum(hi)?,
            None => t,
        })
    };
    let vmask = space.value_mask()?;
    let masked = |t: Tensor| -> Result<Tensor> {
        Ok(match &vmask {
            Some(m) => t.broadcast_mul(m)?,
            None => t,
        })
    };
    let goal: Vec<u32> = match attack.target {
        Some(t) => vec![t as u32; n],
        None => labels.to_vec(),
    };
    let goal_t = Tensor::from_vec(goal, n, device)?;
    // Untargeted attacks climb the loss of the true class; targeted ones descend the target's.
    let direction = if attack.target.is_some() { -1.0 } else { 1.0 };

    let mut adv = x.clone();
    if attack.random_start && attack.method == AttackMethod::Pgd {
        adv = clip((x + masked(random_start(x, attack.eps, attack.norm, rng)?)?)?)?;
    }
    let track = attack.keep_first_success;
    let mut done = vec![false; n];
    let mut kept = adv.clone();
    for _ in 0..attack.steps {
        let (logits, grad) = loss_gradient(net, space, &adv, &goal_t)?;
        if track {
            let preds = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            let now = successes(&preds, labels, attack.target);
            let fresh: Vec<u8> = now.iter().zip(&done).map(|(s, d)| u8::from(*s && !*d)).collect();
            if fresh.contains(&1) {
                let m = per_example(&Tensor::from_vec(fresh, n, device)?, &adv)?.broadcast_as(adv.shape())?;
                kept = m.where_cond(&adv, &kept)?;
                for (d, s) in done.iter_mut().zip(&now) {
                    *d |= *s;
                }
            }
            if done.iter().all(|d| *d) {
                break;
            }
        }
        let g = masked(grad)?;
        let moved = (&adv + step_along(&g, attack.step_size, attack.norm)?.affine(direction, 0.0)?)?;
        // Clip, then project, as ART does: the projection moves toward the clean input, which is
        // in the range, so the result stays in it (the order matters for L2).
        adv = (x + project(&(clip(moved)? - x)?, attack.eps, attack.norm)?)?;
    }
    if track && done.iter().any(|d| *d) {
        let m = per_example(
            &Tensor::from_vec(done.iter().map(|d| u8::from(*d)).collect::<Vec<_>>(), n, device)?,
            &adv,
        )?
        .broadcast_as(adv.shape())?;
        adv = m.where_cond(&kept, &adv)?;
    }
    Ok(adv.detach())
}

/// The summed cross-entropy of the classes `goal` `(B)` at `points` of `space`, and its gradient
/// with respect to the points: the one gradient path of every attack here (FGSM and PGD on
/// inputs or token embeddings, HotFlip's first-order scores on token embeddings), dropout off.
/// Each example's gradient is its own loss's. Returns `(logits, gradient)`, both detached.
pub fn loss_gradient(
    net: &Network,
    space: &AttackSpace,
    points: &Tensor,
    goal: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let var = Var::from_tensor(points)?;
    let logits = space.logits(net, var.as_tensor())?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let loss = logp.gather(&goal.unsqueeze(1)?, 1)?.neg()?.sum_all()?;
    let grads = crate::ml::kernels::backward(&loss)?;
    let g = match grads.get(var.as_tensor()) {
        Some(g) => g.detach(),
        None => points.zeros_like()?,
    };
    Ok((logits.detach(), g))
}

/// The token-embedding table of a text model, or why there is none.
pub fn token_table(net: &Network) -> Result<&Tensor> {
    net.token_table().ok_or_else(|| {
        Error::unsuitable(
            "this model takes numbers, not tokens: only text models have words to swap or snap to",
        )
    })
}

/// The scale of a text model's token embeddings, to read an embedding-space ε by: the mean L2
/// norm and the mean largest |value| of the vocabulary's rows (special tokens left out).
pub fn embedding_scale(net: &Network, special: &[bool]) -> Result<(f32, f32)> {
    let table = token_table(net)?;
    let l2 = table.sqr()?.sum(1)?.sqrt()?.to_vec1::<f32>()?;
    let linf = table.abs()?.max(1)?.to_vec1::<f32>()?;
    let keep: Vec<usize> = (0..l2.len()).filter(|&i| !special.get(i).copied().unwrap_or(true)).collect();
    let mean = |v: &[f32]| keep.iter().map(|&i| v[i]).sum::<f32>() / keep.len().max(1) as f32;
    Ok((mean(&l2), mean(&linf)))
}

/// Text: each perturbed embedding replaced by the id of the nearest word of the vocabulary (by
/// Euclidean distance; `special` ids, such as padding, the unknown word and BERT's markers,
/// excluded), and every special token of `ids` kept where it is (a [CLS] stays a [CLS]).
/// Returns `(B, L)` ids.
pub fn snap_to_words(net: &Network, embedded: &Tensor, ids: &Tensor, special: &[bool]) -> Result<Tensor> {
    let table = token_table(net)?;
    let (b, l, e) = embedded.dims3()?;
    let rows = table.dim(0)?;
    let flat = embedded.reshape((b * l, e))?;
    // ‖a − w‖² = ‖a‖² − 2 a·w + ‖w‖²; ‖a‖² does not change the argmin. Special rows get +∞.
    let barred: Vec<f32> = (0..rows)
        .map(|i| if special.get(i).copied().unwrap_or(true) { f32::INFINITY } else { 0.0 })
        .collect();
    let barred = Tensor::from_vec(barred, (1, rows), table.device())?;
    let scores = flat
        .matmul(&table.t()?)?
        .affine(-2.0, 0.0)?
        .broadcast_add(&table.sqr()?.sum(1)?.unsqueeze(0)?)?
        .broadcast_add(&barred)?;
    let nearest = scores.argmin(D::Minus1)?.to_dtype(DType::U32)?.reshape((b, l))?;
    let keep: Vec<u8> = ids
        .flatten_all()?
        .to_vec1::<u32>()?
        .iter()
        .map(|&i| u8::from(special.get(i as usize).copied().unwrap_or(true)))
        .collect();
    let keep = Tensor::from_vec(keep, (b, l), ids.device())?;
    Ok(keep.where_cond(ids, &nearest)?)
}

/// Adversarial training's hook in the training loop: the first `share` of the (already
/// shuffled) batch `x` replaced by attacks on the current weights, made with dropout off and
/// every step taken. Random starts draw from the epoch's generator, so runs stay repeatable.
pub fn adversarial_batch(
    net: &Network,
    x: &Tensor,
    labels: &Tensor,
    spec: &AdversarialTraining,
    pipeline: &Pipeline,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let n = x.dim(0)?;
    let k = ((spec.share as f64 * n as f64).ceil() as usize).min(n);
    if k == 0 || net.takes_tokens() {
        return Ok(x.clone());
    }
    let steps = spec.iterations();
    let attack = Attack {
        method: spec.method,
        norm: spec.norm,
        eps: spec.eps,
        steps,
        step_size: match spec.method {
            AttackMethod::Fgsm => spec.eps,
            AttackMethod::Pgd => spec.step_size.unwrap_or_else(|| default_step(spec.eps, steps)),
        },
        random_start: spec.random_start,
        target: None,
        seed: 0,
        keep_first_success: false,
    };
    let head = x.narrow(0, 0, k)?;
    let y = labels.narrow(0, 0, k)?.to_vec1::<u32>()?;
    let space = AttackSpace { values: head.detach(), mask: None, ids: None };
    let adv = perturb(net, &space, &y, &attack, InputRange::of(pipeline).as_ref(), rng)?;
    if k == n { Ok(adv) } else { Ok(Tensor::cat(&[&adv, &x.narrow(0, k, n - k)?], 0)?) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_projection_shrinks_only_what_is_outside() {
        let d = Tensor::new(&[[3.0f32, 4.0], [0.3, 0.4]], &Device::Cpu).unwrap();
        let p = project(&d, 1.0, Norm::L2).unwrap().to_vec2::<f32>().unwrap();
        assert!((p[0][0] - 0.6).abs() < 1e-6 && (p[0][1] - 0.8).abs() < 1e-6, "{p:?}");
        assert!((p[1][0] - 0.3).abs() < 1e-6 && (p[1][1] - 0.4).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn random_starts_lie_in_the_ball() {
        let like = Tensor::zeros((50, 7), DType::F32, &Device::Cpu).unwrap();
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        for norm in [Norm::Linf, Norm::L2] {
            let r = random_start(&like, 0.3, norm, &mut rng).unwrap();
            let m = norms(&r, norm).unwrap().to_vec1::<f32>().unwrap();
            assert!(m.iter().all(|v| *v <= 0.3 + 1e-6), "{norm:?}: {m:?}");
            assert!(m.iter().any(|v| *v > 0.15), "{norm:?}: the ball is filled, not its centre");
        }
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(fmt_num(0.1), "0.1");
        assert_eq!(fmt_num(0.0125), "0.0125");
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(0.0), "0");
    }
}
