//! A dense layer `y = x Wᵀ + b`, optionally followed by ReLU, as one op. The forward pass is one
//! matrix product with `W` read transposed through its strides, then one pass that adds the bias
//! (and clamps). The backward pass masks the incoming gradient by `y > 0` (ReLU), then takes
//! `dW = dzᵀ x` and `dx = dz W` as two matrix products over strided views and `db` as column sums;
//! `dx` is only computed when the input is part of the graph (hidden layers, or saliency).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::backward::deliver;
use super::gemm::{Matrix, matmul, row_major};
use super::{column_sums, contiguous, matrix, tensor, wants_grad, with_storage};

/// `x (n, in)`, `w (out, in)`, `b (out)` → `(n, out)`; `relu` fuses the activation. An `x` of
/// more dimensions is read as `(n, in)` with its trailing dimensions flattened, which spares the
/// graph a reshape node (and its backward pass a zero-filled gradient of `x`'s size).
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> candle_core::Result<Tensor> {
    if x.rank() > 2 {
        return x.contiguous()?.apply_op3(w, b, Linear { relu });
    }
    x.apply_op3(w, b, Linear { relu })
}

/// `x` as the `(n, in)` matrix the layer multiplies: its own strides when two-dimensional,
/// else its contiguous values with the trailing dimensions flattened.
fn input<'a>(xs: &'a CpuStorage, xl: &Layout) -> candle_core::Result<Matrix<'a>> {
    match *xl.dims() {
        [_, _] => matrix(xs, xl),
        [n, ref rest @ ..] if xl.is_contiguous() => {
            row_major(contiguous(xs, xl)?, n, rest.iter().product::<usize>())
        }
        ref dims => candle_core::bail!("linear: input {dims:?} must be (n, in) or contiguous (n, ...)"),
    }
}

struct Linear {
    relu: bool,
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "vigil-linear"
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
        let x = input(xs, xl)?;
        let (n, inputs) = (x.rows(), x.cols());
        let (outputs, w_inputs) = wl.shape().dims2()?;
        let bias = contiguous(bs, bl)?;
        if w_inputs != inputs || bias.len() != outputs {
            candle_core::bail!(
                "linear: input {:?}, weight {:?} and bias {:?} do not fit",
                xl.dims(),
                wl.dims(),
                bl.dims()
            );
        }
        // Wᵀ is W with its strides swapped: gemm reads it in place.
        let mut y = matmul(x, matrix(ws, wl)?.t())?;
        for row in y.chunks_exact_mut(outputs.max(1)) {
            for (v, b) in row.iter_mut().zip(bias) {
                let s = *v + b;
                // `s < 0` is false for NaN, so a NaN passes through ReLU as in PyTorch.
                *v = if self.relu && s < 0.0 { 0.0 } else { s };
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(0)?;
        let outputs = w.dim(0)?;
        let gy = gy.contiguous()?;
        // dz = dy, masked by ReLU where it was fused.
        let dz: Vec<f32> = with_storage(&gy, |gs, gl| {
            let g = contiguous(gs, gl)?;
            if !self.relu {
                return Ok(g.to_vec());
            }
            with_storage(y, |ys, yl| {
                let yv = contiguous(ys, yl)?;
                Ok(g.iter().zip(yv).map(|(g, y)| if *y > 0.0 { *g } else { 0.0 }).collect())
            })
        })?;
        let db = if wants_grad(b) { deliver(b, column_sums(&dz, outputs)) } else { None };
        let dz_m = row_major(&dz, n, outputs)?;
        let dx = if wants_grad(x) {
            let v = with_storage(w, |ws, wl| matmul(dz_m, matrix(ws, wl)?))?;
            Some(tensor(v, x.shape()))
        } else {
            None
        };
        let dw = if wants_grad(w) {
            // dzᵀ read through strides.
            let v = with_storage(x, |xs, xl| matmul(dz_m.t(), input(xs, xl)?))?;
            deliver(w, v)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}
