//! Occlusion as Captum's `Occlusion` computes it: a window slides over the input, each position
//! is replaced by the baseline, and every value gets the mean drop in the target output over the
//! windows that cover it. Window positions follow Captum: `ceil((size − window) / stride) + 1`
//! per dimension, the last one cut at the edge.

use candle_core::Tensor;

use super::{Baseline, Explainer, Space};
use crate::error::Result;
use crate::ml::data::InputShape;

impl Explainer<'_> {
    /// Per-value attributions for each input (per token for text).
    pub(crate) fn occlusion(
        &self,
        space: &Space,
        targets: &Tensor,
        window: usize,
        stride: usize,
        baseline: &Baseline,
    ) -> Result<Vec<Vec<f32>>> {
        let dims = space.values.dims()[1..].to_vec();
        // Windows span whole channels, feature vectors and embeddings.
        let (shape, strides) = match self.net.input {
            InputShape::Image { channels, .. } => {
                (vec![channels, window, window], vec![channels, stride, stride])
            }
            InputShape::Sequence { features, .. } => (vec![window, features], vec![stride, features]),
            InputShape::Tabular { .. } => (vec![window], vec![stride]),
            InputShape::Text { .. } => (vec![window, dims[1]], vec![stride, dims[1]]),
        };
        let windows = window_boxes(&dims, &shape, &strides);
        let (n, d) = (space.n, space.width);
        let values = space.values.flatten_from(1)?.to_vec2::<f32>()?;
        let fill: Vec<f32> = match baseline {
            Baseline::Zero => vec![0.0; d],
            Baseline::Constant(v) => vec![*v; d],
            Baseline::Custom(v) => v.clone(),
        };
        // Every occluded copy of every input, then one batched pass.
        let p = windows.len();
        let mut points = Vec::with_capacity(n * p * d);
        for x in &values {
            for cells in &windows {
                let start = points.len();
                points.extend_from_slice(x);
                for &c in cells {
                    points[start + c] = fill[c];
                }
            }
        }
        let device = space.values.device();
        let mut shape_all = vec![n * p];
        shape_all.extend_from_slice(&dims);
        let points = Tensor::from_vec(points, shape_all, device)?;
        let repeat = Tensor::from_vec(
            (0..n as u32).flat_map(|i| std::iter::repeat_n(i, p)).collect::<Vec<_>>(),
            n * p,
            device,
        )?;
        let mask = space.mask.as_ref().map(|m| m.index_select(&repeat, 0)).transpose()?;
        let occluded =
            self.scores(&points, mask.as_ref(), &targets.index_select(&repeat, 0)?)?.to_vec1::<f32>()?;
        let original = self.scores(&space.values, space.mask.as_ref(), targets)?.to_vec1::<f32>()?;

        let mut counts = vec![0u32; d];
        for cells in &windows {
            for &c in cells {
                counts[c] += 1;
            }
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut total = vec![0f64; d];
            for (w, cells) in windows.iter().enumerate() {
                let drop = (original[i] - occluded[i * p + w]) as f64;
                for &c in cells {
                    total[c] += drop;
                }
            }
            let per_value: Vec<f32> = total
                .iter()
                .zip(&counts)
                .map(|(t, &k)| if k == 0 { 0.0 } else { (t / k as f64) as f32 })
                .collect();
            out.push(match &space.mask {
                // A token's window covers its whole embedding: its first value is the token's.
                Some(mask) => {
                    let mask = mask.get(i)?.to_vec1::<f32>()?;
                    let e = dims[1];
                    mask.iter().enumerate().map(|(t, m)| per_value[t * e] * m).collect()
                }
                None => per_value,
            });
        }
        Ok(out)
    }
}

/// The flat indices each window position covers, for a row-major example of `dims`.
fn window_boxes(dims: &[usize], shape: &[usize], strides: &[usize]) -> Vec<Vec<usize>> {
    let counts: Vec<usize> = dims
        .iter()
        .zip(shape)
        .zip(strides)
        .map(|((&size, &w), &s)| (size.saturating_sub(w)).div_ceil(s) + 1)
        .collect();
    let total: usize = counts.iter().product();
    let mut boxes = Vec::with_capacity(total);
    for k in 0..total {
        // The window's start in each dimension (any order of positions gives the same result).
        let mut rest = k;
        let mut ranges = Vec::with_capacity(dims.len());
        for (j, &c) in counts.iter().enumerate().rev() {
            let start = (rest % c) * strides[j];
            rest /= c;
            ranges.push(start..(start + shape[j]).min(dims[j]));
        }
        ranges.reverse();
        let mut cells = vec![0usize];
        for (j, r) in ranges.iter().enumerate() {
            let inner: usize = dims[j + 1..].iter().product();
            cells = cells.iter().flat_map(|&base| r.clone().map(move |v| base + v * inner)).collect();
        }
        boxes.push(cells);
    }
    boxes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_positions_follow_captum() {
        // 5 values, window 2, stride 2: ceil(3/2) + 1 = 3 positions, the last cut at the edge.
        assert_eq!(window_boxes(&[5], &[2], &[2]), vec![vec![0, 1], vec![2, 3], vec![4]]);
        // A 3x3 image with one channel, window 2x2, stride 1: 4 positions.
        let b = window_boxes(&[1, 3, 3], &[1, 2, 2], &[1, 1, 1]);
        assert_eq!(b, vec![vec![0, 1, 3, 4], vec![1, 2, 4, 5], vec![3, 4, 6, 7], vec![4, 5, 7, 8]]);
    }
}
