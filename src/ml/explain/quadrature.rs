//! Quadrature rules for the path integral of integrated gradients: where on the path from the
//! baseline to the input the gradient is taken (`alphas` in [0, 1]) and how much each point
//! weighs. The rules and their names are Captum's (`captum.attr._utils.approximation_methods`),
//! Gauss-Legendre being its default, so that the same settings give the same attributions.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A quadrature rule over [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Gauss-Legendre nodes and weights (Captum's default, `method="gausslegendre"`): exact for
    /// polynomials of degree 2n − 1, so few steps suffice on smooth paths.
    #[default]
    GaussLegendre,
    /// Left Riemann sum: points 0, 1/n, ..., 1 − 1/n, weights 1/n.
    RiemannLeft,
    /// Right Riemann sum: points 1/n, ..., 1, weights 1/n.
    RiemannRight,
    /// Midpoint rule: points 1/(2n), ..., 1 − 1/(2n), weights 1/n.
    RiemannMiddle,
    /// Captum's `riemann_trapezoid`: n points from 0 to 1, weights 1/n halved at both ends (so
    /// the weights add up to (n − 1)/n, as Captum's do).
    RiemannTrapezoid,
}

impl Rule {
    /// The rule's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::GaussLegendre => "gauss-legendre",
            Rule::RiemannLeft => "riemann-left",
            Rule::RiemannRight => "riemann-right",
            Rule::RiemannMiddle => "riemann-middle",
            Rule::RiemannTrapezoid => "riemann-trapezoid",
        }
    }

    /// The rule by name.
    pub fn parse(name: &str) -> Result<Rule> {
        [
            Rule::GaussLegendre,
            Rule::RiemannLeft,
            Rule::RiemannRight,
            Rule::RiemannMiddle,
            Rule::RiemannTrapezoid,
        ]
        .into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| {
            Error::argument(format!(
                "unknown integration rule {name:?}; the rules are gauss-legendre, riemann-left, \
                     riemann-right, riemann-middle, riemann-trapezoid"
            ))
        })
    }

    /// The `n` points on the path (ascending) and their weights.
    pub fn nodes(&self, n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        let least = if *self == Rule::GaussLegendre { 1 } else { 2 };
        if n < least {
            return Err(Error::argument(format!("the {} rule needs at least {least} steps", self.name())));
        }
        let nf = n as f64;
        let linspace = |a: f64, b: f64| -> Vec<f64> {
            (0..n).map(|i| if i + 1 == n { b } else { a + (b - a) * i as f64 / (nf - 1.0) }).collect()
        };
        Ok(match self {
            Rule::GaussLegendre => gauss_legendre(n),
            Rule::RiemannLeft => (linspace(0.0, 1.0 - 1.0 / nf), vec![1.0 / nf; n]),
            Rule::RiemannRight => (linspace(1.0 / nf, 1.0), vec![1.0 / nf; n]),
            Rule::RiemannMiddle => (linspace(0.5 / nf, 1.0 - 0.5 / nf), vec![1.0 / nf; n]),
            Rule::RiemannTrapezoid => {
                let mut w = vec![1.0 / nf; n];
                w[0] /= 2.0;
                w[n - 1] /= 2.0;
                (linspace(0.0, 1.0), w)
            }
        })
    }
}

/// Gauss-Legendre nodes and weights on [0, 1], nodes ascending, as NumPy's `leggauss` rescaled
/// the way Captum does.
///
/// Written here rather than taken from the `gauss-quad` crate, which would bring in nalgebra
/// for what is a Newton iteration on the Legendre recurrence (Numerical Recipes' `gauleg`),
/// converging to machine precision in a few steps for the step counts used here.
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    let nf = n as f64;
    for i in 0..n.div_ceil(2) {
        // Tricomi's initial guess for the i-th largest root.
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (nf + 0.5)).cos();
        let mut derivative = 1.0;
        for _ in 0..100 {
            let (p, dp) = legendre(n, x);
            derivative = dp;
            let dx = p / dp;
            x -= dx;
            if dx.abs() < 1e-15 {
                break;
            }
        }
        let (_, dp) = legendre(n, x);
        if dp.is_finite() {
            derivative = dp;
        }
        let w = 2.0 / ((1.0 - x * x) * derivative * derivative);
        // Roots come in ± pairs; x is the larger of the pair.
        nodes[n - 1 - i] = 0.5 * (1.0 + x);
        nodes[i] = 0.5 * (1.0 - x);
        weights[n - 1 - i] = 0.5 * w;
        weights[i] = 0.5 * w;
    }
    (nodes, weights)
}

/// P_n(x) and its derivative, by the three-term recurrence.
fn legendre(n: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    for k in 2..=n {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    let p = if n == 0 { 1.0 } else { p1 };
    let prev = if n == 0 { 0.0 } else { p0 };
    (p, n as f64 * (x * p - prev) / (x * x - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference (NumPy 2.4):
    //   x, w = np.polynomial.legendre.leggauss(n); 0.5 * (1 + x), 0.5 * w
    #[test]
    fn gauss_legendre_matches_numpy() {
        let (x, w) = Rule::GaussLegendre.nodes(5).unwrap();
        let want_x = [0.04691007703066802, 0.23076534494715845, 0.5, 0.7692346550528415, 0.9530899229693319];
        let want_w = [
            0.11846344252809464,
            0.23931433524968315,
            0.28444444444444433,
            0.23931433524968315,
            0.11846344252809464,
        ];
        for i in 0..5 {
            assert!((x[i] - want_x[i]).abs() < 1e-14, "{x:?}");
            assert!((w[i] - want_w[i]).abs() < 1e-14, "{w:?}");
        }
        let (x, w) = Rule::GaussLegendre.nodes(1).unwrap();
        assert_eq!((x, w), (vec![0.5], vec![1.0]));
        let (x, w) = Rule::GaussLegendre.nodes(50).unwrap();
        assert!((x[0] - 0.0005667977899644905).abs() < 1e-14);
        assert!((w[0] - 0.0014543112765789633).abs() < 1e-14);
        assert!((x[24] - 0.48445083083640555).abs() < 1e-14);
        assert!((w[24] - 0.031088308327673515).abs() < 1e-14);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-13);
        // Exact for a polynomial of degree 2n - 1: ∫₀¹ x^99 dx = 1/100.
        let integral: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(99)).sum();
        assert!((integral - 0.01).abs() < 1e-13, "{integral}");
    }

    // Reference: captum.attr._utils.approximation_methods.riemann_builders, n = 4.
    #[test]
    fn riemann_rules_match_captum() {
        let (x, w) = Rule::RiemannLeft.nodes(4).unwrap();
        assert_eq!(x, vec![0.0, 0.25, 0.5, 0.75]);
        assert_eq!(w, vec![0.25; 4]);
        let (x, _) = Rule::RiemannRight.nodes(4).unwrap();
        assert_eq!(x, vec![0.25, 0.5, 0.75, 1.0]);
        let (x, _) = Rule::RiemannMiddle.nodes(4).unwrap();
        assert_eq!(x, vec![0.125, 0.375, 0.625, 0.875]);
        let (x, w) = Rule::RiemannTrapezoid.nodes(4).unwrap();
        assert!((x[1] - 1.0 / 3.0).abs() < 1e-15 && x[3] == 1.0);
        assert_eq!(w, vec![0.125, 0.25, 0.25, 0.125]);
        assert!(Rule::RiemannLeft.nodes(1).is_err());
        assert!(Rule::parse("simpson").unwrap_err().to_string().contains("gauss-legendre"));
    }
}
