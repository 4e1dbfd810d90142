//! Multi-head scaled dot-product attention as one op: `softmax(Q Kᵀ / √d + bias) V` for every
//! example and head, with an optional dropout mask on the probabilities, forward and backward.
//!
//! candle's generic path splits the heads with a transpose and a copy of Q, K and V, copies Kᵀ
//! again, runs a batched product, adds the mask with a broadcast, runs the softmax (composed of
//! five ops when a gradient is wanted), multiplies, and transposes and copies the result back:
//! a dozen passes over `(B, H, L, L)` or `(B, L, E)` tensors, each one a fresh allocation. Here
//! each example's heads are read in place from the `(B, L, E)` inputs through strides (a head is
//! a column block, Kᵀ is K with its strides swapped), the scale, the padding bias and the
//! softmax are one pass over each row of scores, and each head's result is written straight into
//! its column block of the output. Examples run in parallel; within one, heads and rows run in a
//! fixed order, so results do not depend on the thread count.
//!
//! The backward pass keeps the softmax output `P` (and the dropout mask) from the forward pass
//! and computes, per head, with `Pd = P ⊙ mask`: `dV = Pdᵀ dO`, `dPd = dO Vᵀ`, `dP = dPd ⊙ mask`,
//! `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, then `dQ = dS K / √d` and `dK = dSᵀ Q / √d`. The padding
//! bias is a constant (no gradient).

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::gemm::{row_major, strided};
use super::vmath::{self, Keep};
use super::{Dropout, par};
use super::{contiguous, missing_state, tensor, wants_grad, with_storage, zeros};
use vigil_gemm::{Parallelism, product, product_strided};

/// `q`, `k`, `v` `(B, L, E)` → `(B, L, E)`: attention over `heads` heads of `E / heads` values.
/// `bias (B·L)` is added to every score of a key position (0 for a real token, a large negative
/// number for padding); `dropout`, a mask of `B·H·L·L` values in `(b, h, query, key)` order, is
/// applied to the probabilities after the softmax.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Vec<f32>,
    dropout: Option<Dropout>,
) -> candle_core::Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let keep = wants_grad(&q) || wants_grad(&k) || wants_grad(&v);
    q.apply_op3(&k, &v, Attention { heads, bias, dropout, keep, probs: OnceLock::new() })
}

struct Attention {
    heads: usize,
    bias: Vec<f32>,
    dropout: Option<Dropout>,
    /// Whether to keep the probabilities for a backward pass.
    keep: bool,
    /// The softmax output `(B, H, L, L)`, before dropout.
    probs: OnceLock<Vec<f32>>,
}

/// The sizes of one call, checked against the inputs.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    b: usize,
    l: usize,
    e: usize,
    heads: usize,
    hd: usize,
    /// The row stride of the Q, K and V inputs and of their gradient: `E` for separate `(B, L, E)`
    /// buffers, `3E` where they are one `(B, L, 3E)` buffer (the encoder layer's fused
    /// projection, see [`Dims::fused`]).
    stride: usize,
}

impl Dims {
    fn of(op: &Attention, shape: &[usize]) -> candle_core::Result<Self> {
        let &[b, l, e] = shape else {
            candle_core::bail!("attention: inputs must be (B, L, E), got {shape:?}")
        };
        Self::new(b, l, e, op.heads, &op.bias, op.dropout.as_ref().map(Dropout::view))
    }

    /// The sizes of `(B, L, E)` inputs over `heads` heads, checked against the padding bias and
    /// the dropout mask.
    pub(super) fn new(
        b: usize,
        l: usize,
        e: usize,
        heads: usize,
        bias: &[f32],
        dropout: Option<Keep>,
    ) -> candle_core::Result<Self> {
        if heads == 0 || !e.is_multiple_of(heads) {
            candle_core::bail!("attention: width {e} is not a multiple of {heads} heads");
        }
        if bias.len() != b * l {
            candle_core::bail!("attention: a padding bias of {} values for {b}x{l} positions", bias.len());
        }
        if dropout.is_some_and(|m| m.bytes.len() != b * heads * l * l) {
            candle_core::bail!("attention: a dropout mask of the wrong size");
        }
        Ok(Dims { b, l, e, heads, hd: e / heads, stride: e })
    }

    /// The same sizes with Q, K and V as the column blocks of one `(B, L, 3E)` buffer: the
    /// inputs are that buffer from columns 0, `E` and `2E`, and [`backward`] writes their
    /// gradients the same way.
    pub(super) fn fused(self) -> Self {
        Dims { stride: 3 * self.e, ..self }
    }

    /// Example `b`'s head `h` of a Q, K or V input as an `(L, hd)` matrix read in place.
    fn head<'a>(&self, data: &'a [f32], b: usize, h: usize) -> candle_core::Result<vigil_gemm::Matrix<'a>> {
        self.head_in(data, b, h, self.stride)
    }

    /// Example `b`'s head `h` of a buffer whose rows are `stride` apart.
    fn head_in<'a>(
        &self,
        data: &'a [f32],
        b: usize,
        h: usize,
        stride: usize,
    ) -> candle_core::Result<vigil_gemm::Matrix<'a>> {
        strided(&data[b * self.l * stride + h * self.hd..], self.l, self.hd, stride, 1)
    }
}

/// `dst = a · b`, single-threaded (the parallel split is over examples).
fn mul(dst: &mut [f32], a: vigil_gemm::Matrix, b: vigil_gemm::Matrix) -> candle_core::Result<()> {
    product(dst, a, b, Parallelism::None).map_err(super::gemm::refused)
}

/// `a · b` written straight into columns `first..` of an example's rows, `stride` apart (a
/// head's block of the output or of the gradients), single-threaded. Through a separate block
/// and a copy row by row, that copy was a tenth of the attention kernel's time.
fn mul_into(
    dst: &mut [f32],
    first: usize,
    stride: usize,
    a: vigil_gemm::Matrix,
    b: vigil_gemm::Matrix,
) -> candle_core::Result<()> {
    product_strided(&mut dst[first..], stride, a, b, Parallelism::None).map_err(super::gemm::refused)
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "vigil-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(self, ql.dims())?;
        if kl.dims() != ql.dims() || vl.dims() != ql.dims() {
            candle_core::bail!(
                "attention: q {:?}, k {:?} and v {:?} differ",
                ql.dims(),
                kl.dims(),
                vl.dims()
            );
        }
        let (q, k, v) = (contiguous(qs, ql)?, contiguous(ks, kl)?, contiguous(vs, vl)?);
        let (out, probs) =
            forward(q, k, v, d, &self.bias, self.dropout.as_ref().map(Dropout::view), self.keep)?;
        if self.keep {
            // Set once: candle runs an op's forward pass once.
            let _ = self.probs.set(probs);
        }
        Ok((CpuStorage::F32(out), Shape::from((d.b, d.l, d.e))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let probs = self.probs.get().ok_or_else(|| missing_state("attention"))?;
        let d = Dims::of(self, q.dims())?;
        let grad = grad.contiguous()?;
        if d.b * d.l * d.e == 0 {
            let pick = |t: &Tensor| wants_grad(t).then(|| tensor(Vec::new(), t.shape()));
            return Ok((pick(q), pick(k), pick(v)));
        }
        let dqkv = with_storage(&grad, |gs, gl| {
            let g = contiguous(gs, gl)?;
            with_storage(q, |qs, ql| {
                let qv = contiguous(qs, ql)?;
                with_storage(k, |ks, kl| {
                    let kv = contiguous(ks, kl)?;
                    with_storage(v, |vs, vl| {
                        backward(
                            qv,
                            kv,
                            contiguous(vs, vl)?,
                            g,
                            probs,
                            self.dropout.as_ref().map(Dropout::view),
                            d,
                        )
                    })
                })
            })
        })?;
        // Q, K and V are separate inputs here: their gradients are split out of the rows.
        let e = d.e;
        let column = |i: usize| -> Vec<f32> {
            dqkv.chunks_exact(3 * e).flat_map(|row| &row[i * e..][..e]).copied().collect()
        };
        let shape = q.shape();
        let pick = |t: &Tensor, i: usize| wants_grad(t).then(|| tensor(column(i), shape));
        Ok((pick(q, 0), pick(k, 1), pick(v, 2)))
    }
}

/// The forward pass on `(B, L, E)` values: the output, and when `keep`, the softmax output
/// `(B, H, L, L)` before dropout (empty otherwise).
pub(super) fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: Dims,
    bias: &[f32],
    dropout: Option<Keep>,
    keep: bool,
) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    let Dims { b, l, e, heads, hd, .. } = d;
    let scale = 1.0 / (hd as f32).sqrt();
    if b * l * e == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut out = zeros::<f32>(b * l * e);
    let mut probs = zeros::<f32>(if keep { b * heads * l * l } else { 0 });
    let per_probs = if keep { heads * l * l } else { 0 };
    let parts: Vec<(usize, &mut [f32], &mut [f32])> = out
        .chunks_mut(l * e)
        .zip(probs.chunks_mut(per_probs.max(1)).chain(std::iter::repeat_with(<&mut [f32]>::default)))
        .enumerate()
        .map(|(i, (o, p))| (i, o, p))
        .collect();
    let done = par::map(parts, |_, (ex, out, kept)| -> candle_core::Result<()> {
        let mut scores = zeros::<f32>(l * l);
        let bias = &bias[ex * l..(ex + 1) * l];
        for h in 0..heads {
            // The softmax is taken where it is kept (when it is), and dropout writes its
            // product into `scores`: one pass each, no copy.
            let mask = dropout.map(|m| m.part((ex * heads + h) * l * l, l * l));
            let probs: &[f32] = if keep {
                let kept = &mut kept[h * l * l..(h + 1) * l * l];
                mul(kept, d.head(q, ex, h)?, d.head(k, ex, h)?.t())?;
                vmath::softmax_rows(kept, l, bias, scale);
                match mask {
                    Some(m) => {
                        vmath::dropped_into(&mut scores, kept, m);
                        &scores
                    }
                    None => kept,
                }
            } else {
                mul(&mut scores, d.head(q, ex, h)?, d.head(k, ex, h)?.t())?;
                vmath::softmax_rows(&mut scores, l, bias, scale);
                if let Some(m) = mask {
                    vmath::drop_in_place(&mut scores, m);
                }
                &scores
            };
            mul_into(out, h * hd, e, row_major(probs, l, l)?, d.head(v, ex, h)?)?;
        }
        Ok(())
    });
    done.into_iter().collect::<candle_core::Result<()>>()?;
    Ok((out, probs))
}

/// The backward pass for the output's gradient `g`, from the probabilities `probs` that
/// [`forward`] kept: the gradients of Q, K and V as the column blocks of one `(B·L, 3E)`
/// buffer (rows `[dq | dk | dv]`), the layout of the encoder layer's fused projection.
pub(super) fn backward(
    qv: &[f32],
    kv: &[f32],
    vv: &[f32],
    g: &[f32],
    probs: &[f32],
    dropout: Option<Keep>,
    d: Dims,
) -> candle_core::Result<Vec<f32>> {
    let Dims { b, l, e, heads, hd, .. } = d;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut dqkv = zeros::<f32>(b * l * 3 * e);
    let parts: Vec<&mut [f32]> = dqkv.chunks_mut(l * 3 * e).collect();
    let done = par::map(parts, |ex, grads| -> candle_core::Result<()> {
        let mut pd = zeros::<f32>(l * l);
        let mut dp = zeros::<f32>(l * l);
        for h in 0..heads {
            let at = (ex * heads + h) * l * l;
            let p = &probs[at..at + l * l];
            let mask = dropout.map(|m| m.part(at, l * l));
            let pd: &[f32] = match mask {
                Some(m) => {
                    vmath::dropped_into(&mut pd, p, m);
                    &pd
                }
                None => p,
            };
            let go = d.head_in(g, ex, h, e)?;
            // dV = Pdᵀ dO.
            mul_into(grads, 2 * e + h * hd, 3 * e, row_major(pd, l, l)?.t(), go)?;
            // dPd = dO Vᵀ, then back through dropout and the softmax.
            mul(&mut dp, go, d.head(vv, ex, h)?.t())?;
            vmath::softmax_grad_rows(&mut dp, p, mask, l, scale);
            // dQ = dS K, dK = dSᵀ Q (the scale is in dS).
            mul_into(grads, h * hd, 3 * e, row_major(&dp, l, l)?, d.head(kv, ex, h)?)?;
            mul_into(grads, e + h * hd, 3 * e, row_major(&dp, l, l)?.t(), d.head(qv, ex, h)?)?;
        }
        Ok(())
    });
    done.into_iter().collect::<candle_core::Result<()>>()?;
    Ok(dqkv)
}
