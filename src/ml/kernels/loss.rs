//! Softmax cross-entropy over integer class labels, averaged over the batch, as one op: the
//! forward pass is one log-sum-exp per row, the backward pass `(softmax − one-hot) / n`. It
//! replaces the dozen small ops of `candle_nn::loss::cross_entropy` (log-softmax, gather, sum,
//! and their backward passes), whose fixed costs rival the whole step of a small network.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::{applies, contiguous, tensor, with_storage, zeros};

/// Mean cross-entropy of `logits (n, classes)` against `labels (n)` (u8, u32 or i64), as a
/// scalar. Falls back to candle's own on other devices and types.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let integer = matches!(labels.dtype(), DType::U8 | DType::U32 | DType::I64);
    if !applies(&[logits]) || !labels.device().is_cpu() || !integer || logits.rank() != 2 {
        return candle_nn::loss::cross_entropy(logits, labels);
    }
    logits.contiguous()?.apply_op2(&labels.contiguous()?, CrossEntropy)
}

struct CrossEntropy;

/// The labels as class indices, each checked against the number of classes.
fn labels(s: &CpuStorage, l: &Layout, rows: usize, classes: usize) -> candle_core::Result<Vec<usize>> {
    let (start, end) = match l.contiguous_offsets() {
        Some(range) if l.dims() == [rows] => range,
        _ => candle_core::bail!("cross_entropy: labels {:?} do not fit {rows} rows of logits", l.dims()),
    };
    let raw: Vec<i64> = match s {
        CpuStorage::U8(v) => v[start..end].iter().map(|&x| i64::from(x)).collect(),
        CpuStorage::U32(v) => v[start..end].iter().map(|&x| i64::from(x)).collect(),
        CpuStorage::I64(v) => v[start..end].to_vec(),
        other => candle_core::bail!("cross_entropy: labels must be integers, got {:?}", other.dtype()),
    };
    raw.into_iter()
        .enumerate()
        .map(|(row, label)| match usize::try_from(label) {
            Ok(c) if c < classes => Ok(c),
            _ => candle_core::bail!(
                "cross_entropy: label {label} of row {row} is not one of {classes} classes"
            ),
        })
        .collect()
}

/// The maximum and log-sum-exp of a row, in f64.
fn log_sum_exp(row: &[f32]) -> (f64, f64) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m || v.is_nan() { v } else { m }) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    (max, max + sum.ln())
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "vigil-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, classes) = ll.shape().dims2()?;
        let logits = contiguous(ls, ll)?;
        let labels = labels(ts, tl, rows, classes)?;
        let mut total = 0.0f64;
        for (row, &label) in logits.chunks_exact(classes.max(1)).zip(&labels) {
            total += log_sum_exp(row).1 - row[label] as f64;
        }
        let loss = (total / rows as f64) as f32;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        labels_t: &Tensor,
        _loss: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, classes) = logits.dims2()?;
        let scale = grad.to_dtype(DType::F64)?.to_scalar::<f64>()? / rows as f64;
        let labels = with_storage(labels_t, |s, l| labels(s, l, rows, classes))?;
        let dl = with_storage(logits, |s, l| {
            let v = contiguous(s, l)?;
            let mut out = zeros(v.len());
            for ((row, dst), &label) in
                v.chunks_exact(classes.max(1)).zip(out.chunks_exact_mut(classes.max(1))).zip(&labels)
            {
                let (_, lse) = log_sum_exp(row);
                for (d, &x) in dst.iter_mut().zip(row) {
                    *d = ((x as f64 - lse).exp() * scale) as f32;
                }
                dst[label] -= scale as f32;
            }
            Ok(out)
        })?;
        Ok((Some(tensor(dl, (rows, classes))), None))
    }
}
