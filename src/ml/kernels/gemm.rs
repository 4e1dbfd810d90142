//! The one module of Vigil that contains `unsafe`: a bounds-checked safe front for the `gemm`
//! crate's raw-pointer matrix product, which is the product candle itself uses.
//!
//! Why not candle's safe CPU product, which the kernels used at first: in candle 0.11.1 every
//! call asks `candle_core::utils::get_num_threads()`, which, unless `RAYON_NUM_THREADS` is set,
//! rereads `/proc/cpuinfo` through `num_cpus::get_physical()`: 40-50 µs per product, measured on
//! this project's two-core machine, or a fifth of an MLP training step of eight products. A
//! process cannot set that variable for itself in safe Rust. The lint is `deny` rather than
//! `forbid` in Cargo.toml for this module alone; everything else stays free of `unsafe`.
#![allow(unsafe_code)]

use gemm::Parallelism;

use super::zeros;

/// A read-only matrix inside a slice: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
/// Construction checks that every element lies inside the slice.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> candle_core::Result<Self> {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(row_stride)
                .zip((cols - 1).checked_mul(col_stride))
                .and_then(|(a, b)| a.checked_add(b));
            if !matches!(last, Some(last) if last < data.len()) {
                candle_core::bail!(
                    "matrix {rows}x{cols} with strides ({row_stride}, {col_stride}) overruns {} values",
                    data.len()
                );
            }
            if isize::try_from(row_stride).is_err() || isize::try_from(col_stride).is_err() {
                candle_core::bail!("matrix strides ({row_stride}, {col_stride}) are too large");
            }
        }
        Ok(Matrix { data, rows, cols, row_stride, col_stride })
    }

    /// A row-major `rows x cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> candle_core::Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose: the same values with the strides swapped.
    pub fn t(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `a · b` as a new row-major `(a.rows, b.cols)` buffer, threaded over rayon's pool when gemm
/// finds the product large enough.
pub fn matmul(a: Matrix, b: Matrix) -> candle_core::Result<Vec<f32>> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        candle_core::bail!("matmul: inner sizes differ ({m}x{k} by {}x{n})", b.rows);
    }
    let mut dst = zeros(m * n);
    if m == 0 || n == 0 || k == 0 {
        return Ok(dst);
    }
    // Checked by `Matrix::new` to fit in isize; `n` is below `dst.len()`, which fits too.
    let s = |v: usize| v as isize;
    // SAFETY: gemm reads `a` at `i·a.row_stride + j·a.col_stride` for i < m, j < k and `b` likewise
    // for i < k, j < n: `Matrix::new` checked that all of those lie inside the borrowed slices.
    // It writes `dst` at `i·n + j` for i < m, j < n, all inside the `m·n` buffer it alone holds
    // (a fresh vector, so it aliases neither input), each position once. f32 is a type gemm
    // supports, and with `read_dst` false the initial contents of `dst` are not used.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            s(n),
            false,
            a.data.as_ptr(),
            s(a.col_stride),
            s(a.row_stride),
            b.data.as_ptr(),
            s(b.col_stride),
            s(b.row_stride),
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::Rayon(0),
        );
    }
    Ok(dst)
}
