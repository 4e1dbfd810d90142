//! Model extraction from the thief's side (Papernot et al., 2017; Juuti et al., 2019), and the
//! benign clients PRADA must tell it apart from.
//!
//! The thief starts from a few natural seed inputs, queries the victim, trains a substitute
//! network on the answers, and synthesises its next queries by Jacobian-based augmentation:
//! each earlier query moved by λ along the sign of the substitute's gradient for the label the
//! victim gave it, which is where the substitute's decision boundary is least known. It learns
//! from whatever the victim's output policy shows: full probabilities, the top k, rounded
//! probabilities or the label alone. The measure of success is the substitute's agreement with
//! the victim's labels on the test split after 100, 1,000 and 10,000 queries.
//!
//! The victim is an [`Oracle`]: the service over HTTP for `vigil traffic --profile extraction`,
//! a local network in tests. Inputs here are raw (what a client sends); the thief knows nothing
//! of the victim's preprocessing and scales its substitute's inputs by its seeds' range.

use candle_core::{D, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ml::data::InputShape;
use crate::ml::model::Network;
use crate::ml::optim::Optimizer;
use crate::ml::spec::{self, Activation, Init, ModelSpec};

/// What the victim said about one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub label: usize,
    /// The probabilities shown, by class (all of them, the top k, or none).
    pub shown: Vec<(usize, f32)>,
}

impl Answer {
    /// The distribution the thief trains towards: what was shown, with the probability left
    /// over spread evenly on the classes not shown (one-hot on the label when nothing was).
    pub fn target(&self, classes: usize) -> Vec<f32> {
        if self.shown.is_empty() {
            let mut t = vec![0.0; classes];
            t[self.label.min(classes - 1)] = 1.0;
            return t;
        }
        let mut t = vec![f32::NAN; classes];
        let mut mass = 0.0;
        for &(c, p) in &self.shown {
            if c < classes {
                t[c] = p.max(0.0);
                mass += p.max(0.0);
            }
        }
        let hidden = t.iter().filter(|v| v.is_nan()).count();
        let rest = if hidden > 0 { (1.0 - mass).max(0.0) / hidden as f32 } else { 0.0 };
        for v in &mut t {
            if v.is_nan() {
                *v = rest;
            }
        }
        let sum: f32 = t.iter().sum();
        t.iter().map(|v| v / sum.max(1e-12)).collect()
    }
}

/// Answers queries: the victim.
pub trait Oracle {
    /// The victim's answers to a batch of raw inputs, in order.
    fn query(&mut self, inputs: &[Vec<f32>]) -> Result<Vec<Answer>>;
}

/// How the thief works.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThiefConfig {
    /// Query counts at which the substitute's agreement is measured; the last is the budget.
    pub checkpoints: Vec<usize>,
    /// Jacobian step as a fraction of the seeds' value range.
    pub lambda: f32,
    /// The substitute's hidden layers.
    pub hidden: Vec<usize>,
    /// Least optimiser steps (batches of 64) after each round of queries.
    pub steps_per_round: usize,
    /// Least passes over all queries so far after each round.
    pub epochs_per_round: usize,
    /// Rounds between flips of the Jacobian step's direction.
    pub tau: usize,
    /// Most inputs per query call.
    pub batch: usize,
    pub seed: u64,
}

impl Default for ThiefConfig {
    fn default() -> Self {
        ThiefConfig {
            checkpoints: vec![100, 1000, 10_000],
            lambda: 0.1,
            hidden: vec![128],
            steps_per_round: 300,
            epochs_per_round: 10,
            tau: 2,
            batch: 256,
            seed: 0,
        }
    }
}

/// The substitute's agreement with the victim after a number of queries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AgreementPoint {
    pub queries: usize,
    /// Share of the test split on which the substitute predicts the victim's label.
    pub agreement: f64,
}

/// A substitute network and what it was trained on.
struct Substitute {
    net: Network,
    opt: Optimizer,
    shape: InputShape,
    classes: usize,
    /// Raw inputs are divided by this (the seeds' largest magnitude).
    scale: f32,
}

impl Substitute {
    fn new(shape: &InputShape, classes: usize, hidden: &[usize], scale: f32, seed: u64) -> Result<Self> {
        let spec = ModelSpec::Mlp { hidden: hidden.to_vec(), activation: Activation::Relu, dropout: 0.0 };
        let net = Network::build(&spec, shape, classes, None, Init::KaimingUniform, seed, &Device::Cpu)?;
        let opt = Optimizer::new(
            &spec::Optimizer::Adam { lr: 0.003, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
            net.vars(),
        );
        Ok(Substitute { net, opt, shape: shape.clone(), classes, scale })
    }

    fn batch(&self, rows: &[&Vec<f32>]) -> Result<Tensor> {
        let mut dims = vec![rows.len()];
        dims.extend(self.shape.dims());
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().map(|v| v / self.scale)).collect();
        Ok(Tensor::from_vec(flat, dims, &Device::Cpu)?)
    }

    fn train(
        &mut self,
        x: &[Vec<f32>],
        targets: &[Vec<f32>],
        steps: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let n = x.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut at = n;
        for _ in 0..steps {
            if at + 64 > n {
                order.shuffle(rng);
                at = 0;
            }
            let idx = &order[at..(at + 64).min(n)];
            at += 64;
            let xb = self.batch(&idx.iter().map(|&i| &x[i]).collect::<Vec<_>>())?;
            let t: Vec<f32> = idx.iter().flat_map(|&i| targets[i].iter().copied()).collect();
            let t = Tensor::from_vec(t, (idx.len(), self.classes), &Device::Cpu)?;
            let logp = candle_nn::ops::log_softmax(&self.net.forward(&xb, None)?, D::Minus1)?;
            let loss = (logp * t)?.sum_all()?.neg()?.affine(1.0 / idx.len() as f64, 0.0)?;
            self.opt.step(&crate::ml::kernels::backward(&loss)?)?;
        }
        Ok(())
    }

    fn predict(&self, x: &[Vec<f32>]) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(x.len());
        for chunk in x.chunks(512) {
            let xb = self.batch(&chunk.iter().collect::<Vec<_>>())?;
            out.extend(self.net.forward(&xb, None)?.argmax(D::Minus1)?.to_vec1::<u32>()?);
        }
        Ok(out)
    }

    /// The sign of the gradient of each input's logit for `labels`, in raw units.
    fn jacobian_signs(&self, x: &[&Vec<f32>], labels: &[usize]) -> Result<Vec<Vec<f32>>> {
        let var = Var::from_tensor(&self.batch(x)?)?;
        let logits = self.net.forward(var.as_tensor(), None)?;
        let idx = Tensor::from_vec(
            labels.iter().map(|&l| l as u32).collect::<Vec<_>>(),
            (x.len(), 1),
            &Device::Cpu,
        )?;
        let picked = logits.gather(&idx, 1)?.sum_all()?;
        let grads = crate::ml::kernels::backward(&picked)?;
        let g = match grads.get(var.as_tensor()) {
            Some(g) => g.sign()?,
            None => var.as_tensor().zeros_like()?,
        };
        Ok(g.flatten_from(1)?.to_vec2::<f32>()?)
    }
}

/// Where the thief's success is measured: raw test inputs and the victim's labels for them.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    pub inputs: &'a [Vec<f32>],
    pub victim_labels: &'a [u32],
}

/// Steals a model: the substitute's agreement with `victim_labels` on `test` after each of the
/// config's checkpoints. `seeds` are the thief's natural inputs (raw); every query stays inside
/// the range of values the seeds span.
pub fn steal(
    oracle: &mut dyn Oracle,
    seeds: &[Vec<f32>],
    shape: &InputShape,
    classes: usize,
    judge: Judge<'_>,
    config: &ThiefConfig,
    mut progress: impl FnMut(usize),
) -> Result<Vec<AgreementPoint>> {
    let d = shape.numel();
    if seeds.is_empty() || seeds.iter().any(|s| s.len() != d) {
        return Err(Error::unsuitable(format!("the thief needs seed inputs of {d} values each")));
    }
    let budget = *config.checkpoints.iter().max().ok_or_else(|| Error::argument("no query budget"))?;
    if seeds.len() > budget {
        return Err(Error::argument(format!(
            "{} seeds are more than the budget of {budget} queries",
            seeds.len()
        )));
    }
    let lo = seeds.iter().flatten().copied().fold(f32::INFINITY, f32::min);
    let hi = seeds.iter().flatten().copied().fold(f32::NEG_INFINITY, f32::max);
    let scale = lo.abs().max(hi.abs()).max(1e-6);
    let step = config.lambda * (hi - lo).max(1e-6);
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7417_e000);
    let mut sub = Substitute::new(shape, classes, &config.hidden, scale, config.seed)?;
    let mut checkpoints: Vec<usize> = config.checkpoints.clone();
    checkpoints.sort_unstable();
    checkpoints.dedup();

    let mut x: Vec<Vec<f32>> = Vec::new();
    let mut answers: Vec<Answer> = Vec::new();
    let mut ask = |batch: Vec<Vec<f32>>, x: &mut Vec<Vec<f32>>, answers: &mut Vec<Answer>| -> Result<()> {
        for chunk in batch.chunks(config.batch.max(1)) {
            let a = oracle.query(chunk)?;
            if a.len() != chunk.len() {
                return Err(Error::bad_answer(format!(
                    "the victim answered {} of {} queries",
                    a.len(),
                    chunk.len()
                )));
            }
            answers.extend(a);
            x.extend(chunk.iter().cloned());
            progress(x.len());
        }
        Ok(())
    };
    ask(seeds.to_vec(), &mut x, &mut answers)?;
    let mut points = Vec::new();
    let mut next_checkpoint = 0;
    let mut round = 0usize;
    loop {
        let targets: Vec<Vec<f32>> = answers.iter().map(|a| a.target(classes)).collect();
        // At least a few passes over everything asked so far: the set doubles each round, and a
        // fixed number of steps would leave the late rounds' queries barely seen.
        let steps = config.steps_per_round.max(config.epochs_per_round * x.len() / 64);
        sub.train(&x, &targets, steps, &mut rng)?;
        while next_checkpoint < checkpoints.len() && x.len() >= checkpoints[next_checkpoint] {
            let (test, victim_labels) = (judge.inputs, judge.victim_labels);
            let preds = sub.predict(test)?;
            let agree = preds.iter().zip(victim_labels).filter(|(a, b)| a == b).count();
            points.push(AgreementPoint {
                queries: checkpoints[next_checkpoint],
                agreement: agree as f64 / victim_labels.len().max(1) as f64,
            });
            next_checkpoint += 1;
        }
        if next_checkpoint >= checkpoints.len() {
            break;
        }
        // Jacobian-based augmentation of as many earlier queries as fit before the next
        // checkpoint (all of them while they fit: the set doubles each round).
        let room = checkpoints[next_checkpoint] - x.len();
        let mut parents: Vec<usize> = (0..x.len()).collect();
        parents.shuffle(&mut rng);
        parents.truncate(room);
        let signs = sub.jacobian_signs(
            &parents.iter().map(|&i| &x[i]).collect::<Vec<_>>(),
            &parents.iter().map(|&i| answers[i].label).collect::<Vec<_>>(),
        )?;
        // Papernot et al.'s periodic step size: the direction flips every `tau` rounds, so that
        // queries several generations from a seed oscillate around the seeds' manifold instead
        // of drifting to the edge of the value range.
        let sign = if (round / config.tau.max(1)).is_multiple_of(2) { 1.0 } else { -1.0 };
        round += 1;
        let fresh: Vec<Vec<f32>> = parents
            .iter()
            .zip(&signs)
            .map(|(&i, s)| x[i].iter().zip(s).map(|(v, g)| (v + sign * step * g).clamp(lo, hi)).collect())
            .collect();
        ask(fresh, &mut x, &mut answers)?;
    }
    Ok(points)
}

/// Natural-looking queries of a benign client: examples drawn from `pool` (raw inputs), each
/// shifted by up to a pixel (images) and given a little Gaussian noise (2% of the pool's
/// range), clipped to the pool's range. No two are the same, as no two photos are.
pub fn benign_queries(pool: &[Vec<f32>], shape: &InputShape, n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut stream = BenignStream::new(pool.to_vec(), shape.clone(), seed);
    (0..n).map(|_| stream.next_query().1).collect()
}

/// An endless [`benign_queries`]: each query is a pool example (its index given) shifted and
/// noised afresh.
pub struct BenignStream {
    pool: Vec<Vec<f32>>,
    shape: InputShape,
    lo: f32,
    hi: f32,
    rng: ChaCha8Rng,
}

impl BenignStream {
    pub fn new(pool: Vec<Vec<f32>>, shape: InputShape, seed: u64) -> Self {
        let lo = pool.iter().flatten().copied().filter(|v| v.is_finite()).fold(f32::INFINITY, f32::min);
        let hi = pool.iter().flatten().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        BenignStream { pool, shape, lo, hi, rng: ChaCha8Rng::seed_from_u64(seed ^ 0xbe_0000) }
    }

    /// The next query and the pool example it came from.
    pub fn next_query(&mut self) -> (usize, Vec<f32>) {
        let (lo, hi) = (self.lo, self.hi);
        let aug = spec::Augment { shift: 1, noise: 0.02 * (hi - lo).max(1e-6), probability: 1.0 };
        let fill = vec![lo; self.shape.numel()];
        let i = self.rng.random_range(0..self.pool.len());
        let mut q = self.pool[i].clone();
        crate::ml::data::augment::apply(&mut q, &self.shape, &fill, &aug, &mut self.rng);
        (i, q.iter().map(|v| v.clamp(lo, hi)).collect())
    }
}
