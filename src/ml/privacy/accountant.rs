//! The RDP accountant for the sampled Gaussian mechanism (Mironov et al., 2019), with the
//! RDP-to-(ε, δ) conversion of Balle et al. (2020, Theorem 21), as Opacus computes it: the same
//! orders, the same series for fractional orders, the same σ search. The tests check Opacus'
//! own numbers.

/// Opacus' default orders: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.
pub fn default_orders() -> Vec<f64> {
    let mut v: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    v.extend((12..64).map(|x| x as f64));
    v
}

fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY { b } else { (a - b).exp().ln_1p() + b }
}

fn log_sub(x: f64, y: f64) -> f64 {
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x == y {
        return f64::NEG_INFINITY;
    }
    let d = (x - y).exp_m1();
    if d.is_finite() { d.ln() + y } else { x }
}

/// ln(erfc(x)), accurate where erfc underflows (large x) through its asymptotic series.
fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        return libm::erfc(x).ln();
    }
    // erfc(x) ~ exp(-x²) / (x √π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶))
    let x2 = x * x;
    let series = 1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2);
    -x2 - (x * std::f64::consts::PI.sqrt()).ln() + series.ln()
}

fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    // ln C(alpha, i), built up term by term.
    let mut log_binom = 0.0;
    for i in 0..=alpha {
        if i > 0 {
            log_binom += ((alpha - i + 1) as f64).ln() - (i as f64).ln();
        }
        let i_f = i as f64;
        let log_coef = log_binom + i_f * q.ln() + (alpha as f64 - i_f) * (1.0 - q).ln();
        log_a = log_add(log_a, log_coef + (i_f * i_f - i_f) / (2.0 * sigma * sigma));
    }
    log_a
}

fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    // The generalised binomial coefficient C(alpha, i), updated by one factor per term.
    let mut coef = 1.0f64;
    let mut i = 0u64;
    loop {
        let i_f = i as f64;
        let j = alpha - i_f;
        let log_coef = coef.abs().ln();
        let log_t0 = log_coef + i_f * q.ln() + j * (1.0 - q).ln();
        let log_t1 = log_coef + j * q.ln() + i_f * (1.0 - q).ln();
        let log_e0 = 0.5f64.ln() + log_erfc((i_f - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (i_f * i_f - i_f) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if coef > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        coef *= (alpha - i_f) / (i_f + 1.0);
        i += 1;
        if log_s0.max(log_s1) < -30.0 || i > 100_000 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// RDP of one step of the sampled Gaussian mechanism at `alpha`.
fn rdp_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a =
        if alpha.fract() == 0.0 { log_a_int(q, sigma, alpha as u64) } else { log_a_frac(q, sigma, alpha) };
    log_a / (alpha - 1.0)
}

/// RDP after `steps` steps at sample rate `q` and noise multiplier `sigma`, per order.
pub fn compute_rdp(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Vec<f64> {
    orders.iter().map(|&a| rdp_step(q, sigma, a) * steps as f64).collect()
}

/// The smallest ε over the orders for a given δ, and the order that gives it.
pub fn epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = r - (delta.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        if eps.is_finite() && eps < best.0 {
            best = (eps, a);
        }
    }
    best
}

/// ε spent after `steps` of DP-SGD.
pub fn epsilon_for(sigma: f64, q: f64, steps: u64, delta: f64) -> f64 {
    let orders = default_orders();
    epsilon(&orders, &compute_rdp(q, sigma, steps, &orders), delta).0
}

/// Why a σ cannot be found.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetTooLow(pub f64);

/// The noise multiplier that spends at most `target_epsilon` over `steps` steps: Opacus'
/// search (double σ until ε is under target, then bisect until within 0.01).
pub fn sigma_for(target_epsilon: f64, delta: f64, q: f64, steps: u64) -> Result<f64, BudgetTooLow> {
    const MAX_SIGMA: f64 = 1e6;
    let (mut low, mut high) = (0.0f64, 10.0f64);
    let mut eps_high = f64::INFINITY;
    while eps_high > target_epsilon {
        high *= 2.0;
        eps_high = epsilon_for(high, q, steps, delta);
        if high > MAX_SIGMA {
            return Err(BudgetTooLow(target_epsilon));
        }
    }
    while target_epsilon - eps_high > 0.01 {
        let mid = (low + high) / 2.0;
        let eps = epsilon_for(mid, q, steps, delta);
        if eps < target_epsilon {
            high = mid;
            eps_high = eps;
        } else {
            low = mid;
        }
    }
    Ok(high)
}

/// Steps in `epochs` epochs at sample rate `q`, as Opacus counts them.
pub fn steps_for_epochs(epochs: f64, q: f64) -> u64 {
    (epochs / q) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference (Opacus 1.6.0):
    //   from opacus.accountants.analysis import rdp
    //   from opacus.accountants import RDPAccountant
    //   o = RDPAccountant.DEFAULT_ALPHAS
    //   rdp.get_privacy_spent(orders=o, rdp=rdp.compute_rdp(q=0.04, noise_multiplier=1.5,
    //       steps=2250, orders=o), delta=1e-5)              -> (7.3291111714386545, 3.9)
    //   from opacus.accountants.utils import get_noise_multiplier
    //   get_noise_multiplier(target_epsilon=8, target_delta=1e-5, sample_rate=0.04,
    //       epochs=90, accountant="rdp")                     -> 1.416015625
    #[test]
    fn matches_opacus_epsilon() {
        let orders = default_orders();
        assert_eq!(orders.len(), 151);
        let (eps, order) = epsilon(&orders, &compute_rdp(0.04, 1.5, 2250, &orders), 1e-5);
        assert!((eps - 7.3291111714386545).abs() < 1e-9, "{eps}");
        assert_eq!(order, 3.9);
        assert_eq!(format!("{eps:.3}"), "7.329");
    }

    #[test]
    fn matches_opacus_sigma_search() {
        let sigma = sigma_for(8.0, 1e-5, 0.04, steps_for_epochs(90.0, 0.04)).unwrap();
        assert_eq!(sigma, 1.416015625);
        assert!((sigma - 1.416).abs() < 0.01);
    }

    #[test]
    fn more_noise_spends_less_and_no_sampling_is_plain_gaussian() {
        assert!(epsilon_for(2.0, 0.01, 1000, 1e-5) < epsilon_for(1.0, 0.01, 1000, 1e-5));
        // q = 1: RDP(α) = α / (2σ²) per step.
        let r = compute_rdp(1.0, 2.0, 3, &[2.0]);
        assert!((r[0] - 3.0 * 2.0 / 8.0).abs() < 1e-12);
        assert_eq!(sigma_for(1e-9, 1e-5, 0.5, 1000), Err(BudgetTooLow(1e-9)));
    }
}
