//! Picking the next token from a position's logits: greedy at temperature 0, otherwise
//! temperature and nucleus (top-p) sampling from a ChaCha RNG seeded per generation, so the
//! same request gives the same completion on every machine. Also works out the chosen token's
//! log-probability and the best alternatives, which the service may pass on to a caller.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::llm::backend::SamplingParams;

/// What the sampler chose at one position.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub id: u32,
    /// Natural-log probability of `id` under the temperature-scaled distribution.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, best first (as many as asked).
    pub top: Vec<(u32, f32)>,
}

/// One generation's sampler: its parameters and its own RNG.
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    top_logprobs: usize,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        Sampler {
            temperature: params.temperature,
            top_p: params.top_p,
            top_logprobs: params.top_logprobs,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
        }
    }

    /// Chooses a token from `logits` (one per vocabulary entry).
    pub fn pick(&mut self, logits: &[f32]) -> Pick {
        // Greedy decoding reports probabilities of the unscaled distribution (temperature 1).
        let greedy = self.temperature <= 0.0;
        let inv_t = if greedy { 1.0 } else { (1.0 / self.temperature) as f32 };
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // log-sum-exp of the scaled logits, shifted by the maximum for stability.
        let sum: f64 = logits.iter().map(|&l| (((l - max) * inv_t) as f64).exp()).sum();
        let lse = sum.ln() as f32;
        let logprob = |l: f32| (l - max) * inv_t - lse;

        let id = if greedy {
            // The first of equal maxima, as argmax does in the reference implementations.
            logits.iter().position(|&l| l == max).unwrap_or(0)
        } else {
            self.sample(logits, max, inv_t, sum)
        };
        let top = if self.top_logprobs == 0 {
            Vec::new()
        } else {
            top_k(logits, self.top_logprobs).into_iter().map(|i| (i as u32, logprob(logits[i]))).collect()
        };
        Pick { id: id as u32, logprob: logprob(logits[id]), top }
    }

    /// Draws from the scaled distribution, restricted to the nucleus when `top_p < 1`.
    fn sample(&mut self, logits: &[f32], max: f32, inv_t: f32, sum: f64) -> usize {
        let weight = |l: f32| (((l - max) * inv_t) as f64).exp();
        if self.top_p >= 1.0 {
            // No nucleus: one pass over the unsorted distribution, no sort of the vocabulary.
            let mut target = self.rng.random::<f64>() * sum;
            for (i, &l) in logits.iter().enumerate() {
                target -= weight(l);
                if target <= 0.0 {
                    return i;
                }
            }
            return logits.len() - 1;
        }
        let mut ranked: Vec<(usize, f64)> =
            logits.iter().enumerate().map(|(i, &l)| (i, weight(l) / sum)).filter(|&(_, p)| p > 0.0).collect();
        ranked.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // The smallest prefix whose probability reaches top_p (at least one token).
        let mut mass = 0.0;
        let mut keep = 0;
        for &(_, p) in &ranked {
            mass += p;
            keep += 1;
            if mass >= self.top_p {
                break;
            }
        }
        ranked.truncate(keep.max(1));
        let mut target = self.rng.random::<f64>() * mass;
        for &(i, p) in &ranked {
            target -= p;
            if target <= 0.0 {
                return i;
            }
        }
        ranked[ranked.len() - 1].0
    }
}

/// The indices of the `k` largest logits, largest first (ties: lower index first).
fn top_k(logits: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(logits.len());
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if k < order.len() {
        // Partial selection: O(vocabulary), not a sort of the whole vocabulary.
        order.select_nth_unstable_by(k, by_logit);
        order.truncate(k);
    }
    order.sort_unstable_by(by_logit);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f64, top_p: f64, seed: u64, top_logprobs: usize) -> Sampler {
        Sampler::new(&SamplingParams { temperature, top_p, seed, top_logprobs, ..Default::default() })
    }

    #[test]
    fn greedy_takes_the_argmax_and_reports_log_softmax() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let pick = sampler(0.0, 1.0, 0, 2).pick(&logits);
        assert_eq!(pick.id, 1, "the first of equal maxima");
        // log_softmax([1,3,2,3])[1] = 3 - ln(e^1 + 2e^3 + e^2) = -0.9176
        // (torch.log_softmax(torch.tensor([1.,3.,2.,3.]), 0)[1])
        assert!((pick.logprob + 0.9176).abs() < 1e-3, "{}", pick.logprob);
        assert_eq!(pick.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_another_seed_differs() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = sampler(1.0, 1.0, seed, 0);
            (0..40).map(|_| s.pick(&logits).id).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn a_small_top_p_keeps_only_the_most_likely_token() {
        let logits = [0.0f32, 5.0, 1.0, 4.9];
        let mut s = sampler(1.0, 0.3, 3, 0);
        for _ in 0..50 {
            assert_eq!(s.pick(&logits).id, 1);
        }
        // With the whole nucleus both leading tokens come up.
        let mut s = sampler(1.0, 0.99, 3, 0);
        let ids: std::collections::BTreeSet<u32> = (0..200).map(|_| s.pick(&logits).id).collect();
        assert!(ids.contains(&1) && ids.contains(&3), "{ids:?}");
    }

    #[test]
    fn temperature_scales_the_reported_probability() {
        let logits = [0.0f32, 1.0];
        let hot = sampler(2.0, 1.0, 0, 1).pick(&logits);
        // With T=2 the distribution is softmax([0, 0.5]); the best alternative is token 1.
        let p1 = (0.5f32.exp() / (1.0 + 0.5f32.exp())).ln();
        assert_eq!(hot.top[0].0, 1);
        assert!((hot.top[0].1 - p1).abs() < 1e-5);
    }
}
