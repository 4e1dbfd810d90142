//! Membership inference: how much a trained model gives away about which examples it was trained
//! on. The attack is the loss threshold of Yeom et al. (2018): an example whose loss is below a
//! threshold is guessed to be a training member. Reported as the attacker's advantage (the best
//! true-positive rate minus false-positive rate over all thresholds), the ROC AUC, and the
//! true-positive rate at a 0.1% false-positive rate (Carlini et al., 2022), on as many training
//! members as held-out examples.

use candle_core::{D, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ml::data::preprocess::Prepared;
use crate::ml::model::Network;

/// The result of the loss-threshold attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembershipReport {
    pub attack: String,
    /// max over thresholds of TPR − FPR; 0 means the attacker does no better than chance.
    pub advantage: f64,
    pub auc: f64,
    /// TPR at FPR ≤ 0.1% (0 when even the lowest held-out loss is beaten by no member).
    pub tpr_at_0_1pct_fpr: f64,
    /// Examples on each side.
    pub members: usize,
    pub non_members: usize,
    /// Mean loss of each side.
    pub member_loss: f64,
    pub non_member_loss: f64,
}

/// Cross-entropy of every example.
pub fn per_example_losses(net: &Network, data: &Prepared) -> Result<Vec<f64>> {
    let n = data.labels.len();
    let idx: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(n);
    for chunk in idx.chunks(512) {
        let x = data.features.batch(chunk, net.device())?;
        let y = Tensor::from_vec(
            chunk.iter().map(|&i| data.labels[i]).collect::<Vec<u32>>(),
            (chunk.len(), 1),
            net.device(),
        )?;
        let logp = candle_nn::ops::log_softmax(&net.forward(&x, None)?, D::Minus1)?;
        let picked = logp.gather(&y, 1)?.squeeze(1)?.to_vec1::<f32>()?;
        out.extend(picked.into_iter().map(|v| -(v as f64)));
    }
    Ok(out)
}

/// Runs the attack on member and non-member losses (the larger side is cut to the smaller, taking
/// evenly spaced examples so the choice is deterministic).
pub fn loss_threshold_attack(members: &[f64], non_members: &[f64]) -> MembershipReport {
    let n = members.len().min(non_members.len());
    let pick = |v: &[f64]| -> Vec<f64> { (0..n).map(|i| v[i * v.len() / n.max(1)]).collect() };
    let (m, nm) = (pick(members), pick(non_members));
    // Scores: lower loss = more likely a member. Sweep thresholds over all losses.
    let mut all: Vec<(f64, bool)> =
        m.iter().map(|&l| (l, true)).chain(nm.iter().map(|&l| (l, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut advantage = 0.0f64;
    let mut tpr_low = 0.0f64;
    let mut auc = 0.0f64;
    let mut prev_fpr = 0.0;
    let mut prev_tpr = 0.0;
    let mut i = 0;
    while i < all.len() {
        // Ties move together: a threshold cannot split equal losses.
        let v = all[i].0;
        while i < all.len() && all[i].0 == v {
            if all[i].1 {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        let tpr = tp as f64 / n.max(1) as f64;
        let fpr = fp as f64 / n.max(1) as f64;
        advantage = advantage.max(tpr - fpr);
        if fpr <= 0.001 {
            tpr_low = tpr_low.max(tpr);
        }
        auc += (fpr - prev_fpr) * (tpr + prev_tpr) / 2.0;
        prev_fpr = fpr;
        prev_tpr = tpr;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    MembershipReport {
        attack: "loss threshold (Yeom et al., 2018)".into(),
        advantage,
        auc,
        tpr_at_0_1pct_fpr: tpr_low,
        members: n,
        non_members: n,
        member_loss: mean(&m),
        non_member_loss: mean(&nm),
    }
}

/// The attack on a trained network: training split against the test split.
pub fn report(net: &Network, train: &Prepared, held_out: &Prepared) -> Result<MembershipReport> {
    Ok(loss_threshold_attack(&per_example_losses(net, train)?, &per_example_losses(net, held_out)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_losses_give_full_advantage_and_equal_ones_none() {
        let r = loss_threshold_attack(&[0.01, 0.02, 0.03], &[1.0, 2.0, 3.0]);
        assert_eq!((r.advantage, r.auc, r.tpr_at_0_1pct_fpr), (1.0, 1.0, 1.0));
        let r = loss_threshold_attack(&[0.5, 0.5, 0.5], &[0.5, 0.5, 0.5]);
        assert_eq!(r.advantage, 0.0);
        assert!((r.auc - 0.5).abs() < 1e-12);
    }

    #[test]
    fn matches_a_hand_computed_roc() {
        // members 1, 3, 5; non-members 2, 4, 6. Thresholds after each value:
        // (tpr, fpr) = (1/3, 0), (1/3, 1/3), (2/3, 1/3), (2/3, 2/3), (1, 2/3), (1, 1)
        // advantage = 1/3; AUC = 1/3·1/3 + 1/3·2/3 + 1/3·1 ... by trapezoids = 6/9 = 0.6667
        let r = loss_threshold_attack(&[1.0, 3.0, 5.0], &[2.0, 4.0, 6.0]);
        assert!((r.advantage - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.auc - 2.0 / 3.0).abs() < 1e-12, "{}", r.auc);
        assert!((r.tpr_at_0_1pct_fpr - 1.0 / 3.0).abs() < 1e-12);
    }
}
