//! The Q8_0 kernels alone, one thread, on the shapes Vigil multiplies: Gemma 3 270M's output
//! projection and a feed-forward matrix for one decoded token, and MiniLM's feed-forward
//! matrices for a 20-token sentence. Prints milliseconds per product, the weight bytes read per
//! second and the multiply-adds per second of each kernel this CPU has.
//!
//!     cargo run --release -p vigil-gemm --example q8speed

use std::time::Instant;

use vigil_gemm::q8::{Kernel, Q8_0_BYTES, Q8Activations, Q8Matrix, matmul_f32_rows, matmul_rows};

fn main() {
    for (n, k, m) in [(262_144, 640, 1), (2048, 640, 1), (1536, 384, 20), (384, 1536, 20)] {
        // Arbitrary but fixed blocks: the scale 1.0 (f16 0x3c00) and bytes of a simple pattern.
        let blocks: Vec<u8> = (0..n * k / 32)
            .flat_map(|b| {
                [0x00, 0x3c].into_iter().chain((0..32).map(move |i| ((b * 7 + i * 13) % 251) as u8))
            })
            .collect();
        assert_eq!(blocks.len(), n * k / 32 * Q8_0_BYTES);
        let w = Q8Matrix::from_q8_0(n, k, &blocks).expect("whole blocks");
        let x: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
        let xf = x.clone();
        let x = Q8Activations::quantize(&x, m, k).expect("whole blocks");
        for kernel in
            [Kernel::Avx512Vnni, Kernel::Avx2, Kernel::Portable].into_iter().filter(|k| k.available())
        {
            let mut out = vec![0f32; n * m];
            let repeats = (200_000_000 / (n * k * m)).max(3);
            let mut time = |label: &str, product: &mut dyn FnMut(&mut [f32])| {
                let start = Instant::now();
                for _ in 0..repeats {
                    product(&mut out);
                }
                let seconds = start.elapsed().as_secs_f64() / repeats as f64;
                println!(
                    "{n}x{k} by {m} rows, {:<11} {:>8.3} ms  {:>5.1} GB/s of weights  {:>5.1} G multiply-adds/s{label}",
                    kernel.name(),
                    seconds * 1e3,
                    w.bytes() as f64 / seconds / 1e9,
                    (n * k * m) as f64 / seconds / 1e9
                );
            };
            time("", &mut |out| matmul_rows(kernel, &w, &x, 0, out).expect("sizes match"));
            time(", f32 activations", &mut |out| {
                matmul_f32_rows(kernel, &w, &xf, m, 0, out).expect("sizes match")
            });
        }
    }
}
