//! Element-wise transcendental functions for the kernels' widest loops (GELU's `erf`, the
//! softmax's `exp`), written as branch-free polynomials so that the compiler vectorises them, and
//! run under `pulp`'s run-time dispatch so that they are compiled for AVX-512 and AVX2 as well as
//! the portable baseline, with the widest the CPU has picked when called.
//!
//! Why: the binary targets baseline x86-64 (SSE2), and `libm`'s `erff`/`expf`, which candle's
//! `erf_f32` and `f32::exp` call, take one value at a time through branches. In a MiniLM forward
//! pass at batch 32 x 128 they were 23% of the time (perf), against 32% for all the matrix
//! products. The polynomials: `erf` is the rational minimax approximation Eigen and XLA use
//! (odd degree 13 over even degree 8 on `[-4, 4]`, outside which `erf` is ±1 in f32; largest
//! error 6.5e-8 in exact arithmetic); `exp` is Cephes' `expf` (range reduction by `ln 2` in two
//! parts, a degree-5 polynomial; about 1 ulp). Neither uses fused multiply-adds, so every
//! instruction set gives the same bits and results do not depend on the machine.

use pulp::{Arch, Simd, WithSimd};

/// `erf(x)`, absolute error below 5e-7 in f32 (4 ulp near ±1).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const ALPHA: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.9546e-3,
        -1.609_603_3e-2,
    ];
    const BETA: [f32; 5] = [-1.456_607_2e-5, -2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2];
    // `min`/`max` rather than `clamp`, which panics on NaN bounds and does not vectorise; a NaN
    // input comes out as ±1 here, and every caller multiplies by `x` again, so NaN survives.
    let x = x.clamp_to(4.0);
    let x2 = x * x;
    let mut p = ALPHA[0];
    for a in &ALPHA[1..] {
        p = p * x2 + a;
    }
    let mut q = BETA[0];
    for b in &BETA[1..] {
        q = q * x2 + b;
    }
    x * p / q
}

/// `exp(x)`: about 1 ulp on `[-87.3, 88.7]`, 0 below (where f32's normal numbers end; a softmax
/// score that low carries no weight), +∞ above, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts: `n · LN2_HI` is exact for the `n` that occur, so the reduced argument
    // keeps its precision.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer held in the low bits of the sum's mantissa.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.722_83;
    let c = x.clamp(LO, HI);
    let t = c * LOG2E + ROUND;
    let n = t - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    for k in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = p * r + k;
    }
    let e = p * r * r + r + 1.0;
    // 2^n from n's bits: shifted into the exponent field, biased by 127 (`0x3f80_0000` is 1.0).
    let scale = f32::from_bits((t.to_bits() << 23).wrapping_add(0x3f80_0000));
    let y = e * scale;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

trait ClampTo {
    fn clamp_to(self, bound: f32) -> f32;
}

impl ClampTo for f32 {
    #[inline(always)]
    fn clamp_to(self, bound: f32) -> f32 {
        self.max(-bound).min(bound)
    }
}

/// 1/√2, GELU's argument scale.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π), the standard normal density at 0.
const DENSITY: f32 = 0.398_942_3;

/// `gelu(v) = v · Φ(v)`, the exact (erf) form.
#[inline(always)]
fn gelu_value(v: f32) -> f32 {
    0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2))
}

/// `y = gelu(x)` (the exact, erf form) for every value.
pub fn gelu(x: &[f32], y: &mut [f32]) {
    struct Op<'a>(&'a [f32], &'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            for (y, &v) in self.1.iter_mut().zip(self.0) {
                *y = gelu_value(v);
            }
        }
    }
    Arch::new().dispatch(Op(x, y));
}

/// `x = gelu(x)` in place (the erf form, as [`gelu`]), for inference, where the input is not
/// kept for a backward pass.
pub fn gelu_in_place(x: &mut [f32]) {
    struct Op<'a>(&'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            for v in self.0.iter_mut() {
                *v = gelu_value(*v);
            }
        }
    }
    Arch::new().dispatch(Op(x));
}

/// `y = gelu_tanh(gate) · up` for every value: the gated feed-forward activation of Gemma
/// (GELU in its tanh approximation, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, written as
/// the same function `x / (1 + exp(-2u))` so that it needs only [`exp`]). candle's `gelu` called
/// libm's `tanhf` per value: a tenth of a Gemma 3 prompt's time (perf).
pub fn gelu_tanh_gated(gate: &[f32], up: &[f32], y: &mut [f32]) {
    /// √(2/π), doubled: the `2u` of `exp(-2u)`.
    const TWO_SQRT_2_OVER_PI: f32 = 2.0 * 0.797_884_6;
    struct Op<'a>(&'a [f32], &'a [f32], &'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            for ((y, &x), &u) in self.2.iter_mut().zip(self.0).zip(self.1) {
                let inner = TWO_SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
                *y = x / (1.0 + exp(-inner)) * u;
            }
        }
    }
    Arch::new().dispatch(Op(gate, up, y));
}

/// `g = g · gelu'(x) = g · (Φ(x) + x · φ(x))` for every value, in place, then through the
/// dropout that followed the GELU, if any (`g ⊙= mask`): the gradient arrives in a buffer the
/// caller is done with, so no second one is filled.
pub fn gelu_grad(x: &[f32], g: &mut [f32], mask: Option<Keep>) {
    struct Op<'a>(&'a [f32], &'a mut [f32], Option<Keep<'a>>);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(x, g, mask) = self;
            for (d, &v) in g.iter_mut().zip(x) {
                let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
                *d *= cdf + v * DENSITY * exp(-0.5 * v * v);
            }
            if let Some(m) = mask {
                g.iter_mut().zip(m.bytes).for_each(|(d, &k)| *d *= multiplier(k, m.scale));
            }
        }
    }
    Arch::new().dispatch(Op(x, g, mask));
}

/// Every `width`-long row of `rows` → `softmax(row · scale + bias)` in place, with `bias` added
/// to each row alike. A row whose scores are all lowered by the same large bias attends evenly.
pub fn softmax_rows(rows: &mut [f32], width: usize, bias: &[f32], scale: f32) {
    struct Op<'a>(&'a mut [f32], usize, &'a [f32], f32);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(rows, width, bias, scale) = self;
            for row in rows.chunks_exact_mut(width) {
                for (s, b) in row.iter_mut().zip(bias) {
                    *s = *s * scale + b;
                }
                let max = lanes_fold(row, f32::NEG_INFINITY, f32::max);
                row.iter_mut().for_each(|s| *s = exp(*s - max));
                let inv = 1.0 / lanes_fold(row, 0.0, |a, b| a + b);
                row.iter_mut().for_each(|s| *s *= inv);
            }
        }
    }
    Arch::new().dispatch(Op(rows, width, bias, scale));
}

/// Dropout multipliers read a byte a value: where `bytes[i]` is 1 the value is kept and scaled by
/// `scale` (`1/(1-p)`), where it is 0 the value is dropped. [`super::Dropout`] owns them.
#[derive(Clone, Copy)]
pub struct Keep<'a> {
    pub bytes: &'a [u8],
    pub scale: f32,
}

impl<'a> Keep<'a> {
    /// The multipliers of values `start..start + len`.
    pub fn part(self, start: usize, len: usize) -> Keep<'a> {
        Keep { bytes: &self.bytes[start..start + len], scale: self.scale }
    }
}

/// The multiplier a keep-byte stands for: `scale` or 0, exactly the f32 a mask of multipliers
/// would hold, so a value scaled by it has the same bits either way.
#[inline(always)]
fn multiplier(byte: u8, scale: f32) -> f32 {
    f32::from(byte) * scale
}

/// The softmax's backward pass through dropout, for each `width`-long row of `dp` (the gradient
/// of the dropped-out probabilities) with the softmax output `p` and its dropout multipliers
/// `mask` (empty: no dropout), in place: `g = dp ⊙ mask`, then
/// `dp = p ⊙ (g − Σ g ⊙ p) · scale`; `scale` is the scores' own (`1/√d`), folded in here.
pub fn softmax_grad_rows(dp: &mut [f32], p: &[f32], mask: Option<Keep>, width: usize, scale: f32) {
    struct Op<'a>(&'a mut [f32], &'a [f32], Option<Keep<'a>>, usize, f32);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(dp, p, mask, width, scale) = self;
            for (i, (drow, prow)) in dp.chunks_exact_mut(width).zip(p.chunks_exact(width)).enumerate() {
                if let Some(m) = mask {
                    let bytes = &m.bytes[i * width..(i + 1) * width];
                    drow.iter_mut().zip(bytes).for_each(|(d, &k)| *d *= multiplier(k, m.scale));
                }
                let dot = lanes_sum(drow, prow, |d, p| d * p);
                for (d, p) in drow.iter_mut().zip(prow) {
                    *d = p * (*d - dot) * scale;
                }
            }
        }
    }
    Arch::new().dispatch(Op(dp, p, mask, width, scale));
}

/// `out = a ⊙ mask`: values with dropout applied, written to a second buffer.
pub fn dropped_into(out: &mut [f32], a: &[f32], mask: Keep) {
    struct Op<'a>(&'a mut [f32], &'a [f32], Keep<'a>);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(out, a, m) = self;
            for ((o, a), &k) in out.iter_mut().zip(a).zip(m.bytes) {
                *o = a * multiplier(k, m.scale);
            }
        }
    }
    Arch::new().dispatch(Op(out, a, mask));
}

/// `a = a ⊙ mask`: dropout in place.
pub fn drop_in_place(a: &mut [f32], mask: Keep) {
    struct Op<'a>(&'a mut [f32], Keep<'a>);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(a, m) = self;
            a.iter_mut().zip(m.bytes).for_each(|(v, &k)| *v *= multiplier(k, m.scale));
        }
    }
    Arch::new().dispatch(Op(a, mask));
}

/// `y = residual + mask ⊙ (y + bias)` for rows of `bias.len()` values: a block's output with its
/// bias, dropout and residual, in one pass.
pub fn bias_dropout_residual(y: &mut [f32], bias: &[f32], mask: Option<Keep>, residual: &[f32]) {
    struct Op<'a>(&'a mut [f32], &'a [f32], Option<Keep<'a>>, &'a [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(y, bias, mask, residual) = self;
            let e = bias.len();
            for (i, (row, res)) in y.chunks_exact_mut(e).zip(residual.chunks_exact(e)).enumerate() {
                match mask {
                    None => {
                        for ((v, r), b) in row.iter_mut().zip(res).zip(bias) {
                            *v = r + (*v + b);
                        }
                    }
                    Some(m) => {
                        let bytes = &m.bytes[i * e..(i + 1) * e];
                        for (((v, r), b), &k) in row.iter_mut().zip(res).zip(bias).zip(bytes) {
                            *v = r + (*v + b) * multiplier(k, m.scale);
                        }
                    }
                }
            }
        }
    }
    Arch::new().dispatch(Op(y, bias, mask, residual));
}

/// `y += bias` for rows of `bias.len()` values.
pub fn add_rows(y: &mut [f32], bias: &[f32]) {
    struct Op<'a>(&'a mut [f32], &'a [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            for row in self.0.chunks_exact_mut(self.1.len()) {
                row.iter_mut().zip(self.1).for_each(|(v, b)| *v += b);
            }
        }
    }
    Arch::new().dispatch(Op(y, bias));
}

/// `sums += row` for every `sums.len()`-long row of `values`, in row order (one row: `a += b`).
pub fn add_rows_into(sums: &mut [f32], values: &[f32]) {
    struct Op<'a>(&'a mut [f32], &'a [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(sums, values) = self;
            for row in values.chunks_exact(sums.len().max(1)) {
                sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        }
    }
    Arch::new().dispatch(Op(sums, values));
}

/// Layer norm of each `w.len()`-long row of `y`, in place: `y = x̂ · w + b` with
/// `x̂ = (y − mean) / √(var + eps)`; where `xhat` and `rstd` are not empty, each row's `x̂` and
/// `1/√(var + eps)` are kept there. The row sums are [`lanes_sum`]s. In place, so that a caller
/// done with its input (a post-norm layer's residual sum) allocates and fills no second buffer.
pub fn layer_norm_rows(
    y: &mut [f32],
    (w, b, eps): (&[f32], &[f32], f32),
    xhat: &mut [f32],
    rstd: &mut [f32],
) {
    struct Op<'a>(&'a mut [f32], &'a [f32], &'a [f32], f32, &'a mut [f32], &'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(y, w, b, eps, xhat, rstd) = self;
            let e = w.len();
            let keep = !rstd.is_empty();
            for (i, row) in y.chunks_exact_mut(e).enumerate() {
                let mean = lanes_sum(row, row, |v, _| v) / e as f32;
                let var = lanes_sum(row, row, |v, _| (v - mean) * (v - mean)) / e as f32;
                let inv = 1.0 / (var + eps).sqrt();
                if keep {
                    for (h, v) in xhat[i * e..(i + 1) * e].iter_mut().zip(row.iter()) {
                        *h = (v - mean) * inv;
                    }
                    rstd[i] = inv;
                }
                for ((v, w), b) in row.iter_mut().zip(w).zip(b) {
                    *v = (*v - mean) * inv * w + b;
                }
            }
        }
    }
    Arch::new().dispatch(Op(y, w, b, eps, xhat, rstd));
}

/// Layer norm's input gradient for rows of `w.len()` values:
/// `dx = r · (g ⊙ w − mean(g ⊙ w) − x̂ · mean(g ⊙ w ⊙ x̂))`, `r` each row's `1/√(var + eps)`.
pub fn layer_norm_grad_rows(g: &[f32], xhat: &[f32], rstd: &[f32], w: &[f32], dx: &mut [f32]) {
    struct Op<'a>(&'a [f32], &'a [f32], &'a [f32], &'a [f32], &'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(g, xhat, rstd, w, dx) = self;
            let e = w.len();
            let rows = g.chunks_exact(e).zip(xhat.chunks_exact(e)).zip(dx.chunks_exact_mut(e));
            for (((gr, hr), drow), &r) in rows.zip(rstd) {
                let mg = lanes_sum(gr, w, |g, w| g * w) / e as f32;
                let mut acc = [0.0f32; LANES];
                for ((g, w), h) in
                    gr.chunks_exact(LANES).zip(w.chunks_exact(LANES)).zip(hr.chunks_exact(LANES))
                {
                    for l in 0..LANES {
                        acc[l] += g[l] * w[l] * h[l];
                    }
                }
                let tail = e - e % LANES;
                for j in tail..e {
                    acc[j - tail] += gr[j] * w[j] * hr[j];
                }
                let mgh = acc.into_iter().fold(0.0, |s, v| s + v) / e as f32;
                for (((d, g), w), h) in drow.iter_mut().zip(gr).zip(w).zip(hr) {
                    *d = r * (g * w - mg - h * mgh);
                }
            }
        }
    }
    Arch::new().dispatch(Op(g, xhat, rstd, w, dx));
}

/// Layer norm's parameter gradients, summed over rows of `dw.len()` values in row order:
/// `dw += g ⊙ x̂`, `db += g`.
pub fn layer_norm_param_grads(g: &[f32], xhat: &[f32], dw: &mut [f32], db: &mut [f32]) {
    struct Op<'a>(&'a [f32], &'a [f32], &'a mut [f32], &'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(g, xhat, dw, db) = self;
            let e = dw.len().max(1);
            for (gr, hr) in g.chunks_exact(e).zip(xhat.chunks_exact(e)) {
                for (((w, b), g), h) in dw.iter_mut().zip(db.iter_mut()).zip(gr).zip(hr) {
                    *w += g * h;
                    *b += g;
                }
            }
        }
    }
    Arch::new().dispatch(Op(g, xhat, dw, db));
}

/// Keep-bytes for dropout, one 32-bit word a value: 1 where the word's top 24 bits are at least
/// `threshold`, 0 where they are under it (dropped).
pub fn keep_bytes(words: &[u32], threshold: u32, out: &mut [u8]) {
    struct Op<'a>(&'a [u32], u32, &'a mut [u8]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            let Op(words, threshold, out) = self;
            for (k, &w) in out.iter_mut().zip(words) {
                *k = u8::from((w >> 8) >= threshold);
            }
        }
    }
    Arch::new().dispatch(Op(words, threshold, out));
}

/// `Σ f(a_i, b_i)` in 16 interleaved partial sums, then those in order: a vectorisable sum whose
/// result does not depend on the instruction set.
#[inline(always)]
fn lanes_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    for (l, (&x, &y)) in ta.iter().zip(tb).enumerate() {
        acc[l] += f(x, y);
    }
    acc.into_iter().fold(0.0, |s, v| s + v)
}

/// Values one fold keeps apart (a 512-bit register of f32).
const LANES: usize = 16;

/// `f` folded over `values` in a fixed order of 16 interleaved partial results, then those in
/// order: a vectorisable reduction whose result does not depend on the instruction set.
#[inline(always)]
fn lanes_fold(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = f(*a, v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a = f(*a, v);
    }
    acc.into_iter().fold(init, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm_everywhere_in_float_range() {
        let mut worst = 0.0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 / 10_000.0;
            worst = worst.max((erf(x) - candle_core::cpu::erf::erf_f32(x)).abs());
        }
        assert!(worst < 6e-7, "largest error {worst}");
        // ±1 to within the float spacing below 1 (the approximation at the clamp is 1 − 2⁻²⁴).
        assert!((erf(10.0) - 1.0).abs() <= f32::EPSILON);
        assert!((erf(-10.0) + 1.0).abs() <= f32::EPSILON);
        assert_eq!(erf(0.0), 0.0);
    }

    /// Against the tanh form in f64, over the range where the feed-forward gate's values lie
    /// and far past it (where the result is `x · up` or 0), and NaN through.
    #[test]
    fn gated_gelu_tanh_matches_the_tanh_form() {
        let gate: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 / 1000.0 + 0.000_3).collect();
        let up: Vec<f32> = gate.iter().map(|g| 1.5 - g * 0.01).collect();
        let mut y = vec![0.0; gate.len()];
        gelu_tanh_gated(&gate, &up, &mut y);
        for ((&x, &u), &got) in gate.iter().zip(&up).zip(&y) {
            let x64 = x as f64;
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let want = 0.5 * x64 * (1.0 + inner.tanh()) * u as f64;
            assert!((got as f64 - want).abs() <= 4e-7 * (1.0 + want.abs()), "{x}: {got} vs {want}");
        }
        let mut y = [0.0; 2];
        gelu_tanh_gated(&[f32::NAN, -200.0], &[1.0, 1.0], &mut y);
        assert!(y[0].is_nan());
        assert_eq!(y[1], 0.0);
    }

    #[test]
    fn exp_is_within_two_ulp_and_handles_the_edges() {
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0 + 0.000_37;
            let (got, want) = (exp(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, libm {want} ({ulp} ulp)");
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(1e9), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_and_its_gradient_match_the_scalar_formula() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 77.0).collect();
        let g: Vec<f32> = (0..1000).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let (mut y, mut dx) = (vec![0.0; 1000], g.clone());
        gelu(&x, &mut y);
        gelu_grad(&x, &mut dx, None);
        for i in 0..1000 {
            let v = x[i] as f64;
            let cdf = 0.5 * (1.0 + libm::erf(v / 2f64.sqrt()));
            assert!((y[i] as f64 - v * cdf).abs() < 1e-6, "gelu({v})");
            let want = g[i] as f64 * (cdf + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt());
            assert!((dx[i] as f64 - want).abs() < 1e-5, "gelu'({v})");
        }
        let mut nan = [0.0];
        gelu(&[f32::NAN], &mut nan);
        assert!(nan[0].is_nan(), "a NaN activation stays NaN");
    }

    #[test]
    fn softmax_rows_sum_to_one_and_follow_the_bias() {
        let width = 37;
        let mut rows: Vec<f32> = (0..3 * width).map(|i| ((i * 13) % 17) as f32 - 8.0).collect();
        let mut bias = vec![0.0; width];
        bias[5] = -1e9;
        let copy = rows.clone();
        softmax_rows(&mut rows, width, &bias, 0.5);
        for (row, orig) in rows.chunks(width).zip(copy.chunks(width)) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5);
            assert_eq!(row[5], 0.0, "a padded key gets no weight");
            let max = orig
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != 5)
                .map(|(_, v)| v * 0.5)
                .fold(f32::MIN, f32::max);
            let total: f64 = orig
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != 5)
                .map(|(_, v)| ((v * 0.5 - max) as f64).exp())
                .sum();
            for (j, (&p, &v)) in row.iter().zip(orig).enumerate().filter(|(j, _)| *j != 5) {
                let want = ((v * 0.5 - max) as f64).exp() / total;
                assert!((p as f64 - want).abs() < 1e-6, "row value {j}");
            }
        }
    }
}
