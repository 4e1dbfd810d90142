//! A whole Transformer encoder layer as one op, forward and backward: Q, K and V projections,
//! attention, the output projection, dropout, the residual and layer norm, then the GELU
//! feed-forward block with its dropout, residual and layer norm (post-norm, BERT's order, or
//! pre-norm).
//!
//! Why one op: composed from the other kernels, a layer is some twenty candle nodes (reshapes,
//! dropout products, residual sums), and candle's backward pass adds each gradient it receives
//! into a fresh zero-filled tensor of the activation's size. For MiniLM at batch 32 x 128 that
//! bookkeeping, not arithmetic, was most of a fine-tuning step: half the step's samples were the
//! kernel clearing pages for those zero-filled tensors, and a further tenth candle's element-wise
//! passes over them. Here the layer's intermediate values live in the op, its backward pass runs
//! the same formulas as the separate kernels ([`super::attention`], [`super::norm`], the
//! vectorised GELU of [`super::vmath`], dense layers as in [`super::linear`]) on plain slices, and
//! candle sees one node per layer.
//!
//! The parameters are not inputs of the op (a candle op takes at most three); their gradients
//! go to the running [`super::backward`] like every kernel's parameter gradients, so every
//! backward pass in Vigil goes through that function: a plain `loss.backward()` through this
//! layer, which could not return them, is refused with an error rather than leaving the
//! parameters without gradients. Dropout masks are drawn by the caller, in the order the composed layer draws
//! them, so a seed gives the same run either way.

use std::borrow::Cow;
use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use super::attention::{self, Dims};
use super::backward::deliver;
use super::gemm::{matmul, row_major};
use super::{
    Dropout, column_sums, contiguous, missing_state, norm, par, tensor, vmath, wants_grad, with_storage,
    zeros,
};

/// Where each parameter sits in [`LayerParams::tensors`].
pub mod at {
    pub const Q_W: usize = 0;
    pub const Q_B: usize = 1;
    pub const K_W: usize = 2;
    pub const K_B: usize = 3;
    pub const V_W: usize = 4;
    pub const V_B: usize = 5;
    pub const O_W: usize = 6;
    pub const O_B: usize = 7;
    pub const N1_W: usize = 8;
    pub const N1_B: usize = 9;
    pub const F1_W: usize = 10;
    pub const F1_B: usize = 11;
    pub const F2_W: usize = 12;
    pub const F2_B: usize = 13;
    pub const N2_W: usize = 14;
    pub const N2_B: usize = 15;
    /// The Q, K and V weights, and biases, in the order the fused projection stacks them.
    pub const QKV_W: [usize; 3] = [Q_W, K_W, V_W];
    pub const QKV_B: [usize; 3] = [Q_B, K_B, V_B];
}

/// One layer's parameters: the dense layers' weights `(out, in)` and biases, the two layer
/// norms' scales and shifts, in the order of [`at`], and the norms' epsilons.
pub struct LayerParams {
    pub tensors: [Tensor; 16],
    pub eps: [f64; 2],
}

/// Dropout masks: on the attention probabilities `(B, H, L, L)`, on the attention block's output
/// `(B, L, E)`, after the GELU `(B, L, F)`, and on the feed-forward block's output `(B, L, E)`.
pub struct LayerMasks {
    pub attn: Dropout,
    pub attn_out: Dropout,
    pub ff: Dropout,
    pub ff_out: Dropout,
}

/// The layer's output for `x (B, L, E)`; `bias (B·L)` is the attention's padding bias.
pub fn encoder_layer(
    x: &Tensor,
    params: LayerParams,
    heads: usize,
    bias: Vec<f32>,
    pre_norm: bool,
    masks: Option<LayerMasks>,
) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let keep = wants_grad(&x) || params.tensors.iter().any(wants_grad);
    x.apply_op1(EncoderLayer { params, heads, bias, pre_norm, masks, keep, saved: OnceLock::new() })
}

struct EncoderLayer {
    params: LayerParams,
    heads: usize,
    bias: Vec<f32>,
    pre_norm: bool,
    masks: Option<LayerMasks>,
    keep: bool,
    saved: OnceLock<Saved>,
}

/// What the backward pass needs from the forward pass.
struct Saved {
    /// The attention block's input (`x`, or its layer norm for pre-norm).
    attn_in: Vec<f32>,
    /// Q, K and V, the column blocks of one `(n, 3E)` buffer, and the stacked weight `(3E, E)`
    /// that made them (the input's gradient multiplies by it).
    qkv: Vec<f32>,
    qkv_w: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
    /// The feed-forward block's input.
    ff_in: Vec<f32>,
    /// The intermediate layer's output before the GELU, and after it (and dropout).
    pre_gelu: Vec<f32>,
    act: Vec<f32>,
    /// The layer norms' normalised rows and reciprocal deviations, first and second.
    norms: [(Vec<f32>, Vec<f32>); 2],
}

/// Runs `f` on the values of all sixteen parameters (read locks held meanwhile).
fn with_params<R>(
    params: &[Tensor; 16],
    f: impl FnOnce(&[&[f32]]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let guards: Vec<_> = params.iter().map(|t| t.storage_and_layout()).collect();
    let mut values = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(cpu) => values.push(contiguous(cpu, layout)?),
            _ => candle_core::bail!("fused kernels run on the CPU only"),
        }
    }
    f(&values)
}

/// Elements handed to one parallel task in the element-wise passes.
const CHUNK: usize = 32 * 1024;

/// `x Wᵀ` for `n` rows: `w (out, in)` read transposed in place.
fn dense(x: &[f32], n: usize, w: &[f32], out: usize) -> candle_core::Result<Vec<f32>> {
    let inputs = w.len() / out.max(1);
    matmul(row_major(x, n, inputs)?, row_major(w, out, inputs)?.t())
}

/// `f(first, block)` for every block of whole `width`-long rows of `y` (`first`: the block's
/// first row), the blocks in parallel.
fn rows(y: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let per_task = (CHUNK / width.max(1)).max(1);
    par::chunks_mut(y, per_task * width.max(1), |t, block| f(t * per_task, block));
}

/// Adds a row vector to every row, in place.
fn add_bias(y: &mut [f32], bias: &[f32]) {
    let e = bias.len();
    rows(y, e, |_, block| vmath::add_rows(block, bias));
}

/// `a ⊙= m`, element-wise, when there is a mask.
fn apply_mask(a: &mut [f32], mask: Option<&Dropout>) {
    if let Some(m) = mask {
        par::chunks_mut(a, CHUNK, |t, a| vmath::drop_in_place(a, m.view().part(t * CHUNK, a.len())));
    }
}

/// `a += b`, element-wise.
fn accumulate(a: &mut [f32], b: &[f32]) {
    par::chunks_mut(a, CHUNK, |t, a| vmath::add_rows_into(a, &b[t * CHUNK..][..a.len()]));
}

/// `y = residual + mask ⊙ (y + bias)` row by row: a block's output with its bias, dropout and
/// residual in one pass.
fn bias_dropout_residual(y: &mut [f32], bias: &[f32], mask: Option<&Dropout>, residual: &[f32]) {
    let e = bias.len();
    rows(y, e, |first, block| {
        let range = first * e..first * e + block.len();
        let m = mask.map(|m| m.view().part(range.start, block.len()));
        vmath::bias_dropout_residual(block, bias, m, &residual[range]);
    });
}

/// Gradients of a dense layer `y = x Wᵀ + b` for `dy (n, out)`: `dW = dyᵀ x` and `db` (each only
/// when wanted) go to the backward pass; returns `dx = dy W`.
fn dense_back(
    dy: &[f32],
    x: &[f32],
    n: usize,
    params: &[Tensor; 16],
    values: &[&[f32]],
    (w_at, b_at): (usize, usize),
) -> candle_core::Result<Vec<f32>> {
    let (w, out) = (values[w_at], values[b_at].len());
    let inputs = w.len() / out.max(1);
    let dy_m = row_major(dy, n, out)?;
    if wants_grad(&params[b_at]) {
        give(&params[b_at], column_sums(dy, out))?;
    }
    if wants_grad(&params[w_at]) {
        give(&params[w_at], matmul(dy_m.t(), row_major(x, n, inputs)?)?)?;
    }
    matmul(dy_m, row_major(w, out, inputs)?)
}

/// The values of three parameters one after another: the Q, K and V weights `(E, E)` stacked
/// into the fused projection's `(3E, E)` (or their biases into `3E`). A copy of 1.7 MB for
/// MiniLM, against one product where three each packed the input again.
fn stacked(values: &[&[f32]], which: [usize; 3]) -> Vec<f32> {
    which.iter().flat_map(|&i| values[i].iter().copied()).collect()
}

/// Gradients of the fused Q, K, V projection for `dqkv (n, 3E)`, with `qkv_w` the stacked
/// weight `(3E, E)`: the stacked weight's and bias's gradients, split into the three parameters'
/// (each only when wanted), go to the backward pass; returns the input's gradient
/// `dqkv · W_qkv` (one product of inner size 3E for three products and two sums).
fn qkv_back(
    dqkv: &[f32],
    x: &[f32],
    n: usize,
    params: &[Tensor; 16],
    qkv_w: &[f32],
) -> candle_core::Result<Vec<f32>> {
    let e = x.len() / n.max(1);
    let dy = row_major(dqkv, n, 3 * e)?;
    let (weights, biases) = (at::QKV_W, at::QKV_B);
    if biases.iter().any(|&b| wants_grad(&params[b])) {
        let db = column_sums(dqkv, 3 * e);
        for (i, &b) in biases.iter().enumerate() {
            if wants_grad(&params[b]) {
                give(&params[b], db[i * e..(i + 1) * e].to_vec())?;
            }
        }
    }
    if weights.iter().any(|&w| wants_grad(&params[w])) {
        let dw = matmul(dy.t(), row_major(x, n, e)?)?;
        for (i, &w) in weights.iter().enumerate() {
            if wants_grad(&params[w]) {
                give(&params[w], dw[i * e * e..(i + 1) * e * e].to_vec())?;
            }
        }
    }
    matmul(dy, row_major(qkv_w, 3 * e, e)?)
}

/// Hands a parameter's gradient to the running [`super::backward`]; outside one there is no way
/// to return it to candle, which is a caller's bug, reported.
fn give(param: &Tensor, values: Vec<f32>) -> candle_core::Result<()> {
    match deliver(param, values) {
        None => Ok(()),
        Some(_) => Err(candle_core::Error::Msg(
            "encoder layer: parameter gradients need Vigil's backward pass (kernels::backward), \
             not candle's loss.backward()"
                .into(),
        )),
    }
}

impl CustomOp1 for EncoderLayer {
    fn name(&self) -> &'static str {
        "vigil-encoder-layer"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(xs, xl)?;
        let (b, l, e) = xl.shape().dims3()?;
        let n = b * l;
        let masks = self.masks.as_ref();
        let d = Dims::new(b, l, e, self.heads, &self.bias, masks.map(|m| m.attn.view()))?;
        let p = &self.params;
        let (y, saved) = with_params(&p.tensors, |w| {
            let ff = w[at::F1_B].len();
            if w[at::Q_W].len() != e * e || w[at::F1_W].len() != ff * e || w[at::F2_W].len() != e * ff {
                candle_core::bail!("encoder layer: parameters do not fit a width of {e}");
            }
            if masks
                .is_some_and(|m| m.attn_out.len() != n * e || m.ff.len() != n * ff || m.ff_out.len() != n * e)
            {
                candle_core::bail!("encoder layer: dropout masks of the wrong size");
            }
            let eps = [p.eps[0] as f32, p.eps[1] as f32];
            // Pre-norm normalises the attention block's input; post-norm its residual sum.
            let (attn_in, norm1) = if self.pre_norm {
                let (h, xhat, rstd) =
                    norm::forward_rows(x.to_vec(), w[at::N1_W], w[at::N1_B], eps[0], self.keep);
                (Cow::Owned(h), Some((xhat, rstd)))
            } else {
                (Cow::Borrowed(x), None)
            };
            // Q, K and V in one product with the three weights stacked: `(n, 3E)`.
            let (qkv_w, qkv_b) = (stacked(w, at::QKV_W), stacked(w, at::QKV_B));
            let mut qkv = dense(&attn_in, n, &qkv_w, 3 * e)?;
            add_bias(&mut qkv, &qkv_b);
            let (q, k, v) = (&qkv[..], &qkv[e..], &qkv[2 * e..]);
            let attn_mask = masks.map(|m| m.attn.view());
            let (ctx, probs) = attention::forward(q, k, v, d.fused(), &self.bias, attn_mask, self.keep)?;
            // r1 = x + dropout(ctx Woᵀ + bo).
            let mut r1 = dense(&ctx, n, w[at::O_W], e)?;
            bias_dropout_residual(&mut r1, w[at::O_B], masks.map(|m| &m.attn_out), x);
            // The feed-forward block's residual: r1 (pre-norm), or the normalised r1 (post-norm,
            // which normalises r1 in place).
            let (ff_in, norm1, r1) = if self.pre_norm {
                let (h, xhat, rstd) =
                    norm::forward_rows(r1.clone(), w[at::N2_W], w[at::N2_B], eps[1], self.keep);
                (h, [norm1.expect("pre-norm normalised the input"), (xhat, rstd)], Some(r1))
            } else {
                let (h, xhat, rstd) = norm::forward_rows(r1, w[at::N1_W], w[at::N1_B], eps[0], self.keep);
                (h, [(xhat, rstd), (Vec::new(), Vec::new())], None)
            };
            let mut pre_gelu = dense(&ff_in, n, w[at::F1_W], ff)?;
            add_bias(&mut pre_gelu, w[at::F1_B]);
            // The backward pass needs the GELU's input as well as its output; otherwise (and
            // without dropout, which only training has) the activation overwrites its input.
            let (pre_gelu, act) = if self.keep || masks.is_some() {
                let mut act = zeros::<f32>(pre_gelu.len());
                par::chunks_mut(&mut act, CHUNK, |t, a| {
                    let start = t * CHUNK;
                    vmath::gelu(&pre_gelu[start..start + a.len()], a);
                    if let Some(m) = masks {
                        vmath::drop_in_place(a, m.ff.view().part(start, a.len()));
                    }
                });
                (pre_gelu, act)
            } else {
                let mut act = pre_gelu;
                par::chunks_mut(&mut act, CHUNK, |_, a| vmath::gelu_in_place(a));
                (Vec::new(), act)
            };
            // The block's output, dropout, and the residual, then the second norm for post-norm.
            let mut out = dense(&act, n, w[at::F2_W], e)?;
            let residual = r1.as_deref().unwrap_or(&ff_in);
            bias_dropout_residual(&mut out, w[at::F2_B], masks.map(|m| &m.ff_out), residual);
            let (y, norms) = if self.pre_norm {
                (out, norm1)
            } else {
                let (y, xhat, rstd) = norm::forward_rows(out, w[at::N2_W], w[at::N2_B], eps[1], self.keep);
                let [first, _] = norm1;
                (y, [first, (xhat, rstd)])
            };
            let saved = self.keep.then(|| Saved {
                attn_in: attn_in.into_owned(),
                qkv,
                qkv_w,
                probs,
                ctx,
                ff_in,
                pre_gelu,
                act,
                norms,
            });
            Ok((y, saved))
        })?;
        if let Some(saved) = saved {
            // Set once: candle runs an op's forward pass once.
            let _ = self.saved.set(saved);
        }
        Ok((CpuStorage::F32(y), Shape::from((b, l, e))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let s = self.saved.get().ok_or_else(|| missing_state("encoder layer"))?;
        let (b, l, e) = x.dims3()?;
        let n = b * l;
        let masks = self.masks.as_ref();
        let d = Dims::new(b, l, e, self.heads, &self.bias, masks.map(|m| m.attn.view()))?;
        let grad = grad.contiguous()?;
        let p = &self.params.tensors;
        let dx = with_storage(&grad, |gs, gl| {
            let dy = contiguous(gs, gl)?;
            with_params(p, |w| {
                let norm_back = |g: &[f32], which: usize, (w_at, b_at): (usize, usize)| {
                    let (xhat, rstd) = &s.norms[which];
                    let (dx, dw, db) = norm::backward_rows(g, xhat, rstd, w[w_at], true);
                    if wants_grad(&p[w_at]) {
                        give(&p[w_at], dw)?;
                    }
                    if wants_grad(&p[b_at]) {
                        give(&p[b_at], db)?;
                    }
                    Ok::<_, candle_core::Error>(dx.expect("asked for"))
                };
                // Back through the second norm (post-norm) to the feed-forward residual sum.
                let d_sum = if self.pre_norm { dy.to_vec() } else { norm_back(dy, 1, (at::N2_W, at::N2_B))? };
                let mut d_out = d_sum.clone();
                apply_mask(&mut d_out, masks.map(|m| &m.ff_out));
                // Back through the GELU and its dropout, in place.
                let mut d_pre = dense_back(&d_out, &s.act, n, p, w, (at::F2_W, at::F2_B))?;
                let ff_mask = masks.map(|m| m.ff.view());
                par::chunks_mut(&mut d_pre, CHUNK, |t, dp| {
                    let start = t * CHUNK;
                    vmath::gelu_grad(
                        &s.pre_gelu[start..start + dp.len()],
                        dp,
                        ff_mask.map(|m| m.part(start, dp.len())),
                    );
                });
                let d_ff_in = dense_back(&d_pre, &s.ff_in, n, p, w, (at::F1_W, at::F1_B))?;
                // The attention block's residual sum r1: for post-norm, through the first norm
                // from the feed-forward input and its residual; for pre-norm, the layer's
                // residual plus the second norm's gradient.
                let d_r1 = if self.pre_norm {
                    let mut d = d_sum;
                    accumulate(&mut d, &norm_back(&d_ff_in, 1, (at::N2_W, at::N2_B))?);
                    d
                } else {
                    let mut d = d_sum;
                    accumulate(&mut d, &d_ff_in);
                    norm_back(&d, 0, (at::N1_W, at::N1_B))?
                };
                let mut d_attn = d_r1.clone();
                apply_mask(&mut d_attn, masks.map(|m| &m.attn_out));
                let d_ctx = dense_back(&d_attn, &s.ctx, n, p, w, (at::O_W, at::O_B))?;
                let (q, k, v) = (&s.qkv[..], &s.qkv[e..], &s.qkv[2 * e..]);
                let attn_mask = masks.map(|m| m.attn.view());
                let dqkv = attention::backward(q, k, v, &d_ctx, &s.probs, attn_mask, d.fused())?;
                let d_in = qkv_back(&dqkv, &s.attn_in, n, p, &s.qkv_w)?;
                let mut dx = d_r1;
                if self.pre_norm {
                    accumulate(&mut dx, &norm_back(&d_in, 0, (at::N1_W, at::N1_B))?);
                } else {
                    accumulate(&mut dx, &d_in);
                }
                Ok(dx)
            })
        })?;
        Ok(wants_grad(x).then(|| tensor(dx, x.shape())))
    }
}
