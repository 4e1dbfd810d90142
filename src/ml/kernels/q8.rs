//! The product of a Q8_0 weight matrix with rows of f32 activations (a decoded token, a
//! sentence, a prompt, a batch), quantised first or taken exactly, split over the threads; and
//! [`matmul_wide`], the same threading for a quantised weight widened to f32. The arithmetic, and
//! the `unsafe` SIMD behind it, is the internal `vigil-gemm` crate's
//! (`crates/vigil-gemm/src/q8.rs`, which says why candle's own quantised product is not used);
//! this module picks the kernel once per process and hands each thread a block of weight rows,
//! or of activation rows for a large batch.

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

/// How a product takes its activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    /// Quantised to Q8_0 blocks, the products summed in integers, as ggml does: the fastest.
    Quantised,
    /// As they are, in f32 ([`vigil_gemm::q8::matmul_f32_rows`]): the dequantised weight times
    /// the exact activations, as a reference implementation computes it.
    Exact,
}

/// `x · wᵀ` for `x` of `rows × w.cols()` (row-major), as a row-major `rows × w.rows()` buffer,
/// on the best kernel.
pub fn matmul(
    w: &Q8Matrix,
    x: &[f32],
    rows: usize,
    threads: Threads,
    activations: Activations,
) -> candle_core::Result<Vec<f32>> {
    matmul_with(kernel(), w, x, rows, threads, activations)
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
    activations: Activations,
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
    // Weight rows `first..` by the activation rows `x` (`m` of them), quantised first or not
    // (`quantised`: already quantised, shared by the blocks of one product).
    let product = |x: &[f32],
                   m: usize,
                   quantised: Option<&Q8Activations>,
                   first: usize,
                   block: &mut [f32]| match (activations, quantised) {
        (Activations::Exact, _) => vigil_gemm::q8::matmul_f32_rows(kernel, w, x, m, first, block),
        (Activations::Quantised, Some(q)) => vigil_gemm::q8::matmul_rows(kernel, w, q, first, block),
        (Activations::Quantised, None) => {
            vigil_gemm::q8::matmul_rows(kernel, w, &Q8Activations::quantize(x, m, k)?, first, block)
        }
    };
    let pool = pool_size(threads);
    if pool <= 1 || w.bytes() < PARALLEL_BYTES {
        product(x, rows, None, 0, &mut out).map_err(refused_q8)?;
        return Ok(out);
    }
    if rows >= ROWS_PER_THREAD * pool {
        let block_rows = rows.div_ceil(pool * BLOCKS_PER_THREAD);
        in_blocks(threads, &mut out, block_rows * n, |i, block| {
            let (first, count) = (i * block_rows, block.len() / n);
            product(&x[first * k..(first + count) * k], count, None, 0, block)
        })
        .map_err(refused_q8)?;
        return Ok(out);
    }
    // Whole panels of weight rows per block, each computed into its own contiguous slice
    // (row-major over the block's columns), then copied into place; one row of activations
    // needs no copy. The activations are quantised once for all the blocks.
    let quantised = match activations {
        Activations::Quantised => Some(Q8Activations::quantize(x, rows, k).map_err(refused_q8)?),
        Activations::Exact => None,
    };
    let block_rows = n.div_ceil(pool * BLOCKS_PER_THREAD).div_ceil(PANEL) * PANEL;
    let run = |i: usize, block: &mut [f32]| product(x, rows, quantised.as_ref(), i * block_rows, block);
    by_weight_blocks(threads, out, rows, block_rows, run).map_err(refused_q8)
}

/// `out` (`rows × n`, `n = out.len() / rows`) computed by `run(i, block)` in blocks of
/// `block_rows` weight rows, each block row-major over its own columns, then copied into place
/// (one row of activations needs no copy).
fn by_weight_blocks<E: Send>(
    threads: Threads,
    mut out: Vec<f32>,
    rows: usize,
    block_rows: usize,
    run: impl Fn(usize, &mut [f32]) -> Result<(), E> + Sync + Send,
) -> Result<Vec<f32>, E> {
    if rows == 1 {
        in_blocks(threads, &mut out, block_rows, run)?;
        return Ok(out);
    }
    let n = out.len() / rows;
    let mut blocks = vec![0f32; out.len()];
    in_blocks(threads, &mut blocks, block_rows * rows, run)?;
    for (b, block) in blocks.chunks(block_rows * rows).enumerate() {
        let (first, count) = (b * block_rows, block.len() / rows);
        for (i, values) in block.chunks_exact(count).enumerate() {
            out[i * n + first..i * n + first + count].copy_from_slice(values);
        }
    }
    Ok(out)
}

/// `x · wᵀ` for a weight widened to f32 (`n × k`, row-major) and a few rows of activations `x`
/// (`rows × k`): a decoded token through a K-quant weight of a language model, with its exact
/// activations. The threads of `threads`' pool each take a block of weight rows, the product's
/// largest operand (the gemm crate splits the activation rows, so one row ran on one thread).
pub fn matmul_wide(
    w: &[f32],
    n: usize,
    x: &[f32],
    rows: usize,
    threads: Threads,
) -> candle_core::Result<Vec<f32>> {
    let k = w.len().checked_div(n).unwrap_or(0);
    if n * k != w.len() || x.len() != rows * k {
        candle_core::bail!(
            "wide matmul: {} weights are not {n} rows, or {} activations not {rows} rows of them",
            w.len(),
            x.len()
        );
    }
    let out = vec![0f32; n * rows];
    if out.is_empty() {
        return Ok(out);
    }
    let pool = pool_size(threads);
    // One block on the calling thread where handing blocks out would cost more than it saves.
    let block_rows = if pool <= 1 || w.len() * 4 < PARALLEL_BYTES {
        n
    } else {
        n.div_ceil(pool * BLOCKS_PER_THREAD).div_ceil(PANEL) * PANEL
    };
    let x = vigil_gemm::Matrix::row_major(x, rows, k).map_err(super::gemm::refused)?;
    let weight = vigil_gemm::Matrix::row_major(w, n, k).map_err(super::gemm::refused)?;
    by_weight_blocks(threads, out, rows, block_rows, |i, block| {
        let count = block.len() / rows;
        let w = weight.row_block(i * block_rows, count)?;
        vigil_gemm::product(block, x, w.t(), vigil_gemm::Parallelism::None)
    })
    .map_err(super::gemm::refused)
}

/// How many threads `threads`' pool runs a product on (the calling thread included).
fn pool_size(threads: Threads) -> usize {
    match threads {
        Threads::Kernels => par::threads(),
        Threads::Candle => candle_core::utils::barrier_pool().n_workers() + 1,
    }
}

/// Runs `run(i, block)` for each `block_len`-long block `i` of `out` on `threads`' pool; the
/// first error, if any.
fn in_blocks<E: Send>(
    threads: Threads,
    out: &mut [f32],
    block_len: usize,
    run: impl Fn(usize, &mut [f32]) -> Result<(), E> + Sync + Send,
) -> Result<(), E> {
    if out.len() <= block_len {
        // A single block runs on the calling thread, waking no pool.
        return run(0, out);
    }
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
        Some(e) => Err(e),
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
                        let got =
                            matmul_with(kernel, &matrix, &x, rows, threads, Activations::Quantised).unwrap();
                        let exact =
                            matmul_with(kernel, &matrix, &x, rows, threads, Activations::Exact).unwrap();
                        for (at, ((a, b), e)) in got.iter().zip(&expected).zip(&exact).enumerate() {
                            let (i, j) = (at / n, at % n);
                            // f32 rounding of a sum of k terms: relative to their magnitudes.
                            let size: f32 = (0..k).map(|c| (wide[j * k + c] * x[i * k + c]).abs()).sum();
                            assert!(
                                (a - b).abs() <= 1e-5 * size + 1e-6,
                                "{dtype:?} {n}x{k}, {rows} rows, {}: ({i}, {j}) {a} vs candle {b}",
                                kernel.name()
                            );
                            // The exact activations: the dequantised weight times x.
                            let f32_product: f32 = (0..k).map(|c| wide[j * k + c] * x[i * k + c]).sum();
                            assert!(
                                (e - f32_product).abs() <= 1e-5 * size + 1e-6,
                                "{dtype:?} {n}x{k}, {rows} rows, {}: ({i}, {j}) exact {e} vs {f32_product}",
                                kernel.name()
                            );
                        }
                    }
                }
            }
        }
    }
}
