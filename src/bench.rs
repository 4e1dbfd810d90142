//! Training-throughput benchmarks on synthetic data: an MLP 784-256-128-10 at batch 128 and a
//! small CNN on 28x28 inputs at batch 64, trained with the same layers, loss and optimiser as
//! every spec. `bench/torch_reference.py` runs the same two models in PyTorch for comparison.
//! Each model's matrix-product rate is set against the machine's peak, measured with the same
//! `gemm` crate (through candle) on a large square product.

use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::error::Result;
use crate::ml::data::InputShape;
use crate::ml::model::Network;
use crate::ml::optim::Optimizer;
use crate::ml::spec::{Activation, Init, ModelSpec, Optimizer as OptimizerSpec};

/// One benchmark's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub name: String,
    pub batch: usize,
    pub threads: usize,
    /// Median over repeats, and the spread.
    pub samples_per_sec_median: f64,
    pub samples_per_sec_min: f64,
    pub samples_per_sec_max: f64,
    pub ms_per_step_median: f64,
    pub repeats: usize,
    pub steps_per_repeat: usize,
    /// Matrix-product work of one step (see [`step_flops`]), and the rate it ran at.
    pub flops_per_step: Option<f64>,
    pub gflops: Option<f64>,
    /// The machine's matrix-product peak, when measured (`vigil bench --peak`).
    pub matmul_peak_gflops: Option<f64>,
}

/// The machine's matrix-product rate on a large square f32 product.
#[derive(Debug, Clone, Serialize)]
pub struct PeakResult {
    pub size: usize,
    pub threads: usize,
    pub gflops_median: f64,
    pub gflops_max: f64,
    pub repeats: usize,
}

/// Times `size x size` products through candle's matmul, which is the `gemm` crate the fused
/// kernels also call, with the same threads.
pub fn matmul_peak(size: usize, repeats: usize) -> Result<PeakResult> {
    let device = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (size, size), &device)?;
    let b = Tensor::randn(0f32, 1.0, (size, size), &device)?;
    a.matmul(&b)?;
    let flops = 2.0 * (size as f64).powi(3);
    let mut rates: Vec<f64> = (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            a.matmul(&b)?;
            Ok(flops / t0.elapsed().as_secs_f64() / 1e9)
        })
        .collect::<Result<_>>()?;
    rates.sort_by(|a, b| a.total_cmp(b));
    Ok(PeakResult {
        size,
        threads: candle_core::utils::get_num_threads(),
        gflops_median: rates[rates.len() / 2],
        gflops_max: rates[rates.len() - 1],
        repeats,
    })
}

/// Floating-point operations of the matrix products (and convolutions) in one training step of
/// a model made of dense and convolution layers: the forward pass, the weight gradients, and
/// the gradients of every layer's input but the network's. Element-wise work is not counted.
/// `None` for recurrent and text models.
pub fn step_flops(spec: &ModelSpec, input: &InputShape, classes: usize, batch: usize) -> Option<f64> {
    let b = batch as f64;
    // One product of `inner x outer` multiply-adds per example: forward, weight gradient, and
    // input gradient where the input needs one.
    let product = |inner: usize, outer: usize, first: bool| -> f64 {
        let once = 2.0 * b * inner as f64 * outer as f64;
        if first { 2.0 * once } else { 3.0 * once }
    };
    let dense = |widths: &[usize], first: bool| -> f64 {
        widths.windows(2).enumerate().map(|(i, w)| product(w[0], w[1], first && i == 0)).sum()
    };
    match spec {
        ModelSpec::LogReg => Some(dense(&[input.numel(), classes], true)),
        ModelSpec::Mlp { hidden, .. } => {
            let mut widths = vec![input.numel()];
            widths.extend(hidden);
            widths.push(classes);
            Some(dense(&widths, true))
        }
        ModelSpec::Cnn { channels, kernel, dense: hidden, .. } => {
            let InputShape::Image { channels: c0, height, width } = *input else { return None };
            let (mut c, mut h, mut w, mut total) = (c0, height, width, 0.0);
            let pad = kernel / 2;
            for (i, &out) in channels.iter().enumerate() {
                let (ho, wo) = (h + 2 * pad + 1 - kernel, w + 2 * pad + 1 - kernel);
                total += product(c * kernel * kernel, out * ho * wo, i == 0);
                (c, h, w) = (out, ho / 2, wo / 2);
            }
            let mut widths = vec![c * h * w];
            widths.extend(hidden);
            widths.push(classes);
            Some(total + dense(&widths, false))
        }
        ModelSpec::Rnn { .. }
        | ModelSpec::Text { .. }
        | ModelSpec::TextCnn { .. }
        | ModelSpec::Transformer { .. }
        | ModelSpec::Pretrained { .. } => None,
    }
}

/// The two reference models of the benchmark.
pub fn reference_models() -> Vec<(&'static str, ModelSpec, InputShape, usize)> {
    vec![
        (
            "mlp 784-256-128-10",
            ModelSpec::Mlp { hidden: vec![256, 128], activation: Activation::Relu, dropout: 0.0 },
            InputShape::Tabular { features: 784 },
            128,
        ),
        (
            "cnn conv16-pool-conv32-pool-linear10 (28x28)",
            ModelSpec::Cnn {
                channels: vec![16, 32],
                kernel: 3,
                dense: vec![],
                activation: Activation::Relu,
                dropout: 0.0,
            },
            InputShape::Image { channels: 1, height: 28, width: 28 },
            64,
        ),
    ]
}

/// Trains `spec` on random inputs and labels: `warmup` untimed steps, then `repeats` timed runs
/// of `steps` steps each.
pub fn train_throughput(
    name: &str,
    spec: &ModelSpec,
    input: &InputShape,
    batch: usize,
    warmup: usize,
    repeats: usize,
    steps: usize,
) -> Result<BenchResult> {
    let device = Device::Cpu;
    let net = Network::build(spec, input, 10, None, Init::KaimingUniform, 7, &device)?;
    let mut opt = Optimizer::new(
        &OptimizerSpec::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        net.vars(),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let normal = Normal::new(0.0f32, 1.0).expect("valid");
    let n = batch * input.numel();
    let mut shape = vec![batch];
    shape.extend(input.dims());
    // A few distinct batches so that caches do not flatter the figures.
    let batches: Vec<(Tensor, Tensor)> = (0..4)
        .map(|b| {
            let x: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng)).collect();
            let y: Vec<u32> = (0..batch).map(|i| ((i * 7 + b) % 10) as u32).collect();
            Ok((Tensor::from_vec(x, shape.clone(), &device)?, Tensor::from_vec(y, batch, &device)?))
        })
        .collect::<Result<_>>()?;
    let mut step = |k: usize| -> Result<()> {
        let (x, y) = &batches[k % batches.len()];
        let logits = net.forward(x, None)?;
        let loss = crate::ml::kernels::cross_entropy(&logits, y)?;
        opt.step(&crate::ml::kernels::backward(&loss)?)?;
        Ok(())
    };
    for k in 0..warmup {
        step(k)?;
    }
    let mut rates = Vec::with_capacity(repeats);
    for r in 0..repeats {
        let t0 = Instant::now();
        for k in 0..steps {
            step(r * steps + k)?;
        }
        rates.push((steps * batch) as f64 / t0.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    let median = rates[rates.len() / 2];
    let flops_per_step = step_flops(spec, input, 10, batch);
    Ok(BenchResult {
        name: name.to_string(),
        batch,
        threads: candle_core::utils::get_num_threads(),
        samples_per_sec_median: median,
        samples_per_sec_min: rates[0],
        samples_per_sec_max: rates[rates.len() - 1],
        ms_per_step_median: 1000.0 * batch as f64 / median,
        repeats,
        steps_per_repeat: steps,
        flops_per_step,
        gflops: flops_per_step.map(|f| f * median / batch as f64 / 1e9),
        matmul_peak_gflops: None,
    })
}

/// Frame-render figures of the console.
#[derive(Debug, Clone, Serialize)]
pub struct RenderResult {
    pub view: String,
    pub width: u16,
    pub height: u16,
    pub runs: usize,
    pub points_per_run: usize,
    pub frames: usize,
    pub ms_per_frame_median: f64,
    pub ms_per_frame_max: f64,
}

/// Renders the compare, detail and overview views at `width`x`height` with `runs` runs of
/// `points` steps each into an off-screen buffer, and times each frame.
pub fn render_frames(
    width: u16,
    height: u16,
    runs: usize,
    points: usize,
    frames: usize,
) -> Vec<RenderResult> {
    use crate::engine::follow::{RunFeed, StepPoint, StoreUpdate};
    use crate::store::{RunInfo, RunStatus};
    use crate::tui::app::{App, Msg, View};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    let theme = crate::tui::theme::Theme::builtin("dark", crate::tui::theme::ColorDepth::TrueColor)
        .expect("the dark theme is built in");
    let mut app = App::new(theme, crate::tui::keymap::Keymap::defaults(), vec![]);
    for r in 0..runs {
        let id = format!("bench-run-{r:02}");
        let steps: Vec<StepPoint> = (1..=points as u64)
            .map(|s| {
                let x = s as f64;
                let loss = 2.0 * (-x / 2000.0).exp() + 0.1 * ((x * 0.37 + r as f64).sin()).abs();
                StepPoint {
                    step: s,
                    epoch: (s / 100) as usize + 1,
                    loss,
                    lr: 1e-3,
                    samples_per_sec: 1e4,
                    time: x * 0.01,
                }
            })
            .collect();
        let info = RunInfo {
            id: id.into(),
            spec: "bench".into(),
            model: "mlp".into(),
            status: RunStatus::Completed,
            created: format!("2026-01-01T00:00:{r:02}Z"),
            started: None,
            finished: None,
            updated: String::new(),
            epoch: points / 100,
            epochs: points / 100,
            step: points as u64,
            steps_per_epoch: 100,
            train_loss: None,
            val_loss: None,
            val_accuracy: None,
            best_val_accuracy: Some(0.9),
            best_epoch: None,
            test_accuracy: None,
            test_macro_f1: None,
            membership_advantage: None,
            dp: None,
            duration_s: 1.0,
            samples_per_sec: None,
            failure: None,
            pid: None,
            seed: 0,
        };
        app.update(Msg::Store(StoreUpdate::Run(Box::new(RunFeed { steps, ..RunFeed::new(info) }))));
    }
    app.update(Msg::Resize(width, height));
    let mut out = Vec::new();
    // Every view of the console, as the README promises (those without data of their own draw
    // their empty states, which is what a user on a fresh store sees).
    for view in View::ALL {
        app.view = view;
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("an in-memory terminal");
        let mut times = Vec::with_capacity(frames);
        for _ in 0..frames {
            let t0 = Instant::now();
            terminal.draw(|f| crate::tui::views::draw(f, &app)).expect("drawing to memory cannot fail");
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        out.push(RenderResult {
            view: view.title().to_string(),
            width,
            height,
            runs,
            points_per_run: points,
            frames,
            ms_per_frame_median: times[times.len() / 2],
            ms_per_frame_max: times[times.len() - 1],
        });
    }
    out
}

/// PRADA's cost on one long-lived key: after each number of distinct queries, the time per
/// query (the mean over the queries since the previous mark) and the heap its state holds.
#[derive(Debug, Clone, Serialize)]
pub struct PradaPoint {
    /// `bounded` (the service's reservoirs) or `unbounded` (every query kept, as in the paper).
    pub state: String,
    pub queries: u64,
    pub us_per_query: f64,
    pub heap_bytes: usize,
    pub kept_queries: usize,
    pub w: Option<f64>,
    pub alarm: bool,
}

/// Feeds one [`crate::ml::attack::prada::Prada`] distinct benign-like queries (10 classes, each
/// a Gaussian blob in `width` dimensions, every query drawn afresh) and reports
/// [`PradaPoint`]s at `marks`. The unbounded state (every query kept) is measured up to
/// `unbounded_up_to` queries only: its work per query grows with the queries kept.
pub fn prada_scaling(width: usize, marks: &[u64], unbounded_up_to: u64) -> Vec<PradaPoint> {
    use crate::ml::attack::prada::{Prada, PradaConfig};
    let mut out = Vec::new();
    let unbounded =
        PradaConfig { max_per_class: usize::MAX, max_pooled: usize::MAX, ..PradaConfig::default() };
    for (state, config) in [("bounded", PradaConfig::default()), ("unbounded", unbounded)] {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let normal = Normal::new(0.0f32, 1.0).expect("valid");
        let mut prada = Prada::new(config);
        let mut q = vec![0f32; width];
        let mut done = 0u64;
        for &mark in marks {
            if state == "unbounded" && mark > unbounded_up_to {
                break;
            }
            let t0 = Instant::now();
            let n = mark - done;
            for i in done..mark {
                let class = (i % 10) as usize;
                for (j, v) in q.iter_mut().enumerate() {
                    *v = class as f32 * (j % 3) as f32 + normal.sample(&mut rng);
                }
                prada.observe(&q, class);
            }
            let elapsed = t0.elapsed().as_secs_f64();
            done = mark;
            out.push(PradaPoint {
                state: state.into(),
                queries: mark,
                us_per_query: 1e6 * elapsed / n.max(1) as f64,
                heap_bytes: prada.heap_bytes(),
                kept_queries: prada.kept_queries(),
                w: prada.w(),
                alarm: prada.alarm(),
            });
        }
    }
    out
}

/// Seconds per training step of a token model: `batch` rows of `seq` ids drawn by `id(rng,
/// position)`, dropout on (a training step's forward pass), cross-entropy over `classes`, the
/// fused backward pass and `optimizer`'s update; `warmup` untimed steps, then the median of
/// `repeats` timed steps.
#[allow(clippy::too_many_arguments)]
pub fn token_train_step(
    spec: &ModelSpec,
    seq: usize,
    vocab: Option<usize>,
    classes: usize,
    batch: usize,
    optimizer: &OptimizerSpec,
    id: impl Fn(&mut ChaCha8Rng, usize) -> u32,
    warmup: usize,
    repeats: usize,
) -> Result<f64> {
    let device = Device::Cpu;
    let input = InputShape::Text { max_len: seq };
    let net = Network::build(spec, &input, classes, vocab, Init::default(), 7, &device)?;
    let mut opt = Optimizer::new(optimizer, net.vars());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // A few distinct batches so that caches do not flatter the figures.
    let batches: Vec<(Tensor, Tensor)> = (0..4)
        .map(|b| {
            let x: Vec<u32> = (0..batch * seq).map(|i| id(&mut rng, i % seq)).collect();
            let y: Vec<u32> = (0..batch).map(|i| ((i * 7 + b) % classes) as u32).collect();
            Ok((Tensor::from_vec(x, (batch, seq), &device)?, Tensor::from_vec(y, batch, &device)?))
        })
        .collect::<Result<_>>()?;
    let mut times = Vec::with_capacity(repeats);
    for k in 0..warmup + repeats {
        let (x, y) = &batches[k % batches.len()];
        let t0 = Instant::now();
        let logits = net.forward(x, Some(&mut rng))?;
        let loss = crate::ml::kernels::cross_entropy(&logits, y)?;
        opt.step(&crate::ml::kernels::backward(&loss)?)?;
        if k >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
