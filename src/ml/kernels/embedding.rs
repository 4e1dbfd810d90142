//! An embedding lookup as one op: the rows of a table `(V, E)` for a list of ids, with a backward
//! pass that sums each row's gradient into the table's.
//!
//! Why not candle's `index_select`: its backward pass adds into the gradient store's entry for
//! the table, which candle first creates as a zero-filled tensor of the table's size, and its
//! `index_add` is out of place, so it copies that tensor once more before adding. For MiniLM the
//! table is 30,522 x 384 (47 MB): two fresh 47 MB buffers a step, each faulted in page by page,
//! were 2% of a fine-tuning step. Here the gradient is one zero-filled table, filled in id order
//! (a fixed order, so results do not depend on threads), and handed to the running
//! [`super::backward`] like the other kernels' parameter gradients.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::backward::deliver;
use super::{contiguous, with_storage, zeros};

/// The rows of `table (V, E)` for `ids`, as `(ids.len(), E)`.
pub fn embedding(table: &Tensor, ids: Vec<u32>) -> candle_core::Result<Tensor> {
    table.contiguous()?.apply_op1(Embedding { ids })
}

struct Embedding {
    ids: Vec<u32>,
}

impl Embedding {
    /// The table's `(V, E)`, with every id checked against `V`.
    fn dims(&self, shape: &Shape) -> candle_core::Result<(usize, usize)> {
        let (v, e) = shape.dims2()?;
        if let Some(&bad) = self.ids.iter().find(|&&id| id as usize >= v) {
            candle_core::bail!("embedding: id {bad} is outside a table of {v} rows");
        }
        Ok((v, e))
    }
}

impl CustomOp1 for Embedding {
    fn name(&self) -> &'static str {
        "vigil-embedding"
    }

    fn cpu_fwd(&self, ts: &CpuStorage, tl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, e) = self.dims(tl.shape())?;
        let table = contiguous(ts, tl)?;
        let mut out = Vec::with_capacity(self.ids.len() * e);
        for &id in &self.ids {
            out.extend_from_slice(&table[id as usize * e..][..e]);
        }
        Ok((CpuStorage::F32(out), Shape::from((self.ids.len(), e))))
    }

    fn bwd(&self, table: &Tensor, _out: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // The ids were checked against the table by the forward pass.
        let (v, e) = table.dims2()?;
        let grad = grad.contiguous()?;
        let mut sums = zeros::<f32>(v * e);
        with_storage(&grad, |gs, gl| {
            let g = contiguous(gs, gl)?;
            for (&id, row) in self.ids.iter().zip(g.chunks_exact(e.max(1))) {
                let at = id as usize * e;
                super::vmath::add_rows_into(&mut sums[at..at + e], row);
            }
            Ok(())
        })?;
        Ok(deliver(table, sums))
    }
}
