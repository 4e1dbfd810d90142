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
use super::par;
use super::{contiguous, missing_state, tensor, wants_grad, with_storage, zeros};
use vigil_gemm::{Parallelism, product};

/// `q`, `k`, `v` `(B, L, E)` → `(B, L, E)`: attention over `heads` heads of `E / heads` values.
/// `bias (B·L)` is added to every score of a key position (0 for a real token, a large negative
/// number for padding); `dropout`, `B·H·L·L` multipliers in `(b, h, query, key)` order (0 or
/// `1/(1-p)`), scales the probabilities after the softmax, as dropout on them does.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Vec<f32>,
    dropout: Option<Vec<f32>>,
) -> candle_core::Result<Tensor> {
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let keep = wants_grad(&q) || wants_grad(&k) || wants_grad(&v);
    q.apply_op3(&k, &v, Attention { heads, bias, dropout, keep, probs: OnceLock::new() })
}

struct Attention {
    heads: usize,
    bias: Vec<f32>,
    dropout: Option<Vec<f32>>,
    /// Whether to keep the probabilities for a backward pass.
    keep: bool,
    /// The softmax output `(B, H, L, L)`, before dropout.
    probs: OnceLock<Vec<f32>>,
}

/// The sizes of one call, checked against the inputs.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    l: usize,
    e: usize,
    heads: usize,
    hd: usize,
}

impl Dims {
    fn of(op: &Attention, shape: &[usize]) -> candle_core::Result<Self> {
        let &[b, l, e] = shape else {
            candle_core::bail!("attention: inputs must be (B, L, E), got {shape:?}")
        };
        if op.heads == 0 || !e.is_multiple_of(op.heads) {
            candle_core::bail!("attention: width {e} is not a multiple of {} heads", op.heads);
        }
        if op.bias.len() != b * l {
            candle_core::bail!("attention: a padding bias of {} values for {b}x{l} positions", op.bias.len());
        }
        if op.dropout.as_ref().is_some_and(|m| m.len() != b * op.heads * l * l) {
            candle_core::bail!("attention: a dropout mask of the wrong size");
        }
        Ok(Dims { b, l, e, heads: op.heads, hd: e / op.heads })
    }

    /// Example `b`'s head `h` of a `(B, L, E)` buffer as an `(L, hd)` matrix read in place.
    fn head<'a>(&self, data: &'a [f32], b: usize, h: usize) -> candle_core::Result<vigil_gemm::Matrix<'a>> {
        strided(&data[b * self.l * self.e + h * self.hd..], self.l, self.hd, self.e, 1)
    }
}

/// `dst = a · b`, single-threaded (the parallel split is over examples).
fn mul(dst: &mut [f32], a: vigil_gemm::Matrix, b: vigil_gemm::Matrix) -> candle_core::Result<()> {
    product(dst, a, b, Parallelism::None).map_err(super::gemm::refused)
}

/// Writes an `(L, hd)` row-major block into head `h`'s columns of an `(L, E)` example block.
fn scatter(block: &[f32], out: &mut [f32], h: usize, d: Dims) {
    for (src, dst) in block.chunks_exact(d.hd).zip(out.chunks_exact_mut(d.e)) {
        dst[h * d.hd..(h + 1) * d.hd].copy_from_slice(src);
    }
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
        let Dims { b, l, e, heads, hd } = d;
        let scale = 1.0 / (hd as f32).sqrt();
        if b * l * e == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((b, l, e))));
        }
        let mut out = zeros::<f32>(b * l * e);
        let mut probs = zeros::<f32>(if self.keep { b * heads * l * l } else { 0 });
        let per_probs = if self.keep { heads * l * l } else { 0 };
        let parts: Vec<(usize, &mut [f32], &mut [f32])> = out
            .chunks_mut(l * e)
            .zip(probs.chunks_mut(per_probs.max(1)).chain(std::iter::repeat_with(<&mut [f32]>::default)))
            .enumerate()
            .map(|(i, (o, p))| (i, o, p))
            .collect();
        let done = par::map(parts, |_, (ex, out, kept)| -> candle_core::Result<()> {
            let mut scores = zeros::<f32>(l * l);
            let mut block = zeros::<f32>(l * hd);
            let bias = &self.bias[ex * l..(ex + 1) * l];
            for h in 0..heads {
                mul(&mut scores, d.head(q, ex, h)?, d.head(k, ex, h)?.t())?;
                for row in scores.chunks_exact_mut(l) {
                    softmax_row(row, bias, scale);
                }
                if self.keep {
                    kept[h * l * l..(h + 1) * l * l].copy_from_slice(&scores);
                }
                if let Some(mask) = &self.dropout {
                    let m = &mask[(ex * heads + h) * l * l..][..l * l];
                    scores.iter_mut().zip(m).for_each(|(s, m)| *s *= m);
                }
                mul(&mut block, row_major(&scores, l, l)?, d.head(v, ex, h)?)?;
                scatter(&block, out, h, d);
            }
            Ok(())
        });
        done.into_iter().collect::<candle_core::Result<()>>()?;
        if self.keep {
            // Set once: candle runs an op's forward pass once.
            let _ = self.probs.set(probs);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, l, e))))
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
        let Dims { b, l, e, heads, hd } = d;
        let scale = 1.0 / (hd as f32).sqrt();
        let grad = grad.contiguous()?;
        if b * l * e == 0 {
            let pick = |t: &Tensor| wants_grad(t).then(|| tensor(Vec::new(), t.shape()));
            return Ok((pick(q), pick(k), pick(v)));
        }
        let mut dq = zeros::<f32>(b * l * e);
        let mut dk = zeros::<f32>(b * l * e);
        let mut dv = zeros::<f32>(b * l * e);
        with_storage(&grad, |gs, gl| {
            let g = contiguous(gs, gl)?;
            with_storage(q, |qs, ql| {
                let qv = contiguous(qs, ql)?;
                with_storage(k, |ks, kl| {
                    let kv = contiguous(ks, kl)?;
                    with_storage(v, |vs, vl| {
                        let vv = contiguous(vs, vl)?;
                        let parts: Vec<_> = dq
                            .chunks_mut(l * e)
                            .zip(dk.chunks_mut(l * e))
                            .zip(dv.chunks_mut(l * e))
                            .map(|((a, b), c)| (a, b, c))
                            .collect();
                        let done = par::map(parts, |ex, (dq, dk, dv)| -> candle_core::Result<()> {
                            let mut pd = zeros::<f32>(l * l);
                            let mut dp = zeros::<f32>(l * l);
                            let mut block = zeros::<f32>(l * hd);
                            for h in 0..heads {
                                let at = (ex * heads + h) * l * l;
                                let p = &probs[at..at + l * l];
                                let mask = self.dropout.as_ref().map(|m| &m[at..at + l * l]);
                                pd.copy_from_slice(p);
                                if let Some(m) = mask {
                                    pd.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                                }
                                let go = d.head(g, ex, h)?;
                                // dV = Pdᵀ dO.
                                mul(&mut block, row_major(&pd, l, l)?.t(), go)?;
                                scatter(&block, dv, h, d);
                                // dPd = dO Vᵀ, then back through dropout and the softmax.
                                mul(&mut dp, go, d.head(vv, ex, h)?.t())?;
                                if let Some(m) = mask {
                                    dp.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                                }
                                for (drow, prow) in dp.chunks_exact_mut(l).zip(p.chunks_exact(l)) {
                                    let dot: f32 = drow.iter().zip(prow).map(|(a, b)| a * b).sum();
                                    for (x, p) in drow.iter_mut().zip(prow) {
                                        *x = p * (*x - dot) * scale;
                                    }
                                }
                                // dQ = dS K, dK = dSᵀ Q (the scale is in dS).
                                mul(&mut block, row_major(&dp, l, l)?, d.head(kv, ex, h)?)?;
                                scatter(&block, dq, h, d);
                                mul(&mut block, row_major(&dp, l, l)?.t(), d.head(qv, ex, h)?)?;
                                scatter(&block, dk, h, d);
                            }
                            Ok(())
                        });
                        done.into_iter().collect::<candle_core::Result<()>>()
                    })
                })
            })
        })?;
        let shape = q.shape();
        let pick = |t: &Tensor, g: Vec<f32>| wants_grad(t).then(|| tensor(g, shape));
        Ok((pick(q, dq), pick(k, dk), pick(v, dv)))
    }
}

/// One row of scores → probabilities in place: `softmax(row · scale + bias)`. A row whose keys
/// are all padding has every score lowered by the same bias and so attends evenly, as the
/// composed ops did.
fn softmax_row(row: &mut [f32], bias: &[f32], scale: f32) {
    let mut max = f32::NEG_INFINITY;
    for (s, b) in row.iter_mut().zip(bias) {
        *s = *s * scale + b;
        max = max.max(*s);
    }
    let mut sum = 0.0f32;
    for s in row.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|s| *s *= inv);
}
