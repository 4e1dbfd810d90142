//! Attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers"): how
//! much of the pooled representation flows from each input token through every layer's
//! attention. Each layer's attention is averaged over its heads, the identity added for the
//! residual connection and the rows renormalised (`Â = (A + I) / 2`, rows summing to 1), and
//! the layers multiplied through, `R = Â_L ⋯ Â_1`. A token's score is the row of `R` the
//! classifier reads: the CLS position's, or the mean of the real tokens' rows for mean pooling.
//! Scores are shares (they sum to 1 over the tokens) and say nothing about a class: the same
//! for every target, unlike the gradient methods.
//!
//! This file reads [`Network::attention_maps`] only; it knows nothing of the layers. The test
//! against a hand computation is in `tests/explain.rs`.

use candle_core::{D, DType, Tensor};

use crate::error::{Error, Result};
use crate::ml::model::{AttentionMaps, Network};
use crate::ml::spec::Pooling;

/// The rollout `R = Â_L ⋯ Â_1` `(B, L, L)` of per-layer attention `(B, heads, L, L)`, first
/// layer first, with `Â = (mean over heads + I) / 2`, rows renormalised.
pub fn rollout(layers: &[Tensor]) -> Result<Tensor> {
    let mut r: Option<Tensor> = None;
    for a in layers {
        let (b, _, l, _) = a.dims4()?;
        let eye = Tensor::eye(l, DType::F32, a.device())?.unsqueeze(0)?.broadcast_as((b, l, l))?;
        let mixed = ((a.mean(1)? + eye)? * 0.5)?;
        let mixed = mixed.broadcast_div(&mixed.sum_keepdim(D::Minus1)?)?;
        r = Some(match r {
            None => mixed,
            Some(below) => mixed.matmul(&below)?,
        });
    }
    r.ok_or_else(|| Error::unsuitable("attention rollout needs at least one attention layer"))
}

/// Each input's rollout scores, one per value of the input as the network takes it: per token
/// for text (0 for padding); for a numeric sequence read in patches, each value of a patch gets
/// an equal part of the patch's score.
pub fn scores(net: &Network, inputs: &Tensor) -> Result<Vec<Vec<f32>>> {
    let maps = net.attention_maps(inputs)?.ok_or_else(|| {
        Error::argument(format!(
            "attention rollout needs an attention model (transformer or pretrained); this run's model \
             is {}: use ig, saliency, grad-input, smoothgrad or occlusion",
            net.spec.kind()
        ))
    })?;
    let per_position = pooled_rollout(&maps)?;
    if net.takes_tokens() {
        return Ok(per_position);
    }
    // A numeric sequence (B, steps, features): spread each patch's score over its values.
    let features = inputs.dim(D::Minus1)?;
    let share = (maps.patch * features) as f32;
    Ok(per_position
        .into_iter()
        .map(|p| p.iter().flat_map(|&s| std::iter::repeat_n(s / share, maps.patch * features)).collect())
        .collect())
}

/// The row of the rollout the classifier reads, per input position (the prepended CLS vector
/// left out), 0 at padding.
pub fn pooled_rollout(maps: &AttentionMaps) -> Result<Vec<Vec<f32>>> {
    let r = rollout(&maps.layers)?;
    let row = match maps.pooling {
        Pooling::Cls => r.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => {
            let m = maps.mask.unsqueeze(1)?;
            m.matmul(&r)?.squeeze(1)?.broadcast_div(&maps.mask.sum_keepdim(1)?.clamp(1.0, f64::MAX)?)?
        }
    };
    let l = row.dim(1)? - maps.prepended;
    let row = row.narrow(1, maps.prepended, l)?.mul(&maps.mask.narrow(1, maps.prepended, l)?)?;
    Ok(row.to_vec2::<f32>()?)
}
