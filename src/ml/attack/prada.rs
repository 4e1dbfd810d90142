//! PRADA (Juuti et al., 2019): detecting model extraction from one client's stream of queries.
//! A thief who synthesises queries (small steps from a few seeds, Jacobian-based augmentation)
//! sends inputs whose distances to its earlier inputs cluster at a few small values, while a
//! benign client's natural inputs give distances that look normally distributed.
//!
//! Per client, as the paper's Algorithm 1: a growing set of past queries per predicted class;
//! each new query's minimum L2 distance to its class's set is pooled, and the query joins the set
//! when that distance exceeds the class's threshold (the running max of mean − standard
//! deviation of the set's own distances, which keeps near-duplicates out of the set). Once at
//! least `min_distances` distances are pooled, a Shapiro–Wilk test runs on them; W below `delta`
//! raises the alarm, which then stays raised for the client.
//!
//! The test is run on every query up to 1,000 pooled distances and then each time the pool has
//! grown by 1%, so a long-lived client costs a few tests per hundred queries rather than one per
//! query. Plain data and arithmetic: the service keeps one [`Prada`] per key.

use serde::{Deserialize, Serialize};

use super::shapiro::shapiro_wilk;

/// Settings of the detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PradaConfig {
    /// Alarm when the Shapiro–Wilk W of the pooled distances falls below this.
    pub delta: f64,
    /// Distances pooled before the first test.
    pub min_distances: usize,
}

impl Default for PradaConfig {
    fn default() -> Self {
        PradaConfig { delta: 0.9, min_distances: 200 }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ClassSet {
    queries: Vec<Vec<f32>>,
    /// The minimum distances that let a query into the set.
    distances: Vec<f64>,
    threshold: f64,
}

/// What one query did to a client's state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PradaObservation {
    /// The query's minimum distance to earlier queries of its class (none for a class's first).
    pub distance: Option<f64>,
    /// The latest W (none before `min_distances` distances are pooled).
    pub w: Option<f64>,
    /// Whether the client is in alarm.
    pub alarm: bool,
    /// Whether this query raised the alarm.
    pub raised: bool,
}

/// One client's PRADA state.
#[derive(Debug, Clone, PartialEq)]
pub struct Prada {
    config: PradaConfig,
    classes: Vec<ClassSet>,
    pooled: Vec<f64>,
    tested_at: usize,
    w: Option<f64>,
    alarm: bool,
    queries: u64,
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

impl Prada {
    pub fn new(config: PradaConfig) -> Self {
        Prada { config, classes: vec![], pooled: vec![], tested_at: 0, w: None, alarm: false, queries: 0 }
    }

    /// The latest Shapiro–Wilk W.
    pub fn w(&self) -> Option<f64> {
        self.w
    }

    pub fn alarm(&self) -> bool {
        self.alarm
    }

    /// Queries seen.
    pub fn queries(&self) -> u64 {
        self.queries
    }

    /// Distances pooled so far.
    pub fn pooled(&self) -> usize {
        self.pooled.len()
    }

    /// Takes one query (the model's input) and the class it was predicted as.
    pub fn observe(&mut self, query: &[f32], class: usize) -> PradaObservation {
        self.queries += 1;
        if self.classes.len() <= class {
            self.classes.resize_with(class + 1, ClassSet::default);
        }
        let set = &mut self.classes[class];
        let mut observed = None;
        if set.queries.is_empty() {
            set.queries.push(query.to_vec());
        } else {
            let d = set.queries.iter().map(|q| distance(q, query)).fold(f64::INFINITY, f64::min);
            observed = Some(d);
            self.pooled.push(d);
            if d > set.threshold {
                set.queries.push(query.to_vec());
                set.distances.push(d);
                let (mean, std) = mean_std(&set.distances);
                set.threshold = set.threshold.max(mean - std);
            }
        }
        let n = self.pooled.len();
        let mut raised = false;
        if n >= self.config.min_distances && (n <= 1000 || n - self.tested_at >= n / 100) {
            self.tested_at = n;
            // All-equal distances (a client repeating one query) are as far from normal as it
            // gets; W is taken as 0 then.
            let w = shapiro_wilk(&self.pooled).map_or(0.0, |t| t.w);
            self.w = Some(w);
            if w < self.config.delta && !self.alarm {
                self.alarm = true;
                raised = true;
            }
        }
        PradaObservation { distance: observed, w: self.w, alarm: self.alarm, raised }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn natural_queries_pass_and_perturbed_seeds_alarm() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Benign: independent draws from a Gaussian blob per class.
        let mut benign = Prada::new(PradaConfig::default());
        for _ in 0..2000 {
            let c = rng.random_range(0..5usize);
            let q: Vec<f32> = (0..16)
                .map(|j| {
                    let noise: f32 = StandardNormal.sample(&mut rng);
                    c as f32 * (j % 3) as f32 + noise
                })
                .collect();
            assert!(!benign.observe(&q, c).alarm, "benign raised an alarm, W = {:?}", benign.w());
        }
        assert!(benign.w().unwrap() > 0.95, "{:?}", benign.w());
        // A thief doing Jacobian-based augmentation: 5 seeds, then each round every query so far
        // plus a signed step of λ (the sign of a substitute's Jacobian; random here).
        let mut queries: Vec<(Vec<f32>, usize)> =
            (0..5).map(|c| ((0..16).map(|_| StandardNormal.sample(&mut rng)).collect(), c)).collect();
        while queries.len() < 300 {
            let round: Vec<(Vec<f32>, usize)> = queries
                .iter()
                .map(|(q, c)| {
                    (q.iter().map(|v| v + if rng.random::<bool>() { 0.1 } else { -0.1 }).collect(), *c)
                })
                .collect();
            queries.extend(round);
        }
        let mut thief = Prada::new(PradaConfig::default());
        let mut raised_at = None;
        for (i, (q, c)) in queries.iter().take(300).enumerate() {
            if thief.observe(q, *c).raised {
                raised_at = Some(i + 1);
            }
        }
        assert!(raised_at.is_some(), "no alarm; W = {:?}", thief.w());
        assert!(thief.alarm());
    }
}
