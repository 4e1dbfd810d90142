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
//!
//! **Bounded state.** The paper keeps every admitted query and every distance, so a key that
//! lives for millions of queries grows without bound in memory and in the work per query (the
//! nearest-neighbour search is linear in the set). Here each class keeps at most
//! `max_per_class` queries and the pool at most `max_pooled` distances, both as uniform
//! reservoirs (Vitter's algorithm R, seeded per client): until a class has admitted that many
//! queries (and the pool seen that many distances) everything is exact, as in the paper; past
//! it, a query's distance is to its nearest neighbour among a uniform sample of its class's
//! admitted queries (so it can only be larger than the exact one), and W is the statistic of a
//! uniform sample of all the distances pooled (5,000 by default: the largest sample for which
//! Royston's approximation is calibrated). The admission threshold's mean and standard deviation
//! are kept exact over every admitted distance (running sums), not over the reservoir.

use serde::{Deserialize, Serialize};

use super::shapiro::shapiro_wilk;

/// Settings of the detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PradaConfig {
    /// Alarm when the Shapiro–Wilk W of the pooled distances falls below this.
    pub delta: f64,
    /// Distances pooled before the first test.
    pub min_distances: usize,
    /// Most queries kept per class (a uniform sample of those admitted beyond it).
    #[serde(default = "default_max_per_class")]
    pub max_per_class: usize,
    /// Most distances kept for the test (a uniform sample of those pooled beyond it).
    #[serde(default = "default_max_pooled")]
    pub max_pooled: usize,
}

fn default_max_per_class() -> usize {
    PradaConfig::default().max_per_class
}

fn default_max_pooled() -> usize {
    PradaConfig::default().max_pooled
}

impl Default for PradaConfig {
    fn default() -> Self {
        // 256 queries x 10 classes x 64 values is 0.7 MB per key for the digits models (8 MB for
        // 28x28 images), and a nearest-neighbour search of 256 queries a few microseconds.
        PradaConfig { delta: 0.9, min_distances: 200, max_per_class: 256, max_pooled: 5000 }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct ClassSet {
    /// The admitted queries, or a uniform sample of them once there are `max_per_class`.
    queries: Vec<Vec<f32>>,
    /// Queries admitted so far (the sample's population).
    admitted: u64,
    /// Running mean and sum of squared deviations (Welford) of the minimum distances that let
    /// a query into the set: the threshold's mean and standard deviation, exact over every
    /// admitted query.
    mean: f64,
    m2: f64,
    threshold: f64,
}

/// A small seeded generator for the reservoirs (SplitMix64): plain data, so that a client's
/// state stays `Clone + PartialEq` and its samples repeat from run to run.
#[derive(Debug, Clone, PartialEq)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Algorithm R: where the `seen`-th item (1-based) goes in a reservoir of `cap`, if at all.
    fn slot(&mut self, seen: u64, cap: usize) -> Option<usize> {
        if seen <= cap as u64 {
            return Some(seen as usize - 1);
        }
        let j = self.next() % seen;
        (j < cap as u64).then_some(j as usize)
    }
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
    /// The pooled distances, or a uniform sample of them once there are `max_pooled`.
    pooled: Vec<f64>,
    /// Distances pooled so far (the sample's population).
    pooled_seen: usize,
    tested_at: usize,
    rng: SplitMix,
    w: Option<f64>,
    alarm: bool,
    queries: u64,
}

/// The squared L2 distance, summed in f32 over 8 lanes so that it vectorises (the
/// nearest-neighbour search is most of a query's cost); each lane's sum is exact to about 1e-7
/// of the distance, far below the gaps between queries that PRADA looks at.
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            lanes[i] += d * d;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl Prada {
    pub fn new(config: PradaConfig) -> Self {
        Prada {
            config,
            classes: vec![],
            pooled: vec![],
            pooled_seen: 0,
            tested_at: 0,
            rng: SplitMix(0x0050_5241_4441),
            w: None,
            alarm: false,
            queries: 0,
        }
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
        self.pooled_seen
    }

    /// Queries kept, over all classes (at most `max_per_class` each).
    pub fn kept_queries(&self) -> usize {
        self.classes.iter().map(|c| c.queries.len()).sum()
    }

    /// Bytes this client's state holds on the heap (the queries, the distances, the tables).
    pub fn heap_bytes(&self) -> usize {
        let queries: usize = self
            .classes
            .iter()
            .map(|c| {
                c.queries.capacity() * std::mem::size_of::<Vec<f32>>()
                    + c.queries.iter().map(|q| q.capacity() * 4).sum::<usize>()
            })
            .sum();
        queries
            + self.classes.capacity() * std::mem::size_of::<ClassSet>()
            + self.pooled.capacity() * std::mem::size_of::<f64>()
    }

    /// Takes one query (the model's input) and the class it was predicted as.
    pub fn observe(&mut self, query: &[f32], class: usize) -> PradaObservation {
        self.queries += 1;
        if self.classes.len() <= class {
            self.classes.resize_with(class + 1, ClassSet::default);
        }
        let (max_set, max_pool) = (self.config.max_per_class.max(1), self.config.max_pooled.max(3));
        let set = &mut self.classes[class];
        let mut observed = None;
        if set.queries.is_empty() {
            set.queries.push(query.to_vec());
            set.admitted = 1;
        } else {
            let nearest =
                set.queries.iter().map(|q| squared_distance(q, query)).fold(f32::INFINITY, f32::min);
            let d = (nearest as f64).sqrt();
            observed = Some(d);
            self.pooled_seen += 1;
            if let Some(i) = self.rng.slot(self.pooled_seen as u64, max_pool) {
                if i == self.pooled.len() {
                    self.pooled.push(d);
                } else {
                    self.pooled[i] = d;
                }
            }
            if d > set.threshold {
                set.admitted += 1;
                if let Some(i) = self.rng.slot(set.admitted, max_set) {
                    if i == set.queries.len() {
                        set.queries.push(query.to_vec());
                    } else {
                        set.queries[i].clear();
                        set.queries[i].extend_from_slice(query);
                    }
                }
                // Welford's update, over the distances that admitted queries (the class's
                // first query has none): the population mean and standard deviation.
                let n = (set.admitted - 1) as f64;
                let delta = d - set.mean;
                set.mean += delta / n;
                set.m2 += delta * (d - set.mean);
                let std = (set.m2 / n).max(0.0).sqrt();
                set.threshold = set.threshold.max(set.mean - std);
            }
        }
        let n = self.pooled_seen;
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

    /// Reservoirs small enough to bind within the test's queries (the default ones bind only
    /// after thousands per class).
    fn tight() -> PradaConfig {
        PradaConfig { max_per_class: 16, max_pooled: 300, ..PradaConfig::default() }
    }

    #[test]
    fn natural_queries_pass_and_perturbed_seeds_alarm() {
        for config in [PradaConfig::default(), tight()] {
            natural_and_perturbed(config);
        }
    }

    #[test]
    fn bounded_state_stays_within_its_caps() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut p = Prada::new(tight());
        let mut heap_at_half = 0;
        for i in 0..5000 {
            // Spread out ever more, so that queries keep being admitted.
            let q: Vec<f32> = (0..8).map(|_| i as f32 * rng.random::<f32>()).collect();
            p.observe(&q, i % 3);
            if i == 2499 {
                heap_at_half = p.heap_bytes();
            }
        }
        assert_eq!(p.pooled(), 4997);
        assert_eq!(p.pooled.len(), 300);
        assert!(p.classes.iter().all(|c| c.queries.len() <= 16), "{:?}", p.kept_queries());
        assert!(p.classes.iter().any(|c| c.admitted > 16), "the cap never bound");
        // Within twice what the caps hold (vectors grow by doubling), and no longer growing.
        assert!(p.heap_bytes() < 2 * (16 * 3 * (8 * 4 + 24) + 300 * 8) + 1024, "{}", p.heap_bytes());
        assert_eq!(p.heap_bytes(), heap_at_half);
    }

    #[test]
    fn the_threshold_statistics_are_the_exact_mean_and_deviation() {
        let mut p = Prada::new(PradaConfig::default());
        // One class on a line at 0, 1, ..., 9: 1 is admitted at distance 1 (threshold 1 - 0),
        // then every other point at distance 2 from the last admitted one (the ones between
        // are at 1, not above the threshold): 0, 1, 3, 5, 7, 9, with distances 1, 2, 2, 2, 2,
        // whose mean is 1.8 and population variance 0.16 (sum of squared deviations 0.8).
        for i in 0..10 {
            p.observe(&[i as f32, 0.0], 0);
        }
        let c = &p.classes[0];
        assert_eq!(c.admitted, 6);
        assert!((c.mean - 1.8).abs() < 1e-12 && (c.m2 - 0.8).abs() < 1e-12, "{} {}", c.mean, c.m2);
        assert!((c.threshold - 1.4).abs() < 1e-12, "{}", c.threshold);
    }

    fn natural_and_perturbed(config: PradaConfig) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Benign: independent draws from a Gaussian blob per class.
        let mut benign = Prada::new(config);
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
        let mut thief = Prada::new(config);
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
