//! Timing of one explanation, for `vigil explain --bench`: warm-up runs, then timed repeats,
//! reported as median, minimum and maximum. Figures are printed, never asserted in tests.

use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Explainer, Explanation, Method};
use crate::error::Result;

/// Wall-clock figures of one explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub repeats: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Threads candle's CPU kernels may use (`CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`,
    /// else the physical cores).
    pub threads: usize,
}

/// Explains `input` `warmup` times untimed, then `repeats` times timed; returns the last
/// explanation and the figures.
pub fn time_explanation(
    explainer: &Explainer,
    input: &Tensor,
    method: &Method,
    targets: Option<&[usize]>,
    warmup: usize,
    repeats: usize,
) -> Result<(Vec<Explanation>, Timing)> {
    let mut last = explainer.explain(input, method, targets)?;
    for _ in 1..warmup {
        last = explainer.explain(input, method, targets)?;
    }
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        last = explainer.explain(input, method, targets)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
    };
    Ok((
        last,
        Timing {
            repeats: times.len(),
            median_ms: median,
            min_ms: times[0],
            max_ms: times[times.len() - 1],
            threads: std::env::var("CANDLE_NUM_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or_else(candle_core::utils::get_num_threads),
        },
    ))
}
