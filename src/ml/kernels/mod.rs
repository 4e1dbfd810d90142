//! Fused CPU kernels for the hot paths of training, as candle custom ops with their own forward
//! and backward passes: a dense layer with its bias and ReLU, 2-D convolution as im2col plus one
//! matrix product (with ReLU and 2x2 max pooling fused in), max pooling that records its argmax,
//! whole LSTM/GRU layers, multi-head attention, layer norm, GELU, an embedding lookup, softmax cross-entropy, in-place optimiser updates, and a training
//! backward pass that hands parameter gradients straight to the optimiser.
//!
//! candle's generic path builds each of these from many small ops, every one of which allocates
//! a tensor, and accumulates every gradient into a fresh zero tensor; on a two-core CPU that
//! overhead, not arithmetic, is where training time went. The kernels here read and write
//! candle's CPU storage as slices, call the `gemm` crate through the bounds-checked front of the
//! internal `vigil-gemm` crate (see [`gemm`]) with strided operands (transposes are strides,
//! never copies), and split their loops and products over rayon's work-stealing pool (see
//! [`par`]; candle's spinning pool was tried first). Every reduction runs in a fixed order, so results do not depend on
//! thread timing and the same seed gives the same run.
//!
//! This module owns only arithmetic: the layers in [`crate::ml::model`], the optimiser and the
//! training loop decide when to use it. Kernels run on f32 CPU tensors; [`applies`] says when
//! that holds, and callers fall back to candle's generic ops (which also serve as the reference
//! in tests) everywhere else.

pub mod attention;
pub mod backward;
pub mod conv;
pub mod embedding;
pub mod encoder;
pub mod gelu;
pub(crate) mod gemm;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod par;
pub mod pool;
pub mod q8;
pub mod recurrent;
pub mod vmath;

#[cfg(test)]
mod tests;

use candle_core::backend::BackendStorage;
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, DType, Layout, Shape, Storage, Tensor};

pub use attention::attention;
pub use backward::backward;
pub use conv::{conv2d, conv2d_relu_pool};
pub use embedding::embedding;
pub use encoder::encoder_layer;
pub use gelu::gelu;
pub use linear::linear;
pub use loss::cross_entropy;
pub use norm::layer_norm;
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

/// A 2-D layout over a CPU storage as a [`gemm::Matrix`]: any strides and offset, so that a
/// transposed view is read in place.
fn matrix<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<gemm::Matrix<'a>> {
    let (rows, cols) = l.shape().dims2()?;
    let (&[rs, cs], offset) = (l.stride(), l.start_offset()) else {
        candle_core::bail!("matmul: a matrix needs two strides, got {:?}", l.stride());
    };
    let data = values(s)?;
    let data = data.get(offset..).unwrap_or(&[]);
    gemm::strided(data, rows, cols, rs, cs)
}

/// Whether a tensor is part of an autograd graph, so that its gradient is wanted. The kernels
/// keep what their backward pass needs exactly when one of their inputs is, outside
/// [`inference`].
pub(crate) fn wants_grad(t: &Tensor) -> bool {
    t.track_op() && !in_inference()
}

thread_local! {
    static INFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as inference (torch's `no_grad`): nothing it computes will be differentiated. A
/// trained model's weights are candle variables, which candle tracks always, so without this a
/// served prediction looked like a training step to the kernels: the fused encoder layer kept
/// every activation for a backward pass that never came, and a quantised layer widened its
/// weight to f32 on every call for a gradient nobody asked for. Inside, kernels keep nothing and
/// quantised layers take their quantised product; a backward pass through what `f` computed
/// recomputes what it needs from the op's inputs or is an error (a kernel's missing state), never
/// a wrong gradient, and a backward pass inside `f` is refused. Candle runs a kernel's
/// forward pass on the calling thread, which is the one this marks.
pub fn inference<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INFERENCE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(INFERENCE.with(|c| c.replace(true)));
    f()
}

/// Whether the calling thread is inside [`inference`].
pub fn in_inference() -> bool {
    INFERENCE.with(|c| c.get())
}

/// A backward pass reached an op whose forward pass kept nothing: candle only records an op in
/// the graph when an input tracks gradients, and then the forward pass keeps its state, so this
/// is a bug, reported rather than hidden.
fn missing_state(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: backward pass without the forward pass's saved state"))
}

/// `n` zeros, written in place rather than asked of the allocator already zeroed: jemalloc zeroes
/// a large reused block by handing its pages back to the kernel, and each page then faults on its
/// first touch (a tenth of a recurrent training step); writing the zeros costs far less.
pub(crate) fn zeros<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, T::default());
    v
}

/// A dropout mask, a byte a value: `keep[i]` is 1 where value `i` is kept (and scaled by
/// `scale`, `1/(1-p)`) and 0 where it is dropped. A byte, not the f32 multiplier, because the
/// masks are large and read twice: MiniLM's at batch 32 x 128 are 94 million values a training
/// step (the attention probabilities' are 25 MB a layer as f32), and writing, zero-filling and
/// reading them as f32 was a tenth of a fine-tuning step.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    pub keep: Vec<u8>,
    pub scale: f32,
}

impl Dropout {
    /// Values the mask covers.
    pub fn len(&self) -> usize {
        self.keep.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keep.is_empty()
    }

    /// The mask as read by the element-wise kernels.
    pub fn view(&self) -> vmath::Keep<'_> {
        vmath::Keep { bytes: &self.keep, scale: self.scale }
    }

    /// The multipliers as f32 (0 or `scale`), for candle's composed ops.
    pub fn multipliers(&self) -> Vec<f32> {
        self.keep.iter().map(|&k| f32::from(k) * self.scale).collect()
    }
}

/// Sums `rows` rows of `width` values column by column, in row order (a deterministic bias
/// gradient), vectorised ([`vmath::add_rows_into`]).
fn column_sums(values: &[f32], width: usize) -> Vec<f32> {
    let mut sums = zeros(width);
    vmath::add_rows_into(&mut sums, values);
    sums
}
