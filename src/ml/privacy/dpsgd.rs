//! DP-SGD (Abadi et al., 2016) as Opacus runs it: Poisson-sampled batches, every example's
//! gradient clipped to an L2 norm of C over all parameters together, Gaussian noise N(0, σ²C²)
//! added to the sum, the result divided by the expected batch size. The accountant
//! ([`super::accountant`]) turns σ, the sampling rate and the steps taken into the ε spent.
//!
//! Per-example gradients of MLPs come in closed form from one batched backward pass: a dense
//! layer's gradient for example i is the outer product δᵢ aᵢᵀ of its output gradient and input,
//! so its squared norm is ‖δᵢ‖²‖aᵢ‖² (plus ‖δᵢ‖² for the bias) and the sum of the clipped
//! gradients is one matrix product (diag(f) Δ)ᵀ A, with no per-example weight gradient ever
//! formed (Opacus' "ghost clipping" for linear layers). Convolutional, recurrent and text
//! models share weights across positions and have no such form; their per-example gradients
//! come from one backward pass per example (Opacus calls this micro-batching), slower but exact,
//! so no model kind is refused. This module owns the arithmetic only; the trainer decides when
//! to call it.

use candle_core::{D, DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::ml::model::Network;
use crate::ml::privacy::accountant;
use crate::ml::spec::DpSgd;
use crate::store::DpSpent;

/// The settings a DP-SGD run trains with, fixed before the first step.
#[derive(Debug, Clone, PartialEq)]
pub struct DpPlan {
    pub sigma: f64,
    pub clip_norm: f64,
    pub delta: f64,
    /// Poisson sampling rate q = expected batch / training examples.
    pub sample_rate: f64,
    /// Expected batch size (q × N), the divisor of the noisy sum.
    pub expected_batch: f64,
}

impl DpPlan {
    /// σ as given, or the smallest σ that keeps `steps_per_epoch × epochs` steps within the
    /// target ε (Opacus' search).
    pub fn new(
        dp: &DpSgd,
        examples: usize,
        batch: usize,
        steps_per_epoch: u64,
        epochs: usize,
    ) -> Result<Self> {
        if examples == 0 {
            return Err(Error::unsuitable("DP-SGD needs training examples"));
        }
        let q = (batch as f64 / examples as f64).min(1.0);
        let sigma = match (dp.noise_multiplier, dp.target_epsilon) {
            (Some(s), _) => s,
            (None, Some(eps)) => {
                let steps = steps_per_epoch * epochs as u64;
                accountant::sigma_for(eps, dp.delta, q, steps).map_err(|e| {
                    Error::unsuitable(format!(
                        "privacy.target_epsilon: ε = {} cannot be reached in {steps} steps at sampling rate \
                         {q:.4} with δ = {} (no noise multiplier up to 1e6 is enough); raise the target, \
                         train fewer epochs or use smaller batches",
                        e.0, dp.delta
                    ))
                })?
            }
            (None, None) => {
                return Err(Error::argument(
                    "privacy: give exactly one of `noise_multiplier` and `target_epsilon`",
                ));
            }
        };
        Ok(DpPlan {
            sigma,
            clip_norm: dp.clip_norm,
            delta: dp.delta,
            sample_rate: q,
            expected_batch: q * examples as f64,
        })
    }

    /// The privacy spent after `steps` noisy steps.
    pub fn spent(&self, steps: u64) -> DpSpent {
        DpSpent {
            epsilon: accountant::epsilon_for(self.sigma, self.sample_rate, steps, self.delta),
            delta: self.delta,
            sigma: self.sigma,
            clip_norm: self.clip_norm,
            sample_rate: self.sample_rate,
            steps,
        }
    }

    /// One epoch's batches: `steps` Poisson samples of `0..examples`, each example in each
    /// batch independently with probability q. Batches vary in size and may be empty.
    pub fn poisson_batches(&self, examples: usize, steps: u64, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
        (0..steps)
            .map(|_| (0..examples).filter(|_| rng.random::<f64>() < self.sample_rate).collect())
            .collect()
    }
}

/// What one private step computed besides the gradients.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Sum of the examples' losses.
    pub loss_sum: f64,
    /// Predicted classes, one per example.
    pub predictions: Vec<u32>,
    /// How many examples had their gradient scaled down by the clipping.
    pub clipped: usize,
}

/// The privatised gradient of every parameter of `net` (in `net.vars()` order) for a batch:
/// per-example gradients clipped to the plan's C, summed, noised and divided by the expected
/// batch size. `x` holds the batch's inputs (first dimension = examples) and may be `None` for
/// an empty Poisson batch, whose step is noise alone, as the accountant assumes.
pub fn private_gradients(
    net: &Network,
    x: Option<&Tensor>,
    labels: &[u32],
    plan: &DpPlan,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<Tensor>, StepStats)> {
    let vars = net.vars();
    let sizes: Vec<usize> = vars.iter().map(|(_, v)| v.as_tensor().elem_count()).collect();
    let mut sums: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
    let mut stats = StepStats { loss_sum: 0.0, predictions: Vec::with_capacity(labels.len()), clipped: 0 };
    if let Some(x) = x {
        let dropout_seed: u64 = rng.random();
        if !closed_form(net, x, labels, plan, dropout_seed, &mut sums, &mut stats)? {
            micro_batched(net, x, labels, plan, dropout_seed, &sizes, &mut sums, &mut stats)?;
        }
    }
    let std = plan.sigma * plan.clip_norm;
    let noise = Normal::new(0.0f64, std)
        .map_err(|e| Error::unsuitable(format!("privacy: noise of standard deviation {std}: {e}")))?;
    let mut out = Vec::with_capacity(vars.len());
    for ((_, v), mut sum) in vars.iter().zip(sums) {
        for s in &mut sum {
            *s = ((*s as f64 + noise.sample(rng)) / plan.expected_batch) as f32;
        }
        let t = v.as_tensor();
        out.push(Tensor::from_vec(sum, t.shape(), t.device())?);
    }
    Ok((out, stats))
}

/// Adds the clipped per-example gradients of an MLP to `sums` in closed form (see the module
/// notes), from one batched forward and backward pass. Returns `false`, touching nothing, for
/// networks that are not MLPs.
fn closed_form(
    net: &Network,
    x: &Tensor,
    labels: &[u32],
    plan: &DpPlan,
    dropout_seed: u64,
    sums: &mut [Vec<f32>],
    stats: &mut StepStats,
) -> Result<bool> {
    let mut drop_rng = ChaCha8Rng::seed_from_u64(dropout_seed);
    let Some((logits, tape)) = net.forward_taped(x, Some(&mut drop_rng))? else { return Ok(false) };
    let n = labels.len();
    if n == 0 {
        return Ok(true);
    }
    let y = Tensor::from_slice(labels, n, x.device())?;
    let mean = crate::ml::kernels::cross_entropy(&logits, &y)?;
    stats.loss_sum += mean.to_scalar::<f32>()? as f64 * n as f64;
    stats.predictions.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
    // The summed loss, so that each example's output gradient is that of its own loss.
    let grads = crate::ml::kernels::backward(&(mean * n as f64)?)?;
    let mut deltas = Vec::with_capacity(tape.len());
    let mut norm2 = vec![0.0f64; n];
    for layer in &tape {
        let g = grads.get(&layer.probe).ok_or_else(|| {
            Error::internal("DP-SGD: a dense layer's output got no gradient (a bug in the taped pass)")
        })?;
        let delta = if layer.relu { (g * layer.output.gt(0.0)?.to_dtype(g.dtype())?)? } else { g.clone() };
        let d2 = delta.sqr()?.sum(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let a2 = layer.input.sqr()?.sum(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        for ((s, d), a) in norm2.iter_mut().zip(d2).zip(a2) {
            // ‖δ aᵀ‖² + ‖δ‖²: the weight's share and the bias's.
            *s += d * (a + 1.0);
        }
        deltas.push(delta);
    }
    // Opacus' factor: min(1, C / (‖g‖ + 1e-6)).
    let factors: Vec<f32> = norm2
        .iter()
        .map(|s| {
            let f = (plan.clip_norm / (s.sqrt() + 1e-6)).min(1.0);
            stats.clipped += usize::from(f < 1.0);
            f as f32
        })
        .collect();
    let f = Tensor::from_vec(factors, (n, 1), x.device())?.to_dtype(logits.dtype())?;
    let vars = net.vars();
    let slot = |t: &Tensor| {
        vars.iter()
            .position(|(_, v)| v.as_tensor().id() == t.id())
            .ok_or_else(|| Error::internal("DP-SGD: a dense layer's parameter is not among the network's"))
    };
    for (layer, delta) in tape.iter().zip(deltas) {
        let scaled = delta.broadcast_mul(&f)?;
        let dw = scaled.t()?.matmul(&layer.input)?;
        let db = scaled.sum(0)?;
        for (param, g) in [(&layer.weight, dw), (&layer.bias, db)] {
            let g = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            for (s, v) in sums[slot(param)?].iter_mut().zip(g) {
                *s += v;
            }
        }
    }
    Ok(true)
}

/// Adds the clipped per-example gradients to `sums` from one backward pass per example.
#[allow(clippy::too_many_arguments)]
fn micro_batched(
    net: &Network,
    x: &Tensor,
    labels: &[u32],
    plan: &DpPlan,
    dropout_seed: u64,
    sizes: &[usize],
    sums: &mut [Vec<f32>],
    stats: &mut StepStats,
) -> Result<()> {
    // Examples are independent, so chunks of them run on all cores. The chunks are fixed in
    // size and summed in order, and each example's dropout draws from its own generator, so a
    // seed gives the same result on any number of cores.
    let parts: Vec<Result<(Vec<Vec<f32>>, StepStats)>> = (0..labels.len())
        .collect::<Vec<_>>()
        .par_chunks(CHUNK)
        .map(|chunk| {
            let mut part: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
            let mut st =
                StepStats { loss_sum: 0.0, predictions: Vec::with_capacity(chunk.len()), clipped: 0 };
            for &i in chunk {
                clipped_gradient(net, x, i, labels[i], plan, dropout_seed, &mut part, &mut st)?;
            }
            Ok((part, st))
        })
        .collect();
    for part in parts {
        let (part, st) = part?;
        for (sum, p) in sums.iter_mut().zip(part) {
            for (s, v) in sum.iter_mut().zip(p) {
                *s += v;
            }
        }
        stats.loss_sum += st.loss_sum;
        stats.predictions.extend(st.predictions);
        stats.clipped += st.clipped;
    }
    Ok(())
}

/// Examples per parallel chunk: fixed, so that sums do not depend on the number of cores.
const CHUNK: usize = 32;

/// Adds example `i`'s gradient, clipped to the plan's norm, to `sums`.
#[allow(clippy::too_many_arguments)]
fn clipped_gradient(
    net: &Network,
    x: &Tensor,
    i: usize,
    label: u32,
    plan: &DpPlan,
    dropout_seed: u64,
    sums: &mut [Vec<f32>],
    stats: &mut StepStats,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(dropout_seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let xi = x.narrow(0, i, 1)?;
    let logits = net.forward(&xi, Some(&mut rng))?;
    let y = Tensor::from_vec(vec![label], 1, x.device())?;
    let loss = crate::ml::kernels::cross_entropy(&logits, &y)?;
    stats.loss_sum += loss.to_scalar::<f32>()? as f64;
    stats.predictions.push(logits.argmax(D::Minus1)?.to_vec1::<u32>()?[0]);
    let grads = crate::ml::kernels::backward(&loss)?;
    let mut per: Vec<Option<Vec<f32>>> = Vec::with_capacity(sums.len());
    let mut norm2 = 0.0f64;
    for (_, v) in net.vars() {
        let g = match grads.get(v.as_tensor()) {
            Some(g) => {
                let g = g.flatten_all()?.to_vec1::<f32>()?;
                norm2 += g.iter().map(|&a| (a as f64) * (a as f64)).sum::<f64>();
                Some(g)
            }
            None => None,
        };
        per.push(g);
    }
    // Opacus' factor: min(1, C / (‖g‖ + 1e-6)).
    let factor = (plan.clip_norm / (norm2.sqrt() + 1e-6)).min(1.0);
    if factor < 1.0 {
        stats.clipped += 1;
    }
    let factor = factor as f32;
    for (sum, g) in sums.iter_mut().zip(per) {
        if let Some(g) = g {
            for (s, a) in sum.iter_mut().zip(g) {
                *s += a * factor;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    use crate::ml::data::InputShape;
    use crate::ml::spec::{Activation, Init, ModelSpec};

    fn plan(sigma: f64, clip: f64, expected_batch: f64) -> DpPlan {
        DpPlan { sigma, clip_norm: clip, delta: 1e-5, sample_rate: 0.1, expected_batch }
    }

    fn net() -> Network {
        let spec = ModelSpec::Mlp { hidden: vec![3], activation: Activation::Tanh, dropout: 0.0 };
        Network::build(
            &spec,
            &InputShape::Tabular { features: 4 },
            2,
            None,
            Init::XavierUniform,
            7,
            &Device::Cpu,
        )
        .unwrap()
    }

    /// Without noise, the result is the mean of the clipped per-example gradients: checked
    /// against each example's own backward pass, clipped by hand.
    #[test]
    fn clipped_sum_matches_per_example_gradients() {
        let net = net();
        let x = Tensor::new(
            &[[1.0f32, -2.0, 0.5, 3.0], [0.1, 0.2, -0.3, 0.4], [5.0, 5.0, -5.0, 2.0]],
            &Device::Cpu,
        )
        .unwrap();
        let labels = [0u32, 1, 1];
        let clip = 0.05;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (got, stats) =
            private_gradients(&net, Some(&x), &labels, &plan(0.0, clip, 3.0), &mut rng).unwrap();
        let mut want: Vec<Vec<f32>> =
            net.vars().iter().map(|(_, v)| vec![0.0; v.as_tensor().elem_count()]).collect();
        let mut clipped = 0;
        for (i, &label) in labels.iter().enumerate() {
            let logits = net.forward(&x.narrow(0, i, 1).unwrap(), None).unwrap();
            let y = Tensor::new(&[label], &Device::Cpu).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &y).unwrap();
            let grads = crate::ml::kernels::backward(&loss).unwrap();
            let gs: Vec<Vec<f32>> = net
                .vars()
                .iter()
                .map(|(_, v)| grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap())
                .collect();
            let norm = gs.iter().flatten().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            assert!(norm > 0.0);
            let f = (clip / (norm + 1e-6)).min(1.0);
            clipped += usize::from(f < 1.0);
            for (w, g) in want.iter_mut().zip(gs) {
                for (a, b) in w.iter_mut().zip(g) {
                    *a += (b as f64 * f / 3.0) as f32;
                }
            }
        }
        assert_eq!(stats.clipped, clipped);
        assert!(clipped >= 2, "the clip must bite for the test to mean anything");
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().zip(w) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
        // Every example's clipped gradient has norm ≤ C, so the mean has norm ≤ C.
        let total =
            got.iter().map(|g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).sum::<f32>();
        assert!(total.sqrt() <= clip as f32 * 1.0001);
    }

    /// The closed form for MLPs gives what one backward pass per example gives, with ReLU
    /// fused into the layers (output gradients masked) and with tanh (not fused), and counts
    /// the same clipped examples.
    #[test]
    fn closed_form_equals_micro_batching() {
        for activation in [Activation::Relu, Activation::Tanh] {
            let spec = ModelSpec::Mlp { hidden: vec![6, 5], activation, dropout: 0.0 };
            let input = InputShape::Tabular { features: 4 };
            let net = Network::build(&spec, &input, 3, None, Init::KaimingUniform, 11, &Device::Cpu).unwrap();
            let x = Tensor::new(
                &[
                    [1.0f32, -2.0, 0.5, 3.0],
                    [0.1, 0.2, -0.3, 0.4],
                    [5.0, 5.0, -5.0, 2.0],
                    [0.0, 0.0, 0.0, 0.0],
                ],
                &Device::Cpu,
            )
            .unwrap();
            let labels = [0u32, 2, 1, 1];
            let p = plan(0.0, 0.5, 4.0);
            let sizes: Vec<usize> = net.vars().iter().map(|(_, v)| v.as_tensor().elem_count()).collect();
            let zero = || sizes.iter().map(|&n| vec![0.0f32; n]).collect::<Vec<_>>();
            let stats = || StepStats { loss_sum: 0.0, predictions: vec![], clipped: 0 };
            let (mut a, mut sa) = (zero(), stats());
            assert!(closed_form(&net, &x, &labels, &p, 5, &mut a, &mut sa).unwrap());
            let (mut b, mut sb) = (zero(), stats());
            micro_batched(&net, &x, &labels, &p, 5, &sizes, &mut b, &mut sb).unwrap();
            assert_eq!((sa.clipped, &sa.predictions), (sb.clipped, &sb.predictions), "{activation:?}");
            assert!(sa.clipped >= 2, "the clip must bite for the test to mean anything");
            assert!((sa.loss_sum - sb.loss_sum).abs() < 1e-5, "{} vs {}", sa.loss_sum, sb.loss_sum);
            for (u, v) in a.iter().flatten().zip(b.iter().flatten()) {
                assert!((u - v).abs() < 1e-5, "{activation:?}: {u} vs {v}");
            }
        }
    }

    /// Models without the closed form take the per-example path.
    #[test]
    fn recurrent_models_fall_back_to_micro_batching() {
        let spec = ModelSpec::Rnn { cell: crate::ml::spec::Cell::Gru, hidden: 3, layers: 1, dropout: 0.0 };
        let input = InputShape::Sequence { steps: 4, features: 2 };
        let net = Network::build(&spec, &input, 2, None, Init::XavierUniform, 3, &Device::Cpu).unwrap();
        let x = Tensor::ones((2, 4, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut sums: Vec<Vec<f32>> =
            net.vars().iter().map(|(_, v)| vec![0.0; v.as_tensor().elem_count()]).collect();
        let mut st = StepStats { loss_sum: 0.0, predictions: vec![], clipped: 0 };
        assert!(!closed_form(&net, &x, &[0, 1], &plan(0.0, 1.0, 2.0), 1, &mut sums, &mut st).unwrap());
        assert!(sums.iter().flatten().all(|&v| v == 0.0) && st.predictions.is_empty());
        let (g, st) = private_gradients(
            &net,
            Some(&x),
            &[0, 1],
            &plan(0.0, 1.0, 2.0),
            &mut ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        assert_eq!(st.predictions.len(), 2);
        assert!(g.iter().any(|t| t.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0));
    }

    /// The noise has the promised standard deviation σC / expected batch, even for an empty batch.
    #[test]
    fn an_empty_batch_gets_noise_of_the_promised_scale() {
        let net = net();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (g, stats) = private_gradients(&net, None, &[], &plan(2.0, 0.5, 4.0), &mut rng).unwrap();
        assert_eq!(stats.predictions.len(), 0);
        let values: Vec<f32> =
            g.iter().flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let sd = (values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        // 2.0 × 0.5 / 4 = 0.25; 23 values, so allow a wide band.
        assert!((sd - 0.25).abs() < 0.1, "sd {sd}");
    }

    #[test]
    fn sigma_from_a_target_epsilon_spends_at_most_it() {
        let dp = DpSgd { clip_norm: 1.0, noise_multiplier: None, target_epsilon: Some(3.0), delta: 1e-5 };
        let p = DpPlan::new(&dp, 1000, 64, 16, 20).unwrap();
        let spent = p.spent(16 * 20).epsilon;
        assert!(spent <= 3.0 && spent > 2.9, "ε {spent} for σ {}", p.sigma);
        let tight = DpSgd { target_epsilon: Some(1e-9), ..dp };
        let err = DpPlan::new(&tight, 1000, 64, 16, 20).unwrap_err().to_string();
        assert!(err.contains("target_epsilon") && err.contains("cannot be reached"), "{err}");
    }

    #[test]
    fn poisson_batches_have_the_expected_size() {
        let p = plan(1.0, 1.0, 100.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let batches = p.poisson_batches(1000, 200, &mut rng);
        let mean = batches.iter().map(Vec::len).sum::<usize>() as f64 / 200.0;
        assert!((mean - 100.0).abs() < 3.0, "{mean}");
        assert!(
            batches.iter().map(Vec::len).collect::<std::collections::HashSet<_>>().len() > 5,
            "sizes vary"
        );
    }
}
