//! 2-D convolution (stride 1, zero padding, no dilation) as im2col plus one matrix product, with
//! the bias and optionally ReLU fused into the pass that lays the product out as NCHW.
//!
//! Columns are laid out as `(Cin·kh·kw, B·Ho·Wo)`: each row holds one kernel tap for every output
//! pixel of the batch, so building it is a run of contiguous row copies, and the whole batch is
//! one product `W (Cout, K) · cols (K, B·Ho·Wo)`. Backward lays the output gradient `dz` out as
//! `(B·Ho·Wo, Cout)`, the orientation in which gemm runs both of its products fastest (measured
//! 2-3x faster than the other on the benchmark's second convolution): `dWᵀ = cols · dz` with the
//! forward's columns, and `dcols = Wᵀ · dzᵀ` read through strides, scattered back onto the input
//! (col2im). Work is split over images, planes and kernel taps, never across a sum, so results do
//! not depend on scheduling.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::backward::deliver;
use super::gemm::{matmul, row_major};
use super::par;
use super::pool::pool_plane;
use super::{contiguous, missing_state, tensor, wants_grad, with_storage, zeros};

/// `x (B, Cin, H, W)`, `w (Cout, Cin, kh, kw)`, `b (Cout)` → `(B, Cout, Ho, Wo)` with
/// `Ho = H + 2·padding − kh + 1`; `relu` fuses the activation.
pub fn conv2d(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize, relu: bool) -> candle_core::Result<Tensor> {
    apply(x, w, b, padding, if relu { Epilogue::Relu } else { Epilogue::Bias })
}

/// `max_pool2(relu(conv2d(x)))`, the block every CNN repeats, as one op: the pooling reads the
/// product directly, so the full-size activation is never stored, and its gradient never passes
/// through a zero-filled tensor of that size.
pub fn conv2d_relu_pool(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize) -> candle_core::Result<Tensor> {
    apply(x, w, b, padding, Epilogue::ReluPool)
}

fn apply(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    padding: usize,
    epilogue: Epilogue,
) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    // What the backward pass needs is kept only when there will be one.
    let keep = wants_grad(&x) || wants_grad(&w) || wants_grad(b);
    x.apply_op3(&w, b, Conv2d { padding, epilogue, keep, saved: OnceLock::new() })
}

/// What follows the matrix product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    /// Add the bias.
    Bias,
    /// Add the bias, then ReLU.
    Relu,
    /// Add the bias, then ReLU and 2x2 max pooling.
    ReluPool,
}

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(x: &[usize], w: &[usize], padding: usize) -> candle_core::Result<Self> {
        let (&[batch, cin, h, wd], &[cout, wcin, kh, kw]) = (x, w) else {
            candle_core::bail!("conv2d: input {x:?} and weight {w:?} must both have four dimensions");
        };
        if wcin != cin {
            candle_core::bail!("conv2d: input has {cin} channels but the weight {w:?} expects {wcin}");
        }
        if h + 2 * padding < kh || wd + 2 * padding < kw || kh == 0 || kw == 0 {
            candle_core::bail!(
                "conv2d: a {kh}x{kw} kernel does not fit a {h}x{wd} input padded by {padding}"
            );
        }
        let (ho, wo) = (h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1);
        Ok(Geometry { batch, cin, h, w: wd, cout, kh, kw, pad: padding, ho, wo })
    }

    /// Rows of the column matrix: one per kernel tap.
    fn taps(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// Columns of the column matrix: one per output pixel of the batch.
    fn columns(&self) -> usize {
        self.batch * self.pixels()
    }

    /// For kernel column `kx`, the output columns `ox0..ox1` whose input column `ox + kx − pad`
    /// lies inside the image.
    fn valid_columns(&self, kx: usize) -> (usize, usize) {
        let ox0 = self.pad.saturating_sub(kx);
        let ox1 = (self.w + self.pad).saturating_sub(kx).min(self.wo);
        (ox0, ox1.max(ox0))
    }

    /// For kernel row `ky` and output row `oy`, the input row, if inside the image.
    fn input_row(&self, ky: usize, oy: usize) -> Option<usize> {
        (oy + ky).checked_sub(self.pad).filter(|&iy| iy < self.h)
    }
}

/// The `(taps, B·Ho·Wo)` column matrix of a contiguous NCHW input.
fn im2col(x: &[f32], g: &Geometry) -> Vec<f32> {
    let pixels = g.pixels();
    let mut cols = zeros(g.taps() * g.columns());
    if pixels == 0 {
        return cols;
    }
    // One chunk per (tap, image): a contiguous `Ho·Wo` stretch of a column-matrix row.
    par::chunks_mut(&mut cols, pixels, |chunk, dst| {
        let (tap, image) = (chunk / g.batch, chunk % g.batch);
        let (ci, ky, kx) = (tap / (g.kh * g.kw), (tap / g.kw) % g.kh, tap % g.kw);
        let plane = &x[(image * g.cin + ci) * g.h * g.w..][..g.h * g.w];
        let (ox0, ox1) = g.valid_columns(kx);
        if ox0 == ox1 {
            return;
        }
        for oy in 0..g.ho {
            if let Some(iy) = g.input_row(ky, oy) {
                let src = iy * g.w + ox0 + kx - g.pad;
                dst[oy * g.wo + ox0..oy * g.wo + ox1].copy_from_slice(&plane[src..src + ox1 - ox0]);
            }
        }
    });
    cols
}

/// Adds a `(taps, B·Ho·Wo)` column-matrix gradient back onto the NCHW input it was built from.
fn col2im(dcols: &[f32], g: &Geometry) -> Vec<f32> {
    let plane_len = g.h * g.w;
    let mut dx = zeros(g.batch * g.cin * plane_len);
    if plane_len == 0 {
        return dx;
    }
    let (columns, pixels) = (g.columns(), g.pixels());
    // One task per (image, channel) plane, each summing its taps in a fixed order.
    par::chunks_mut(&mut dx, plane_len, |plane_index, plane| {
        let (image, ci) = (plane_index / g.cin, plane_index % g.cin);
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let tap = (ci * g.kh + ky) * g.kw + kx;
                let src = &dcols[tap * columns + image * pixels..][..pixels];
                let (ox0, ox1) = g.valid_columns(kx);
                for oy in 0..g.ho {
                    let Some(iy) = g.input_row(ky, oy) else { continue };
                    let dst = &mut plane[iy * g.w + ox0 + kx - g.pad..][..ox1 - ox0];
                    for (d, s) in dst.iter_mut().zip(&src[oy * g.wo + ox0..oy * g.wo + ox1]) {
                        *d += s;
                    }
                }
            }
        }
    });
    dx
}

struct Conv2d {
    padding: usize,
    epilogue: Epilogue,
    keep: bool,
    saved: OnceLock<Saved>,
}

/// What the forward pass leaves for the backward pass.
struct Saved {
    /// The column matrix, for `dW`.
    cols: Vec<f32>,
    /// With pooling: each output's winning element in its window (see [`super::pool`]).
    argmax: Vec<u8>,
}

impl CustomOp3 for Conv2d {
    fn name(&self) -> &'static str {
        "vigil-conv2d"
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
        let g = Geometry::new(xl.dims(), wl.dims(), self.padding)?;
        let x = contiguous(xs, xl)?;
        let bias = contiguous(bs, bl)?;
        if bias.len() != g.cout {
            candle_core::bail!("conv2d: bias {:?} does not fit {} output channels", bl.dims(), g.cout);
        }
        let cols = im2col(x, &g);
        let (taps, columns, pixels) = (g.taps(), g.columns(), g.pixels());
        let w = row_major(contiguous(ws, wl)?, g.cout, taps)?;
        let product = matmul(w, row_major(&cols, taps, columns)?)?;
        let relu = self.epilogue != Epilogue::Bias;
        let (out, argmax, shape) = if self.epilogue == Epilogue::ReluPool {
            // Each (channel, image) plane of the product is pooled where it lies.
            let pooled = (g.ho / 2) * (g.wo / 2);
            let mut out = zeros(g.batch * g.cout * pooled);
            let mut argmax = zeros(out.len());
            if pooled > 0 {
                let planes: Vec<_> = out.chunks_mut(pooled).zip(argmax.chunks_mut(pooled)).collect();
                par::for_each(planes, |plane, (out, arg)| {
                    // Output planes run (image, channel); product planes (channel, image).
                    let (image, co) = (plane / g.cout, plane % g.cout);
                    let src = &product[co * columns + image * pixels..][..pixels];
                    // Ties are judged on the biased values, as ReLU then pooling sees them.
                    pool_plane(src, g.wo, bias[co], out, arg);
                    // ReLU commutes with the maximum; `v < 0` is false for NaN.
                    out.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
                });
            }
            (out, argmax, Shape::from((g.batch, g.cout, g.ho / 2, g.wo / 2)))
        } else {
            // (Cout, B, Ho·Wo) → (B, Cout, Ho·Wo), adding the bias (and clamping) on the way.
            let mut y = zeros(g.batch * g.cout * pixels);
            if pixels > 0 && g.cout > 0 {
                par::chunks_mut(&mut y, g.cout * pixels, |image, out| {
                    for (co, row) in out.chunks_exact_mut(pixels).enumerate() {
                        let src = &product[co * columns + image * pixels..][..pixels];
                        let b = bias[co];
                        for (d, s) in row.iter_mut().zip(src) {
                            let v = s + b;
                            // `v < 0` is false for NaN, so a NaN passes through ReLU.
                            *d = if relu && v < 0.0 { 0.0 } else { v };
                        }
                    }
                });
            }
            (y, Vec::new(), Shape::from((g.batch, g.cout, g.ho, g.wo)))
        };
        if self.keep {
            let _ = self.saved.set(Saved { cols, argmax });
        }
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geometry::new(x.dims(), w.dims(), self.padding)?;
        let (taps, columns, pixels) = (g.taps(), g.columns(), g.pixels());
        let gy = gy.contiguous()?;
        let saved = self.saved.get().ok_or_else(|| missing_state("conv2d"))?;
        // dz as a (B·Ho·Wo, Cout) matrix, masked by ReLU (and routed to the pooling's winners):
        // in that layout both products below run at gemm's best. One task per image, each
        // keeping its own bias-gradient sums, added up in image order afterwards.
        let cout = g.cout;
        let mut dz = zeros(columns * cout);
        let partial_db: Vec<Vec<f32>> = with_storage(&gy, |gs, gl| {
            let gv = contiguous(gs, gl)?;
            with_storage(y, |ys, yl| {
                let yv = contiguous(ys, yl)?;
                if columns == 0 || cout == 0 {
                    return Ok(Vec::new());
                }
                Ok(par::map(dz.chunks_mut(pixels * cout).collect(), |image, block: &mut [f32]| {
                    let mut sums = zeros(cout);
                    for (co, sum) in sums.iter_mut().enumerate() {
                        match self.epilogue {
                            Epilogue::ReluPool if g.wo >= 2 => {
                                let (w2, pooled) = (g.wo / 2, (g.ho / 2) * (g.wo / 2));
                                let at = (image * cout + co) * pooled;
                                let (src, out) = (&gv[at..at + pooled], &yv[at..at + pooled]);
                                let arg = &saved.argmax[at..at + pooled];
                                // Row by row, without divisions or branches: each window's
                                // winner gets the gradient, or zero where ReLU cut it.
                                for (i, ((src, out), arg)) in src
                                    .chunks_exact(w2)
                                    .zip(out.chunks_exact(w2))
                                    .zip(arg.chunks_exact(w2))
                                    .enumerate()
                                {
                                    for (j, ((s, y), which)) in src.iter().zip(out).zip(arg).enumerate() {
                                        let v = if *y > 0.0 { *s } else { 0.0 };
                                        let (dy, dx) = (usize::from(*which >> 1), usize::from(*which & 1));
                                        block[((2 * i + dy) * g.wo + 2 * j + dx) * cout + co] = v;
                                        *sum += v;
                                    }
                                }
                            }
                            // Pooled to nothing: no output, no gradient.
                            Epilogue::ReluPool => {}
                            Epilogue::Relu | Epilogue::Bias => {
                                let relu = self.epilogue == Epilogue::Relu;
                                let at = (image * cout + co) * pixels;
                                let (src, out) = (&gv[at..at + pixels], &yv[at..at + pixels]);
                                for (p, (s, o)) in src.iter().zip(out).enumerate() {
                                    // The ReLU mask is `y > 0`, so a NaN output passes no gradient.
                                    let d = if !relu || *o > 0.0 { *s } else { 0.0 };
                                    block[p * cout + co] = d;
                                    *sum += d;
                                }
                            }
                        }
                    }
                    sums
                }))
            })
        })?;
        let mut db = zeros(cout);
        for sums in &partial_db {
            for (d, s) in db.iter_mut().zip(sums) {
                *d += s;
            }
        }
        let dz = row_major(&dz, columns, cout)?;
        let dw = if wants_grad(w) {
            // dWᵀ (taps, Cout) = cols (taps, B·Ho·Wo) · dz, then turned the right way round.
            let v = matmul(row_major(&saved.cols, taps, columns)?, dz)?;
            let mut dw = zeros(cout * taps);
            for (tap, row) in v.chunks_exact(cout.max(1)).enumerate() {
                for (co, value) in row.iter().enumerate() {
                    dw[co * taps + tap] = *value;
                }
            }
            deliver(w, dw)
        } else {
            None
        };
        let dx = if wants_grad(x) {
            // Wᵀ (taps, Cout) and dzᵀ (Cout, B·Ho·Wo), both read through strides.
            let dcols =
                with_storage(w, |ws, wl| matmul(row_major(contiguous(ws, wl)?, cout, taps)?.t(), dz.t()))?;
            Some(tensor(col2im(&dcols, &g), x.shape()))
        } else {
            None
        };
        let db = if wants_grad(b) { deliver(b, db) } else { None };
        Ok((dx, dw, db))
    }
}
