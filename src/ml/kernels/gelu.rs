//! GELU with the exact (erf) form, `y = x · Φ(x)`, as one op with its backward pass,
//! `dy/dx = Φ(x) + x · φ(x)`. candle's `gelu_erf` is the same formula (and the same `erf`), but
//! runs on one thread, and its backward pass is seven ops over the activations; in a transformer's
//! feed-forward block this is the widest tensor of the layer, so both are spread over the
//! kernels' threads here in fixed-size chunks, each chunk through the vectorised `erf` and
//! `exp` of [`super::vmath`].

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::{contiguous, tensor, with_storage, zeros};
use super::{par, vmath};

/// Values handed to one parallel task.
const CHUNK: usize = 16 * 1024;

/// `gelu(x)` element-wise.
pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "vigil-gelu"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(xs, xl)?;
        let mut y = zeros::<f32>(x.len());
        par::chunks_mut(&mut y, CHUNK, |t, y| vmath::gelu(&x[t * CHUNK..][..y.len()], y));
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let dx = with_storage(x, |xs, xl| {
            let x = contiguous(xs, xl)?;
            with_storage(&grad, |gs, gl| {
                let g = contiguous(gs, gl)?;
                let mut dx = g.to_vec();
                par::chunks_mut(&mut dx, CHUNK, |t, dx| {
                    vmath::gelu_grad(&x[t * CHUNK..][..dx.len()], dx, None)
                });
                Ok(dx)
            })
        })?;
        Ok(Some(tensor(dx, x.shape())))
    }
}
