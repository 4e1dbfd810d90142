//! `vigil privacy`: the DP-SGD accountant from the command line, to plan a private run before
//! training it.

use clap::Subcommand;

use super::invalid;
use crate::error::Result;
use crate::ml::privacy::accountant;

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// ε spent by DP-SGD after T steps (RDP accountant, Opacus' orders).
    Epsilon {
        /// Noise multiplier σ (noise standard deviation over the clipping norm).
        #[arg(long)]
        sigma: f64,
        /// Poisson sampling rate q (expected batch size over the data set's size).
        #[arg(long)]
        sample_rate: f64,
        /// Number of steps.
        #[arg(long)]
        steps: u64,
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
    },
    /// The noise multiplier σ that spends at most ε over N epochs.
    Sigma {
        #[arg(long)]
        epsilon: f64,
        #[arg(long)]
        sample_rate: f64,
        #[arg(long)]
        epochs: f64,
        #[arg(long, default_value_t = 1e-5)]
        delta: f64,
    },
}

fn check(name: &str, v: f64, ok: bool, what: &str) -> Result<()> {
    if ok && v.is_finite() { Ok(()) } else { Err(invalid(format!("--{name} {v} must be {what}"))) }
}

pub(super) fn run(cmd: PrivacyCommand) -> Result<()> {
    match cmd {
        PrivacyCommand::Epsilon { sigma, sample_rate, steps, delta } => {
            check("sigma", sigma, sigma > 0.0, "positive")?;
            check("sample-rate", sample_rate, sample_rate > 0.0 && sample_rate <= 1.0, "in (0, 1]")?;
            check("delta", delta, delta > 0.0 && delta < 1.0, "in (0, 1)")?;
            let orders = accountant::default_orders();
            let (eps, order) = accountant::epsilon(
                &orders,
                &accountant::compute_rdp(sample_rate, sigma, steps, &orders),
                delta,
            );
            println!(
                "ε = {eps:.3}  (δ = {delta:e}, σ = {sigma}, q = {sample_rate}, {steps} steps; best RDP order {order})"
            );
        }
        PrivacyCommand::Sigma { epsilon, sample_rate, epochs, delta } => {
            check("epsilon", epsilon, epsilon > 0.0, "positive")?;
            check("sample-rate", sample_rate, sample_rate > 0.0 && sample_rate <= 1.0, "in (0, 1]")?;
            check("epochs", epochs, epochs > 0.0, "positive")?;
            check("delta", delta, delta > 0.0 && delta < 1.0, "in (0, 1)")?;
            let steps = accountant::steps_for_epochs(epochs, sample_rate);
            let sigma = accountant::sigma_for(epsilon, delta, sample_rate, steps).map_err(|e| {
                invalid(format!("no noise multiplier reaches ε = {} (σ would exceed 10⁶)", e.0))
            })?;
            let spent = accountant::epsilon_for(sigma, sample_rate, steps, delta);
            println!(
                "σ = {sigma:.4}  (ε = {spent:.3} ≤ {epsilon}, δ = {delta:e}, q = {sample_rate}, {epochs} epochs = {steps} steps)"
            );
        }
    }
    Ok(())
}
