//! Choosing each trial's parameters: a grid in order, seeded random draws, or the
//! Tree-structured Parzen Estimator (Bergstra et al., "Algorithms for Hyper-Parameter
//! Optimization", NeurIPS 2011), univariate as Optuna's default TPE sampler is. TPE is the
//! maintained `tpe` crate (sile/tpe): here is only the mapping of the sweep's domains onto its
//! one-dimensional optimisers (a LogUniform domain in log space, an Int domain on a widened
//! interval rounded back, a List as categories by index) and the split of trials into the best
//! quarter and the rest (`gamma` 0.25, where the crate's default is 0.1, as the sweep had it).
//!
//! Trial `i` always draws from its own random stream (seed, stream `i`), so that a resumed sweep
//! plans exactly the trials the stopped one would have: the optimisers are rebuilt from the
//! finished trials each time, in trial order, and asked with that stream.

use std::collections::BTreeMap;

use rand::{Rng, RngCore, SeedableRng};
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
                // The crate asks with rand 0.10's Rng: its ChaCha8, seeded from this trial's stream.
                let mut rng =
                    <rand_tpe::rngs::ChaCha8Rng as rand_tpe::SeedableRng>::seed_from_u64(rng.next_u64());
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
        // Each integer owns the unit around it, so that the ends are as likely as the middle.
        Domain::Int { low, high, step } => Space::Interval {
            low: *low as f64 - 0.5,
            high: *high as f64 + 0.5,
            log: false,
            int: Some((*low, *high, step.unwrap_or(1).max(1))),
        },
    }
}

/// The share of trials counted as good.
const GAMMA: f64 = 0.25;

/// The next trial's parameters by TPE: one optimiser per parameter, told every finished trial
/// (the objective as a loss, since the crate minimises) and asked once.
fn tpe(
    domains: &BTreeMap<String, Domain>,
    history: &[Observation],
    goal: Goal,
    rng: &mut rand_tpe::rngs::ChaCha8Rng,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (name, domain) in domains {
        let sp = space(domain);
        let range = match &sp {
            Space::Interval { low, high, .. } => tpe::range(*low, *high),
            Space::Categories(values) => tpe::categorical_range(values.len()),
        };
        // An interval of one point (low = high) or a single category: nothing to choose.
        let Ok(range) = range else {
            out.insert(name.clone(), draw(domain, &mut stream(0, 0)));
            continue;
        };
        let estimator = match sp {
            Space::Interval { .. } => tpe::parzen_estimator(),
            Space::Categories(_) => tpe::histogram_estimator(),
        };
        let mut optimiser = tpe::TpeOptimizerBuilder::new()
            .gamma(GAMMA)
            .build(estimator, range)
            .expect("gamma is in [0, 1] and there are candidates");
        for o in history {
            let Some(x) = o.params.get(name).and_then(|v| coordinate(&sp, v)) else { continue };
            // The crate's range is half-open: the top of the domain is told as just below it.
            let x = x.clamp(range.start(), range.end().next_down());
            let _ = optimiser.tell(x, goal.as_loss(o.objective));
        }
        let x = optimiser.ask(rng).expect("the estimators build for a non-empty range");
        let value = match &sp {
            Space::Interval { int: Some((lo, hi, step)), .. } => {
                let k = ((x - *lo as f64) / *step as f64).round() as i64;
                Value::from((lo + k * step).clamp(*lo, *hi))
            }
            Space::Interval { log: true, .. } => Value::from(x.exp()),
            Space::Interval { .. } => Value::from(x),
            Space::Categories(values) => values[(x.floor() as usize).min(values.len() - 1)].clone(),
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
    fn tpe_is_reproducible_per_trial_and_inside_the_domains() {
        // A resumed sweep plans the trial the stopped one would have: same seed, same
        // history, same trial number, same proposal, for log, integer and list domains.
        let mut d = domains();
        d.insert("batch".into(), Domain::Int { low: 16, high: 64, step: Some(16) });
        let m = Method::Tpe { seed: 7, startup: 4 };
        let mut hist: Vec<Observation> = Vec::new();
        for i in 0..12 {
            let p = propose(&m, &d, i, &hist, Goal::Max).unwrap();
            assert_eq!(Some(&p), propose(&m, &d, i, &hist, Goal::Max).as_ref());
            let lr = p["optimizer.lr"].as_f64().unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
            assert!([16, 32, 48, 64].contains(&p["batch"].as_i64().unwrap()), "{p:?}");
            assert!(
                p["model.hidden"] == serde_json::json!([32]) || p["model.hidden"] == serde_json::json!([64])
            );
            hist.push(Observation { objective: -(lr.ln() - 0.01f64.ln()).abs(), params: p });
        }
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
