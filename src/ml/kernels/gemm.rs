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

use super::{par, zeros};

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

/// Multiply-adds below which a product runs on the calling thread alone (gemm's own default).
const PARALLEL_WORK: usize = 48 * 48 * 256;

impl<'a> Matrix<'a> {
    /// Rows `first..first + count` (within bounds: checked again by `Matrix::new`).
    fn row_block(self, first: usize, count: usize) -> candle_core::Result<Self> {
        let data = self.data.get(first * self.row_stride..).unwrap_or(&[]);
        Matrix::new(data, count, self.cols, self.row_stride, self.col_stride)
    }
}

/// Rows below which a product wider than tall is left to gemm's own threading: a row split
/// makes every block pack all of `b`, which is then the larger operand.
const MIN_SPLIT_ROWS: usize = 64;

/// `a · b` as a new row-major `(a.rows, b.cols)` buffer. A large product is split over the
/// kernels' threads ([`super::par`]) into blocks of rows, each one single-threaded gemm call;
/// a wide product of few rows (a convolution's forward pass) uses gemm's own threading instead.
/// Measured on the benchmark's shapes, row blocks beat gemm's threading by 10-45% wherever
/// they apply and column blocks (which need their results copied together) lost. Every element
/// is one gemm dot product either way, so results do not depend on the split.
pub fn matmul(a: Matrix, b: Matrix) -> candle_core::Result<Vec<f32>> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        candle_core::bail!("matmul: inner sizes differ ({m}x{k} by {}x{n})", b.rows);
    }
    let mut dst = zeros(m * n);
    if m == 0 || n == 0 || k == 0 {
        return Ok(dst);
    }
    let threads = par::threads().min(m);
    if threads <= 1 || m * n * k < PARALLEL_WORK {
        product(&mut dst, a, b, Parallelism::None);
    } else if m >= n || m >= MIN_SPLIT_ROWS {
        let rows = m.div_ceil(threads);
        let parts: Vec<(usize, &mut [f32])> =
            dst.chunks_mut(rows * n).enumerate().map(|(i, d)| (i * rows, d)).collect();
        let done = par::map(parts, |_, (first, d)| -> candle_core::Result<()> {
            product(d, a.row_block(first, d.len() / n)?, b, Parallelism::None);
            Ok(())
        });
        done.into_iter().collect::<candle_core::Result<()>>()?;
    } else {
        product(&mut dst, a, b, Parallelism::Rayon(0));
    }
    Ok(dst)
}

/// `dst = a · b`; `dst` is row-major `(a.rows, b.cols)`.
fn product(dst: &mut [f32], a: Matrix, b: Matrix, parallelism: Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && dst.len() == m * n, "product: {m}x{k} by {}x{n} into {}", b.rows, dst.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    // Checked by `Matrix::new` to fit in isize; `n` is below `dst.len()`, which fits too.
    let s = |v: usize| v as isize;
    // SAFETY: gemm reads `a` at `i·a.row_stride + j·a.col_stride` for i < m, j < k and `b`
    // likewise for i < k, j < n: `Matrix::new` checked that all of those lie inside the borrowed
    // slices. It writes `dst` at `i·n + j` for i < m, j < n, all inside the `m·n` values of the
    // exclusive borrow `dst` (so it aliases neither input), each position once, from as many
    // threads as `parallelism` allows, all joined before it returns. f32 is a type gemm
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
            parallelism,
        );
    }
}
