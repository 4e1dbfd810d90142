//! Fused CPU kernels for the hot paths of training, as candle custom ops with their own forward
//! and backward passes: a dense layer with its bias and ReLU, 2-D convolution as im2col plus one
//! matrix product, 2x2 max pooling that records its argmax, softmax cross-entropy, and in-place
//! optimiser updates.
//!
//! candle's generic path builds each of these from many small ops, every one of which allocates
//! a tensor, and accumulates every gradient into a fresh zero tensor; on a two-core CPU that
//! overhead, not arithmetic, is where training time went. The kernels here read and write
//! candle's CPU storage as slices, call the `gemm` crate through candle's strided matrix product
//! (transposed operands are strides, never copies), and parallelise over images with rayon, the
//! same pool `gemm` uses. Every reduction runs in a fixed order, so results do not depend on
//! thread timing and the same seed gives the same run.
//!
//! This module owns only arithmetic: the layers in [`crate::ml::model`] decide when to use it.
//! Kernels run on f32 CPU tensors; [`applies`] says when that holds, and callers fall back to
//! candle's generic ops (which also serve as the reference in tests) everywhere else.

pub mod backward;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod recurrent;

#[cfg(test)]
mod tests;

use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, DType, Layout, Shape, Storage, Tensor};

pub use backward::backward;
pub use conv::{conv2d, conv2d_relu_pool};
pub use linear::linear;
pub use loss::cross_entropy;
pub use pool::max_pool2;
pub use recurrent::{Cell, recurrent};

/// Whether the fused kernels can run on these tensors: all f32, all on the CPU.
pub fn applies(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The f32 values of a CPU storage.
fn values(storage: &CpuStorage) -> candle_core::Result<&[f32]> {
    match storage {
        CpuStorage::F32(v) => Ok(v),
        other => candle_core::bail!("fused kernels take f32 tensors, got {:?}", other.dtype()),
    }
}

/// The f32 values of a storage read through a contiguous layout, starting at its offset.
fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&values(storage)?[start..end]),
        None => {
            candle_core::bail!("fused kernels expect a contiguous operand, got strides {:?}", layout.stride())
        }
    }
}

/// Runs `f` on a CPU tensor's storage and layout (a read lock is held meanwhile).
fn with_storage<R>(
    t: &Tensor,
    f: impl FnOnce(&CpuStorage, &Layout) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu, layout),
        _ => candle_core::bail!("fused kernels run on the CPU only"),
    }
}

/// A tensor that owns `values`, outside any autograd graph (gradients are never differentiated
/// again, and results of forward passes get their graph node from `apply_op*`).
fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> Tensor {
    Tensor::from_storage(Storage::Cpu(CpuStorage::F32(values)), shape, BackpropOp::none(), false)
}

/// A 2-D layout over a buffer: `rows x cols` with the given row and column strides.
fn layout2(rows: usize, cols: usize, row_stride: usize, col_stride: usize, offset: usize) -> Layout {
    Layout::new(Shape::from((rows, cols)), vec![row_stride, col_stride], offset)
}

/// `a · b` for 2-D operands read through their layouts (any strides and offsets, so a transpose
/// is a layout, not a copy), as a new row-major `(m, n)` buffer. It is `gemm`, reached through
/// candle's CPU matrix product, which passes the strides on and threads over rayon's pool.
fn matmul(a: &CpuStorage, a_l: &Layout, b: &CpuStorage, b_l: &Layout) -> candle_core::Result<Vec<f32>> {
    let (m, k) = a_l.shape().dims2()?;
    let (k2, n) = b_l.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("matmul: inner sizes differ ({m}x{k} by {k2}x{n})");
    }
    if m == 0 || n == 0 {
        return Ok(Vec::new());
    }
    if k == 0 {
        return Ok(vec![0.0; m * n]);
    }
    match a.matmul(b, (1, m, n, k), a_l, b_l)? {
        CpuStorage::F32(v) => Ok(v),
        other => candle_core::bail!("matmul returned {:?}", other.dtype()),
    }
}

/// Whether a tensor is part of an autograd graph, so that its gradient is wanted. The kernels
/// keep what their backward pass needs exactly when one of their inputs is.
fn wants_grad(t: &Tensor) -> bool {
    t.track_op()
}

/// A backward pass reached an op whose forward pass kept nothing: candle only records an op in
/// the graph when an input tracks gradients, and then the forward pass keeps its state, so this
/// is a bug, reported rather than hidden.
fn missing_state(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: backward pass without the forward pass's saved state"))
}

/// Sums `rows` rows of `width` values column by column, in row order (a deterministic bias
/// gradient).
fn column_sums(values: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; width];
    for row in values.chunks_exact(width.max(1)) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
    sums
}
