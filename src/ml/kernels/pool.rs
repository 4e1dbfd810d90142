//! 2x2 max pooling with stride 2 that records which element of each window won, so that the
//! backward pass hands each output's whole gradient to exactly that element (candle 0.11.1's
//! `max_pool2d` backward hands it only a quarter). As in PyTorch's `MaxPool2d(2)`: odd edges are
//! cut, ties go to the first element in row-major order, and a NaN wins its window.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::par;
use super::{contiguous, missing_state, tensor, wants_grad, with_storage, zeros};

/// `x (B, C, H, W)` → `(B, C, H/2, W/2)`.
pub fn max_pool2(x: &Tensor) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let keep = wants_grad(&x);
    x.apply_op1(MaxPool2 { keep, argmax: OnceLock::new() })
}

struct MaxPool2 {
    keep: bool,
    /// For every output, the winning element of its window: `2·dy + dx`.
    argmax: OnceLock<Vec<u8>>,
}

/// Pools one `h x w` plane, each value plus `bias`, into `out` and `arg` (each
/// `(h/2)·(w/2)` long). Comparisons are selects rather than branches: which element wins is
/// data-dependent, and mispredicted branches made this loop as slow as a matrix product.
pub(super) fn pool_plane(plane: &[f32], w: usize, bias: f32, out: &mut [f32], arg: &mut [u8]) {
    let w2 = w / 2;
    if w2 == 0 {
        return;
    }
    for (i, (out_row, arg_row)) in out.chunks_exact_mut(w2).zip(arg.chunks_exact_mut(w2)).enumerate() {
        let top = &plane[2 * i * w..][..2 * w2];
        let bottom = &plane[(2 * i + 1) * w..][..2 * w2];
        for (j, (value, which)) in out_row.iter_mut().zip(arg_row.iter_mut()).enumerate() {
            let window =
                [top[2 * j] + bias, top[2 * j + 1] + bias, bottom[2 * j] + bias, bottom[2 * j + 1] + bias];
            let (mut best, mut at) = (window[0], 0u8);
            for (k, &v) in window.iter().enumerate().skip(1) {
                let take = v > best;
                best = if take { v } else { best };
                at = if take { k as u8 } else { at };
            }
            if best.is_nan() || window.iter().any(|v| v.is_nan()) {
                // Rare: the first NaN wins, as in PyTorch.
                at = window.iter().position(|v| v.is_nan()).unwrap_or(0) as u8;
                best = window[usize::from(at)];
            }
            *value = best;
            *which = at;
        }
    }
}

/// Runs the pooling over every plane of a contiguous `(B, C, H, W)` buffer.
fn pool(x: &[f32], dims: [usize; 4]) -> (Vec<f32>, Vec<u8>) {
    let [b, c, h, w] = dims;
    let out_len = (h / 2) * (w / 2);
    let mut out = zeros(b * c * out_len);
    let mut arg = zeros(out.len());
    if out_len > 0 {
        let planes: Vec<_> = out.chunks_mut(out_len).zip(arg.chunks_mut(out_len)).collect();
        par::for_each(planes, |p, (out, arg)| pool_plane(&x[p * h * w..(p + 1) * h * w], w, 0.0, out, arg));
    }
    (out, arg)
}

fn dims4(l: &Layout) -> candle_core::Result<[usize; 4]> {
    match *l.dims() {
        [b, c, h, w] => Ok([b, c, h, w]),
        ref other => candle_core::bail!("max_pool2 takes (B, C, H, W), got {other:?}"),
    }
}

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "vigil-max-pool2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let [b, c, h, w] = dims4(l)?;
        let (out, arg) = pool(contiguous(s, l)?, [b, c, h, w]);
        if self.keep {
            let _ = self.argmax.set(arg);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c, h / 2, w / 2))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, gy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let [b, c, h, w] = dims4(x.layout())?;
        let arg = self.argmax.get().ok_or_else(|| missing_state("max_pool2"))?;
        let gy = gy.contiguous()?;
        let (w2, out_len) = (w / 2, (h / 2) * (w / 2));
        let mut dx = zeros(b * c * h * w);
        if out_len > 0 {
            with_storage(&gy, |gs, gl| {
                let g = contiguous(gs, gl)?;
                par::chunks_mut(&mut dx, h * w, |p, plane| {
                    let (g, arg) = (&g[p * out_len..][..out_len], &arg[p * out_len..][..out_len]);
                    for (o, (gv, which)) in g.iter().zip(arg).enumerate() {
                        let (i, j) = (o / w2, o % w2);
                        let (dy, dxx) = (usize::from(*which / 2), usize::from(*which % 2));
                        plane[(2 * i + dy) * w + 2 * j + dxx] = *gv;
                    }
                });
                Ok(())
            })?;
        }
        Ok(Some(tensor(dx, x.shape())))
    }
}
