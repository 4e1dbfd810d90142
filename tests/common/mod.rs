//! Fixture state for the console's tests: runs in every state, with curves, events, checkpoints
//! and an evaluation, built in memory (no files, no threads, no clock).

#![allow(dead_code)]

pub mod cli;
pub mod http;
pub mod reference;
pub mod sweep;

use std::collections::BTreeMap;

use vigil::engine::follow::{EpochPoint, RunFeed, StepPoint, StoreUpdate};
use vigil::engine::service::ServiceFeed;
use vigil::engine::system::SystemSample;
use vigil::ml::metrics::Evaluation;
use vigil::serve::access_log::AccessRecord;
use vigil::serve::monitor::ServiceStats;
use vigil::store::{CheckpointEntry, CheckpointKind, EventKind, EventLine, RunInfo, RunStatus};
use vigil::tui::app::{App, Msg};
use vigil::tui::keymap::Keymap;
use vigil::tui::theme::{ColorDepth, Theme};

pub fn info(id: &str, status: RunStatus, epoch: usize, epochs: usize, step: u64) -> RunInfo {
    RunInfo {
        id: id.into(),
        spec: id.rsplit_once('-').map_or(id, |(s, _)| s).to_string(),
        model: "mlp".into(),
        status,
        created: format!("2026-11-28T10:{:02}:00Z", id.len() % 60),
        started: Some("2026-11-28T10:00:01Z".into()),
        finished: None,
        updated: "2026-11-28T10:05:00Z".into(),
        epoch,
        epochs,
        step,
        steps_per_epoch: 37,
        train_loss: Some(0.2),
        val_loss: Some(0.1),
        val_accuracy: Some(0.97),
        best_val_accuracy: Some(0.9814),
        best_epoch: Some(epoch.max(1)),
        test_accuracy: None,
        test_macro_f1: None,
        membership_advantage: None,
        dp: None,
        duration_s: 75.0,
        samples_per_sec: Some(21000.0),
        failure: None,
        // Our own pid: alive, so active fixtures are not shown as interrupted.
        pid: Some(std::process::id()),
        seed: 42,
    }
}

/// A loss curve that falls like a real one, with deterministic wiggle.
pub fn steps(n: u64) -> Vec<StepPoint> {
    (1..=n)
        .map(|s| {
            let x = s as f64;
            let loss =
                2.3 * (-x / (n as f64 / 6.0)).exp() + 0.05 + 0.05 * ((x * 0.7).sin() + (x * 1.3).cos()).abs();
            StepPoint {
                step: s,
                epoch: (s / 37 + 1) as usize,
                loss,
                lr: 0.002 * (1.0 - x / n as f64 / 2.0),
                samples_per_sec: 21000.0,
                time: x * 0.004,
            }
        })
        .collect()
}

pub fn epochs(n: usize) -> Vec<EpochPoint> {
    (1..=n)
        .map(|e| {
            let x = e as f64;
            EpochPoint {
                epoch: e,
                step: e as u64 * 37,
                train_loss: 1.5 / x + 0.1,
                train_accuracy: 1.0 - 0.4 / x,
                val_loss: 1.2 / x + 0.08,
                val_accuracy: 1.0 - 0.3 / x - 0.01,
                val_macro_f1: 1.0 - 0.32 / x - 0.01,
                lr: 0.002,
                time: x * 0.15,
            }
        })
        .collect()
}

pub fn evaluation() -> Evaluation {
    let classes: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let mut labels = Vec::new();
    let mut preds = Vec::new();
    for c in 0..10u32 {
        for i in 0..36u32 {
            labels.push(c);
            // A few confusions: 8 is read as 1 or 3, 9 as 5.
            preds.push(match (c, i) {
                (8, 0) => 1,
                (8, 1) => 3,
                (9, 0) | (9, 1) => 5,
                (3, 0) => 8,
                _ => c,
            });
        }
    }
    Evaluation::compute("test", &labels, &preds, &classes, 0.0891)
}

fn events(id: &str, failed: bool) -> Vec<EventLine> {
    let mut v = vec![
        EventLine {
            time: "2026-11-28T10:00:01Z".into(),
            kind: EventKind::Started,
            message: format!("training {id} (mlp, 50186 parameters) for 40 epochs, 37 steps per epoch"),
        },
        EventLine {
            time: "2026-11-28T10:00:01Z".into(),
            kind: EventKind::Data,
            message: "built-in UCI digits: 1797 examples, 1169 train / 269 validation / 359 test".into(),
        },
        EventLine {
            time: "2026-11-28T10:00:02Z".into(),
            kind: EventKind::Checkpoint,
            message: "saved best checkpoint at epoch 1 (val loss 0.4012, val accuracy 88.10%)".into(),
        },
        EventLine {
            time: "2026-11-28T10:00:03Z".into(),
            kind: EventKind::Paused,
            message: "paused at epoch 3 step 90".into(),
        },
        EventLine {
            time: "2026-11-28T10:00:09Z".into(),
            kind: EventKind::Resumed,
            message: "resumed at epoch 3 step 90".into(),
        },
    ];
    if failed {
        v.push(EventLine {
            time: "2026-11-28T10:00:12Z".into(),
            kind: EventKind::Failed,
            message: "the training loss became NaN at epoch 5 step 160 (learning rate 5.000e1); the last good checkpoint is kept".into(),
        });
    }
    v
}

fn params(lr: &str, hidden: &str) -> BTreeMap<String, String> {
    [
        ("batch", "Mini(32)"),
        ("data.source", "Digits"),
        ("epochs", "40"),
        ("init", "KaimingUniform"),
        ("model", "Mlp"),
        ("model.activation", "Relu"),
        ("model.dropout", "0.2"),
        ("model.hidden", hidden),
        ("optimizer", "Adam"),
        ("optimizer.lr", lr),
        ("seed", "42"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn checkpoints() -> Vec<CheckpointEntry> {
    vec![
        CheckpointEntry {
            kind: CheckpointKind::Best,
            file: "checkpoints/best.safetensors".into(),
            epoch: 14,
            step: 518,
            val_loss: 0.0682,
            val_accuracy: 0.9926,
            val_macro_f1: 0.9925,
            sha256: "f6937e374aec11".into(),
            time: "2026-11-28T10:00:04Z".into(),
        },
        CheckpointEntry {
            kind: CheckpointKind::Last,
            file: "checkpoints/last.safetensors".into(),
            epoch: 40,
            step: 1480,
            val_loss: 0.049,
            val_accuracy: 0.9926,
            val_macro_f1: 0.9925,
            sha256: "158d58459a2a22".into(),
            time: "2026-11-28T10:00:06Z".into(),
        },
    ]
}

fn feed(
    info: RunInfo,
    steps: Vec<StepPoint>,
    epochs: Vec<EpochPoint>,
    events: Vec<EventLine>,
    params: BTreeMap<String, String>,
    eval: Option<Evaluation>,
) -> Msg {
    let _ = params;
    Msg::Store(StoreUpdate::Run(Box::new(RunFeed {
        steps,
        epochs,
        events,
        checkpoints: Some(checkpoints()),
        evaluation: eval,
        ..RunFeed::new(info)
    })))
}

pub fn theme(depth: ColorDepth) -> Theme {
    Theme::builtin("dark", depth).unwrap()
}

/// The console with three runs (training, completed, failed) and a system sample.
pub fn app_with(depth: ColorDepth) -> App {
    let specs = vigil::ml::spec::list(std::path::Path::new("models"))
        .into_iter()
        .filter_map(|e| e.spec.ok())
        .collect();
    let mut app = App::new(theme(depth), Keymap::defaults(), specs);
    let mut running = info("digits-cnn-a1b2c3", RunStatus::Running, 12, 40, 460);
    running.model = "cnn".into();
    app.update(feed(
        running,
        steps(460),
        epochs(12),
        events("digits-cnn-a1b2c3", false),
        params("0.003", "[]"),
        None,
    ));
    let mut done = info("digits-mlp-d4e5f6", RunStatus::Completed, 40, 40, 1480);
    done.test_accuracy = Some(0.9805);
    app.update(feed(
        done,
        steps(1480),
        epochs(40),
        events("digits-mlp-d4e5f6", false),
        params("0.002", "[256, 128]"),
        Some(evaluation()),
    ));
    let mut failed = info("digits-mlp-0f0f0f", RunStatus::Failed, 4, 40, 160);
    failed.failure = Some("the training loss became NaN at epoch 5 step 160 (learning rate 5.000e1)".into());
    app.update(feed(
        failed,
        steps(160),
        epochs(4),
        events("digits-mlp-0f0f0f", true),
        params("50", "[256, 128]"),
        None,
    ));
    // Parameters come with the spec on the real path; set them directly here.
    for (id, lr, hidden) in [
        ("digits-cnn-a1b2c3", "0.003", "[]"),
        ("digits-mlp-d4e5f6", "0.002", "[256, 128]"),
        ("digits-mlp-0f0f0f", "50", "[256, 128]"),
    ] {
        app.runs.get_mut(id).unwrap().params = params(lr, hidden);
    }
    app.update(Msg::System(SystemSample {
        cpus: vec![97.0, 41.5],
        cpu_total: 69.2,
        load: [1.52, 1.1, 0.8],
        memory_used: 3 << 30,
        memory_total: 24 << 30,
        swap_used: 0,
        swap_total: 0,
        gpu_note: Some("no GPU found (NVML: libnvidia-ml.so.1: cannot open shared object file)".into()),
        ..Default::default()
    }));
    app.dirty = false;
    app
}

pub fn app() -> App {
    app_with(ColorDepth::TrueColor)
}

/// A fake NVML: two GPUs, several processes (one of them trains a fixture run).
pub struct FakeGpus;

impl vigil::engine::system::GpuSource for FakeGpus {
    fn sample(&mut self) -> Result<Vec<vigil::engine::system::GpuSample>, String> {
        use vigil::engine::system::{GpuProcess, GpuSample};
        Ok(vec![
            GpuSample {
                index: 0,
                name: "NVIDIA H200".into(),
                utilization: 87,
                memory_used: 40 << 30,
                memory_total: 141 << 30,
                temperature: Some(64),
                power_watts: Some(512.4),
                power_limit_watts: Some(700.0),
                sm_clock_mhz: Some(1980),
                memory_clock_mhz: Some(2619),
                processes: vec![
                    GpuProcess { pid: 4242, memory: 30 << 30 },
                    GpuProcess { pid: 5151, memory: 10 << 30 },
                ],
            },
            GpuSample {
                index: 1,
                name: "NVIDIA H200".into(),
                utilization: 3,
                memory_used: 2 << 30,
                memory_total: 141 << 30,
                temperature: Some(38),
                power_watts: Some(88.0),
                power_limit_watts: Some(700.0),
                sm_clock_mhz: Some(345),
                memory_clock_mhz: Some(2619),
                processes: vec![GpuProcess { pid: 4242, memory: 2 << 30 }],
            },
        ])
    }
}

/// A system sample with the fake GPUs and run processes, as the sampler makes them.
pub fn gpu_sample() -> SystemSample {
    use vigil::engine::system::{GpuSource, ProcessSample};
    let gpus = FakeGpus.sample().unwrap();
    SystemSample {
        time: 0.0,
        cpus: vec![97.0, 41.5, 12.0, 66.0],
        cpu_total: 54.1,
        load: [2.5, 2.1, 1.9],
        memory_used: 9 << 30,
        memory_total: 64 << 30,
        swap_used: 0,
        swap_total: 4 << 30,
        disk_read_bps: 12.5 * 1048576.0,
        disk_write_bps: 3.0 * 1048576.0,
        net_rx_bps: 2048.0,
        net_tx_bps: 1024.0,
        gpus,
        gpu_note: None,
        processes: vec![
            ProcessSample {
                pid: 4242,
                runs: vec!["digits-cnn-a1b2c3".into()],
                cpu: 99.0,
                rss: 900 << 20,
                gpu_memory: 32 << 30,
            },
            ProcessSample {
                pid: 5151,
                runs: vec!["digits-mlp-0f0f0f".into(), "waves-gru-777777".into()],
                cpu: 45.0,
                rss: 300 << 20,
                gpu_memory: 10 << 30,
            },
        ],
    }
}

/// The Explain view's engine answers for a digits run: two examples (the second misclassified)
/// and an integrated-gradients result on an 8x8 image.
pub fn explain_events() -> Vec<Msg> {
    use vigil::engine::explain::{Example, ExplainEvent, ExplainResult, ExplainSet};
    use vigil::ml::data::InputShape;
    use vigil::ml::explain::{Baseline, Completeness, ExplainedInput, Explanation, Method, Output, Rule};
    let layout = InputShape::Image { channels: 1, height: 8, width: 8 };
    let set = ExplainSet {
        run: "digits-mlp-d4e5f6".into(),
        classes: (0..10).map(|d| d.to_string()).collect(),
        layout: layout.clone(),
        examples: vec![
            Example { label: 3, predicted: 3 },
            Example { label: 8, predicted: 1 },
            Example { label: 3, predicted: 3 },
        ],
        attention: false,
    };
    // A "3": bright strokes; attributions positive on the strokes, negative left of them.
    let input: Vec<f32> = (0..64).map(|i| if (i % 8 == 5) || (i / 8) % 3 == 0 { 0.9 } else { 0.0 }).collect();
    let attributions: Vec<f32> = input
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if *v > 0.0 {
                0.3
            } else if i % 8 == 2 {
                -0.2
            } else {
                0.0
            }
        })
        .collect();
    let mut probabilities = vec![0.001f32; 10];
    probabilities[3] = 0.95;
    probabilities[9] = 0.03;
    probabilities[8] = 0.012;
    let explanation = Explanation {
        method: Method::Ig { steps: 50, rule: Rule::GaussLegendre, baseline: Baseline::Zero },
        output: Output::Logit,
        layout,
        input: ExplainedInput::Dense(input),
        target: 3,
        predicted: 3,
        probabilities,
        attributions,
        completeness: Some(Completeness {
            attribution_sum: 7.3,
            output: 9.1,
            baseline_output: 1.81,
            gap: 0.01,
        }),
    };
    vec![
        Msg::Explain(ExplainEvent::Opened(Box::new(set))),
        Msg::Explain(ExplainEvent::Explained(Box::new(ExplainResult {
            run: "digits-mlp-d4e5f6".into(),
            index: 0,
            explanation,
            millis: 4.2,
        }))),
    ]
}

/// One access-log line at `T0 + s` seconds (2026-01-01T00:00:00Z + s).
pub fn access(
    seq: u64,
    s: i64,
    status: u16,
    key: Option<&str>,
    error: Option<&str>,
    flags: &[&str],
) -> AccessRecord {
    let t = time::OffsetDateTime::from_unix_timestamp(SERVICE_T0 + s).unwrap();
    AccessRecord {
        seq,
        time: t.format(&time::format_description::well_known::Rfc3339).unwrap(),
        request_id: format!("r{seq}"),
        key: key.map(String::from),
        client: Some("10.0.0.7:5000".into()),
        method: "POST".into(),
        route: key.map(|_| "/v1/models/{name}/predict".into()),
        path: "/v1/models/digits-mlp/predict".into(),
        model: key.map(|_| "digits-mlp".into()),
        version: Some("42c45ce85347".into()),
        variant: None,
        status,
        bytes_in: 290,
        bytes_out: 270,
        latency_us: 100 + 37 * seq,
        inputs: 1,
        labels: if status == 200 { vec![(seq % 10).to_string()] } else { vec![] },
        input_sha256: vec![],
        raw_inputs: None,
        policy: Some("full".into()),
        budget_left: key.filter(|k| *k == "alice").map(|_| 5000 - seq),
        error: error.map(String::from),
        flags: flags.iter().map(|f| f.parse().expect("a known flag")).collect(),
        extraction_w: None,
        generation: None,
        prev: String::new(),
        hash: String::new(),
    }
}

pub const SERVICE_T0: i64 = 1_767_225_600;

/// A minute of traffic: two keys answered, a wrong key, a bad body, a key over its rate and a
/// flagged input, with the numbers the follower would compute 40 s in.
pub fn service_feed() -> ServiceFeed {
    let mut records = Vec::new();
    for i in 0..40u64 {
        let key = if i % 3 == 0 { "bob" } else { "alice" };
        records.push(access(i, i as i64, 200, Some(key), None, &[]));
    }
    records.push(access(40, 30, 401, None, Some("the key is not valid"), &[]));
    records.push(access(41, 31, 422, Some("alice"), Some("inputs[0]: expected 64 values, got 2"), &[]));
    records.push(access(42, 32, 429, Some("bob"), Some("over the rate limit; retry in 1 s"), &[]));
    records.push(access(43, 33, 200, Some("alice"), None, &["ood"]));
    let mut stats = ServiceStats::new(60);
    stats.extend(records.iter().cloned());
    let snapshot = stats.snapshot(SERVICE_T0 + 40);
    ServiceFeed { records, snapshot }
}

/// One language-model request's line at `T0 + s`: `prompt` and `completion` tokens, its finish
/// reason and time to first token.
pub fn completion(
    seq: u64,
    s: i64,
    key: &str,
    tokens: (u64, u64),
    finish: &str,
    ttft_ms: u64,
) -> AccessRecord {
    let cancelled = finish == "cancelled";
    let error = cancelled.then_some("the client closed the connection mid-stream; generation cancelled");
    let mut r = access(seq, s, if cancelled { 499 } else { 200 }, Some(key), error, &[]);
    r.route = Some("/v1/chat/completions".into());
    r.path = "/v1/chat/completions".into();
    r.model = Some("gemma-3-270m".into());
    r.version = None;
    r.inputs = 0;
    r.labels = vec![];
    r.policy = None;
    r.latency_us = ttft_ms * 1000 + tokens.1 * 20_000;
    r.budget_left = (key == "alice").then(|| 200_000 - 500 * seq);
    r.generation = Some(vigil::serve::access_log::GenerationRecord {
        stream: true,
        prompt_tokens: tokens.0,
        completion_tokens: tokens.1,
        max_tokens: 256,
        ttft_us: Some(ttft_ms * 1000),
        tokens_per_s: Some(50.0),
        finish_reason: Some(finish.into()),
        ..Default::default()
    });
    r
}

/// A minute of chat completions: two keys streaming, one client that left mid-stream, one key
/// over its token budget and one completion the screen flagged, 40 s in.
pub fn generation_feed() -> ServiceFeed {
    let mut records = Vec::new();
    for i in 0..30u64 {
        let key = if i % 3 == 0 { "carol" } else { "alice" };
        let finish = if i % 5 == 4 { "length" } else { "stop" };
        records.push(completion(i, i as i64, key, (20 + i, 40 + 3 * i), finish, 30 + 2 * i));
    }
    records.push(completion(30, 31, "carol", (25, 7), "cancelled", 35));
    let mut over = access(
        31,
        32,
        429,
        Some("carol"),
        Some("token budget spent: this key may use 100000 tokens per day window"),
        &[],
    );
    over.route = Some("/v1/chat/completions".into());
    over.path = "/v1/chat/completions".into();
    over.model = None;
    over.labels = vec![];
    records.push(over);
    let mut flagged = completion(32, 33, "alice", (18, 60), "stop", 41);
    flagged.flags = vec![vigil::serve::access_log::Flag::Sensitive];
    records.push(flagged);
    let mut stats = ServiceStats::new(60);
    stats.extend(records.iter().cloned());
    let snapshot = stats.snapshot(SERVICE_T0 + 40);
    ServiceFeed { records, snapshot }
}

/// One frame of the console drawn into a test terminal of `w` x `h`.
pub fn render(app: &mut App, w: u16, h: u16) -> ratatui::buffer::Buffer {
    app.update(Msg::Resize(w, h));
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h)).unwrap();
    t.draw(|f| vigil::tui::views::draw(f, app)).unwrap();
    t.backend().buffer().clone()
}

/// A frame's text, one line per row, trailing spaces cut.
pub fn text(buf: &ratatui::buffer::Buffer) -> String {
    let w = buf.area.width as usize;
    buf.content()
        .chunks(w)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>().trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A store update for a run with nothing but its info; tests fill in what they need.
pub fn bare_feed(info: RunInfo) -> RunFeed {
    RunFeed::new(info)
}

/// A digits-logreg run trained for `epochs` epochs in `store`, silently: the small real run the
/// engine tests explain.
pub fn trained_logreg(store: &vigil::store::RunStore, epochs: usize) -> vigil::store::RunDir {
    use vigil::ml::train::{Silent, TrainControl, train};
    let mut s = vigil::ml::spec::resolve("digits-logreg", std::path::Path::new("models")).unwrap().0;
    s.epochs = epochs;
    let run = store.create(&s).unwrap();
    train(&run, false, &mut Silent, &TrainControl::default()).unwrap();
    run
}

/// Options for a headless console on `store` with the built-in specs: one run at a time, no
/// default experiment, nothing watched and no language model (the tests set what they need).
pub fn console_options(
    store: vigil::store::RunStore,
    sample_every: std::time::Duration,
) -> vigil::tui::ConsoleOptions {
    vigil::tui::ConsoleOptions {
        store,
        models_dir: "models".into(),
        theme: None,
        keymap: None,
        concurrency: Some(1),
        start_default: false,
        sample_every,
        serve_log_raw_inputs: false,
        watch: vec![],
        llm: None,
        chat_template: None,
    }
}
