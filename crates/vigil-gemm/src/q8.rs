//! The product of a Q8_0 weight matrix with a few rows of f32 activations (1 to a few dozen:
//! a decoded token, a sentence), the way ggml computes it: the activations are quantised to
//! Q8_0 blocks once, each output is a sum over blocks of `d_w · d_x · Σ w·x` with the inner sum
//! in integers, and each pair of f16 weight scales is widened with one F16C instruction
//! (candle converts each scale with a call); they stay f16 in memory, since a decode step is
//! bound by the bytes it reads.
//!
//! Why not candle's `QMatMul` (0.11): its Q8_0 path converts both f16 scales per block in each
//! dot product (a tenth of a Gemma 3 decode step), works through one output at a time with
//! AVX2's 16-bit multiply-adds, and on widths that are not a multiple of 256 (Gemma's 640,
//! MiniLM's 384) never reaches its repacked AVX-512 kernel. Here, on CPUs with AVX-512 VNNI, one
//! `vpdpbusd` multiplies 64 weights by 64 activations into 16 exact 32-bit sums, and a tile of
//! 4 weight rows by up to 4 activation rows keeps 16 accumulators in registers, so each weight
//! byte read from memory serves every activation row.
//!
//! The unsigned-by-signed `vpdpbusd` is made exact by storing each weight `w` as the byte
//! `w + 128` and starting each sum at `-128 · Σ x` over the same four activations (computed when
//! the activations are quantised), so every 32-bit lane holds exactly `Σ w·x`.
//!
//! Three kernels, chosen at run time: AVX-512 VNNI, AVX2 (ggml's sign trick with 16-bit
//! multiply-adds, which cannot overflow for Q8_0's values), and a portable one. All compute the
//! same integer sums; only the order in which the f32 terms are added differs.
//!
//! Splitting the output rows over threads is the caller's; this module computes a range of
//! rows on the calling thread.

use half::f16;

/// Values per Q8_0 block (one f16 scale each).
pub const BLOCK: usize = 32;
/// Bytes a Q8_0 block takes in a GGUF file: the f16 scale, then 32 signed bytes.
pub const Q8_0_BYTES: usize = 34;
/// Bytes a Q4_0 block takes: the f16 scale, then 16 bytes of two 4-bit values each.
pub const Q4_0_BYTES: usize = 18;
/// Rows are padded to whole pairs of blocks, the width of one AVX-512 register of bytes.
const PAIR: usize = 2 * BLOCK;

/// Why a matrix or a product was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Q8Error {
    /// The block bytes do not hold `rows × cols` values in whole blocks.
    Blocks { rows: usize, cols: usize, bytes: usize, block_bytes: usize },
    /// The activations' width differs from the matrix's.
    Width { matrix: usize, activations: usize },
    /// The activations do not hold `rows × cols` values.
    Activations { rows: usize, cols: usize, len: usize },
    /// The output range does not fit the matrix or the destination.
    Output { first: usize, rows: usize, matrix_rows: usize, len: usize },
}

impl std::fmt::Display for Q8Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Q8Error::Blocks { rows, cols, bytes, block_bytes } => write!(
                f,
                "a {rows}x{cols} matrix is not {bytes} bytes of {block_bytes}-byte blocks of {BLOCK} values"
            ),
            Q8Error::Width { matrix, activations } => {
                write!(f, "activations {activations} wide for a matrix {matrix} wide")
            }
            Q8Error::Activations { rows, cols, len } => {
                write!(f, "{len} activations are not {rows} rows of {cols}")
            }
            Q8Error::Output { first, rows, matrix_rows, len } => write!(
                f,
                "output rows {first}..{} of a {matrix_rows}-row matrix into {len} values",
                first + rows
            ),
        }
    }
}

impl std::error::Error for Q8Error {}

/// Which kernel [`matmul_rows`] runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Avx512Vnni,
    Avx2,
    Portable,
}

impl Kernel {
    /// The best kernel this CPU runs.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Kernel::Avx512Vnni;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// Whether this CPU runs this kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Avx2 => Kernel::detect() != Kernel::Portable,
            Kernel::Avx512Vnni => Kernel::detect() == Kernel::Avx512Vnni,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }
}

/// A `rows × cols` weight matrix of Q8_0 blocks, laid out for the kernels: each row's values as
/// bytes `w + 128`, padded with zero weights to whole pairs of blocks, and the f16 block scales
/// apart from them (zero for the padding): 34 bytes a block, as in the file.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// Bytes per row: `cols` rounded up to whole pairs of blocks.
    stride: usize,
    quants: Vec<u8>,
    scales: Vec<f16>,
}

impl Q8Matrix {
    /// A matrix from ggml Q8_0 blocks (34 bytes each, row-major, `cols` a multiple of 32).
    pub fn from_q8_0(rows: usize, cols: usize, blocks: &[u8]) -> Result<Self, Q8Error> {
        Self::from_blocks(rows, cols, blocks, Q8_0_BYTES, |block, out| {
            for (o, &q) in out.iter_mut().zip(&block[2..]) {
                *o = q as i8;
            }
        })
    }

    /// A matrix from ggml Q4_0 blocks (18 bytes each), exactly: a Q4_0 value `q - 8` (-8..=7)
    /// under its block's scale is a Q8_0 value under the same scale. Twice the memory of the
    /// Q4_0 blocks, for the Q8_0 kernels' speed.
    pub fn from_q4_0(rows: usize, cols: usize, blocks: &[u8]) -> Result<Self, Q8Error> {
        Self::from_blocks(rows, cols, blocks, Q4_0_BYTES, |block, out| {
            // ggml's dequantize_row_q4_0: low nibbles are values 0..16, high nibbles 16..32.
            for (j, &q) in block[2..].iter().enumerate() {
                out[j] = (q & 0x0F) as i8 - 8;
                out[j + BLOCK / 2] = (q >> 4) as i8 - 8;
            }
        })
    }

    fn from_blocks(
        rows: usize,
        cols: usize,
        blocks: &[u8],
        block_bytes: usize,
        values: impl Fn(&[u8], &mut [i8; BLOCK]),
    ) -> Result<Self, Q8Error> {
        let refuse = Q8Error::Blocks { rows, cols, bytes: blocks.len(), block_bytes };
        let per_row = cols / BLOCK;
        let expected = rows.checked_mul(per_row).and_then(|b| b.checked_mul(block_bytes));
        if !cols.is_multiple_of(BLOCK) || expected != Some(blocks.len()) {
            return Err(refuse);
        }
        let stride = cols.div_ceil(PAIR) * PAIR;
        let mut quants = vec![128u8; rows * stride];
        let mut scales = vec![f16::ZERO; rows * (stride / BLOCK)];
        let mut block_values = [0i8; BLOCK];
        for (b, block) in blocks.chunks_exact(block_bytes).enumerate() {
            let (row, col_block) = (b / per_row, b % per_row);
            values(block, &mut block_values);
            let at = row * stride + col_block * BLOCK;
            for (q, &v) in quants[at..at + BLOCK].iter_mut().zip(&block_values) {
                *q = (v as u8) ^ 0x80;
            }
            scales[row * (stride / BLOCK) + col_block] = f16::from_le_bytes([block[0], block[1]]);
        }
        Ok(Q8Matrix { rows, cols, stride, quants, scales })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes the matrix takes in memory.
    pub fn bytes(&self) -> usize {
        self.quants.len() + self.scales.len() * std::mem::size_of::<f16>()
    }

    /// The matrix as f32, row-major (`rows × cols`): each value times its block's scale.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        let blocks = self.stride / BLOCK;
        for r in 0..self.rows {
            let row = &self.quants[r * self.stride..r * self.stride + self.cols];
            for (c, block) in row.chunks_exact(BLOCK).enumerate() {
                let d = self.scales[r * blocks + c].to_f32();
                out.extend(block.iter().map(|&q| ((q ^ 0x80) as i8) as f32 * d));
            }
        }
        out
    }
}

/// `rows × cols` activations quantised to Q8_0 blocks as candle and ggml do (scale
/// `max |x| / 127` rounded to f16, values `round(x / scale)`), with what the kernels need
/// beside them.
#[derive(Debug, Clone)]
pub struct Q8Activations {
    rows: usize,
    cols: usize,
    stride: usize,
    quants: Vec<i8>,
    /// Per block, the f16-rounded scale as f32.
    scales: Vec<f32>,
    /// Per pair of blocks, 16 lanes: the first block's scale 8 times, then the second's (the
    /// scale of each `vpdpbusd` lane).
    lane_scales: Vec<f32>,
    /// Per group of four values, `-128 · Σ x`: the start of each `vpdpbusd` lane, which cancels
    /// the 128 added to each weight.
    lane_bias: Vec<i32>,
}

impl Q8Activations {
    /// Quantises `x`, `rows × cols` row-major, `cols` a multiple of 32.
    pub fn quantize(x: &[f32], rows: usize, cols: usize) -> Result<Self, Q8Error> {
        if !cols.is_multiple_of(BLOCK) || rows.checked_mul(cols) != Some(x.len()) {
            return Err(Q8Error::Activations { rows, cols, len: x.len() });
        }
        let stride = cols.div_ceil(PAIR) * PAIR;
        let blocks = stride / BLOCK;
        let mut quants = vec![0i8; rows * stride];
        let mut scales = vec![0f32; rows * blocks];
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            for (c, xs) in row.chunks_exact(BLOCK).enumerate() {
                // candle's BlockQ8_0::from_float, to the bit: the reciprocal of the unrounded
                // scale, round half away from zero, the scale stored as f16.
                let amax = xs.iter().fold(0f32, |m, &v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let at = r * stride + c * BLOCK;
                for (q, &v) in quants[at..at + BLOCK].iter_mut().zip(xs) {
                    *q = (v * id).round() as i8;
                }
                scales[r * blocks + c] = f16::from_f32(d).to_f32();
            }
        }
        let lane_scales = scales.chunks_exact(2).flat_map(|d| [[d[0]; 8], [d[1]; 8]]).flatten().collect();
        let lane_bias =
            quants.chunks_exact(4).map(|q| -128 * q.iter().map(|&v| v as i32).sum::<i32>()).collect();
        Ok(Q8Activations { rows, cols, stride, quants, scales, lane_scales, lane_bias })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Weight rows `first..first + out.len() / x.rows()` times the activations, written
/// output-row-major: `out[j · x.rows() + i]` is weight row `first + j` dotted with activation
/// row `i`. Runs `kernel`, or the portable kernel where this CPU lacks it.
pub fn matmul_rows(
    kernel: Kernel,
    w: &Q8Matrix,
    x: &Q8Activations,
    first: usize,
    out: &mut [f32],
) -> Result<(), Q8Error> {
    if w.cols != x.cols {
        return Err(Q8Error::Width { matrix: w.cols, activations: x.cols });
    }
    let m = x.rows;
    let count = out.len().checked_div(m).unwrap_or(0);
    if m == 0 || !out.len().is_multiple_of(m) || first.checked_add(count).is_none_or(|end| end > w.rows) {
        return Err(Q8Error::Output { first, rows: count, matrix_rows: w.rows, len: out.len() });
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Vnni if kernel.available() => {
            // SAFETY: the CPU has AVX-512 F, BW and VNNI and F16C (checked just above); the operands'
            // sizes were checked above and the kernel indexes its slices with bounds checks.
            unsafe { x86::vnni(w, x, first, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if kernel.available() => {
            // SAFETY: the CPU has AVX2 and FMA (checked just above); as above for the rest.
            unsafe { x86::avx2(w, x, first, out) }
        }
        _ => portable(w, x, first, out),
    }
    Ok(())
}

/// The reference kernel: exact integer sums per block, then the scaled sum over blocks.
fn portable(w: &Q8Matrix, x: &Q8Activations, first: usize, out: &mut [f32]) {
    let m = x.rows;
    let blocks = w.stride / BLOCK;
    // A row's scales widened once for all its activation rows (one call each without F16C).
    let mut wd = vec![0f32; blocks];
    for (j, out_row) in out.chunks_exact_mut(m).enumerate() {
        let r = first + j;
        let wq = &w.quants[r * w.stride..(r + 1) * w.stride];
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(
            &w.scales[r * blocks..(r + 1) * blocks],
            &mut wd,
        );
        for (i, o) in out_row.iter_mut().enumerate() {
            let xq = &x.quants[i * x.stride..(i + 1) * x.stride];
            let xd = &x.scales[i * blocks..(i + 1) * blocks];
            let mut sum = 0f32;
            for b in 0..blocks {
                let wb = &wq[b * BLOCK..(b + 1) * BLOCK];
                let xb = &xq[b * BLOCK..(b + 1) * BLOCK];
                let dot: i32 = wb.iter().zip(xb).map(|(&a, &c)| ((a ^ 0x80) as i8 as i32) * c as i32).sum();
                sum += wd[b] * xd[b] * dot as f32;
            }
            *o = sum;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD kernels. Every load reads a sub-slice taken with bounds checks (`&s[a..a + 64]`),
    //! so each `unsafe` load reads inside its slice.

    use super::{BLOCK, PAIR, Q8Activations, Q8Matrix};
    use std::arch::x86_64::*;

    /// Weight rows per tile.
    const R: usize = 4;
    /// Activation rows per tile at most.
    const C: usize = 4;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    pub(super) fn vnni(w: &Q8Matrix, x: &Q8Activations, first: usize, out: &mut [f32]) {
        let m = x.rows;
        let count = out.len() / m;
        let mut j = 0;
        while j < count {
            let rows = (count - j).min(R);
            let mut i = 0;
            while i < m {
                let cols = (m - i).min(C);
                // One monomorphised tile per shape, so each keeps its accumulators in registers.
                match (rows, cols) {
                    (4, 4) => tile512::<4, 4>(w, x, first + j, i, out, j),
                    (4, 3) => tile512::<4, 3>(w, x, first + j, i, out, j),
                    (4, 2) => tile512::<4, 2>(w, x, first + j, i, out, j),
                    (4, _) => tile512::<4, 1>(w, x, first + j, i, out, j),
                    (_, 4) => tile512::<1, 4>(w, x, first + j, i, out, j),
                    (_, 3) => tile512::<1, 3>(w, x, first + j, i, out, j),
                    (_, 2) => tile512::<1, 2>(w, x, first + j, i, out, j),
                    _ => tile512::<1, 1>(w, x, first + j, i, out, j),
                }
                i += cols;
            }
            j += if rows == R { R } else { 1 };
        }
    }

    /// `RR` weight rows from `row` by `CC` activation rows from `col`, into the output rows
    /// from `out_row` (output-row-major, as [`super::matmul_rows`] writes).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
    #[inline]
    fn tile512<const RR: usize, const CC: usize>(
        w: &Q8Matrix,
        x: &Q8Activations,
        row: usize,
        col: usize,
        out: &mut [f32],
        out_row: usize,
    ) {
        let pairs = w.stride / PAIR;
        let blocks = w.stride / BLOCK;
        // Lanes 0..8 take the first block's scale, lanes 8..16 the second's.
        let spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let wq: [&[u8]; RR] =
            std::array::from_fn(|r| &w.quants[(row + r) * w.stride..(row + r + 1) * w.stride]);
        let wd: [&[half::f16]; RR] =
            std::array::from_fn(|r| &w.scales[(row + r) * blocks..(row + r + 1) * blocks]);
        let xq: [&[i8]; CC] =
            std::array::from_fn(|c| &x.quants[(col + c) * x.stride..(col + c + 1) * x.stride]);
        let xs: [&[f32]; CC] =
            std::array::from_fn(|c| &x.lane_scales[(col + c) * pairs * 16..(col + c + 1) * pairs * 16]);
        let xb: [&[i32]; CC] =
            std::array::from_fn(|c| &x.lane_bias[(col + c) * pairs * 16..(col + c + 1) * pairs * 16]);
        let mut acc = [[_mm512_setzero_ps(); CC]; RR];
        for p in 0..pairs {
            let mut wv = [_mm512_setzero_si512(); RR];
            let mut wdv = [_mm512_setzero_ps(); RR];
            for r in 0..RR {
                let q = &wq[r][p * PAIR..p * PAIR + PAIR];
                // SAFETY: `q` is 64 bytes, taken with bounds checks.
                wv[r] = unsafe { _mm512_loadu_si512(q.as_ptr().cast()) };
                // The pair's two f16 scales, widened together.
                let d = (wd[r][2 * p].to_bits() as i32) | ((wd[r][2 * p + 1].to_bits() as i32) << 16);
                wdv[r] =
                    _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(d))));
            }
            for c in 0..CC {
                let q = &xq[c][p * PAIR..p * PAIR + PAIR];
                let s = &xs[c][p * 16..p * 16 + 16];
                let b = &xb[c][p * 16..p * 16 + 16];
                // SAFETY: 64 bytes, 16 floats and 16 integers, taken with bounds checks.
                let (xv, sv, bv) = unsafe {
                    (
                        _mm512_loadu_si512(q.as_ptr().cast()),
                        _mm512_loadu_ps(s.as_ptr()),
                        _mm512_loadu_si512(b.as_ptr().cast()),
                    )
                };
                for r in 0..RR {
                    // Σ (w + 128)·x − 128·Σ x = Σ w·x, exactly, per group of four.
                    let dot = _mm512_dpbusd_epi32(bv, wv[r], xv);
                    acc[r][c] =
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(wdv[r], sv), acc[r][c]);
                }
            }
        }
        let m = x.rows;
        for r in 0..RR {
            for c in 0..CC {
                out[(out_row + r) * m + col + c] = _mm512_reduce_add_ps(acc[r][c]);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn avx2(w: &Q8Matrix, x: &Q8Activations, first: usize, out: &mut [f32]) {
        let m = x.rows;
        let blocks = w.stride / BLOCK;
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        let mut wd = vec![0f32; blocks];
        for (j, out_row) in out.chunks_exact_mut(m).enumerate() {
            let r = first + j;
            let wq = &w.quants[r * w.stride..(r + 1) * w.stride];
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(
                &w.scales[r * blocks..(r + 1) * blocks],
                &mut wd,
            );
            for (i, o) in out_row.iter_mut().enumerate() {
                let xq = &x.quants[i * x.stride..(i + 1) * x.stride];
                let xd = &x.scales[i * blocks..(i + 1) * blocks];
                let mut acc = _mm256_setzero_ps();
                for b in 0..blocks {
                    let wb = &wq[b * BLOCK..(b + 1) * BLOCK];
                    let xbk = &xq[b * BLOCK..(b + 1) * BLOCK];
                    // SAFETY: 32 bytes each, taken with bounds checks.
                    let (wv, xv) = unsafe {
                        (_mm256_loadu_si256(wb.as_ptr().cast()), _mm256_loadu_si256(xbk.as_ptr().cast()))
                    };
                    // ggml's trick: |w| (unsigned) times x with w's sign; |w| <= 128 and
                    // |x| <= 127 keep each pair of products inside i16.
                    let wv = _mm256_xor_si256(wv, flip);
                    let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                    let sums = _mm256_madd_epi16(prod, ones);
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(wd[b] * xd[b]), _mm256_cvtepi32_ps(sums), acc);
                }
                let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let half = _mm_add_ps(half, _mm_movehl_ps(half, half));
                let half = _mm_add_ss(half, _mm_movehdup_ps(half));
                *o = _mm_cvtss_f32(half);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks_q8_0(rows: usize, cols: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            state >> 8
        };
        let mut out = Vec::new();
        for _ in 0..rows * cols / BLOCK {
            out.extend(f16::from_f32((next() % 1000) as f32 / 1e5 + 1e-4).to_le_bytes());
            out.extend((0..BLOCK).map(|_| (next() % 255) as u8 ^ 0x80));
        }
        out
    }

    #[test]
    fn every_kernel_gives_the_exact_integer_sums() {
        // Integer activations whose blocks have amax 127 quantise to themselves (scale 1).
        for (rows, cols, m) in [(9, 64, 1), (5, 96, 3), (13, 160, 6), (4, 32, 2)] {
            let w = Q8Matrix::from_q8_0(rows, cols, &blocks_q8_0(rows, cols, 7)).unwrap();
            let x: Vec<f32> =
                (0..m * cols).map(|i| if i % BLOCK == 0 { 127.0 } else { (i % 37) as f32 - 18.0 }).collect();
            let xa = Q8Activations::quantize(&x, m, cols).unwrap();
            let wide = w.dequantize();
            // (exact sum, sum of magnitudes) per output, in f64.
            let expected: Vec<(f64, f64)> = (0..rows)
                .flat_map(|j| {
                    let (wide, x) = (&wide, &x);
                    (0..m).map(move |i| {
                        let terms = (0..cols).map(|k| wide[j * cols + k] as f64 * x[i * cols + k] as f64);
                        terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()))
                    })
                })
                .collect();
            for kernel in
                [Kernel::Portable, Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.available())
            {
                let mut out = vec![0f32; rows * m];
                matmul_rows(kernel, &w, &xa, 0, &mut out).unwrap();
                for (&a, &(b, size)) in out.iter().zip(&expected) {
                    assert!((a as f64 - b).abs() <= 1e-6 * size, "{}: {a} vs {b}", kernel.name());
                }
            }
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        assert!(Q8Matrix::from_q8_0(2, 40, &[0; 68]).is_err());
        assert!(Q8Matrix::from_q8_0(2, 32, &[0; 67]).is_err());
        let w = Q8Matrix::from_q8_0(2, 32, &[0; 68]).unwrap();
        let x = Q8Activations::quantize(&[0.0; 64], 1, 64).unwrap();
        assert!(matches!(
            matmul_rows(Kernel::Portable, &w, &x, 0, &mut [0.0; 2]),
            Err(Q8Error::Width { .. })
        ));
        let x = Q8Activations::quantize(&[0.0; 32], 1, 32).unwrap();
        assert!(matches!(
            matmul_rows(Kernel::Portable, &w, &x, 1, &mut [0.0; 2]),
            Err(Q8Error::Output { .. })
        ));
        assert!(Q8Activations::quantize(&[0.0; 33], 1, 33).is_err());
    }
}
