//! How the kernels' matrix products are split over threads. The product itself, and the only
//! `unsafe` behind it, is the internal `vigil-gemm` crate (`crates/vigil-gemm`): a bounds-checked
//! front for the `gemm` crate candle uses, so that this crate can `forbid(unsafe_code)`. See that
//! crate for why the kernels do not call candle's own CPU product.

use vigil_gemm::{Parallelism, product_new};

pub(crate) use vigil_gemm::Matrix;

use super::par;

/// Multiply-adds below which a product runs on the calling thread alone (gemm's own default).
const PARALLEL_WORK: usize = 48 * 48 * 256;

/// Rows below which a product wider than tall is left to gemm's own threading: a row split
/// makes every block pack all of `b`, which is then the larger operand.
const MIN_SPLIT_ROWS: usize = 64;

/// A refused matrix or product as a candle error, so the kernels' `?` carries it.
pub(crate) fn refused(e: vigil_gemm::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// A refused Q8_0 matrix or product (see [`super::q8`]) as a candle error.
pub(crate) fn refused_q8(e: vigil_gemm::q8::Q8Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// `a · b` as a new row-major `(a.rows, b.cols)` buffer. A large product is split over the
/// kernels' threads ([`super::par`]) into blocks of rows, each one single-threaded gemm call;
/// a wide product of few rows (a convolution's forward pass) uses gemm's own threading instead.
/// Measured on the benchmark's shapes, row blocks beat gemm's threading by 10-45% wherever
/// they apply and column blocks (which need their results copied together) lost. Every element
/// is one gemm dot product either way, so results do not depend on the split.
pub(crate) fn matmul(a: Matrix, b: Matrix) -> candle_core::Result<Vec<f32>> {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if b.rows() != k {
        candle_core::bail!("matmul: inner sizes differ ({m}x{k} by {}x{n})", b.rows());
    }
    // Checked: sizes whose product wraps would otherwise allocate a short buffer.
    let Some(size) = m.checked_mul(n) else {
        candle_core::bail!("matmul: a {m}x{n} result is too large");
    };
    let threads = par::threads().min(m.max(1));
    let (block_rows, parallelism) = if threads <= 1 || size.saturating_mul(k) < PARALLEL_WORK {
        (m, Parallelism::None)
    } else if m >= n || m >= MIN_SPLIT_ROWS {
        (m.div_ceil(threads), Parallelism::None)
    } else {
        (m, Parallelism::Rayon(0))
    };
    product_new(a, b, block_rows, parallelism).map_err(refused)
}

/// A row-major `rows x cols` matrix at the start of `data` ([`Matrix::row_major`], with a candle
/// error).
pub(crate) fn row_major(data: &[f32], rows: usize, cols: usize) -> candle_core::Result<Matrix<'_>> {
    Matrix::row_major(data, rows, cols).map_err(refused)
}

/// A strided matrix inside `data` ([`Matrix::new`], with a candle error).
pub(crate) fn strided(
    data: &[f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> candle_core::Result<Matrix<'_>> {
    Matrix::new(data, rows, cols, row_stride, col_stride).map_err(refused)
}
