//! The product of a Q8_0 weight matrix with a few rows of f32 activations (a decoded token, a
//! sentence), split over the kernels' threads. The arithmetic, and the `unsafe` SIMD behind it,
//! is the internal `vigil-gemm` crate's (`crates/vigil-gemm/src/q8.rs`, which says why candle's
//! own quantised product is not used); this module picks the kernel once per process and hands
//! each thread a block of output rows.

use std::sync::{Mutex, OnceLock};

pub use vigil_gemm::q8::{Kernel, PANEL, Q8Activations, Q8Matrix};

use super::{gemm::refused_q8, par};

/// Weight bytes below which a product runs on the calling thread alone: handing a block to the
/// other thread costs a few microseconds, the time to read ~32 KiB.
const PARALLEL_BYTES: usize = 32 * 1024;

/// Blocks per thread, so that a thread slowed by another process leaves blocks to the others.
const BLOCKS_PER_THREAD: usize = 4;

/// The kernel this CPU runs, detected once.
pub fn kernel() -> Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    *KERNEL.get_or_init(Kernel::detect)
}

/// Which threads a product's blocks of output rows run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The kernels' rayon pool ([`par`]), as the rest of a model's kernels.
    Kernels,
    /// candle's own pool, for a model whose other quantised products (candle's Q4_K and Q6_K)
    /// run there: a language model's decode step alternates between the two, and each pool's
    /// threads spin for a while after their work, so two pools on two cores took turns
    /// spinning (a third of a Gemma 3 decode step, in candle's barrier, with perf).
    Candle,
}

/// `x · wᵀ` for `x` of `rows × w.cols()` (row-major), as a row-major `rows × w.rows()` buffer,
/// on the best kernel.
pub fn matmul(w: &Q8Matrix, x: &[f32], rows: usize, threads: Threads) -> candle_core::Result<Vec<f32>> {
    matmul_with(kernel(), w, x, rows, threads)
}

/// Activation rows per thread from which a product splits the rows rather than the weight over
/// the threads: each thread then quantises its own rows and writes its outputs in place, where
/// a split of the weight would need each thread's columns copied into place (for a batch of
/// 256 sentences, two fresh copies of the output per product: a Q8_0 MiniLM ran at half the f32
/// model's speed). Below it (a decoded token, a short prompt) each thread reads only its part of
/// the weight, the product's largest operand.
const ROWS_PER_THREAD: usize = 128;

/// [`matmul`] on a chosen kernel (the tests compare them).
pub fn matmul_with(
    kernel: Kernel,
    w: &Q8Matrix,
    x: &[f32],
    rows: usize,
    threads: Threads,
) -> candle_core::Result<Vec<f32>> {
    let (n, k) = (w.rows(), w.cols());
    let Some(size) = n.checked_mul(rows) else {
        candle_core::bail!("q8 matmul: a {rows}x{n} result is too large");
    };
    if x.len() != rows * k {
        return Err(refused_q8(vigil_gemm::q8::Q8Error::Activations { rows, cols: k, len: x.len() }));
    }
    let mut out = vec![0f32; size];
    if size == 0 {
        return Ok(out);
    }
    let pool = match threads {
        Threads::Kernels => par::threads(),
        Threads::Candle => candle_core::utils::barrier_pool().n_workers() + 1,
    };
    if pool <= 1 || w.bytes() < PARALLEL_BYTES {
        let x = Q8Activations::quantize(x, rows, k).map_err(refused_q8)?;
        vigil_gemm::q8::matmul_rows(kernel, w, &x, 0, &mut out).map_err(refused_q8)?;
        return Ok(out);
    }
    if rows >= ROWS_PER_THREAD * pool {
        let block_rows = rows.div_ceil(pool * BLOCKS_PER_THREAD);
        in_blocks(threads, &mut out, block_rows * n, |i, block| {
            let first = i * block_rows;
            let count = block.len() / n;
            let x = Q8Activations::quantize(&x[first * k..(first + count) * k], count, k)?;
            vigil_gemm::q8::matmul_rows(kernel, w, &x, 0, block)
        })?;
        return Ok(out);
    }
    // Whole panels of weight rows per block, each computed into its own contiguous slice
    // (row-major over the block's columns), then copied into place; one row of activations
    // needs no copy.
    let x = Q8Activations::quantize(x, rows, k).map_err(refused_q8)?;
    let block_rows = n.div_ceil(pool * BLOCKS_PER_THREAD).div_ceil(PANEL) * PANEL;
    let run = |i: usize, block: &mut [f32]| vigil_gemm::q8::matmul_rows(kernel, w, &x, i * block_rows, block);
    if rows == 1 {
        in_blocks(threads, &mut out, block_rows, run)?;
        return Ok(out);
    }
    let mut blocks = vec![0f32; size];
    in_blocks(threads, &mut blocks, block_rows * rows, run)?;
    for (b, block) in blocks.chunks(block_rows * rows).enumerate() {
        let (first, count) = (b * block_rows, block.len() / rows);
        for (i, values) in block.chunks_exact(count).enumerate() {
            out[i * n + first..i * n + first + count].copy_from_slice(values);
        }
    }
    Ok(out)
}

/// Runs `run(i, block)` for each `block_len`-long block `i` of `out` on `threads`' pool; the
/// first error, if any.
fn in_blocks(
    threads: Threads,
    out: &mut [f32],
    block_len: usize,
    run: impl Fn(usize, &mut [f32]) -> Result<(), vigil_gemm::q8::Q8Error> + Sync + Send,
) -> candle_core::Result<()> {
    let failed = Mutex::new(None);
    let fail = |e| *failed.lock().expect("no thread panics holding it") = Some(e);
    match threads {
        Threads::Kernels => par::chunks_mut(out, block_len, |i, block| run(i, block).unwrap_or_else(fail)),
        Threads::Candle => {
            // candle's pool hands out ranges of block numbers to a shared closure; each block's
            // slice sits behind its own (never contended) lock.
            let blocks: Vec<Mutex<&mut [f32]>> = out.chunks_mut(block_len).map(Mutex::new).collect();
            candle_core::utils::barrier_pool().execute_chunked(blocks.len(), |range| {
                for i in range {
                    let mut block = blocks[i].lock().expect("no thread panics holding it");
                    run(i, &mut block).unwrap_or_else(fail)
                }
            });
        }
    }
    match failed.into_inner().expect("no thread panics holding it") {
        Some(e) => Err(refused_q8(e)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Every kernel this CPU has against candle's own quantised product (`QMatMul::forward`,
    /// which quantises the activations to Q8_0 the same way): output widths that are not whole
    /// panels of 16, input widths of odd block counts, and 1 to 300 rows (the product splits 300
    /// rows over the threads, the others the weight).
    #[test]
    fn equals_candles_quantised_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(16);
        for (n, k) in [(5, 32), (8, 96), (67, 640), (130, 384), (3, 1536)] {
            for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_0] {
                let w = Tensor::from_vec(random(&mut rng, n * k), (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let data = q.data().unwrap();
                let matrix = match dtype {
                    GgmlDType::Q8_0 => Q8Matrix::from_q8_0(n, k, &data).unwrap(),
                    _ => Q8Matrix::from_q4_0(n, k, &data).unwrap(),
                };
                let candle = QMatMul::from_qtensor(q).unwrap();
                let wide = matrix.dequantize();
                for rows in [1, 2, 7, 32, 300] {
                    let x = random(&mut rng, rows * k);
                    let xt = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap();
                    let expected =
                        candle.forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    for kernel in [Kernel::Portable, Kernel::Avx2, Kernel::Avx512Vnni] {
                        if !kernel.available() {
                            continue;
                        }
                        let threads = if rows % 2 == 0 { Threads::Kernels } else { Threads::Candle };
                        let got = matmul_with(kernel, &matrix, &x, rows, threads).unwrap();
                        for (at, (a, b)) in got.iter().zip(&expected).enumerate() {
                            let (i, j) = (at / n, at % n);
                            // f32 rounding of a sum of k terms: relative to their magnitudes.
                            let size: f32 = (0..k).map(|c| (wide[j * k + c] * x[i * k + c]).abs()).sum();
                            assert!(
                                (a - b).abs() <= 1e-5 * size + 1e-6,
                                "{dtype:?} {n}x{k}, {rows} rows, {}: ({i}, {j}) {a} vs candle {b}",
                                kernel.name()
                            );
                        }
                    }
                }
            }
        }
    }
}
