//! The gradient methods: the target output and its gradient with respect to a batch of points,
//! and on top of them integrated gradients and SmoothGrad. Every point's output depends on that
//! point alone (dropout is off), so the gradient of the batch's summed output is each point's own
//! gradient, and many points go through the network in one pass.

use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Baseline, Completeness, Explainer, Output, Rule, Space};
use crate::error::Result;

impl Explainer<'_> {
    /// Logits for points in the attribution space (embeddings with `mask` for text).
    fn forward(&self, points: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        match mask {
            Some(mask) => self.net.forward_embedded(points, mask, None),
            None => self.net.forward(points, None),
        }
    }

    /// The attributed output of each point: its target's logit or probability, `(N)`.
    fn select(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let out = match self.output {
            Output::Logit => logits.clone(),
            Output::Probability => crate::ml::model::softmax(logits)?,
        };
        Ok(out.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?)
    }

    /// The attributed output of each point, without gradients, in chunks of `max_points`.
    pub(crate) fn scores(&self, points: &Tensor, mask: Option<&Tensor>, targets: &Tensor) -> Result<Tensor> {
        let n = points.dim(0)?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let len = self.max_points.min(n - start);
            let m = mask.map(|m| m.narrow(0, start, len)).transpose()?;
            let logits = self.forward(&points.narrow(0, start, len)?, m.as_ref())?;
            out.push(self.select(&logits, &targets.narrow(0, start, len)?)?.detach());
            start += len;
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// The class each point is predicted as, in chunks of `max_points`.
    pub(crate) fn predictions(&self, points: &Tensor, mask: Option<&Tensor>) -> Result<Vec<u32>> {
        let n = points.dim(0)?;
        let mut out = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = self.max_points.min(n - start);
            let m = mask.map(|m| m.narrow(0, start, len)).transpose()?;
            let logits = self.forward(&points.narrow(0, start, len)?, m.as_ref())?;
            out.extend(logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?);
            start += len;
        }
        Ok(out)
    }

    /// The attributed output of each point and its gradient with respect to the point.
    pub(crate) fn gradients(
        &self,
        points: &Tensor,
        mask: Option<&Tensor>,
        targets: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let n = points.dim(0)?;
        let (mut scores, mut grads) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < n {
            let len = self.max_points.min(n - start);
            let var = Var::from_tensor(&points.narrow(0, start, len)?)?;
            let m = mask.map(|m| m.narrow(0, start, len)).transpose()?;
            let out =
                self.select(&self.forward(var.as_tensor(), m.as_ref())?, &targets.narrow(0, start, len)?)?;
            let store = crate::ml::kernels::backward(&out.sum_all()?)?;
            let grad = match store.get(var.as_tensor()) {
                Some(g) => g.detach(),
                // The output does not depend on the input at all (a model of constants).
                None => var.as_tensor().zeros_like()?,
            };
            scores.push(out.detach());
            grads.push(grad);
            start += len;
        }
        Ok((Tensor::cat(&scores, 0)?, Tensor::cat(&grads, 0)?))
    }

    /// Integrated gradients and the completeness check of each input, as Captum computes them:
    /// points `baseline + α (x − baseline)`, gradients weighted by the rule and summed, times
    /// `x − baseline`.
    pub(crate) fn integrated_gradients(
        &self,
        space: &Space,
        targets: &Tensor,
        steps: usize,
        rule: Rule,
        baseline: &Baseline,
    ) -> Result<(Tensor, Vec<Completeness>)> {
        let (alphas, weights) = rule.nodes(steps)?;
        let (n, s, d) = (space.n, alphas.len(), space.width);
        let device = space.values.device();
        let base = baseline.tensor(&space.values)?;
        let x = space.values.reshape((n, 1, d))?;
        let b = base.reshape((n, 1, d))?;
        let diff = (&x - &b)?;
        let alphas =
            Tensor::from_vec(alphas.iter().map(|&a| a as f32).collect::<Vec<_>>(), (1, s, 1), device)?;
        let mut shape = vec![n * s];
        shape.extend_from_slice(&space.values.dims()[1..]);
        let points = b.broadcast_add(&diff.broadcast_mul(&alphas)?)?.reshape(shape)?;
        let repeat = Tensor::from_vec(
            (0..n as u32).flat_map(|i| std::iter::repeat_n(i, s)).collect::<Vec<_>>(),
            n * s,
            device,
        )?;
        let mask = space.mask.as_ref().map(|m| m.index_select(&repeat, 0)).transpose()?;
        let (_, grads) = self.gradients(&points, mask.as_ref(), &targets.index_select(&repeat, 0)?)?;
        let weights =
            Tensor::from_vec(weights.iter().map(|&w| w as f32).collect::<Vec<_>>(), (1, s, 1), device)?;
        let total = grads.reshape((n, s, d))?.broadcast_mul(&weights)?.sum(1)?;
        let attributions = total.mul(&diff.squeeze(1)?)?.reshape(space.values.shape())?;

        // F(x) and F(baseline) in one pass.
        let both = Tensor::cat(&[&space.values, &base], 0)?;
        let mask2 = space.mask.as_ref().map(|m| Tensor::cat(&[m, m], 0)).transpose()?;
        let f =
            self.scores(&both, mask2.as_ref(), &Tensor::cat(&[targets, targets], 0)?)?.to_vec1::<f32>()?;
        let sums = space.per_feature(&attributions)?;
        let checks = (0..n)
            .map(|i| {
                let attribution_sum: f64 = sums[i].iter().map(|&v| v as f64).sum();
                let (output, baseline_output) = (f[i] as f64, f[n + i] as f64);
                Completeness {
                    attribution_sum,
                    output,
                    baseline_output,
                    gap: (attribution_sum - (output - baseline_output)).abs(),
                }
            })
            .collect();
        Ok((attributions, checks))
    }

    /// SmoothGrad: the mean gradient over noisy copies. Every input gets the same standard-normal
    /// draws from `seed`, scaled by its own range, so that an input's result does not depend on
    /// the batch it is in.
    pub(crate) fn smoothgrad(
        &self,
        space: &Space,
        targets: &Tensor,
        noise_level: f32,
        samples: usize,
        seed: u64,
    ) -> Result<Tensor> {
        let (n, s, d) = (space.n, samples, space.width);
        let device = space.values.device();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let draws: Vec<f32> = (0..s * d).map(|_| StandardNormal.sample(&mut rng)).collect();
        let noise = Tensor::from_vec(draws, (1, s, d), device)?;
        let flat = space.values.reshape((n, d))?;
        let range = (flat.max_keepdim(1)? - flat.min_keepdim(1)?)?;
        let sigma = range.affine(noise_level as f64, 0.0)?.reshape((n, 1, 1))?;
        let mut shape = vec![n * s];
        shape.extend_from_slice(&space.values.dims()[1..]);
        let points = flat.reshape((n, 1, d))?.broadcast_add(&noise.broadcast_mul(&sigma)?)?.reshape(shape)?;
        let repeat = Tensor::from_vec(
            (0..n as u32).flat_map(|i| std::iter::repeat_n(i, s)).collect::<Vec<_>>(),
            n * s,
            device,
        )?;
        let mask = space.mask.as_ref().map(|m| m.index_select(&repeat, 0)).transpose()?;
        let (_, grads) = self.gradients(&points, mask.as_ref(), &targets.index_select(&repeat, 0)?)?;
        Ok(grads.reshape((n, s, d))?.mean(1)?.reshape(space.values.shape())?)
    }
}
