//! Choosing each trial's parameters: a grid in order, seeded random draws, or the
//! Tree-structured Parzen Estimator (Bergstra et al., "Algorithms for Hyper-Parameter
//! Optimization", NeurIPS 2011), univariate as Optuna's default TPE sampler is. It is written
//! here, small; the maintained `tpe` crate (sile/tpe, 0.3) implements the same estimator and
//! should replace this code (issue 17's open point):
//! trials are split into the best quarter and the rest, each parameter gets a Parzen density
//! l(x) over the good ones and g(x) over the rest (Gaussians at the observations with Optuna's
//! neighbour-gap bandwidths and a uniform prior; smoothed counts for lists), and the candidate
//! with the highest l(x)/g(x) among 24 drawn from l wins.
//!
//! Trial `i` always draws from its own random stream (seed, stream `i`), so that a resumed sweep
//! plans exactly the trials the stopped one would have.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::file::{Domain, Goal, Method};

/// A finished trial as the samplers see it: its parameters and its objective.
#[derive(Debug, Clone)]
pub struct Observation {
    pub params: BTreeMap<String, Value>,
    pub objective: f64,
}

/// The parameters of trial `index` (from 0), or `None` when a grid has run out.
pub fn propose(
    method: &Method,
    domains: &BTreeMap<String, Domain>,
    index: usize,
    history: &[Observation],
    goal: Goal,
) -> Option<BTreeMap<String, Value>> {
    match method {
        Method::Grid => grid_point(domains, index),
        Method::Random { seed } => Some(random(domains, &mut stream(*seed, index))),
        Method::Tpe { seed, startup } => {
            let mut rng = stream(*seed, index);
            if history.len() < (*startup).max(2) {
                Some(random(domains, &mut rng))
            } else {
                Some(tpe(domains, history, goal, &mut rng))
            }
        }
    }
}

/// How many trials a grid has.
pub fn grid_size(domains: &BTreeMap<String, Domain>) -> usize {
    domains.values().map(|d| d.grid().map(|g| g.len()).unwrap_or(0)).product()
}

fn stream(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

fn grid_point(domains: &BTreeMap<String, Domain>, index: usize) -> Option<BTreeMap<String, Value>> {
    if index >= grid_size(domains) {
        return None;
    }
    // The last parameter varies fastest, as nested loops written in the file's order would.
    let mut rest = index;
    let mut out = BTreeMap::new();
    let grids: Vec<(&String, Vec<Value>)> =
        domains.iter().map(|(k, d)| (k, d.grid().unwrap_or_default())).collect();
    for (name, values) in grids.iter().rev() {
        out.insert((*name).clone(), values[rest % values.len()].clone());
        rest /= values.len();
    }
    Some(out)
}

fn random(domains: &BTreeMap<String, Domain>, rng: &mut ChaCha8Rng) -> BTreeMap<String, Value> {
    domains.iter().map(|(k, d)| (k.clone(), draw(d, rng))).collect()
}

fn draw(d: &Domain, rng: &mut ChaCha8Rng) -> Value {
    match d {
        Domain::List(v) => v[rng.random_range(0..v.len())].clone(),
        Domain::Range { low, high, .. } => {
            Value::from(if low == high { *low } else { rng.random_range(*low..*high) })
        }
        Domain::LogUniform { low, high, .. } => {
            Value::from(if low == high { *low } else { rng.random_range(low.ln()..high.ln()).exp() })
        }
        Domain::Int { low, high, step } => {
            let step = step.unwrap_or(1).max(1);
            let n = (high - low) / step;
            Value::from(low + step * rng.random_range(0..=n))
        }
    }
}

/// A domain in the space TPE models: an interval (log for LogUniform) or categories.
enum Space {
    Interval { low: f64, high: f64, log: bool, int: Option<(i64, i64, i64)> },
    Categories(Vec<Value>),
}

fn space(d: &Domain) -> Space {
    match d {
        Domain::List(v) => Space::Categories(v.clone()),
        Domain::Range { low, high, .. } => Space::Interval { low: *low, high: *high, log: false, int: None },
        Domain::LogUniform { low, high, .. } => {
            Space::Interval { low: low.ln(), high: high.ln(), log: true, int: None }
        }
        Domain::Int { low, high, step } => Space::Interval {
            low: *low as f64 - 0.5,
            high: *high as f64 + 0.5,
            log: false,
            int: Some((*low, *high, step.unwrap_or(1).max(1))),
        },
    }
}

/// Candidates drawn from l(x) per parameter (Optuna's default).
const CANDIDATES: usize = 24;
/// The share of trials counted as good.
const GAMMA: f64 = 0.25;

fn tpe(
    domains: &BTreeMap<String, Domain>,
    history: &[Observation],
    goal: Goal,
    rng: &mut ChaCha8Rng,
) -> BTreeMap<String, Value> {
    let mut sorted: Vec<&Observation> = history.iter().collect();
    sorted.sort_by(|a, b| goal.as_loss(a.objective).total_cmp(&goal.as_loss(b.objective)));
    let n_good = ((GAMMA * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len() - 1);
    let (good, bad) = sorted.split_at(n_good);
    let mut out = BTreeMap::new();
    for (name, domain) in domains {
        let sp = space(domain);
        let pick = |set: &[&Observation]| -> Vec<f64> {
            set.iter().filter_map(|o| o.params.get(name)).filter_map(|v| coordinate(&sp, v)).collect()
        };
        let (xg, xb) = (pick(good), pick(bad));
        let value = match &sp {
            Space::Interval { low, high, log, int } => {
                let l = Parzen::new(&xg, *low, *high);
                let g = Parzen::new(&xb, *low, *high);
                let best = (0..CANDIDATES)
                    .map(|_| l.sample(rng))
                    .max_by(|a, b| {
                        (l.log_pdf(*a) - g.log_pdf(*a)).total_cmp(&(l.log_pdf(*b) - g.log_pdf(*b)))
                    })
                    .unwrap_or((low + high) / 2.0);
                match int {
                    Some((lo, hi, step)) => {
                        let k = ((best - *lo as f64) / *step as f64).round() as i64;
                        Value::from((lo + k * step).clamp(*lo, *hi))
                    }
                    None if *log => Value::from(best.exp()),
                    None => Value::from(best),
                }
            }
            Space::Categories(values) => {
                let k = values.len();
                let weights = |xs: &[f64]| -> Vec<f64> {
                    let mut w = vec![1.0; k];
                    for x in xs {
                        w[*x as usize] += 1.0;
                    }
                    let total: f64 = w.iter().sum();
                    w.into_iter().map(|c| c / total).collect()
                };
                let (wl, wg) = (weights(&xg), weights(&xb));
                let best = (0..CANDIDATES)
                    .map(|_| sample_weighted(&wl, rng))
                    .max_by(|a, b| (wl[*a] / wg[*a]).total_cmp(&(wl[*b] / wg[*b])))
                    .unwrap_or(0);
                values[best].clone()
            }
        };
        out.insert(name.clone(), value);
    }
    out
}

/// A value's coordinate in the TPE space (a list value's index).
fn coordinate(sp: &Space, v: &Value) -> Option<f64> {
    match sp {
        Space::Categories(values) => values.iter().position(|c| c == v).map(|i| i as f64),
        Space::Interval { log: true, .. } => v.as_f64().filter(|x| *x > 0.0).map(f64::ln),
        Space::Interval { .. } => v.as_f64(),
    }
}

fn sample_weighted(w: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let mut u: f64 = rng.random();
    for (i, p) in w.iter().enumerate() {
        if u < *p {
            return i;
        }
        u -= p;
    }
    w.len() - 1
}

/// A Parzen window estimator on [low, high]: Gaussians truncated to the interval at each
/// observation plus the prior (one wide Gaussian at the middle), equally weighted.
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    low: f64,
    high: f64,
}

impl Parzen {
    fn new(xs: &[f64], low: f64, high: f64) -> Self {
        let width = (high - low).max(f64::MIN_POSITIVE);
        let mut mus: Vec<f64> = xs.iter().map(|x| x.clamp(low, high)).collect();
        mus.push((low + high) / 2.0);
        mus.sort_by(f64::total_cmp);
        let n = mus.len();
        // Each kernel is as wide as the larger gap to its neighbours (the edges count as
        // neighbours), clipped as Optuna clips it; the prior spans the whole interval.
        let min_sigma = width / (100.0f64).min(1.0 + n as f64);
        let mut sigmas: Vec<f64> = (0..n)
            .map(|i| {
                let left = if i == 0 { mus[i] - low } else { mus[i] - mus[i - 1] };
                let right = if i + 1 == n { high - mus[i] } else { mus[i + 1] - mus[i] };
                left.max(right).clamp(min_sigma, width)
            })
            .collect();
        let prior = mus.iter().position(|m| *m == (low + high) / 2.0).unwrap_or(0);
        sigmas[prior] = width;
        Parzen { mus, sigmas, low, high }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        let i = rng.random_range(0..self.mus.len());
        for _ in 0..64 {
            let z: f64 = rng.sample(rand_distr::StandardNormal);
            let x = self.mus[i] + self.sigmas[i] * z;
            if (self.low..=self.high).contains(&x) {
                return x;
            }
        }
        self.mus[i]
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let n = self.mus.len() as f64;
        let p: f64 = self
            .mus
            .iter()
            .zip(&self.sigmas)
            .map(|(mu, s)| {
                let mass = phi((self.high - mu) / s) - phi((self.low - mu) / s);
                let z = (x - mu) / s;
                (-0.5 * z * z).exp() / (s * (2.0 * std::f64::consts::PI).sqrt() * mass.max(1e-12))
            })
            .sum::<f64>()
            / n;
        p.max(1e-300).ln()
    }
}

/// The standard normal CDF.
fn phi(z: f64) -> f64 {
    0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> BTreeMap<String, Domain> {
        let mut d = BTreeMap::new();
        d.insert("optimizer.lr".into(), Domain::LogUniform { low: 1e-4, high: 1e-1, steps: Some(3) });
        d.insert("model.hidden".into(), Domain::List(vec![serde_json::json!([32]), serde_json::json!([64])]));
        d
    }

    #[test]
    fn grid_enumerates_every_combination_once() {
        let d = domains();
        assert_eq!(grid_size(&d), 6);
        let points: Vec<_> = (0..6).map(|i| propose(&Method::Grid, &d, i, &[], Goal::Max).unwrap()).collect();
        for (i, a) in points.iter().enumerate() {
            for b in &points[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(propose(&Method::Grid, &d, 6, &[], Goal::Max).is_none());
    }

    #[test]
    fn random_is_reproducible_per_trial_and_inside_the_domains() {
        let d = domains();
        let m = Method::Random { seed: 3 };
        for i in 0..50 {
            let a = propose(&m, &d, i, &[], Goal::Max).unwrap();
            assert_eq!(a, propose(&m, &d, i, &[], Goal::Max).unwrap());
            let lr = a["optimizer.lr"].as_f64().unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
        }
        assert_ne!(propose(&m, &d, 0, &[], Goal::Max), propose(&m, &d, 1, &[], Goal::Max));
    }

    #[test]
    fn tpe_concentrates_near_the_optimum_faster_than_random() {
        // A 1-d objective with its optimum at x = 0.8 on [0, 1]: after 20 startup-plus-TPE
        // trials, TPE's later proposals lie nearer 0.8 than random draws do on average.
        let mut d = BTreeMap::new();
        d.insert("x".to_string(), Domain::Range { low: 0.0, high: 1.0, steps: None });
        let f = |x: f64| -(x - 0.8).powi(2);
        let run = |method: &Method| {
            let mut hist: Vec<Observation> = Vec::new();
            for i in 0..40 {
                let p = propose(method, &d, i, &hist, Goal::Max).unwrap();
                let x = p["x"].as_f64().unwrap();
                hist.push(Observation { params: p, objective: f(x) });
            }
            hist[20..].iter().map(|o| (o.params["x"].as_f64().unwrap() - 0.8).abs()).sum::<f64>() / 20.0
        };
        let tpe = run(&Method::Tpe { seed: 1, startup: 8 });
        let random = run(&Method::Random { seed: 1 });
        assert!(tpe < random * 0.6, "TPE mean distance {tpe:.3} vs random {random:.3}");
    }
}
