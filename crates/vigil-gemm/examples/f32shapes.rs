//! The f32 GEMM alone, one thread, on MiniLM's products for a batch of 32 x 128 tokens
//! (`x Wᵀ` with `W` row-major, as the encoder layer multiplies): milliseconds and multiply-adds
//! per second, to set beside `torch.matmul` on the same shapes.
//!
//!     cargo run --release -p vigil-gemm --example f32shapes
use std::time::Instant;
use vigil_gemm::{Matrix, Parallelism, product};
fn main() {
    for (m, k, n) in [(4096, 384, 1536), (4096, 1536, 384), (4096, 384, 384)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
        let b: Vec<f32> = (0..n * k).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
        let mut out = vec![0f32; m * n];
        let mut times = Vec::new();
        for _ in 0..13 {
            let s = Instant::now();
            product(
                &mut out,
                Matrix::row_major(&a, m, k).unwrap(),
                Matrix::row_major(&b, n, k).unwrap().t(),
                Parallelism::None,
            )
            .unwrap();
            times.push(s.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let t = times[6];
        println!("{m} {k} {n}: {:.2} ms {:.0} GMAC/s", t * 1e3, (m * k * n) as f64 / t / 1e9);
    }
}
