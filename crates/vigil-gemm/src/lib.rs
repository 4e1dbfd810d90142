//! The one place in Vigil that contains `unsafe`: a bounds-checked safe front for the `gemm`
//! crate's raw-pointer matrix product, which is the product candle itself uses, and the SIMD
//! kernels of the Q8_0 matrix-vector product ([`q8`]). It lives in its own crate so that the main
//! crate can `forbid(unsafe_code)`.
//!
//! Why not candle's safe CPU product, which the kernels used at first: in candle 0.11.1 every
//! call asks `candle_core::utils::get_num_threads()`, which, unless `RAYON_NUM_THREADS` is set,
//! rereads `/proc/cpuinfo` through `num_cpus::get_physical()`: 40-50 µs per product, measured on
//! a two-core machine, or a fifth of an MLP training step of eight products. A process cannot
//! set that variable for itself in safe Rust.
//!
//! Everything `gemm::gemm` relies on is checked here before it is called: every element of
//! each operand lies inside its slice, no stride of a dimension longer than one is zero, every
//! size product (`rows·cols`) is computed with checked multiplication, and the destination
//! holds exactly `m·n` values. This crate owns only that check and the call, and `product_new`'s
//! writing of a result into a new buffer without zero-filling it first; how a product is split
//! over threads is decided by Vigil (`src/ml/kernels/gemm.rs`).

use std::fmt;
use std::mem::MaybeUninit;

use rayon::prelude::*;

pub mod q8;

pub use gemm::Parallelism;

/// Why a matrix or a product was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Some element of the view lies outside its slice.
    Overrun { rows: usize, cols: usize, row_stride: usize, col_stride: usize, len: usize },
    /// A stride of zero over a dimension longer than one (every row or column the same values),
    /// or a stride beyond `isize`.
    BadStride { rows: usize, cols: usize, row_stride: usize, col_stride: usize },
    /// `rows·cols` (of an operand or of the result) does not fit in `usize`.
    TooLarge { rows: usize, cols: usize },
    /// The inner sizes of a product differ.
    InnerSizes { m: usize, k: usize, k2: usize, n: usize },
    /// The destination does not hold `m·n` values.
    Destination { m: usize, n: usize, len: usize },
    /// A destination whose rows, `stride` apart, overlap or run past its `len` values.
    Strided { m: usize, n: usize, stride: usize, len: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Overrun { rows, cols, row_stride, col_stride, len } => {
                write!(
                    f,
                    "matrix {rows}x{cols} with strides ({row_stride}, {col_stride}) overruns {len} values"
                )
            }
            Error::BadStride { rows, cols, row_stride, col_stride } => {
                write!(f, "matrix {rows}x{cols} cannot have strides ({row_stride}, {col_stride})")
            }
            Error::TooLarge { rows, cols } => write!(f, "matrix {rows}x{cols} is too large"),
            Error::InnerSizes { m, k, k2, n } => {
                write!(f, "matmul: inner sizes differ ({m}x{k} by {k2}x{n})")
            }
            Error::Destination { m, n, len } => write!(f, "product: {m}x{n} result into {len} values"),
            Error::Strided { m, n, stride, len } => {
                write!(f, "product: {m}x{n} result with rows {stride} apart into {len} values")
            }
        }
    }
}

impl std::error::Error for Error {}

/// A read-only matrix inside a slice: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
/// Construction checks that every element lies inside the slice, that `rows·cols` fits in
/// `usize`, and that no dimension longer than one has stride zero.
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
    ) -> Result<Self, Error> {
        if rows.checked_mul(cols).is_none() {
            return Err(Error::TooLarge { rows, cols });
        }
        if rows > 0 && cols > 0 {
            let zero = (rows > 1 && row_stride == 0) || (cols > 1 && col_stride == 0);
            if zero || isize::try_from(row_stride).is_err() || isize::try_from(col_stride).is_err() {
                return Err(Error::BadStride { rows, cols, row_stride, col_stride });
            }
            let last = (rows - 1)
                .checked_mul(row_stride)
                .zip((cols - 1).checked_mul(col_stride))
                .and_then(|(a, b)| a.checked_add(b));
            if !matches!(last, Some(last) if last < data.len()) {
                return Err(Error::Overrun { rows, cols, row_stride, col_stride, len: data.len() });
            }
        }
        Ok(Matrix { data, rows, cols, row_stride, col_stride })
    }

    /// A row-major `rows x cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, Error> {
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

    /// Rows `first..first + count` (checked again by [`Matrix::new`]).
    pub fn row_block(self, first: usize, count: usize) -> Result<Self, Error> {
        let start = first.checked_mul(self.row_stride);
        let data = start.and_then(|s| self.data.get(s..)).unwrap_or(&[]);
        Matrix::new(data, count, self.cols, self.row_stride, self.col_stride)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `dst = a · b`; `dst` is row-major `(a.rows, b.cols)` and must hold exactly that many values.
pub fn product(dst: &mut [f32], a: Matrix, b: Matrix, parallelism: Parallelism) -> Result<(), Error> {
    match a.rows.checked_mul(b.cols) {
        None => Err(Error::TooLarge { rows: a.rows, cols: b.cols }),
        Some(size) if size != dst.len() => Err(Error::Destination { m: a.rows, n: b.cols, len: dst.len() }),
        Some(_) => product_strided(dst, b.cols, a, b, parallelism),
    }
}

/// `a · b` written into rows `row_stride` apart from the start of `dst` (a column block of a
/// wider matrix, such as one attention head's columns); the values between rows are left as
/// they are. The rows must not overlap (`row_stride >= b.cols`) and must end inside `dst`.
pub fn product_strided(
    dst: &mut [f32],
    row_stride: usize,
    a: Matrix,
    b: Matrix,
    parallelism: Parallelism,
) -> Result<(), Error> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(Error::InnerSizes { m, k, k2: b.rows, n });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let end = (m - 1).checked_mul(row_stride).and_then(|v| v.checked_add(n));
    if row_stride < n || end.is_none_or(|end| end > dst.len()) || isize::try_from(row_stride).is_err() {
        return Err(Error::Strided { m, n, stride: row_stride, len: dst.len() });
    }
    if k == 0 {
        dst.chunks_mut(row_stride).take(m).for_each(|row| row[..n].fill(0.0));
        return Ok(());
    }
    // SAFETY: gemm writes `dst` at `i·row_stride + j` for i < m, j < n: the last of those is
    // `(m-1)·row_stride + n - 1`, inside the exclusive borrow `dst` (checked above, without
    // wrapping; so it aliases neither input), and with `row_stride >= n` each position once;
    // see `gemm_into` for the rest.
    unsafe { gemm_into(dst.as_mut_ptr(), row_stride, a, b, parallelism) };
    Ok(())
}

/// `a · b` as a new row-major `(a.rows, b.cols)` buffer, computed in blocks of `block_rows`
/// rows spread over rayon's pool (each block one gemm call with `parallelism`; one block when
/// `block_rows >= a.rows`). Unlike [`product`] into a zero-filled buffer, the result is written
/// straight into the buffer's unfilled capacity: for a transformer's wide activations the
/// zeroing alone was 5% of a forward pass.
pub fn product_new(
    a: Matrix,
    b: Matrix,
    block_rows: usize,
    parallelism: Parallelism,
) -> Result<Vec<f32>, Error> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(Error::InnerSizes { m, k, k2: b.rows, n });
    }
    let Some(size) = m.checked_mul(n) else {
        return Err(Error::TooLarge { rows: m, cols: n });
    };
    if size == 0 || k == 0 {
        return Ok(vec![0.0; size]);
    }
    let block_rows = block_rows.clamp(1, m);
    let mut dst: Vec<f32> = Vec::with_capacity(size);
    let spare = &mut dst.spare_capacity_mut()[..size];
    let run = |(i, block): (usize, &mut [MaybeUninit<f32>])| {
        // Whole rows: `size` is a multiple of `n` and so is every chunk but possibly the last,
        // which holds the remaining whole rows.
        let rows = block.len() / n;
        let a = a.row_block(i * block_rows, rows).expect("rows inside a checked matrix");
        fill(block, a, b, parallelism);
    };
    if block_rows >= m {
        run((0, spare));
    } else {
        spare.par_chunks_mut(block_rows * n).enumerate().for_each(run);
    }
    // SAFETY: the first `size` values were all written: the chunks above cover `spare[..size]`
    // exactly, and `fill` writes every value of its block (see there).
    unsafe { dst.set_len(size) };
    Ok(dst)
}

/// Writes `a · b` into every value of `dst`, which holds exactly `a.rows · b.cols` values, with
/// `a.cols == b.rows > 0` (checked by the caller).
fn fill(dst: &mut [MaybeUninit<f32>], a: Matrix, b: Matrix, parallelism: Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(dst.len() == m * n && k == b.rows && k > 0, "fill: sizes checked by the caller");
    // SAFETY: `dst` is an exclusive borrow of exactly `m·n` values (asserted above), which gemm
    // writes at `i·n + j`, each once; with `read_dst` false and `k > 0` it stores every one of
    // them without reading the old contents, so uninitialised memory is never read.
    // `MaybeUninit<f32>` has the layout of `f32`.
    unsafe { gemm_into(dst.as_mut_ptr().cast::<f32>(), n, a, b, parallelism) };
}

/// `dst = a · b` through gemm, `dst` row-major with rows `row_stride` apart, its old contents
/// unread.
///
/// # Safety
/// `dst` must be valid for writes at `i·row_stride + j` for i < `a.rows`, j < `b.cols` (f32
/// values that nothing else reads or writes meanwhile), `row_stride >= b.cols` and fits in
/// `isize`, and `a.cols == b.rows > 0`. gemm reads `a` at `i·a.row_stride +
/// j·a.col_stride` for i < m, j < k and `b` likewise for i < k, j < n: `Matrix::new` checked that
/// all of those lie inside the borrowed slices, and that the strides fit in `isize` (as `n`
/// does, bounded by the destination's length). It writes from as many threads as `parallelism`
/// allows, all joined before it returns; f32 is a type gemm supports.
unsafe fn gemm_into(dst: *mut f32, row_stride: usize, a: Matrix, b: Matrix, parallelism: Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let s = |v: usize| v as isize;
    // SAFETY: the caller's contract above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            s(row_stride),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strided_product_fills_its_column_block_and_nothing_else() {
        let a: Vec<f32> = (0..6).map(|v| v as f32 - 2.5).collect();
        let b: Vec<f32> = (0..8).map(|v| (v * 3 % 7) as f32).collect();
        let (am, bm) = (Matrix::row_major(&a, 3, 2).unwrap(), Matrix::row_major(&b, 2, 4).unwrap());
        let mut want = vec![0.0; 12];
        product(&mut want, am, bm, Parallelism::None).unwrap();
        // Rows 6 apart, the block at columns 1..5 of a 3x6 matrix of sevens.
        let mut wide = vec![7.0f32; 18];
        product_strided(&mut wide[1..], 6, am, bm, Parallelism::None).unwrap();
        for (i, row) in wide.chunks(6).enumerate() {
            assert_eq!(&row[1..5], &want[i * 4..(i + 1) * 4], "row {i}");
            assert_eq!((row[0], row[5]), (7.0, 7.0), "row {i}: the other columns are left alone");
        }
        // Overlapping rows, and rows that run past the end, are refused.
        assert!(matches!(
            product_strided(&mut wide, 3, am, bm, Parallelism::None),
            Err(Error::Strided { .. })
        ));
        assert!(matches!(
            product_strided(&mut wide[3..], 6, am, bm, Parallelism::None),
            Err(Error::Strided { .. })
        ));
    }

    #[test]
    fn sizes_whose_product_wraps_are_refused() {
        // With stride 0 a 2^33 x 2^31 view fits in one value, and 2^33·2^31 wraps to 0 in a
        // 64-bit usize: gemm would then write 2^64 values through an empty buffer.
        let one = [1.0f32];
        let big = 1usize << (usize::BITS / 2 + 1);
        let small = 1usize << (usize::BITS / 2 - 1);
        assert!(matches!(Matrix::new(&one, big, small, 0, 0), Err(Error::TooLarge { .. })));
        assert!(matches!(Matrix::new(&one, 2, 2, 0, 0), Err(Error::BadStride { .. })));
        assert!(matches!(Matrix::new(&one, 1, 2, 5, 0), Err(Error::BadStride { .. })));
        // Without a zero stride, a view of `rows` rows needs at least `rows` values, so a
        // wrapping result size `m·n` would need slices of 2^32 values; the same checked
        // multiplication guards it in `product` all the same.
        let data = [1.0f32; 6];
        // A destination of the wrong size is refused.
        let a = Matrix::row_major(&data[..6], 2, 3).unwrap();
        let b = Matrix::row_major(&data[..6], 3, 2).unwrap();
        let mut dst = [0.0f32; 3];
        assert!(matches!(product(&mut dst, a, b, Parallelism::None), Err(Error::Destination { .. })));
        let mut dst = [0.0f32; 4];
        product(&mut dst, a, b, Parallelism::None).unwrap();
        assert_eq!(dst, [3.0; 4]);
    }

    #[test]
    fn a_product_into_a_new_buffer_equals_one_into_zeros() {
        let a: Vec<f32> = (0..37 * 19).map(|i| (i % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..19 * 23).map(|i| (i % 7) as f32 * 0.5).collect();
        let (am, bm) = (Matrix::row_major(&a, 37, 19).unwrap(), Matrix::row_major(&b, 19, 23).unwrap());
        let mut want = vec![0.0; 37 * 23];
        product(&mut want, am, bm, Parallelism::None).unwrap();
        for block in [1, 5, 10, 37, 100] {
            assert_eq!(product_new(am, bm, block, Parallelism::None).unwrap(), want, "blocks of {block}");
        }
        // Transposed operands, read through strides.
        let got = product_new(bm.t(), am.t(), 4, Parallelism::None).unwrap();
        let mut t = vec![0.0; 23 * 37];
        product(&mut t, bm.t(), am.t(), Parallelism::None).unwrap();
        assert_eq!(got, t);
        let empty = Matrix::row_major(&a, 37, 0).unwrap();
        let zero_k = Matrix::row_major(&b, 0, 23).unwrap();
        assert_eq!(product_new(empty, zero_k, 8, Parallelism::None).unwrap(), vec![0.0; 37 * 23]);
        assert!(matches!(product_new(am, am, 8, Parallelism::None), Err(Error::InnerSizes { .. })));
    }

    #[test]
    fn dimensions_of_one_may_have_any_stride() {
        let data = [1.0f32, 2.0, 3.0];
        assert!(Matrix::new(&data, 1, 3, 0, 1).is_ok());
        assert!(Matrix::new(&data, 3, 1, 1, 0).is_ok());
        assert!(Matrix::new(&data, 0, 7, 0, 0).is_ok());
    }
}
