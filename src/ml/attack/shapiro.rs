//! The Shapiro–Wilk test of normality, by Royston's algorithm (AS R94, 1995), as SciPy's
//! `scipy.stats.shapiro` computes it: the coefficients from the normal scores, W, and its
//! p-value from Royston's normalising transformation (a separate one for n ≤ 11). The normal
//! quantile and tail come from `statrs` (SciPy uses the AS 111 and AS 66 approximations of them,
//! accurate to about 1e-7, which is the order of the differences from SciPy's values). PRADA
//! runs it on the distances between a client's queries.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::error::{Error, Result};

/// A test's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapiroWilk {
    /// The statistic, in (0, 1]; near 1 for normal data.
    pub w: f64,
    /// The probability of a W this small for normal data.
    pub p_value: f64,
}

/// `c[0] + c[1] x + c[2] x² + ...`.
fn poly(c: &[f64], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
}

fn standard_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("the standard normal's parameters are valid")
}

/// The test's coefficients `a` for `n` values (the first n/2; the rest are their negatives).
fn coefficients(n: usize) -> Vec<f64> {
    let half = n / 2;
    if n == 3 {
        return vec![std::f64::consts::FRAC_1_SQRT_2];
    }
    const C1: [f64; 6] = [0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056];
    const C2: [f64; 6] = [0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633];
    let normal = standard_normal();
    let an = n as f64;
    let an25 = an + 0.25;
    // Blom's approximation of the expected normal order statistics (the smallest half).
    let mut m: Vec<f64> = (0..half).map(|i| normal.inverse_cdf((i as f64 + 1.0 - 0.375) / an25)).collect();
    let summ2 = 2.0 * m.iter().map(|v| v * v).sum::<f64>();
    let ssumm2 = summ2.sqrt();
    let rsn = 1.0 / an.sqrt();
    let a1 = poly(&C1, rsn) - m[0] / ssumm2;
    let (first, fac) = if n > 5 {
        let a2 = -m[1] / ssumm2 + poly(&C2, rsn);
        let fac =
            ((summ2 - 2.0 * m[0] * m[0] - 2.0 * m[1] * m[1]) / (1.0 - 2.0 * a1 * a1 - 2.0 * a2 * a2)).sqrt();
        m[1] = a2;
        (2, fac)
    } else {
        (1, ((summ2 - 2.0 * m[0] * m[0]) / (1.0 - 2.0 * a1 * a1)).sqrt())
    };
    m[0] = a1;
    for v in m.iter_mut().skip(first) {
        *v = -*v / fac;
    }
    m
}

/// Tests whether `values` look drawn from a normal distribution. Needs at least 3 finite values
/// that are not all equal; beyond 5,000 values the p-value is less accurate (as SciPy warns).
pub fn shapiro_wilk(values: &[f64]) -> Result<ShapiroWilk> {
    let n = values.len();
    if n < 3 {
        return Err(Error::unsuitable(format!("the Shapiro-Wilk test needs at least 3 values, not {n}")));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::unsuitable(format!("value {i} ({}) is not a finite number", values[i])));
    }
    let mut x = values.to_vec();
    x.sort_by(|a, b| a.total_cmp(b));
    // Location does not change W; centring on the median keeps the sums well conditioned, as
    // SciPy does.
    let median = x[n / 2];
    for v in &mut x {
        *v -= median;
    }
    let range = x[n - 1] - x[0];
    if range < 1e-19 {
        return Err(Error::unsuitable("all values are equal: normality cannot be tested"));
    }
    let a = coefficients(n);
    // The coefficient of order statistic i (0-based): -a[i] in the lower half, a[n-1-i] in the
    // upper, 0 for the middle of an odd n.
    let coef = |i: usize| -> f64 {
        let j = n - 1 - i;
        match i.cmp(&j) {
            std::cmp::Ordering::Less => -a[i],
            std::cmp::Ordering::Greater => a[j],
            std::cmp::Ordering::Equal => 0.0,
        }
    };
    let an = n as f64;
    let sa = (0..n).map(coef).sum::<f64>() / an;
    let sx = x.iter().map(|v| v / range).sum::<f64>() / an;
    let (mut ssa, mut ssx, mut sax) = (0.0, 0.0, 0.0);
    for (i, v) in x.iter().enumerate() {
        let asa = coef(i) - sa;
        let xsx = v / range - sx;
        ssa += asa * asa;
        ssx += xsx * xsx;
        sax += asa * xsx;
    }
    let ssassx = (ssa * ssx).sqrt();
    let w1 = (ssassx - sax) * (ssassx + sax) / (ssa * ssx);
    let w = 1.0 - w1;

    if n == 3 {
        // Exact: W >= 3/4 in theory; rounding can dip below.
        if w < 0.75 {
            return Ok(ShapiroWilk { w: 0.75, p_value: 0.0 });
        }
        let p = 1.0 - 6.0 / std::f64::consts::PI * w.sqrt().acos();
        return Ok(ShapiroWilk { w, p_value: p });
    }
    const C3: [f64; 4] = [0.5440, -0.39978, 0.025054, -6.714e-4];
    const C4: [f64; 4] = [1.3822, -0.77857, 0.062767, -0.0020322];
    const C5: [f64; 4] = [-1.5861, -0.31082, -0.083751, 0.0038915];
    const C6: [f64; 3] = [-0.4803, -0.082676, 0.0030302];
    const G: [f64; 2] = [-2.273, 0.459];
    let mut y = w1.ln();
    let (m, s) = if n <= 11 {
        let gamma = poly(&G, an);
        if y >= gamma {
            return Ok(ShapiroWilk { w, p_value: 1e-19 });
        }
        y = -(gamma - y).ln();
        (poly(&C3, an), poly(&C4, an).exp())
    } else {
        let ln = an.ln();
        (poly(&C5, ln), poly(&C6, ln).exp())
    };
    let p_value = standard_normal().sf((y - m) / s);
    Ok(ShapiroWilk { w, p_value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomials_have_the_constant_first() {
        assert_eq!(poly(&[1.0, 2.0, 3.0], 2.0), 1.0 + 4.0 + 12.0);
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        assert!(shapiro_wilk(&[1.0, 2.0]).unwrap_err().to_string().contains("at least 3"));
        assert!(shapiro_wilk(&[1.0, f64::NAN, 2.0]).unwrap_err().to_string().contains("value 1"));
        assert!(shapiro_wilk(&[2.0; 10]).unwrap_err().to_string().contains("all values are equal"));
    }
}
