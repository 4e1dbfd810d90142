//! A whole LSTM or GRU layer over a sequence as one op, with backpropagation through time inside.
//!
//! Written with candle's ops, every time step costs a dozen small tensors and, backwards, a
//! zero-filled tensor the size of the whole sequence for each step's slice of the input
//! projection (the gradient of candle's `narrow` pads with zeros): on the full-batch waveform
//! GRU a training step took about half a second. Here the input projection `x W_ihᵀ + b_ih` of
//! every step is one dense-layer product outside the op; the op runs the recurrence with one
//! `gemm` per step forwards and one per step backwards, keeps the gate activations it needs,
//! and takes `dW_hh` as a single product over all steps. Gate order and formulas follow
//! PyTorch (LSTM: i, f, g, o; GRU: r, z, n with `n = tanh(x_n + r·(h W_hnᵀ + b_hn))`).
//!
//! Inside, sequences are kept step-major, `(T, B, ·)`, so that each step's rows are one
//! contiguous block: a `gemm` operand at an offset, and a slice split across threads by rows.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::backward::deliver;
use super::gemm::{matmul, row_major};
use super::par;
use super::{contiguous, matrix, missing_state, tensor, wants_grad, with_storage, zeros};

/// Which cell the layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// Every hidden state `(B, T, H)` of a layer started from zero states, given the input
/// projection `xp (B·T, G·H)` (rows example-major: example, then step), `w_hh (G·H, H)` and
/// `b_hh (G·H)`.
pub fn recurrent(
    cell: Cell,
    xp: &Tensor,
    w_hh: &Tensor,
    b_hh: &Tensor,
    batch: usize,
    steps: usize,
) -> candle_core::Result<Tensor> {
    let xp = xp.contiguous()?;
    let keep = wants_grad(&xp) || wants_grad(w_hh) || wants_grad(b_hh);
    xp.apply_op3(w_hh, b_hh, Recurrent { cell, batch, steps, keep, saved: OnceLock::new() })
}

struct Recurrent {
    cell: Cell,
    batch: usize,
    steps: usize,
    keep: bool,
    saved: OnceLock<Saved>,
}

/// What the forward pass keeps for backpropagation through time, all step-major.
struct Saved {
    /// `(T, B, H)`: the hidden states.
    hs: Vec<f32>,
    /// `(T, B, G·H)`: LSTM i, f, g, o after their activations; GRU r, z, n.
    gates: Vec<f32>,
    /// `(T, B, H)`: LSTM, the cell state after each step; GRU, `h W_hnᵀ + b_hn`.
    extra: Vec<f32>,
}

/// Sizes of one run: examples, steps, hidden width.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    g: usize,
}

impl Dims {
    fn gh(&self) -> usize {
        self.g * self.h
    }
}

/// Rows per parallel task in the element-wise work of a step.
const ROWS: usize = 32;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `(T, B, w)` step-major rows to `(B, T, w)` example-major ones.
fn to_example_major(src: &[f32], d: Dims, width: usize) -> Vec<f32> {
    let mut out = zeros(src.len());
    if width == 0 || d.t == 0 {
        return out;
    }
    par::chunks_mut(&mut out, d.t * width, |row, dst| {
        for (step, chunk) in dst.chunks_exact_mut(width).enumerate() {
            chunk.copy_from_slice(&src[(step * d.b + row) * width..][..width]);
        }
    });
    out
}

impl Recurrent {
    fn dims(&self, xl: &Layout, wl: &Layout, bl: &Layout) -> candle_core::Result<Dims> {
        let (rows, width) = xl.shape().dims2()?;
        let (g_h, h) = wl.shape().dims2()?;
        let g = self.cell.gates();
        if rows != self.batch * self.steps || width != g * h || g_h != g * h || bl.dims() != [g * h] {
            candle_core::bail!(
                "recurrent: projection {:?}, weight {:?} and bias {:?} do not fit {} steps of {} examples",
                xl.dims(),
                wl.dims(),
                bl.dims(),
                self.steps,
                self.batch
            );
        }
        Ok(Dims { b: self.batch, t: self.steps, h, g })
    }

    /// Runs the recurrence over `xp` (example-major); returns the states and the saved gates.
    fn run(
        &self,
        xp: &[f32],
        ws: &CpuStorage,
        wl: &Layout,
        bias: &[f32],
        d: Dims,
    ) -> candle_core::Result<Saved> {
        let Dims { b, t, h, .. } = d;
        let gh = d.gh();
        let mut hs = zeros(t * b * h);
        let mut gates = zeros(t * b * gh);
        let mut extra = zeros(t * b * h);
        let mut cell_state = zeros::<f32>(b * h);
        let w_t = matrix(ws, wl)?.t();
        let cell = self.cell;
        if h == 0 || b == 0 {
            return Ok(Saved { hs, gates, extra });
        }
        for step in 0..t {
            // h W_hhᵀ, with W_hh read transposed through its strides; the first state is zero.
            let hp = if step == 0 {
                zeros(b * gh)
            } else {
                matmul(row_major(&hs[(step - 1) * b * h..], b, h)?, w_t)?
            };
            let (before, rest) = hs.split_at_mut(step * b * h);
            let prev: &[f32] = if step == 0 { &[] } else { &before[(step - 1) * b * h..] };
            let now = &mut rest[..b * h];
            let gates_now = &mut gates[step * b * gh..][..b * gh];
            let extra_now = &mut extra[step * b * h..][..b * h];
            let blocks: Vec<_> = now
                .chunks_mut(ROWS * h)
                .zip(gates_now.chunks_mut(ROWS * gh))
                .zip(extra_now.chunks_mut(ROWS * h))
                .zip(cell_state.chunks_mut(ROWS * h))
                .collect();
            par::for_each(blocks, |chunk, (((now, gate_rows), extra_rows), c_rows)| {
                let rows = now.len() / h;
                for r in 0..rows {
                    let row = chunk * ROWS + r;
                    let x = &xp[(row * t + step) * gh..][..gh];
                    let p = &hp[row * gh..][..gh];
                    let gv = &mut gate_rows[r * gh..][..gh];
                    let ev = &mut extra_rows[r * h..][..h];
                    let hv = &mut now[r * h..][..h];
                    // The recurrent term as candle's ops add it: x + (h W_hhᵀ + b_hh).
                    let pre = |q: usize, k: usize| x[q * h + k] + (p[q * h + k] + bias[q * h + k]);
                    match cell {
                        Cell::Lstm => {
                            let c = &mut c_rows[r * h..][..h];
                            for k in 0..h {
                                let (i, f) = (sigmoid(pre(0, k)), sigmoid(pre(1, k)));
                                let (gg, o) = (pre(2, k).tanh(), sigmoid(pre(3, k)));
                                c[k] = f * c[k] + i * gg;
                                hv[k] = o * c[k].tanh();
                                (gv[k], gv[h + k], gv[2 * h + k], gv[3 * h + k]) = (i, f, gg, o);
                                ev[k] = c[k];
                            }
                        }
                        Cell::Gru => {
                            for k in 0..h {
                                let hn = p[2 * h + k] + bias[2 * h + k];
                                let rg = sigmoid(pre(0, k));
                                let z = sigmoid(pre(1, k));
                                let n = (x[2 * h + k] + rg * hn).tanh();
                                let hprev = if prev.is_empty() { 0.0 } else { prev[row * h + k] };
                                hv[k] = (n - z * n) + z * hprev;
                                (gv[k], gv[h + k], gv[2 * h + k]) = (rg, z, n);
                                ev[k] = hn;
                            }
                        }
                    }
                }
            });
        }
        Ok(Saved { hs, gates, extra })
    }
}

impl CustomOp3 for Recurrent {
    fn name(&self) -> &'static str {
        "vigil-recurrent"
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
        let d = self.dims(xl, wl, bl)?;
        let saved = self.run(contiguous(xs, xl)?, ws, wl, contiguous(bs, bl)?, d)?;
        let out = to_example_major(&saved.hs, d, d.h);
        if self.keep {
            let _ = self.saved.set(saved);
        }
        Ok((CpuStorage::F32(out), Shape::from((d.b, d.t, d.h))))
    }

    fn bwd(
        &self,
        xp: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _hs: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(xp.layout(), w.layout(), b.layout())?;
        let Dims { b: batch, t, h, .. } = d;
        let gh = d.gh();
        let saved = self.saved.get().ok_or_else(|| missing_state("recurrent"))?;
        let gy = gy.contiguous()?;
        let hs = &saved.hs;
        // Gradients of the recurrent products' rows, step-major; for the LSTM they are also the
        // gradients of the input projection, for the GRU those differ in the n gate.
        let mut dhp = zeros(t * batch * gh);
        let mut dxp_all = zeros(t * batch * gh);
        let mut dh_next = zeros(batch * h);
        let mut dc_next = zeros::<f32>(batch * h);
        let cell = self.cell;
        if h > 0 && batch > 0 {
            with_storage(&gy, |gs, gl| {
                let gyv = contiguous(gs, gl)?;
                with_storage(w, |ws, wl| {
                    for step in (0..t).rev() {
                        let gates = &saved.gates[step * batch * gh..][..batch * gh];
                        let extra = &saved.extra[step * batch * h..][..batch * h];
                        let prev_extra: &[f32] =
                            if step == 0 { &[] } else { &saved.extra[(step - 1) * batch * h..][..batch * h] };
                        let prev_h: &[f32] =
                            if step == 0 { &[] } else { &hs[(step - 1) * batch * h..][..batch * h] };
                        let dhp_now = &mut dhp[step * batch * gh..][..batch * gh];
                        let dxp_now = &mut dxp_all[step * batch * gh..][..batch * gh];
                        let dh_in = &dh_next;
                        // Per row: the state gradient arriving at this step, then the gates'.
                        // `direct` receives the part of dh_{t-1} that bypasses W_hh (GRU: z·dh).
                        let mut direct = zeros(batch * h);
                        let blocks: Vec<_> = dhp_now
                            .chunks_mut(ROWS * gh)
                            .zip(dc_next.chunks_mut(ROWS * h))
                            .zip(direct.chunks_mut(ROWS * h))
                            .zip(dxp_now.chunks_mut(ROWS * gh))
                            .collect();
                        par::for_each(blocks, |chunk, (((dhp_rows, dc_rows), direct_rows), dxp_rows)| {
                            let rows = dhp_rows.len() / gh;
                            for r in 0..rows {
                                let row = chunk * ROWS + r;
                                let gv = &gates[row * gh..][..gh];
                                let ev = &extra[row * h..][..h];
                                let out = &mut dhp_rows[r * gh..][..gh];
                                let dx = &mut dxp_rows[r * gh..][..gh];
                                for k in 0..h {
                                    let dh = gyv[(row * t + step) * h + k] + dh_in[row * h + k];
                                    match cell {
                                        Cell::Lstm => {
                                            let (i, f, gg, o) =
                                                (gv[k], gv[h + k], gv[2 * h + k], gv[3 * h + k]);
                                            let tc = ev[k].tanh();
                                            let c_prev = if prev_extra.is_empty() {
                                                0.0
                                            } else {
                                                prev_extra[row * h + k]
                                            };
                                            let dc = dh * o * (1.0 - tc * tc) + dc_rows[r * h + k];
                                            dc_rows[r * h + k] = dc * f;
                                            out[k] = dc * gg * i * (1.0 - i);
                                            out[h + k] = dc * c_prev * f * (1.0 - f);
                                            out[2 * h + k] = dc * i * (1.0 - gg * gg);
                                            out[3 * h + k] = dh * tc * o * (1.0 - o);
                                            for q in 0..4 {
                                                dx[q * h + k] = out[q * h + k];
                                            }
                                        }
                                        Cell::Gru => {
                                            let (rg, z, n) = (gv[k], gv[h + k], gv[2 * h + k]);
                                            let hprev =
                                                if prev_h.is_empty() { 0.0 } else { prev_h[row * h + k] };
                                            let dan = dh * (1.0 - z) * (1.0 - n * n);
                                            let dar = dan * ev[k] * rg * (1.0 - rg);
                                            let daz = dh * (hprev - n) * z * (1.0 - z);
                                            direct_rows[r * h + k] = dh * z;
                                            out[k] = dar;
                                            out[h + k] = daz;
                                            out[2 * h + k] = dan * rg;
                                            (dx[k], dx[h + k], dx[2 * h + k]) = (dar, daz, dan);
                                        }
                                    }
                                }
                            }
                        });
                        dh_next = if step == 0 {
                            direct
                        } else {
                            // dh_{t-1} = dhp_t W_hh (+ the GRU's direct path).
                            let dhp_now = row_major(&dhp[step * batch * gh..], batch, gh)?;
                            let mut v = matmul(dhp_now, matrix(ws, wl)?)?;
                            v.iter_mut().zip(&direct).for_each(|(a, b)| *a += b);
                            v
                        };
                    }
                    Ok(())
                })
            })?;
        }
        let dxp =
            if wants_grad(xp) { Some(tensor(to_example_major(&dxp_all, d, gh), xp.shape())) } else { None };
        let dw = if wants_grad(w) {
            // dW_hh = Σ_t dhp_tᵀ h_{t-1}: steps 1.. of dhp against steps ..T-1 of h, one product.
            let v = if t >= 2 && batch > 0 {
                let rows = (t - 1) * batch;
                matmul(row_major(&dhp[batch * gh..], rows, gh)?.t(), row_major(hs, rows, h)?)?
            } else {
                Vec::new()
            };
            let v = if v.len() == gh * h { v } else { zeros(gh * h) };
            deliver(w, v)
        } else {
            None
        };
        let db = if wants_grad(b) {
            // Column sums per step in parallel, then added in step order.
            let partial: Vec<Vec<f32>> = if gh == 0 || batch == 0 {
                Vec::new()
            } else {
                par::map(dhp.chunks(batch * gh).collect(), |_, block| super::column_sums(block, gh))
            };
            let mut db = zeros(gh);
            for p in &partial {
                db.iter_mut().zip(p).for_each(|(a, b)| *a += b);
            }
            deliver(b, db)
        } else {
            None
        };
        Ok((dxp, dw, db))
    }
}
