//! ASHA's decision at a rung: a trial that reached rung epoch `r` goes on only if its value there
//! is among the best ⌊n/η⌋ of the `n` trials that reached `r` so far (itself included; with fewer
//! than η of them, only the best goes on), as Optuna's `SuccessiveHalvingPruner` and Ray Tune's
//! `ASHAScheduler` decide. Asynchronous: nobody waits for a rung to fill, so a trial is judged by
//! the trials before it, and early trials are judged leniently.

use super::file::Goal;

/// Whether a trial with `value` at a rung continues, given every value recorded at that rung
/// (its own included).
pub fn continues(value: f64, at_rung: &[f64], reduction: usize, goal: Goal) -> bool {
    let mut sorted: Vec<f64> = at_rung.iter().copied().filter(|v| v.is_finite()).collect();
    if !value.is_finite() {
        return false;
    }
    sorted.sort_by(|a, b| goal.as_loss(*a).total_cmp(&goal.as_loss(*b)));
    let keep = (sorted.len() / reduction.max(1)).max(1);
    let cutoff = sorted[keep.min(sorted.len()) - 1];
    !goal.better(cutoff, value)
}

/// The best value of a metric up to and including `epoch`, from a trial's epoch values, or
/// `None` if it has not reached `epoch`.
pub fn value_at(values: &[(usize, f64)], epoch: usize, goal: Goal) -> Option<f64> {
    if !values.iter().any(|(e, _)| *e >= epoch) {
        return None;
    }
    values
        .iter()
        .filter(|(e, _)| *e <= epoch)
        .map(|(_, v)| *v)
        .reduce(|a, b| if goal.better(b, a) { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_top_third_and_the_first_comer() {
        assert!(continues(0.5, &[0.5], 3, Goal::Max));
        // Two at the rung, η = 3: only the better one goes on.
        assert!(!continues(0.4, &[0.5, 0.4], 3, Goal::Max));
        assert!(continues(0.6, &[0.5, 0.6], 3, Goal::Max));
        // Six at the rung: the best two go on.
        let six = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        assert!(continues(0.5, &six, 3, Goal::Max));
        assert!(!continues(0.4, &six, 3, Goal::Max));
        // Losses: lower is better.
        assert!(continues(0.2, &six, 3, Goal::Min));
        assert!(!continues(0.3, &six, 3, Goal::Min));
        assert!(!continues(f64::NAN, &six, 3, Goal::Min));
    }

    #[test]
    fn the_rung_value_is_the_best_so_far_once_the_rung_is_reached() {
        let v = [(1, 0.5), (2, 0.7), (3, 0.6)];
        assert_eq!(value_at(&v, 3, Goal::Max), Some(0.7));
        assert_eq!(value_at(&v, 1, Goal::Max), Some(0.5));
        assert_eq!(value_at(&v, 4, Goal::Max), None);
    }
}
