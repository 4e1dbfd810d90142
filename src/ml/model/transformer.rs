//! The Transformer encoder (Vaswani et al., 2017) over candle ops with autograd: embeddings
//! (tokens, or an input projection for sequences of numbers), learned positions, multi-head
//! self-attention with a padding mask, layer norm, a GELU feed-forward block, residuals, dropout,
//! and CLS or mean pooling. One layer type serves both models trained here (post-norm as
//! PyTorch's `nn.TransformerEncoderLayer` by default, or pre-norm) and BERT-family checkpoints
//! (post-norm, token-type embeddings, a LayerNorm over the embeddings), which load into it by
//! tensor name ([`super::pretrained`]). Parameters are named as Hugging Face's BERT names them,
//! so both kinds of model read and write the same names.
//!
//! On the CPU, attention (scores, padding mask, softmax, dropout, weighted sum) and layer norm
//! run as fused kernels with their own backward passes ([`kernels::attention`],
//! [`kernels::layer_norm`], [`kernels::gelu`]); every linear layer stays a [`Dense`], which uses the fused linear
//! kernel (or a quantised weight). candle's composed ops serve elsewhere and as the tests'
//! reference.

use candle_core::{D, DType, Tensor};
use rand_chacha::ChaCha8Rng;

use super::layers::{Dense, ParamBuilder, dropout, dropout_mask, masked_mean};
use crate::error::Result;
use crate::ml::kernels;
use crate::ml::spec::{NormPlacement, Pooling};

/// A learned affine layer normalisation over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    /// A new layer norm, weight 1 and bias 0, as PyTorch initialises it.
    pub fn new(pb: &mut ParamBuilder, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: pb.ones(&format!("{prefix}.weight"), dim)?,
            bias: pb.bias(&format!("{prefix}.bias"), dim)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's fused layer norm has no backward pass: it serves only where nothing needs a
        // gradient (inference, a frozen encoder); training takes the fused kernel, and the
        // composed form (differentiable anywhere) serves other devices.
        if !x.track_op() && !self.weight.track_op() {
            return Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?);
        }
        if kernels::applies(&[x, &self.weight, &self.bias]) {
            return Ok(kernels::layer_norm(x, &self.weight, &self.bias, self.eps)?);
        }
        let e = x.dim(D::Minus1)? as f64;
        let centred = x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / e)?)?;
        let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / e)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

/// Softmax over the last dimension: candle's fused op where no gradient is needed (it has no
/// backward pass), the composed one otherwise.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?);
    }
    Ok(candle_nn::ops::softmax(x, D::Minus1)?)
}

/// A dense layer applied at every position of `(B, L, in)`.
fn per_position(layer: &Dense, x: &Tensor) -> Result<Tensor> {
    let (b, l, e) = x.dims3()?;
    let y = layer.forward(&x.reshape((b * l, e))?)?;
    Ok(y.reshape((b, l, ()))?)
}

/// One encoder layer: self-attention and a feed-forward block, each with a residual and a
/// layer norm (after the residual for post-norm, before the block for pre-norm).
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub query: Dense,
    pub key: Dense,
    pub value: Dense,
    pub attn_out: Dense,
    pub attn_norm: LayerNorm,
    pub ff_in: Dense,
    pub ff_out: Dense,
    pub ff_norm: LayerNorm,
}

impl EncoderLayer {
    /// A new layer with BERT's parameter names under `prefix` (`encoder.layer.0`).
    pub fn new(pb: &mut ParamBuilder, prefix: &str, dim: usize, ff: usize, eps: f64) -> Result<Self> {
        let d = |pb: &mut ParamBuilder, name: &str, i: usize, o: usize| {
            Dense::new(pb, &format!("{prefix}.{name}"), i, o)
        };
        Ok(EncoderLayer {
            query: d(pb, "attention.self.query", dim, dim)?,
            key: d(pb, "attention.self.key", dim, dim)?,
            value: d(pb, "attention.self.value", dim, dim)?,
            attn_out: d(pb, "attention.output.dense", dim, dim)?,
            attn_norm: LayerNorm::new(pb, &format!("{prefix}.attention.output.LayerNorm"), dim, eps)?,
            ff_in: d(pb, "intermediate.dense", dim, ff)?,
            ff_out: d(pb, "output.dense", ff, dim)?,
            ff_norm: LayerNorm::new(pb, &format!("{prefix}.output.LayerNorm"), dim, eps)?,
        })
    }

    /// The layer's linear layers (Q, K, V, attention output, intermediate, output), the ones
    /// `vigil optimize --quantize` stores quantised.
    pub fn linear(&self) -> [&Dense; 6] {
        [&self.query, &self.key, &self.value, &self.attn_out, &self.ff_in, &self.ff_out]
    }

    /// [`Self::linear`], to change.
    pub fn linear_mut(&mut self) -> [&mut Dense; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attn_out,
            &mut self.ff_in,
            &mut self.ff_out,
        ]
    }

    /// Multi-head self-attention over `x (B, L, E)`; `bias (B, 1, 1, L)` is 0 for real tokens and
    /// a large negative number for padding, so no position attends to padding.
    fn attention(
        &self,
        x: &Tensor,
        bias: &Tensor,
        heads: usize,
        p: f32,
        rng: &mut Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let (b, l, e) = x.dims3()?;
        let hd = e / heads;
        let (q, k, v) =
            (per_position(&self.query, x)?, per_position(&self.key, x)?, per_position(&self.value, x)?);
        if kernels::applies(&[&q, &k, &v, bias]) {
            // The fused kernel; its dropout mask is drawn exactly as `dropout` draws one over
            // the `(B, H, L, L)` probabilities, so a seed gives the same run either way.
            let mask = match rng.as_deref_mut() {
                Some(rng) if p > 0.0 => Some(dropout_mask(rng, b * heads * l * l, p)),
                _ => None,
            };
            let bias = bias.flatten_all()?.to_vec1::<f32>()?;
            let ctx = kernels::attention(&q, &k, &v, heads, bias, mask)?;
            return per_position(&self.attn_out, &ctx);
        }
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, l, heads, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let (q, k, v) = (split(q)?, split(k)?, split(v)?);
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (hd as f64).sqrt())?;
        let probs = softmax_last(&scores.broadcast_add(bias)?)?;
        let probs = dropout(&probs, p, rng.as_deref_mut())?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b, l, e))?;
        per_position(&self.attn_out, &ctx)
    }

    /// The attention probabilities `(B, heads, L, L)` of [`Self::attention`] for its input `x`,
    /// without dropout: softmax(Q Kᵀ / √d + bias) per head. Attention rollout reads them; the
    /// forward pass does not keep them.
    pub fn attention_probs(&self, x: &Tensor, bias: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, l, e) = x.dims3()?;
        let hd = e / heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, l, heads, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(per_position(&self.query, x)?)?;
        let k = split(per_position(&self.key, x)?)?;
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (hd as f64).sqrt())?;
        softmax_last(&scores.broadcast_add(bias)?)
    }

    fn feed_forward(&self, x: &Tensor, p: f32, rng: &mut Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let h = per_position(&self.ff_in, x)?;
        let h = if kernels::applies(&[&h]) { kernels::gelu(&h)? } else { h.gelu_erf()? };
        let h = dropout(&h, p, rng.as_deref_mut())?;
        per_position(&self.ff_out, &h)
    }

    /// The layer's parameters for the fused layer kernel, when it applies to input `x`: f32 on
    /// the CPU, no quantised weight, and (since the kernel's node exists only when `x` tracks
    /// gradients) `x` in the graph whenever a parameter is.
    fn fused_params(&self, x: &Tensor) -> Option<kernels::encoder::LayerParams> {
        let dense = self.linear();
        if dense.iter().any(|d| d.quant.is_some()) {
            return None;
        }
        let [q, k, v, o, f1, f2] = dense;
        let (n1, n2) = (&self.attn_norm, &self.ff_norm);
        let tensors = [
            &q.weight, &q.bias, &k.weight, &k.bias, &v.weight, &v.bias, &o.weight, &o.bias, &n1.weight,
            &n1.bias, &f1.weight, &f1.bias, &f2.weight, &f2.bias, &n2.weight, &n2.bias,
        ];
        let mut all = vec![x];
        all.extend(tensors);
        // A parameter in the graph needs `x` in it too (the kernel's node exists only when `x`
        // tracks gradients), unless nothing is differentiated at all.
        let orphaned = !kernels::wants_grad(x) && tensors.iter().any(|t| kernels::wants_grad(t));
        if !kernels::applies(&all) || orphaned {
            return None;
        }
        Some(kernels::encoder::LayerParams { tensors: tensors.map(Tensor::clone), eps: [n1.eps, n2.eps] })
    }

    /// The layer's output for `x (B, L, E)`.
    pub fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        heads: usize,
        norm: NormPlacement,
        p: f32,
        rng: &mut Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        if let Some(params) = self.fused_params(x) {
            let (b, l, e) = x.dims3()?;
            let ff = self.ff_in.bias.elem_count();
            let masks = match rng.as_deref_mut() {
                // Drawn in the composed layer's order: attention, its output, the GELU, the
                // feed-forward output.
                Some(rng) if p > 0.0 => Some(kernels::encoder::LayerMasks {
                    attn: dropout_mask(rng, b * heads * l * l, p),
                    attn_out: dropout_mask(rng, b * l * e, p),
                    ff: dropout_mask(rng, b * l * ff, p),
                    ff_out: dropout_mask(rng, b * l * e, p),
                }),
                _ => None,
            };
            let bias = bias.flatten_all()?.to_vec1::<f32>()?;
            let pre = norm == NormPlacement::Pre;
            return Ok(kernels::encoder_layer(x, params, heads, bias, pre, masks)?);
        }
        self.forward_composed(x, bias, heads, norm, p, rng)
    }

    /// [`Self::forward`] composed of the separate layers and kernels: on a GPU, for quantised
    /// weights, and as the fused kernel's reference in tests.
    fn forward_composed(
        &self,
        x: &Tensor,
        bias: &Tensor,
        heads: usize,
        norm: NormPlacement,
        p: f32,
        rng: &mut Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        match norm {
            NormPlacement::Post => {
                let a = self.attention(x, bias, heads, p, rng)?;
                let x = self.attn_norm.forward(&(x + dropout(&a, p, rng.as_deref_mut())?)?)?;
                let f = self.feed_forward(&x, p, rng)?;
                self.ff_norm.forward(&(&x + dropout(&f, p, rng.as_deref_mut())?)?)
            }
            NormPlacement::Pre => {
                let a = self.attention(&self.attn_norm.forward(x)?, bias, heads, p, rng)?;
                let x = (x + dropout(&a, p, rng.as_deref_mut())?)?;
                let f = self.feed_forward(&self.ff_norm.forward(&x)?, p, rng)?;
                Ok((&x + dropout(&f, p, rng.as_deref_mut())?)?)
            }
        }
    }
}

/// What turns a model's input into the first layer's input vectors.
#[derive(Debug, Clone)]
pub enum InputEmbedding {
    /// A token id's row of the table `(vocab, E)`.
    Tokens(Tensor),
    /// A linear projection of each step's values (`features → E`), for numeric sequences.
    Projection(Dense),
}

/// A Transformer encoder: embeddings, layers, and pooling into one vector per example.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub input: InputEmbedding,
    /// A learned vector put before the sequence for CLS pooling in a model trained here, whose
    /// inputs carry no [CLS] token of their own. `None` for BERT, whose tokeniser adds one.
    pub cls: Option<Tensor>,
    /// Learned position embeddings `(positions, E)`.
    pub position: Tensor,
    /// BERT's token-type embeddings `(types, E)`; every token is of type 0 here.
    pub token_type: Option<Tensor>,
    /// BERT's LayerNorm over the summed embeddings.
    pub embed_norm: Option<LayerNorm>,
    pub layers: Vec<EncoderLayer>,
    pub heads: usize,
    pub norm: NormPlacement,
    pub pooling: Pooling,
    pub dropout: f32,
    /// Consecutive steps of a numeric sequence read as one token (1 for text).
    pub patch: usize,
}

/// The settings of a new encoder trained from scratch.
#[derive(Debug, Clone, Copy)]
pub struct EncoderShape {
    pub dim: usize,
    pub heads: usize,
    pub layers: usize,
    pub ff: usize,
    /// Longest input sequence (without the CLS vector).
    pub positions: usize,
    pub norm: NormPlacement,
    pub pooling: Pooling,
    pub dropout: f32,
    pub patch: usize,
}

/// PyTorch's `nn.LayerNorm` default.
pub const LAYER_NORM_EPS: f64 = 1e-5;

impl Encoder {
    /// A new encoder over token ids from a vocabulary of `vocab` (`Some`), or over sequences of
    /// `features` numbers a token (`vocab` `None`; `features` counts a whole patch).
    pub fn new(
        pb: &mut ParamBuilder,
        shape: EncoderShape,
        vocab: Option<usize>,
        features: usize,
    ) -> Result<Self> {
        let EncoderShape { dim, heads, layers, ff, positions, norm, pooling, dropout, patch } = shape;
        let input = match vocab {
            Some(v) => {
                InputEmbedding::Tokens(pb.normal("embeddings.word_embeddings.weight", &[v, dim], 0.02)?)
            }
            None => InputEmbedding::Projection(Dense::new(pb, "embeddings.input_projection", features, dim)?),
        };
        let cls = match pooling {
            Pooling::Cls => Some(pb.normal("embeddings.cls", &[1, 1, dim], 0.02)?),
            Pooling::Mean => None,
        };
        let extra = usize::from(cls.is_some());
        let position = pb.normal("embeddings.position_embeddings.weight", &[positions + extra, dim], 0.02)?;
        let layers = (0..layers)
            .map(|i| EncoderLayer::new(pb, &format!("encoder.layer.{i}"), dim, ff, LAYER_NORM_EPS))
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            input,
            cls,
            position,
            token_type: None,
            embed_norm: None,
            layers,
            heads,
            norm,
            pooling,
            dropout,
            patch: patch.max(1),
        })
    }

    /// The model width E.
    pub fn dim(&self) -> usize {
        self.position.dim(1).unwrap_or(0)
    }

    /// Input vectors `(B, L, E)` before positions are added: token embeddings for ids `(B, L)`,
    /// or the projection of a numeric sequence `(B, L, F)`. Attributions for text are taken with
    /// respect to these.
    pub fn embed(&self, x: &Tensor) -> Result<Tensor> {
        match &self.input {
            InputEmbedding::Tokens(table) => {
                let (b, l) = x.dims2()?;
                let e = table.dim(1)?;
                let ids = x.flatten_all()?;
                let rows = if kernels::applies(&[table]) {
                    kernels::embedding(table, ids.to_dtype(DType::U32)?.to_vec1::<u32>()?)?
                } else {
                    table.index_select(&ids, 0)?
                };
                Ok(rows.reshape((b, l, e))?)
            }
            InputEmbedding::Projection(dense) => {
                let (b, l, f) = x.dims3()?;
                let patches = x.reshape((b, l / self.patch, f * self.patch))?;
                per_position(dense, &patches)
            }
        }
    }

    /// Every position's final hidden state `(B, L', E)` and the mask `(B, L')` that goes with it
    /// (`L' = L + 1` with a CLS vector in front), from input vectors `emb (B, L, E)` and the
    /// padding mask `(B, L)`, 1 for real tokens. `rng` turns dropout on.
    pub fn hidden_states(
        &self,
        emb: &Tensor,
        mask: &Tensor,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor)> {
        let (mut h, mask, bias) = self.first_layer_input(emb, mask, rng.as_deref_mut())?;
        for layer in &self.layers {
            h = layer.forward(&h, &bias, self.heads, self.norm, self.dropout, &mut rng)?;
        }
        Ok((h, mask))
    }

    /// Each layer's attention probabilities `(B, heads, L', L')` in evaluation mode, and the
    /// mask `(B, L')` of [`Self::hidden_states`]: what attention rollout multiplies through.
    pub fn attention_maps(&self, emb: &Tensor, mask: &Tensor) -> Result<(Vec<Tensor>, Tensor)> {
        let (mut h, mask, bias) = self.first_layer_input(emb, mask, None)?;
        let mut maps = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let input = match self.norm {
                NormPlacement::Post => h.clone(),
                NormPlacement::Pre => layer.attn_norm.forward(&h)?,
            };
            maps.push(layer.attention_probs(&input, &bias, self.heads)?);
            h = layer.forward(&h, &bias, self.heads, self.norm, 0.0, &mut None)?;
        }
        Ok((maps, mask))
    }

    /// The first layer's input `(B, L', E)` (a CLS vector in front where the model has one,
    /// positions and token types added, normalised, dropout), its mask `(B, L')`, and the
    /// attention bias `(B, 1, 1, L')` that keeps padding from being attended to.
    fn first_layer_input(
        &self,
        emb: &Tensor,
        mask: &Tensor,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, l, e) = emb.dims3()?;
        let (h, mask) = match &self.cls {
            Some(cls) => {
                let ones = Tensor::ones((b, 1), DType::F32, emb.device())?;
                (Tensor::cat(&[&cls.broadcast_as((b, 1, e))?, emb], 1)?, Tensor::cat(&[&ones, mask], 1)?)
            }
            None => (emb.clone(), mask.clone()),
        };
        let positions = h.dim(1)?;
        if positions > self.position.dim(0)? {
            return Err(crate::error::Error::unsuitable(format!(
                "a sequence of {l} exceeds the model's {} positions",
                self.position.dim(0)? - usize::from(self.cls.is_some())
            )));
        }
        let mut h = h.broadcast_add(&self.position.narrow(0, 0, positions)?.unsqueeze(0)?)?;
        if let Some(tt) = &self.token_type {
            h = h.broadcast_add(&tt.narrow(0, 0, 1)?.unsqueeze(0)?)?;
        }
        if let Some(norm) = &self.embed_norm {
            h = norm.forward(&h)?;
        }
        h = dropout(&h, self.dropout, rng)?;
        // 0 where a token may be attended to, -1e9 at padding: softmax gives padding no weight
        // (a row of padding only, which never occurs with a CLS vector, attends evenly).
        let bias = ((&mask - 1.0)? * 1e9)?.reshape((b, 1, 1, positions))?;
        Ok((h, mask, bias))
    }

    /// One vector `(B, E)` per example: the CLS position's state, or the mean of the real
    /// tokens' states.
    pub fn pool(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self.pooling {
            Pooling::Cls => Ok(states.narrow(1, 0, 1)?.squeeze(1)?),
            Pooling::Mean => masked_mean(states, mask),
        }
    }

    /// [`Self::hidden_states`] pooled.
    pub fn encode(&self, emb: &Tensor, mask: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let (states, mask) = self.hidden_states(emb, mask, rng)?;
        self.pool(&states, &mask)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::ml::spec::Init;

    /// The fused layer kernel gives the composed layer's output and the same gradients for the
    /// input and every parameter, with and without dropout, for both norm placements (a layer
    /// with padding in the second example); frozen, the same output.
    #[test]
    fn the_fused_layer_matches_the_composed_one() {
        let (b, l, e, heads, ff) = (2, 5, 8, 2, 12);
        for norm in [NormPlacement::Post, NormPlacement::Pre] {
            for p in [0.0f32, 0.3] {
                let mut init = ChaCha8Rng::seed_from_u64(7);
                let mut pb = ParamBuilder {
                    vars: Vec::new(),
                    rng: &mut init,
                    init: Init::XavierUniform,
                    device: Device::Cpu,
                };
                let layer = EncoderLayer::new(&mut pb, "l", e, ff, 1e-5).unwrap();
                let vars: Vec<Var> = pb.vars.into_iter().map(|(_, v)| v).collect();
                let xs: Vec<f32> = (0..b * l * e).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
                let x = Var::from_vec(xs, (b, l, e), &Device::Cpu).unwrap();
                let mask = [1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];
                let bias = Tensor::new(&mask, &Device::Cpu)
                    .unwrap()
                    .affine(1e9, -1e9)
                    .unwrap()
                    .reshape((b, 1, 1, l))
                    .unwrap();
                let weights: Vec<f32> = (0..b * l * e).map(|i| (i % 5) as f32 - 2.0).collect();
                let weights = Tensor::from_vec(weights, (b, l, e), &Device::Cpu).unwrap();
                let run = |fused: bool| {
                    let mut rng = ChaCha8Rng::seed_from_u64(3);
                    let mut rng = Some(&mut rng);
                    let y = if fused {
                        assert!(layer.fused_params(x.as_tensor()).is_some());
                        layer.forward(x.as_tensor(), &bias, heads, norm, p, &mut rng).unwrap()
                    } else {
                        layer.forward_composed(x.as_tensor(), &bias, heads, norm, p, &mut rng).unwrap()
                    };
                    let loss = (&y * &weights).unwrap().sum_all().unwrap();
                    let grads = crate::ml::kernels::backward(&loss).unwrap();
                    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let mut out = vec![values(&y), values(grads.get(x.as_tensor()).unwrap())];
                    out.extend(vars.iter().map(|v| values(grads.get(v.as_tensor()).expect("a gradient"))));
                    out
                };
                let (fused, composed) = (run(true), run(false));
                // candle's own backward pass could not take the parameters' gradients: refused.
                let y = layer.forward(x.as_tensor(), &bias, heads, norm, p, &mut None).unwrap();
                let err = y.sum_all().unwrap().backward().unwrap_err().to_string();
                assert!(err.contains("kernels::backward"), "{err}");
                for (i, (f, c)) in fused.iter().zip(&composed).enumerate() {
                    let worst = f.iter().zip(c).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(worst < 2e-4, "{norm:?} p={p}: output {i} differs by {worst}");
                }
                if p == 0.0 {
                    // Frozen, as an embedding or a served prediction runs it: the inference path,
                    // which keeps nothing and normalises and activates in place.
                    let mut frozen = layer.clone();
                    let [q, k, v, o, f1, f2] = [
                        &mut frozen.query,
                        &mut frozen.key,
                        &mut frozen.value,
                        &mut frozen.attn_out,
                        &mut frozen.ff_in,
                        &mut frozen.ff_out,
                    ];
                    for d in [q, k, v, o, f1, f2] {
                        (d.weight, d.bias) = (d.weight.detach(), d.bias.detach());
                    }
                    for n in [&mut frozen.attn_norm, &mut frozen.ff_norm] {
                        (n.weight, n.bias) = (n.weight.detach(), n.bias.detach());
                    }
                    let x = x.as_tensor().detach();
                    assert!(frozen.fused_params(&x).is_some());
                    let y = frozen.forward(&x, &bias, heads, norm, p, &mut None).unwrap();
                    let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let worst = y.iter().zip(&composed[0]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(worst < 2e-4, "{norm:?} frozen: output differs by {worst}");
                    // A trained layer's variables, predicting: the same inference path (outside
                    // `inference`, variables beside a detached input are refused the fused layer).
                    assert!(layer.fused_params(&x).is_none());
                    let y = crate::ml::kernels::inference(|| {
                        assert!(layer.fused_params(&x).is_some());
                        layer.forward(&x, &bias, heads, norm, p, &mut None)
                    })
                    .unwrap();
                    let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let worst = y.iter().zip(&composed[0]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                    assert!(worst < 2e-4, "{norm:?} inference: output differs by {worst}");
                }
            }
        }
    }
}
