//! Layer normalisation over the last dimension, `y = (x − mean) / √(var + eps) · w + b`, as one
//! op with its backward pass. candle's own fused `layer_norm` has no backward pass, and the
//! differentiable composition (mean, centre, square, mean, add, sqrt, divide, scale, shift) is
//! nine ops, each a fresh tensor the size of the activations, with as many again in the backward
//! pass. Here the forward pass is one pass per row that keeps each row's normalised values and
//! reciprocal deviation; the backward pass is one pass per row for the input's gradient,
//! `dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))` with `g = dy ⊙ w`, and column sums for the
//! weight's and bias's gradients, taken in row order so that results do not depend on threads.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::backward::deliver;
use super::{contiguous, missing_state, tensor, wants_grad, with_storage, zeros};
use super::{par, vmath};

/// `x (…, E)`, `w (E)`, `b (E)` → `(…, E)`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let keep = wants_grad(&x) || wants_grad(w) || wants_grad(b);
    x.apply_op3(w, b, LayerNorm { eps: eps as f32, keep, saved: OnceLock::new() })
}

struct LayerNorm {
    eps: f32,
    keep: bool,
    /// The normalised input `x̂` and each row's `1/√(var + eps)`.
    saved: OnceLock<(Vec<f32>, Vec<f32>)>,
}

/// Rows handed to one parallel task: enough work to outweigh handing it out.
const ROWS_PER_TASK: usize = 64;

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "vigil-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(xs, xl)?;
        let (w, b) = (contiguous(ws, wl)?, contiguous(bs, bl)?);
        let e = *xl.dims().last().unwrap_or(&0);
        if e == 0 || w.len() != e || b.len() != e {
            candle_core::bail!(
                "layer_norm: input {:?}, weight {:?}, bias {:?}",
                xl.dims(),
                wl.dims(),
                bl.dims()
            );
        }
        let (y, xhat, rstd) = forward_rows(x.to_vec(), w, b, self.eps, self.keep);
        if self.keep {
            // Set once: candle runs an op's forward pass once.
            let _ = self.saved.set((xhat, rstd));
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (xhat, rstd) = self.saved.get().ok_or_else(|| missing_state("layer_norm"))?;
        let grad = grad.contiguous()?;
        let wv = w.flatten_all()?.to_vec1::<f32>()?;
        let (dx, dw, db) = with_storage(&grad, |gs, gl| {
            let (dx, dw, db) = backward_rows(contiguous(gs, gl)?, xhat, rstd, &wv, wants_grad(x));
            Ok((dx.map(|dx| tensor(dx, x.shape())), dw, db))
        })?;
        let dw = if wants_grad(w) { deliver(w, dw) } else { None };
        let db = if wants_grad(b) { deliver(b, db) } else { None };
        Ok((dx, dw, db))
    }
}

/// The forward pass over rows of `w.len()` values, normalising `y` in place: `y`, and when
/// `keep`, the normalised rows `x̂` and each row's `1/√(var + eps)` (empty otherwise).
pub(super) fn forward_rows(
    mut y: Vec<f32>,
    w: &[f32],
    b: &[f32],
    eps: f32,
    keep: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let e = w.len();
    let rows = y.len() / e;
    let mut xhat = zeros::<f32>(if keep { y.len() } else { 0 });
    let mut rstd = zeros::<f32>(if keep { rows } else { 0 });
    let block = ROWS_PER_TASK * e;
    let parts: Vec<_> = y
        .chunks_mut(block)
        .zip(xhat.chunks_mut(block).map(Some).chain(std::iter::repeat_with(|| None)))
        .zip(rstd.chunks_mut(ROWS_PER_TASK).map(Some).chain(std::iter::repeat_with(|| None)))
        .map(|((y, h), r)| (y, h, r))
        .collect();
    par::for_each(parts, |_, (y, h, r)| {
        vmath::layer_norm_rows(y, (w, b, eps), h.unwrap_or_default(), r.unwrap_or_default());
    });
    (y, xhat, rstd)
}

/// The backward pass for the incoming gradient `g`: `dx` (when `want_dx`), `dw` and `db`.
pub(super) fn backward_rows(
    g: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    wv: &[f32],
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let e = wv.len();
    // dx is split over the threads; dw and db, one pass in row order, run beside it rather
    // than after it on one thread.
    let input_grad = || {
        want_dx.then(|| {
            let mut dx = zeros::<f32>(g.len());
            let block = ROWS_PER_TASK * e;
            par::chunks_mut(&mut dx, block, |t, dx| {
                let rows = t * ROWS_PER_TASK..t * ROWS_PER_TASK + dx.len() / e;
                let span = rows.start * e..rows.end * e;
                vmath::layer_norm_grad_rows(&g[span.clone()], &xhat[span], &rstd[rows], wv, dx);
            });
            dx
        })
    };
    let param_grads = || {
        let (mut dw, mut db) = (zeros::<f32>(e), zeros::<f32>(e));
        vmath::layer_norm_param_grads(g, xhat, &mut dw, &mut db);
        (dw, db)
    };
    let (dx, (dw, db)) = rayon::join(input_grad, param_grads);
    (dx, dw, db)
}
