//! The Q8_0 kernel against the f32 GEMM on the shapes of a prompt (many activation rows): Gemma
//! 3 270M's feed-forward matrices for a 128-token prompt and MiniLM's for a batch of 32 x 128,
//! one thread, the activations' quantisation included. Prints milliseconds per product and
//! multiply-adds per second of each.
//!
//!     cargo run --release -p vigil-gemm --example q8prompt

use std::time::Instant;
use vigil_gemm::q8::{Kernel, Q8_0_BYTES, Q8Activations, Q8Matrix, matmul_rows};
use vigil_gemm::{Matrix, Parallelism, product};
fn main() {
    for (n, k, m) in [(2048, 640, 128), (640, 2048, 128), (1536, 384, 4096)] {
        let blocks: Vec<u8> = (0..n * k / 32)
            .flat_map(|b| {
                [0x00, 0x3c].into_iter().chain((0..32).map(move |i| ((b * 7 + i * 13) % 251) as u8))
            })
            .collect();
        assert_eq!(blocks.len(), n * k / 32 * Q8_0_BYTES);
        let w = Q8Matrix::from_q8_0(n, k, &blocks).unwrap();
        let wide = w.dequantize();
        let x: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
        let reps = 5;
        // The same weights both ways: the f32 product multiplies the dequantised matrix.
        let s = Instant::now();
        // One output buffer, touched once before the clock starts, for both products.
        let mut out = vec![0f32; n * m];
        for _ in 0..reps {
            let xa = Q8Activations::quantize(&x, m, k).unwrap();
            matmul_rows(Kernel::Avx512Vnni, &w, &xa, 0, &mut out).unwrap();
        }
        let q = s.elapsed().as_secs_f64() / reps as f64;
        let s = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(Q8Activations::quantize(&x, m, k).unwrap());
        }
        let quantize = s.elapsed().as_secs_f64() / reps as f64;
        let s = Instant::now();
        for _ in 0..reps {
            product(
                &mut out,
                Matrix::row_major(&x, m, k).unwrap(),
                Matrix::row_major(&wide, n, k).unwrap().t(),
                Parallelism::None,
            )
            .unwrap();
        }
        let f = s.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{n}x{k} by {m}: q8 {:.3} ms ({:.0} GMAC/s, quantising {:.3} ms of it), f32 {:.3} ms ({:.0} GMAC/s)",
            q * 1e3,
            (n * k * m) as f64 / q / 1e9,
            quantize * 1e3,
            f * 1e3,
            (n * k * m) as f64 / f / 1e9
        );
    }
}
