//! The product of a Q8_0 weight matrix with a few rows of f32 activations (a decoded token, a
//! sentence, a short prompt), the way ggml computes it: the activations are quantised to Q8_0
//! blocks once, each output is a sum over blocks of `d_w · d_x · Σ w·x` with the inner sum in
//! integers. The weight scales stay f16 in memory, since a decode step is bound by the bytes it
//! reads, and are widened sixteen at a time with one F16C instruction.
//!
//! Why not candle's `QMatMul` (0.11): its Q8_0 path converts both f16 scales per block in each
//! dot product (a tenth of a Gemma 3 decode step), works through one output at a time with
//! AVX2's 16-bit multiply-adds, and on widths that are not a multiple of 256 (Gemma's 640,
//! MiniLM's 384) never reaches its repacked AVX-512 kernel.
//!
//! The matrix is stored in panels of [`PANEL`] rows: for each block of 32 columns, eight
//! 64-byte vectors, the `k`-th holding columns `4k..4k + 4` of each of the panel's 16 rows, then
//! the panel's 16 scales of that block together. On CPUs with AVX-512 VNNI one `vpdpbusd` of such
//! a vector with four activations broadcast to every lane adds four products into each of 16
//! rows' sums, so a block of 16 rows costs eight `vpdpbusd`, one scale conversion and one
//! multiply-add per activation row, and no horizontal sums at all. (The layout it replaced, a
//! row's blocks side by side, spent most of a decode step's output projection on per-row scale
//! shuffles and horizontal sums: 5.4 GB/s of weights on one core against the 12 GB/s this
//! machine's memory gives one core.) Each weight vector loaded serves every activation row of a
//! tile, as in ggml's repacked AVX-512 kernels.
//!
//! The unsigned-by-signed `vpdpbusd` is made exact by storing each weight `w` as the byte
//! `w + 128` and starting each block's sum at `-128 · Σ x` over the block's activations
//! (computed when the activations are quantised), so every 32-bit lane holds exactly `Σ w·x`.
//!
//! Three kernels, chosen at run time: AVX-512 VNNI, AVX2 (ggml's sign trick with 16-bit
//! multiply-adds, which cannot overflow for Q8_0's values), and a portable one. All compute the
//! same integer sums and add the f32 terms of each output in the same order with one fused
//! multiply-add per block, so all three give the same bits.
//!
//! Splitting the output rows over threads is the caller's (in whole panels, for speed); this
//! module computes a range of rows on the calling thread.

use std::ops::Range;

use half::f16;

/// Values per Q8_0 block (one f16 scale each).
pub const BLOCK: usize = 32;
/// Bytes a Q8_0 block takes in a GGUF file: the f16 scale, then 32 signed bytes.
pub const Q8_0_BYTES: usize = 34;
/// Bytes a Q4_0 block takes: the f16 scale, then 16 bytes of two 4-bit values each.
pub const Q4_0_BYTES: usize = 18;
/// Weight rows per panel: one 32-bit lane each in an AVX-512 register.
pub const PANEL: usize = 16;
/// Bytes of one block of a panel: 32 values of each of its 16 rows.
const PANEL_BLOCK: usize = PANEL * BLOCK;

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
            {
                return Kernel::Avx512Vnni;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
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

/// A `rows × cols` weight matrix of Q8_0 blocks, laid out for the kernels in panels of
/// [`PANEL`] rows (the module's documentation draws the layout): each value as the byte
/// `w + 128`, rows past the last padded with zero weights under zero scales, and the f16 block
/// scales apart from the values: 34 bytes a block, as in the file.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// Per panel, per block: eight 64-byte vectors of four values of each of the 16 rows.
    quants: Vec<u8>,
    /// Per panel, per block: the 16 rows' scales.
    scales: Vec<f16>,
}

/// Where row `row`'s values `col..col + 4` (`col` a multiple of 4) start in a panel matrix's
/// bytes, for a matrix `blocks` blocks wide.
fn panel_at(blocks: usize, row: usize, col: usize) -> usize {
    let (panel, lane) = (row / PANEL, row % PANEL);
    let (block, group) = (col / BLOCK, col % BLOCK / 4);
    (panel * blocks + block) * PANEL_BLOCK + group * 4 * PANEL + lane * 4
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
        let panels = rows.div_ceil(PANEL);
        let mut quants = vec![128u8; panels * per_row * PANEL_BLOCK];
        let mut scales = vec![f16::ZERO; panels * per_row * PANEL];
        let mut block_values = [0i8; BLOCK];
        for (b, block) in blocks.chunks_exact(block_bytes).enumerate() {
            let (row, col_block) = (b / per_row, b % per_row);
            values(block, &mut block_values);
            for (group, four) in block_values.chunks_exact(4).enumerate() {
                let at = panel_at(per_row, row, col_block * BLOCK + group * 4);
                for (q, &v) in quants[at..at + 4].iter_mut().zip(four) {
                    *q = (v as u8) ^ 0x80;
                }
            }
            let at = ((row / PANEL) * per_row + col_block) * PANEL + row % PANEL;
            scales[at] = f16::from_le_bytes([block[0], block[1]]);
        }
        Ok(Q8Matrix { rows, cols, quants, scales })
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
        let blocks = self.cols / BLOCK;
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in (0..self.cols).step_by(4) {
                let d = self.scales[((r / PANEL) * blocks + c / BLOCK) * PANEL + r % PANEL].to_f32();
                let at = panel_at(blocks, r, c);
                out.extend(self.quants[at..at + 4].iter().map(|&q| ((q ^ 0x80) as i8) as f32 * d));
            }
        }
        out
    }

    /// Panel `panel`'s bytes and scales.
    fn panel(&self, panel: usize) -> (&[u8], &[f16]) {
        let blocks = self.cols / BLOCK;
        (
            &self.quants[panel * blocks * PANEL_BLOCK..(panel + 1) * blocks * PANEL_BLOCK],
            &self.scales[panel * blocks * PANEL..(panel + 1) * blocks * PANEL],
        )
    }
}

/// `rows × cols` activations quantised to Q8_0 blocks as candle and ggml do (scale
/// `max |x| / 127` rounded to f16, values `round(x / scale)`), with what the kernels need
/// beside them.
#[derive(Debug, Clone)]
pub struct Q8Activations {
    rows: usize,
    cols: usize,
    /// The values, four to a little-endian word: what one `vpdpbusd` lane multiplies.
    words: Vec<i32>,
    /// Per block, the f16-rounded scale as f32.
    scales: Vec<f32>,
    /// Per block, `-128 · Σ x`: the start of each lane's sum in the VNNI kernel, which cancels
    /// the 128 added to each weight.
    bias: Vec<i32>,
}

impl Q8Activations {
    /// Quantises `x`, `rows × cols` row-major, `cols` a multiple of 32.
    pub fn quantize(x: &[f32], rows: usize, cols: usize) -> Result<Self, Q8Error> {
        if !cols.is_multiple_of(BLOCK) || rows.checked_mul(cols) != Some(x.len()) {
            return Err(Q8Error::Activations { rows, cols, len: x.len() });
        }
        let blocks = rows * cols / BLOCK;
        let mut words = vec![0i32; rows * cols / 4];
        let mut scales = vec![0f32; blocks];
        let mut bias = vec![0i32; blocks];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512 F and BW, checked just above.
            unsafe { quantize_avx512(x, &mut words, &mut scales, &mut bias) };
            return Ok(Q8Activations { rows, cols, words, scales, bias });
        }
        quantize_blocks(x, &mut words, &mut scales, &mut bias);
        Ok(Q8Activations { rows, cols, words, scales, bias })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `row`'s words, block scales and block biases.
    fn row(&self, row: usize) -> (&[i32], &[f32], &[i32]) {
        let (words, blocks) = (self.cols / 4, self.cols / BLOCK);
        (
            &self.words[row * words..(row + 1) * words],
            &self.scales[row * blocks..(row + 1) * blocks],
            &self.bias[row * blocks..(row + 1) * blocks],
        )
    }
}

/// [`quantize_blocks`] compiled for AVX-512, where the loops over a block's 32 values become
/// two vectors (baseline x86-64 has no rounding or conversion of 16 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_avx512(x: &[f32], words: &mut [i32], scales: &mut [f32], bias: &mut [i32]) {
    quantize_blocks(x, words, scales, bias)
}

/// Quantises whole blocks of `x`: candle's `BlockQ8_0::from_float`, to the bit (the reciprocal
/// of the unrounded scale, round half away from zero, the scale stored as f16), written so that
/// each block's loops vectorise: the largest magnitude taken on the floats' bits (which order as
/// the magnitudes do), and the rounding by [`round_clamped`] (finite input already lies within
/// ±127).
#[inline(always)]
fn quantize_blocks(x: &[f32], words: &mut [i32], scales: &mut [f32], bias: &mut [i32]) {
    for (((xs, words), scale), bias) in x
        .chunks_exact(BLOCK)
        .zip(words.chunks_exact_mut(BLOCK / 4))
        .zip(scales.iter_mut())
        .zip(bias.iter_mut())
    {
        let amax = f32::from_bits(xs.iter().fold(0u32, |m, &v| m.max(v.to_bits() & 0x7fff_ffff)));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0i32; BLOCK];
        for (q, &v) in q.iter_mut().zip(xs) {
            *q = round_clamped(v * id);
        }
        *bias = -128 * q.iter().sum::<i32>();
        for (w, c) in words.iter_mut().zip(q.chunks_exact(4)) {
            *w = (c[0] & 0xff) | ((c[1] & 0xff) << 8) | ((c[2] & 0xff) << 16) | (c[3] << 24);
        }
        *scale = f16::from_f32(d).to_f32();
    }
}

/// `r` clamped to ±127 (NaN to -127) and rounded to the nearest integer, halves away from
/// zero, as `f32::round` does; without `round`'s call into libm (baseline x86-64 has no rounding
/// instruction), and in a form that vectorises. The fraction `r - trunc(r)` is exact.
#[inline(always)]
fn round_clamped(r: f32) -> i32 {
    // Not `clamp`, which passes NaN through to the conversion below.
    #[allow(clippy::manual_clamp)]
    let r = r.max(-127.0).min(127.0);
    // SAFETY: `r` is a number in [-127, 127], which i32 holds.
    let t = unsafe { r.to_int_unchecked::<i32>() };
    let f = r - t as f32;
    t + i32::from(f >= 0.5) - i32::from(f <= -0.5)
}

/// Weight rows `first..first + out.len() / x.rows()` times the activations, written row-major:
/// `out[i · count + j]` is activation row `i` dotted with weight row `first + j`, for the
/// `count = out.len() / x.rows()` rows asked for. Runs `kernel`, or the portable kernel where
/// this CPU lacks it. Any range of rows is accepted; one that starts and ends on whole panels
/// wastes no work.
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
    let kernel = if kernel.available() { kernel } else { Kernel::Portable };
    in_panels(w, x.rows, x.cols, first, out, |panel, rows, dest| match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked by `available` above); the kernel
        // reads and writes only sub-slices taken with bounds checks.
        Kernel::Avx512Vnni => unsafe { x86::vnni(w, x, panel, rows, dest) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2, FMA and F16C (checked above); as above.
        Kernel::Avx2 => unsafe { x86::avx2(w, x, panel, rows, dest) },
        _ => portable(w, x, panel, rows, dest),
    })
}

/// [`matmul_rows`] with the activations as they are, `m × cols` f32 values, not quantised: each
/// output is `Σ_blocks d_w · (Σ w·x)`, the inner sum in f32 in a fixed order (the values of
/// each block taken four apart, `k ≡ t (mod 4)` for `t` in 0..4, each by fused multiply-adds,
/// then `(s₀ + s₁) + (s₂ + s₃)`), which every kernel follows, so all give the same bits. The
/// product of the dequantised weight with the exact activations, as a reference implementation
/// computes it, at up to a quarter of the 8-bit product's speed for many rows, and at the speed
/// of memory for one.
pub fn matmul_f32_rows(
    kernel: Kernel,
    w: &Q8Matrix,
    x: &[f32],
    m: usize,
    first: usize,
    out: &mut [f32],
) -> Result<(), Q8Error> {
    if m.checked_mul(w.cols) != Some(x.len()) {
        return Err(Q8Error::Activations { rows: m, cols: w.cols, len: x.len() });
    }
    let kernel = if kernel.available() { kernel } else { Kernel::Portable };
    in_panels(w, m, 4 * w.cols, first, out, |panel, rows, dest| match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512 F and BW (checked by `available` above); the kernel reads
        // and writes only sub-slices taken with bounds checks.
        Kernel::Avx512Vnni => unsafe { x86::f32_avx512(w, x, panel, rows, dest) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX2, FMA and F16C (checked above); as above.
        Kernel::Avx2 => unsafe { x86::f32_avx2(w, x, panel, rows, dest) },
        _ => portable_f32(w, x, panel, rows, dest),
    })
}

/// The panels of weight rows `first..first + count` (`count = out.len() / m`) run by `panel`
/// over the `m` activation rows (`row_bytes` each), into `out` row-major.
fn in_panels(
    w: &Q8Matrix,
    m: usize,
    row_bytes: usize,
    first: usize,
    out: &mut [f32],
    mut panel: impl FnMut(usize, Range<usize>, &mut Dest),
) -> Result<(), Q8Error> {
    let count = out.len().checked_div(m).unwrap_or(0);
    if m == 0 || !out.len().is_multiple_of(m) || first.checked_add(count).is_none_or(|end| end > w.rows) {
        return Err(Q8Error::Output { first, rows: count, matrix_rows: w.rows, len: out.len() });
    }
    // Cache blocking for many activation rows (a prompt, a batch of sentences), as a GEMM does:
    // a chunk of rows that stays in L2 meets every panel; within it, the panels whose bytes fit
    // half of L1 meet a few rows at a time, so that each row loaded serves every panel of the
    // pass and each panel every row. Without it each panel streamed all the rows from memory
    // again: a Q8_0 MiniLM ran a batch of 256 sentences at half the f32 model's speed.
    let panel_bytes = w.cols / BLOCK * PANEL_BLOCK;
    let per_pass = (PASS_WEIGHT_BYTES / panel_bytes).max(1);
    let pass_rows = (PASS_ACTIVATION_BYTES / row_bytes.max(1) / 4 * 4).max(4);
    let chunk_rows = (CHUNK_ACTIVATION_BYTES / row_bytes.max(1) / pass_rows * pass_rows).max(pass_rows);
    let panels = first / PANEL..(first + count).div_ceil(PANEL);
    // A panel that the range cuts (its first or last) goes through this buffer.
    let mut cut = vec![0f32; m * PANEL];
    for chunk in (0..m).step_by(chunk_rows).map(|i| i..(i + chunk_rows).min(m)) {
        for pass in panels.clone().step_by(per_pass).map(|p| p..(p + per_pass).min(panels.end)) {
            for rows in chunk.clone().step_by(pass_rows).map(|i| i..(i + pass_rows).min(chunk.end)) {
                for p in pass.clone() {
                    let (start, end) = ((p * PANEL).max(first), ((p + 1) * PANEL).min(first + count));
                    if end - start == PANEL {
                        panel(p, rows.clone(), &mut Dest { out, stride: count, offset: start - first });
                        continue;
                    }
                    panel(p, rows.clone(), &mut Dest { out: &mut cut, stride: PANEL, offset: 0 });
                    for i in rows.clone() {
                        out[i * count + start - first..i * count + end - first]
                            .copy_from_slice(&cut[i * PANEL + start % PANEL..i * PANEL + end - p * PANEL]);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Where a kernel writes a panel's outputs: activation row `i`'s 16 values at
/// `out[i · stride + offset..][..16]`.
struct Dest<'a> {
    out: &'a mut [f32],
    stride: usize,
    offset: usize,
}

impl Dest<'_> {
    fn row(&mut self, i: usize) -> &mut [f32] {
        &mut self.out[i * self.stride + self.offset..i * self.stride + self.offset + PANEL]
    }
}

/// Activation bytes per chunk of [`matmul_rows`]: an eighth of a 2 MiB L2.
const CHUNK_ACTIVATION_BYTES: usize = 256 * 1024;
/// Weight bytes per pass of [`matmul_rows`]: half of a 48 KiB L1 data cache.
const PASS_WEIGHT_BYTES: usize = 24 * 1024;
/// Activation bytes per pass (at least four rows).
const PASS_ACTIVATION_BYTES: usize = 8 * 1024;

/// The reference kernel: one panel by activation rows `rows`, into `out[i · PANEL + lane]`.
/// Exact integer sums per block, then one fused multiply-add per block, in block order, as the
/// SIMD kernels do per lane.
fn portable(w: &Q8Matrix, x: &Q8Activations, panel: usize, rows: Range<usize>, out: &mut Dest) {
    let (quants, scales) = w.panel(panel);
    for i in rows {
        let outs = out.row(i);
        let (words, xd, _) = x.row(i);
        for (lane, o) in outs.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (b, q) in quants.chunks_exact(PANEL_BLOCK).enumerate() {
                let mut dot = 0i32;
                for (group, word) in words[b * BLOCK / 4..(b + 1) * BLOCK / 4].iter().enumerate() {
                    let wq = &q[group * 4 * PANEL + lane * 4..][..4];
                    for (&a, c) in wq.iter().zip(word.to_le_bytes()) {
                        dot += ((a ^ 0x80) as i8 as i32) * (c as i8 as i32);
                    }
                }
                acc = (dot as f32).mul_add(scales[b * PANEL + lane].to_f32() * xd[b], acc);
            }
            *o = acc;
        }
    }
}

/// The reference kernel of [`matmul_f32_rows`]: one panel by activation rows `rows`.
fn portable_f32(w: &Q8Matrix, x: &[f32], panel: usize, rows: Range<usize>, out: &mut Dest) {
    let (quants, scales) = w.panel(panel);
    let k = w.cols;
    for i in rows {
        let xs = &x[i * k..(i + 1) * k];
        let outs = out.row(i);
        for (lane, o) in outs.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (b, q) in quants.chunks_exact(PANEL_BLOCK).enumerate() {
                let mut sums = [0f32; 4];
                for group in 0..BLOCK / 4 {
                    let wq = &q[group * 4 * PANEL + lane * 4..][..4];
                    for (t, s) in sums.iter_mut().enumerate() {
                        let v = (wq[t] ^ 0x80) as i8 as f32;
                        *s = v.mul_add(xs[b * BLOCK + group * 4 + t], *s);
                    }
                }
                let dot = (sums[0] + sums[1]) + (sums[2] + sums[3]);
                acc = dot.mul_add(scales[b * PANEL + lane].to_f32(), acc);
            }
            *o = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD kernels. Every load reads a sub-slice taken with bounds checks (`&s[a..a + 64]`),
    //! so each `unsafe` load reads inside its slice.

    use super::{BLOCK, Dest, PANEL, PANEL_BLOCK, Q8Activations, Q8Matrix};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Activation rows per tile at most: each weight vector loaded serves all of them.
    const C: usize = 4;

    /// Runs `$tile::<CC>(w, x, panel, i, first, out)` over the activation rows `$rows` in tiles
    /// of up to [`C`] rows, `first` for the first tile (which prefetches the panel). One
    /// monomorphised tile per width, so each keeps its accumulators in registers.
    macro_rules! in_tiles {
        ($tile:ident, $w:expr, $x:expr, $panel:expr, $rows:expr, $out:expr) => {{
            let rows = $rows;
            let mut i = rows.start;
            while i < rows.end {
                let cols = (rows.end - i).min(C);
                let first = i == rows.start;
                match cols {
                    4 => $tile::<4>($w, $x, $panel, i, first, $out),
                    3 => $tile::<3>($w, $x, $panel, i, first, $out),
                    2 => $tile::<2>($w, $x, $panel, i, first, $out),
                    _ => $tile::<1>($w, $x, $panel, i, first, $out),
                }
                i += cols;
            }
        }};
    }
    /// How far ahead of the block being multiplied its panel's bytes are prefetched: a decode
    /// step's output projection went from 8.4 to 10.3 GB/s of weights on one core (q8speed),
    /// against the 12 GB/s a plain read of memory gets.
    const PREFETCH: usize = 4 * PANEL_BLOCK;

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn vnni(w: &Q8Matrix, x: &Q8Activations, panel: usize, rows: Range<usize>, out: &mut Dest) {
        in_tiles!(tile512, w, x, panel, rows, out);
    }

    /// Panel `panel` by `CC` activation rows from `col`, into `out[(col + c) · 16 + lane]`;
    /// `first` for the first tile of a call, which prefetches the panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    fn tile512<const CC: usize>(
        w: &Q8Matrix,
        x: &Q8Activations,
        panel: usize,
        col: usize,
        first: bool,
        out: &mut Dest,
    ) {
        let (quants, scales) = w.panel(panel);
        let rows: [(&[i32], &[f32], &[i32]); CC] = std::array::from_fn(|c| x.row(col + c));
        let mut acc = [_mm512_setzero_ps(); CC];
        for (b, (q, d)) in quants.chunks_exact(PANEL_BLOCK).zip(scales.chunks_exact(PANEL)).enumerate() {
            let q: &[u8; PANEL_BLOCK] = q.try_into().expect("whole panel blocks");
            // SAFETY: `d` is the 16 scales (32 bytes) of this block.
            let wd = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(d.as_ptr().cast()) });
            // Two chains of four `vpdpbusd` per activation row, so one row's sums do not wait
            // on each other's latency.
            let mut even = [_mm512_setzero_si512(); CC];
            let mut odd = [_mm512_setzero_si512(); CC];
            let words: [&[i32; BLOCK / 4]; CC] = std::array::from_fn(|c| {
                rows[c].0[b * BLOCK / 4..(b + 1) * BLOCK / 4].try_into().expect("whole blocks")
            });
            for c in 0..CC {
                even[c] = _mm512_set1_epi32(rows[c].2[b]);
            }
            for g in (0..BLOCK / 4).step_by(2) {
                if first {
                    // The first tile streams the panel from memory; the others find it cached.
                    let ahead = q.as_ptr().wrapping_add(PREFETCH + g * 64).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                }
                // SAFETY: 64 bytes each, inside the block's 512.
                let (w0, w1) = unsafe {
                    (
                        _mm512_loadu_si512(q[g * 64..g * 64 + 64].as_ptr().cast()),
                        _mm512_loadu_si512(q[g * 64 + 64..g * 64 + 128].as_ptr().cast()),
                    )
                };
                for c in 0..CC {
                    even[c] = _mm512_dpbusd_epi32(even[c], w0, _mm512_set1_epi32(words[c][g]));
                    odd[c] = _mm512_dpbusd_epi32(odd[c], w1, _mm512_set1_epi32(words[c][g + 1]));
                }
            }
            for c in 0..CC {
                let dot = _mm512_cvtepi32_ps(_mm512_add_epi32(even[c], odd[c]));
                acc[c] = _mm512_fmadd_ps(dot, _mm512_mul_ps(wd, _mm512_set1_ps(rows[c].1[b])), acc[c]);
            }
        }
        for (c, acc) in acc.iter().enumerate() {
            let o = out.row(col + c);
            // SAFETY: `o` is 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *acc) };
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn avx2(w: &Q8Matrix, x: &Q8Activations, panel: usize, rows: Range<usize>, out: &mut Dest) {
        let (quants, scales) = w.panel(panel);
        let flip = _mm256_set1_epi8(-128);
        let ones = _mm256_set1_epi16(1);
        for i in rows {
            let outs = out.row(i);
            let (words, xd, _) = x.row(i);
            // Lanes 0..8 and 8..16 of the panel.
            let mut acc = [_mm256_setzero_ps(); 2];
            for (b, (q, d)) in quants.chunks_exact(PANEL_BLOCK).zip(scales.chunks_exact(PANEL)).enumerate() {
                let xs = _mm256_set1_ps(xd[b]);
                for (h, acc) in acc.iter_mut().enumerate() {
                    let mut sum = _mm256_setzero_si256();
                    for (g, &word) in words[b * BLOCK / 4..(b + 1) * BLOCK / 4].iter().enumerate() {
                        let at = g * 4 * PANEL + h * 32;
                        // SAFETY: 32 bytes, taken with bounds checks.
                        let wv = unsafe { _mm256_loadu_si256(q[at..at + 32].as_ptr().cast()) };
                        // ggml's trick: |w| (unsigned) times x with w's sign; |w| <= 128 and
                        // |x| <= 127 keep each pair of products inside i16.
                        let wv = _mm256_xor_si256(wv, flip);
                        let xv = _mm256_set1_epi32(word);
                        let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(prod, ones));
                    }
                    // SAFETY: 8 scales (16 bytes), taken with bounds checks.
                    let wd = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d[h * 8..h * 8 + 8].as_ptr().cast()) });
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(wd, xs), *acc);
                }
            }
            // SAFETY: 8 floats each, taken with bounds checks.
            unsafe {
                _mm256_storeu_ps(outs[..8].as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(outs[8..].as_mut_ptr(), acc[1]);
            }
        }
    }

    /// Byte `t` of each lane of `v` (signed bytes), sign-extended, as 16 floats: `SHIFT` is
    /// `24 - 8t`, which leaves that byte at the top of the lane for the arithmetic shift.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn byte512<const SHIFT: u32>(v: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_srai_epi32::<24>(_mm512_slli_epi32::<SHIFT>(v)))
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn f32_avx512(w: &Q8Matrix, x: &[f32], panel: usize, rows: Range<usize>, out: &mut Dest) {
        in_tiles!(tile_f32, w, x, panel, rows, out);
    }

    /// Panel `panel` by `CC` f32 activation rows from `col` (see [`super::matmul_f32_rows`] for
    /// the order of the sums: four chains per row, one per byte of a lane).
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn tile_f32<const CC: usize>(
        w: &Q8Matrix,
        x: &[f32],
        panel: usize,
        col: usize,
        first: bool,
        out: &mut Dest,
    ) {
        let (quants, scales) = w.panel(panel);
        let k = w.cols;
        let flip = _mm512_set1_epi8(-128);
        let xs: [&[f32]; CC] = std::array::from_fn(|c| &x[(col + c) * k..(col + c + 1) * k]);
        let mut acc = [_mm512_setzero_ps(); CC];
        for (b, (q, d)) in quants.chunks_exact(PANEL_BLOCK).zip(scales.chunks_exact(PANEL)).enumerate() {
            let q: &[u8; PANEL_BLOCK] = q.try_into().expect("whole panel blocks");
            // SAFETY: `d` is the 16 scales (32 bytes) of this block.
            let wd = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(d.as_ptr().cast()) });
            let xb: [&[f32; BLOCK]; CC] =
                std::array::from_fn(|c| xs[c][b * BLOCK..(b + 1) * BLOCK].try_into().expect("whole blocks"));
            let mut sums = [[_mm512_setzero_ps(); 4]; CC];
            for g in 0..BLOCK / 4 {
                if first {
                    let ahead = q.as_ptr().wrapping_add(PREFETCH + g * 64).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                }
                // SAFETY: 64 bytes, inside the block's 512.
                let v = _mm512_xor_si512(
                    unsafe { _mm512_loadu_si512(q[g * 64..g * 64 + 64].as_ptr().cast()) },
                    flip,
                );
                let bytes = [byte512::<24>(v), byte512::<16>(v), byte512::<8>(v), byte512::<0>(v)];
                for c in 0..CC {
                    for (t, wt) in bytes.iter().enumerate() {
                        sums[c][t] = _mm512_fmadd_ps(*wt, _mm512_set1_ps(xb[c][g * 4 + t]), sums[c][t]);
                    }
                }
            }
            for c in 0..CC {
                let [s0, s1, s2, s3] = sums[c];
                let dot = _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
                acc[c] = _mm512_fmadd_ps(dot, wd, acc[c]);
            }
        }
        for (c, acc) in acc.iter().enumerate() {
            let o = out.row(col + c);
            // SAFETY: `o` is 16 floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *acc) };
        }
    }

    /// [`byte512`] for eight lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn byte256<const SHIFT: i32>(v: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_srai_epi32::<24>(_mm256_slli_epi32::<SHIFT>(v)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn f32_avx2(w: &Q8Matrix, x: &[f32], panel: usize, rows: Range<usize>, out: &mut Dest) {
        let (quants, scales) = w.panel(panel);
        let k = w.cols;
        let flip = _mm256_set1_epi8(-128);
        for i in rows {
            let xs = &x[i * k..(i + 1) * k];
            let outs = out.row(i);
            let mut acc = [_mm256_setzero_ps(); 2];
            for (b, (q, d)) in quants.chunks_exact(PANEL_BLOCK).zip(scales.chunks_exact(PANEL)).enumerate() {
                for (h, acc) in acc.iter_mut().enumerate() {
                    let mut sums = [_mm256_setzero_ps(); 4];
                    for g in 0..BLOCK / 4 {
                        let at = g * 4 * PANEL + h * 32;
                        // SAFETY: 32 bytes, taken with bounds checks.
                        let v = _mm256_xor_si256(
                            unsafe { _mm256_loadu_si256(q[at..at + 32].as_ptr().cast()) },
                            flip,
                        );
                        let bytes = [byte256::<24>(v), byte256::<16>(v), byte256::<8>(v), byte256::<0>(v)];
                        for (t, wt) in bytes.iter().enumerate() {
                            let xv = _mm256_set1_ps(xs[b * BLOCK + g * 4 + t]);
                            sums[t] = _mm256_fmadd_ps(*wt, xv, sums[t]);
                        }
                    }
                    let dot = _mm256_add_ps(_mm256_add_ps(sums[0], sums[1]), _mm256_add_ps(sums[2], sums[3]));
                    // SAFETY: 8 scales (16 bytes), taken with bounds checks.
                    let wd = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d[h * 8..h * 8 + 8].as_ptr().cast()) });
                    *acc = _mm256_fmadd_ps(dot, wd, *acc);
                }
            }
            // SAFETY: 8 floats each, taken with bounds checks.
            unsafe {
                _mm256_storeu_ps(outs[..8].as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(outs[8..].as_mut_ptr(), acc[1]);
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
            let expected: Vec<(f64, f64)> = (0..m)
                .flat_map(|i| {
                    let (wide, x) = (&wide, &x);
                    (0..rows).map(move |j| {
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

    /// Ranges of rows that start and end inside panels, on matrices whose last panel is
    /// partly padding: every kernel gives the portable kernel's bits, and the portable kernel
    /// the product of the dequantised weights with the dequantised activations.
    #[test]
    fn every_kernel_gives_the_same_bits_on_any_range_of_rows() {
        for (rows, cols, m) in [(37, 96, 1), (37, 96, 5), (16, 640, 2), (50, 64, 9)] {
            let w = Q8Matrix::from_q8_0(rows, cols, &blocks_q8_0(rows, cols, 11)).unwrap();
            let x: Vec<f32> = (0..m * cols).map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0).collect();
            let xa = Q8Activations::quantize(&x, m, cols).unwrap();
            let wide = w.dequantize();
            for (first, count) in [(0, rows), (3, 12), (rows / 2, rows - rows / 2), (rows - 1, 1)] {
                let mut reference = vec![0f32; count * m];
                matmul_rows(Kernel::Portable, &w, &xa, first, &mut reference).unwrap();
                for (at, &got) in reference.iter().enumerate() {
                    let (i, j) = (at / count, first + at % count);
                    let (words, xd, _) = xa.row(i);
                    let expected: f64 = (0..cols)
                        .map(|k| {
                            let q = words[k / 4].to_le_bytes()[k % 4] as i8;
                            wide[j * cols + k] as f64 * q as f64 * xd[k / BLOCK] as f64
                        })
                        .sum();
                    assert!(
                        (got as f64 - expected).abs() <= 1e-4 * (1.0 + expected.abs()),
                        "{got} vs {expected}"
                    );
                }
                for kernel in [Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.available()) {
                    let mut out = vec![f32::NAN; count * m];
                    matmul_rows(kernel, &w, &xa, first, &mut out).unwrap();
                    assert_eq!(
                        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        reference.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{} on rows {first}..{}",
                        kernel.name(),
                        first + count
                    );
                }
            }
        }
    }

    #[test]
    fn rounding_matches_f32_round() {
        for i in -300_000..=300_000 {
            let r = i as f32 / 1000.0;
            assert_eq!(round_clamped(r), r.round().clamp(-127.0, 127.0) as i32, "{r}");
        }
        for r in [0.5, -0.5, 1.5, -2.5, 0.499_999_97, -0.499_999_97, 126.5, -126.5, 127.000_01, 1e30] {
            assert_eq!(round_clamped(r), r.round().clamp(-127.0, 127.0) as i32, "{r}");
        }
        assert_eq!(round_clamped(f32::NAN), -127);
    }

    /// The f32-activation product: every kernel the portable one's bits, and the portable one
    /// the dequantised weight times the exact activations, on ranges cutting panels.
    #[test]
    fn the_f32_product_is_the_dequantised_weight_times_the_activations() {
        for (rows, cols, m) in [(37, 96, 1), (37, 96, 5), (16, 640, 2), (50, 64, 9)] {
            let w = Q8Matrix::from_q8_0(rows, cols, &blocks_q8_0(rows, cols, 5)).unwrap();
            let x: Vec<f32> = (0..m * cols).map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0).collect();
            let wide = w.dequantize();
            for (first, count) in [(0, rows), (3, 12), (rows / 2, rows - rows / 2), (rows - 1, 1)] {
                let mut reference = vec![0f32; count * m];
                matmul_f32_rows(Kernel::Portable, &w, &x, m, first, &mut reference).unwrap();
                for (at, &got) in reference.iter().enumerate() {
                    let (i, j) = (at / count, first + at % count);
                    let expected: f64 =
                        (0..cols).map(|k| wide[j * cols + k] as f64 * x[i * cols + k] as f64).sum();
                    assert!(
                        (got as f64 - expected).abs() <= 1e-4 * (1.0 + expected.abs()),
                        "{got} vs {expected}"
                    );
                }
                for kernel in [Kernel::Avx2, Kernel::Avx512Vnni].into_iter().filter(|k| k.available()) {
                    let mut out = vec![f32::NAN; count * m];
                    matmul_f32_rows(kernel, &w, &x, m, first, &mut out).unwrap();
                    assert_eq!(
                        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        reference.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{} on rows {first}..{}",
                        kernel.name(),
                        first + count
                    );
                }
            }
        }
        let w = Q8Matrix::from_q8_0(2, 32, &[0; 68]).unwrap();
        assert!(matches!(
            matmul_f32_rows(Kernel::Portable, &w, &[0.0; 31], 1, 0, &mut [0.0; 2]),
            Err(Q8Error::Activations { .. })
        ));
    }

    #[test]
    fn dequantize_reads_back_the_blocks() {
        let (rows, cols) = (19, 64);
        let blocks = blocks_q8_0(rows, cols, 3);
        let wide = Q8Matrix::from_q8_0(rows, cols, &blocks).unwrap().dequantize();
        for (b, block) in blocks.chunks_exact(Q8_0_BYTES).enumerate() {
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            for (t, &q) in block[2..].iter().enumerate() {
                assert_eq!(wide[b * BLOCK + t], q as i8 as f32 * d);
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
