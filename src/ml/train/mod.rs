//! The training loop. [`train`] runs one experiment to the end on the calling thread (callers put
//! it on a thread of its own), writing everything to the run's folder and reporting each step and
//! epoch to a [`TrainObserver`]. It can be paused, resumed and cancelled between steps through a
//! shared [`TrainControl`], and a run continues from its last checkpoint with `resume`.
//!
//! Randomness is drawn from one generator per epoch, seeded from the experiment's seed and the
//! epoch number, so the same spec and seed give the same metrics, and a resumed run the same
//! metrics as one that was never interrupted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, Tensor, TensorId};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result, TrainError};
use crate::ml::data::preprocess::{Pipeline, Prepared, PreparedData};
use crate::ml::data::{Features, augment};
use crate::ml::metrics::Evaluation;
use crate::ml::model::{Network, tensors_to_bytes};
use crate::ml::optim::{Optimizer, scheduled_lr};
use crate::ml::privacy::dpsgd::{DpPlan, private_gradients};
use crate::ml::spec::{DeviceSpec, ExperimentSpec, Monitor};
use crate::store::commit::Recovery;
use crate::store::{
    CheckpointEntry, CheckpointKind, EpochMetrics, EventKind, MetricLine, ResumeState, RunDir, RunStatus,
    now, sha256_hex,
};

mod control;
mod events;

use control::ControlFile;
pub use control::TrainControl;
pub use events::{EpochSummary, Outcome, Silent, TrainEvent, TrainObserver};

/// Examples per forward pass when evaluating; large batches amortise per-op overhead.
const EVAL_BATCH: usize = 512;

/// How many times its starting value (or 1, if that was smaller) a finite loss may grow before
/// the run counts as diverged: a cross-entropy starts near ln(classes), and one 10,000 times
/// that means logits that have blown up, which no later step brings back.
const DIVERGENCE_FACTOR: f64 = 1e4;

/// Whether a step's loss means the run has diverged: not finite, or far past `first`, the
/// session's first loss.
fn diverged(loss: f64, first: Option<f64>) -> bool {
    !loss.is_finite() || first.is_some_and(|f| loss > DIVERGENCE_FACTOR * f.max(1.0))
}

/// What to log when the attempt before this resume ended without a final status: its last
/// session event is a start or resume with no end after it (a `kill -9`, an out-of-memory kill,
/// a machine that stopped). `None` when it ended as it should (stopped, failed, paused in
/// another process that still lives) or there is no log.
fn interrupted_attempt(run: &RunDir, previous: Option<&crate::store::RunInfo>) -> Option<String> {
    let events = run.events().ok()?;
    let last = events.iter().rev().find(|e| {
        matches!(
            e.kind,
            EventKind::Started
                | EventKind::Resumed
                | EventKind::Cancelled
                | EventKind::Failed
                | EventKind::Finished
                | EventKind::Interrupted
        )
    })?;
    if !matches!(last.kind, EventKind::Started | EventKind::Resumed) {
        return None;
    }
    let process = previous.and_then(|i| i.pid).map_or(String::new(), |p| format!(" (process {p})"));
    Some(format!(
        "interrupted: the previous attempt{process} ended without a final status (killed, or the \
         machine stopped); last heard from at {}",
        last_heard(&events).unwrap_or("an unknown time")
    ))
}

/// The time of the newest line in a run's log.
fn last_heard(events: &[crate::store::EventLine]) -> Option<&str> {
    events.last().map(|e| e.time.as_str())
}

/// The device for a spec.
pub fn device_for(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        DeviceSpec::Cuda(n) => {
            Device::new_cuda(n).map_err(|e| Error::device(format!("device Cuda({n}) is not available: {e}")))
        }
    }
}

fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (epoch as u64).wrapping_add(0xE90C))
}

/// Builds the network for a spec and its fitted pipeline.
pub fn build_network(spec: &ExperimentSpec, pipeline: &Pipeline, device: &Device) -> Result<Network> {
    Network::build(
        &spec.model,
        &pipeline.input,
        pipeline.classes.len(),
        pipeline.vocabulary(),
        spec.init,
        spec.seed,
        device,
    )
}

/// Mean cross-entropy and predictions of a network over a split.
pub fn predict(net: &Network, data: &Prepared) -> Result<(f64, Vec<u32>, Vec<Vec<f32>>)> {
    predict_by(&data.labels, net.device(), |chunk| net.infer(&data.features.batch(chunk, net.device())?))
}

/// Mean cross-entropy and predictions over examples of `labels`, in batches whose logits
/// `logits(indices)` gives.
fn predict_by(
    labels: &[u32],
    device: &Device,
    logits: impl Fn(&[usize]) -> Result<Tensor>,
) -> Result<(f64, Vec<u32>, Vec<Vec<f32>>)> {
    let n = labels.len();
    let mut loss_sum = 0.0;
    let mut preds = Vec::with_capacity(n);
    let mut probs = Vec::with_capacity(n);
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(EVAL_BATCH) {
        let y = Tensor::from_vec(chunk.iter().map(|&i| labels[i]).collect::<Vec<_>>(), chunk.len(), device)?;
        let logits = logits(chunk)?;
        let loss = crate::ml::kernels::cross_entropy(&logits, &y)?.to_scalar::<f32>()? as f64;
        loss_sum += loss * chunk.len() as f64;
        preds.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        probs.extend(candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?);
    }
    Ok((loss_sum / n.max(1) as f64, preds, probs))
}

/// Evaluates a network on a split.
pub fn evaluate(net: &Network, data: &Prepared, classes: &[String], split: &str) -> Result<Evaluation> {
    let (loss, preds, _) = predict(net, data)?;
    Ok(Evaluation::compute(split, &data.labels, &preds, classes, loss))
}

/// The pooled features of a frozen pretrained encoder for every example of the training and
/// validation splits, computed once for the run ([`Network::frozen_features`]): the encoder is
/// most of the work of a step and its output never changes, so each epoch trains the head on
/// these instead of running the encoder again.
struct FrozenFeatures {
    train: Tensor,
    validation: Tensor,
}

impl FrozenFeatures {
    /// The features of both splits, or `None` when the model has no frozen encoder, or when a
    /// step's input is not the stored example (augmentation, adversarial examples, DP-SGD's
    /// per-example gradients, which go through the whole network).
    fn compute(spec: &ExperimentSpec, net: &Network, data: &PreparedData) -> Result<Option<Self>> {
        if spec.augment.is_some() || spec.adversarial.is_some() || spec.privacy.is_some() {
            return Ok(None);
        }
        let Some(train) = encode_split(net, &data.train)? else { return Ok(None) };
        let Some(validation) = encode_split(net, &data.validation)? else { return Ok(None) };
        Ok(Some(FrozenFeatures { train, validation }))
    }
}

/// A split's frozen-encoder features `(n, E)`, in evaluation-sized batches.
fn encode_split(net: &Network, data: &Prepared) -> Result<Option<Tensor>> {
    let idx: Vec<usize> = (0..data.labels.len()).collect();
    let mut parts = Vec::new();
    for chunk in idx.chunks(EVAL_BATCH) {
        match net.frozen_features(&data.features.batch(chunk, net.device())?)? {
            Some(f) => parts.push(f),
            None => return Ok(None),
        }
    }
    if parts.is_empty() {
        // An empty split: a (0, E) tensor, so that its evaluation reads the same as without
        // the cache.
        let e = net.encoder().map_or(0, |e| e.dim());
        return Ok(Some(Tensor::zeros((0, e), DType::F32, net.device())?));
    }
    Ok(Some(Tensor::cat(&parts, 0)?))
}

/// Rows `chunk` of a feature matrix.
fn rows(features: &Tensor, chunk: &[usize]) -> Result<Tensor> {
    let idx: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
    let idx = Tensor::from_vec(idx, chunk.len(), features.device())?;
    Ok(features.index_select(&idx, 0)?)
}

/// A trained run loaded back: its spec, preprocessing and network with a checkpoint's weights.
pub struct Trained {
    pub spec: ExperimentSpec,
    pub pipeline: Pipeline,
    pub network: Network,
}

/// Loads a run's spec, pipeline and checkpoint (checked against the manifest).
pub fn load_trained(run: &RunDir, which: CheckpointKind) -> Result<Trained> {
    let spec = run.spec()?;
    let pipeline = run.pipeline()?;
    let device = device_for(spec.device)?;
    let network = build_network(&spec, &pipeline, &device)?;
    let bytes = run.checkpoint_bytes(which)?;
    network.load_safetensors(&bytes, &run.file(which.file()).display().to_string())?;
    Ok(Trained { spec, pipeline, network })
}

fn score(monitor: Monitor, s: &EpochSummary) -> f64 {
    match monitor {
        Monitor::ValLoss => s.val_loss,
        Monitor::ValAccuracy => s.val_accuracy,
        Monitor::ValMacroF1 => s.val_macro_f1,
    }
}

fn better(monitor: Monitor, new: f64, old: Option<f64>, min_delta: f64) -> bool {
    match old {
        None => true,
        Some(old) if monitor.maximise() => new > old + min_delta,
        Some(old) => new < old - min_delta,
    }
}

/// Trains the run in `run` (created by [`crate::store::RunStore::create`]) to the end, or
/// continues it from its last checkpoint when `resume` is set.
pub fn train(
    run: &RunDir,
    resume: bool,
    observer: &mut dyn TrainObserver,
    control: &TrainControl,
) -> Result<Outcome> {
    let spec = run.spec()?;
    if resume && let Some(msg) = interrupted_attempt(run, run.info().ok().as_ref()) {
        // Logged before anything else can fail, so that the log tells the story in order.
        run.log(EventKind::Interrupted, msg)?;
    }
    let result = Trainer::new(&spec, run, resume).and_then(|mut t| t.run(observer, control));
    if let Err(e) = &result {
        // Whatever stopped the run, its folder says so; the checkpoints already written stay.
        let reason = e.to_string();
        let _ = run.update_info(|i| {
            i.status = RunStatus::Failed;
            i.failure = Some(reason.clone());
            i.finished = Some(now());
            i.pid = None;
        });
        let _ = run.log(EventKind::Failed, &reason);
        observer.on_event(&TrainEvent::Failed { reason });
    }
    result
}

struct Trainer<'a> {
    spec: ExperimentSpec,
    run: &'a RunDir,
    data: PreparedData,
    net: Network,
    opt: Optimizer,
    state: ResumeState,
    steps_per_epoch: u64,
    batch: usize,
    resumed: bool,
    /// DP-SGD's settings, when the spec asks for private training.
    dp: Option<DpPlan>,
}

impl<'a> Trainer<'a> {
    fn new(spec: &ExperimentSpec, run: &'a RunDir, resume: bool) -> Result<Self> {
        let device = device_for(spec.device)?;
        let (data, state) = if resume {
            // A save cut off by the interruption is finished or thrown away first, so that the
            // index, the weights and the manifest read below are one checkpoint's.
            match run.recover_checkpoint()? {
                Recovery::Clean => {}
                Recovery::Completed(files) => run.log(
                    EventKind::Checkpoint,
                    format!("finished the checkpoint save the interruption cut off ({})", files.join(", ")),
                )?,
                Recovery::Discarded(files) => run.log(
                    EventKind::Checkpoint,
                    format!(
                        "threw away the unfinished checkpoint save the interruption cut off ({}); the previous checkpoint stands",
                        files.join(", ")
                    ),
                )?,
            }
            let index = run.checkpoints()?;
            let state = index.resume.ok_or_else(|| {
                Error::refused(format!(
                    "run {} has no checkpoint to resume from: it never finished an epoch",
                    run.id
                ))
            })?;
            let pipeline = run.pipeline()?;
            (crate::ml::data::splits::for_run(run, spec, &pipeline, false)?, state)
        } else {
            let data = PreparedData::build(spec, None)?;
            run.write_pipeline(&data.pipeline)?;
            crate::ml::data::splits::record(run, spec, &data)?;
            let state = ResumeState {
                epoch: 0,
                step: 0,
                best_score: None,
                best_epoch: None,
                es_best: None,
                bad_epochs: 0,
                duration_s: 0.0,
                optimizer_steps: 0,
            };
            (data, state)
        };
        let net = build_network(spec, &data.pipeline, &device)?;
        let mut opt = Optimizer::new(&spec.optimizer, net.vars());
        if resume {
            let bytes = run.checkpoint_bytes(CheckpointKind::Last)?;
            net.load_safetensors(&bytes, &run.file(CheckpointKind::Last.file()).display().to_string())?;
            let opt_bytes = run.read_sensitive("checkpoints/optimizer.safetensors")?;
            let tensors = candle_core::safetensors::load_buffer(&opt_bytes, &device)?;
            opt.load_state(&tensors, state.optimizer_steps)?;
            run.truncate_metrics(state.step)?;
        }
        let n = data.train.labels.len();
        let batch = spec.batch.size(n).min(n.max(1));
        let steps_per_epoch = n.div_ceil(batch) as u64;
        let dp = match &spec.privacy {
            Some(p) => Some(DpPlan::new(p, n, batch, steps_per_epoch, spec.epochs)?),
            None => None,
        };
        Ok(Trainer {
            spec: spec.clone(),
            run,
            data,
            net,
            opt,
            state,
            steps_per_epoch,
            batch,
            resumed: resume,
            dp,
        })
    }

    fn run(&mut self, observer: &mut dyn TrainObserver, control: &TrainControl) -> Result<Outcome> {
        let spec = self.spec.clone();
        let run = self.run;
        let start_epoch = self.state.epoch;
        let pid = std::process::id();
        let started_at = now();
        run.update_info(|i| {
            i.status = RunStatus::Running;
            i.started.get_or_insert(started_at);
            i.finished = None;
            i.failure = None;
            i.pid = Some(pid);
            i.steps_per_epoch = self.steps_per_epoch;
            i.epochs = spec.epochs;
        })?;
        let report = self.data.report.clone();
        if self.resumed {
            run.log(
                EventKind::Resumed,
                format!(
                    "resumed at epoch {} from the checkpoint of epoch {start_epoch} (step {})",
                    start_epoch + 1,
                    self.state.step
                ),
            )?;
        } else {
            run.log(
                EventKind::Started,
                format!(
                    "training {} ({}, {} parameters) for {} epochs, {} steps per epoch",
                    spec.name,
                    spec.model.kind(),
                    self.net.parameter_count(),
                    spec.epochs,
                    self.steps_per_epoch
                ),
            )?;
            let mut msg = format!(
                "{}: {} examples, {} train / {} validation / {} test",
                report.origin, report.examples, report.train, report.validation, report.test
            );
            if report.dropped_missing > 0 {
                msg.push_str(&format!("; dropped {} examples with missing values", report.dropped_missing));
            }
            if report.imputed_values > 0 {
                msg.push_str(&format!("; imputed {} missing values", report.imputed_values));
            }
            if let Some(v) = report.vocabulary {
                msg.push_str(&format!("; vocabulary of {v} words"));
            }
            run.log(EventKind::Data, msg)?;
            if let Some(dp) = &self.dp {
                run.log(
                    EventKind::Privacy,
                    format!(
                        "DP-SGD: per-example gradients clipped to {}, noise multiplier σ = {:.4}, \
                         Poisson sampling at q = {:.4}, δ = {:e}; ε after all {} epochs: {:.3}",
                        dp.clip_norm,
                        dp.sigma,
                        dp.sample_rate,
                        dp.delta,
                        spec.epochs,
                        dp.spent(self.steps_per_epoch * spec.epochs as u64).epsilon
                    ),
                )?;
            }
        }
        observer.on_event(&TrainEvent::Started {
            run_id: run.id.to_string(),
            spec: spec.name.clone(),
            epochs: spec.epochs,
            steps_per_epoch: self.steps_per_epoch,
            parameters: self.net.parameter_count(),
            data: report,
            resumed_from_epoch: self.resumed.then_some(start_epoch),
        });

        let n_train = self.data.train.labels.len();
        let device = self.net.device().clone();
        let classes = self.data.pipeline.classes.clone();
        let monitor = spec.checkpoint.monitor;
        let base_lr = spec.optimizer.lr();
        let mut session_time = 0.0f64;
        let mut throughput: Option<f64> = None;
        let t_features = Instant::now();
        let frozen = FrozenFeatures::compute(&spec, &self.net, &self.data)?;
        if frozen.is_some() {
            let dt = t_features.elapsed().as_secs_f64();
            session_time += dt;
            run.log(
                EventKind::Data,
                format!(
                    "frozen encoder: encoded the {} training and {} validation examples once ({dt:.1} s); \
                     each epoch trains the head on these features",
                    n_train,
                    self.data.validation.labels.len()
                ),
            )?;
        }

        let mut control_file = ControlFile::new(run);
        // The first loss of this session: the scale that a diverging loss is measured against.
        let mut first_loss: Option<f64> = None;
        for epoch in start_epoch..spec.epochs {
            let mut rng = epoch_rng(spec.seed, epoch);
            let mut order: Vec<usize> = (0..n_train).collect();
            order.shuffle(&mut rng);
            // DP-SGD's accounting assumes Poisson sampling: batches of random size, drawn anew
            // each step, rather than a shuffled partition.
            let batches: Vec<Vec<usize>> = match &self.dp {
                Some(dp) => dp.poisson_batches(n_train, self.steps_per_epoch, &mut rng),
                None => order.chunks(self.batch).map(<[usize]>::to_vec).collect(),
            };
            let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
            for (i, chunk) in batches.iter().enumerate() {
                let chunk = chunk.as_slice();
                control_file.poll(run, control);
                if control.is_paused() {
                    run.update_info(|r| r.status = RunStatus::Paused)?;
                    run.log(
                        EventKind::Paused,
                        format!("paused at epoch {} step {}", epoch + 1, self.state.step),
                    )?;
                    observer.on_event(&TrainEvent::Paused { epoch: epoch + 1, step: self.state.step });
                    while control.is_paused() && !control.is_cancelled() {
                        std::thread::sleep(Duration::from_millis(50));
                        control_file.poll(run, control);
                    }
                    if !control.is_cancelled() {
                        run.update_info(|r| r.status = RunStatus::Running)?;
                        run.log(
                            EventKind::Resumed,
                            format!("resumed at epoch {} step {}", epoch + 1, self.state.step),
                        )?;
                        observer.on_event(&TrainEvent::Resumed { epoch: epoch + 1, step: self.state.step });
                    }
                }
                if control.is_cancelled() {
                    return self.cancel(observer, epoch, session_time);
                }
                let t0 = Instant::now();
                let lr =
                    scheduled_lr(base_lr, &spec.schedule, self.state.step, self.steps_per_epoch, spec.epochs);
                self.opt.set_lr(lr);
                let labels: Vec<u32> = chunk.iter().map(|&j| self.data.train.labels[j]).collect();
                // A loss that is not finite, or that grew far past where this session began,
                // ends the run before the step could spoil the weights further.
                let check = |loss_value: f64, state: &ResumeState| -> Result<()> {
                    if !diverged(loss_value, first_loss) {
                        return Ok(());
                    }
                    let _ = run.update_info(|r| r.duration_s = state.duration_s + session_time);
                    Err(TrainError::Diverged { epoch: epoch + 1, step: state.step + 1, loss: loss_value, lr }
                        .into())
                };
                let (loss_value, preds) = match (&self.dp, &frozen) {
                    (Some(dp), _) => {
                        let x = if chunk.is_empty() {
                            None
                        } else {
                            Some(self.train_batch(chunk, &mut rng, &device)?)
                        };
                        let (grads, stats) = private_gradients(&self.net, x.as_ref(), &labels, dp, &mut rng)?;
                        let loss_value = stats.loss_sum / chunk.len().max(1) as f64;
                        check(loss_value, &self.state)?;
                        first_loss.get_or_insert(loss_value);
                        let by_var: HashMap<TensorId, Tensor> =
                            self.net.vars().iter().map(|(_, v)| v.as_tensor().id()).zip(grads).collect();
                        self.opt.step_by(|p| by_var.get(&p.id()).cloned())?;
                        (loss_value, stats.predictions)
                    }
                    (None, _) => {
                        let y = Tensor::from_vec(labels.clone(), chunk.len(), &device)?;
                        let logits = match &frozen {
                            // A frozen encoder's features were computed once: only the head runs.
                            Some(f) => self.net.forward_head(&rows(&f.train, chunk)?, Some(&mut rng))?,
                            None => {
                                let x = self.train_batch(chunk, &mut rng, &device)?;
                                // Adversarial training: part of the batch becomes attacks on the
                                // current weights.
                                let x = match &spec.adversarial {
                                    Some(adv) => crate::ml::attack::adversarial_batch(
                                        &self.net,
                                        &x,
                                        &y,
                                        adv,
                                        &self.data.pipeline,
                                        &mut rng,
                                    )?,
                                    None => x,
                                };
                                self.net.forward(&x, Some(&mut rng))?
                            }
                        };
                        let loss = crate::ml::kernels::cross_entropy(&logits, &y)?;
                        let loss_value = loss.to_scalar::<f32>()? as f64;
                        check(loss_value, &self.state)?;
                        first_loss.get_or_insert(loss_value);
                        let grads = crate::ml::kernels::backward(&loss)?;
                        self.opt.step(&grads)?;
                        (loss_value, logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
                    }
                };
                correct += preds.iter().zip(&labels).filter(|(p, l)| p == l).count();
                seen += chunk.len();
                loss_sum += loss_value * chunk.len() as f64;
                self.state.step += 1;
                let dt = t0.elapsed().as_secs_f64();
                session_time += dt;
                let sps = chunk.len() as f64 / dt.max(1e-9);
                // Smoothed so that the display does not jitter with every step's timing noise.
                let smoothed = throughput.map_or(sps, |t| 0.9 * t + 0.1 * sps);
                throughput = Some(smoothed);
                self.after_step(observer, epoch + 1, i as u64 + 1, loss_value, lr, smoothed, session_time)?;
            }

            let t_eval = Instant::now();
            let val = match &frozen {
                Some(f) => {
                    let labels = &self.data.validation.labels;
                    let (loss, preds, _) = predict_by(labels, &device, |chunk| {
                        self.net.forward_head(&rows(&f.validation, chunk)?, None)
                    })?;
                    Evaluation::compute("validation", labels, &preds, &classes, loss)
                }
                None => evaluate(&self.net, &self.data.validation, &classes, "validation")?,
            };
            session_time += t_eval.elapsed().as_secs_f64();
            let mut summary = EpochSummary {
                metrics: EpochMetrics {
                    epoch: epoch + 1,
                    step: self.state.step,
                    train_loss: loss_sum / seen.max(1) as f64,
                    train_accuracy: correct as f64 / seen.max(1) as f64,
                    val_loss: val.loss,
                    val_accuracy: val.accuracy,
                    val_macro_f1: val.macro_f1,
                    lr: self.opt.lr(),
                    time: self.state.duration_s + session_time,
                },
                epochs: spec.epochs,
                improved: false,
            };
            let s = score(monitor, &summary);
            if better(monitor, s, self.state.best_score, 0.0) {
                summary.improved = true;
                self.state.best_score = Some(s);
                self.state.best_epoch = Some(epoch + 1);
                self.save_checkpoint(CheckpointKind::Best, &summary, true)?;
                observer.on_event(&TrainEvent::Checkpoint { epoch: epoch + 1, kind: CheckpointKind::Best });
            }
            // Early stopping watches its own metric, which may differ from the checkpoint's.
            let stop = match &spec.early_stopping {
                Some(es) => {
                    let es_score = score(es.monitor, &summary);
                    if better(es.monitor, es_score, self.state.es_best, es.min_delta) {
                        self.state.es_best = Some(es_score);
                        self.state.bad_epochs = 0;
                    } else {
                        self.state.bad_epochs += 1;
                    }
                    self.state.bad_epochs >= es.patience.max(1)
                }
                None => false,
            };
            self.state.epoch = epoch + 1;
            let last_epoch = epoch + 1 == spec.epochs || stop;
            // The epoch's line goes out before the checkpoint that ends the epoch commits: killed
            // in between, the resume drops it (it is past the previous checkpoint's step) and
            // writes it again; the other way round, a kill after the commit lost the line for good.
            run.append_metric(&MetricLine::Epoch(summary.metrics))?;
            if (epoch + 1) % spec.checkpoint.every.max(1) == 0 || last_epoch {
                self.state.duration_s += session_time;
                session_time = 0.0;
                self.save_checkpoint(CheckpointKind::Last, &summary, last_epoch)?;
                observer.on_event(&TrainEvent::Checkpoint { epoch: epoch + 1, kind: CheckpointKind::Last });
            }
            let best_epoch = self.state.best_epoch;
            let dp_spent = self.dp.as_ref().map(|d| d.spent(self.state.step));
            let duration = self.state.duration_s + session_time;
            run.update_info(|r| {
                r.epoch = epoch + 1;
                r.step = self.state.step;
                r.train_loss = Some(summary.train_loss);
                r.val_loss = Some(summary.val_loss);
                r.val_accuracy = Some(summary.val_accuracy);
                r.best_val_accuracy =
                    Some(r.best_val_accuracy.map_or(summary.val_accuracy, |b| b.max(summary.val_accuracy)));
                r.best_epoch = best_epoch;
                r.duration_s = duration;
                // The run's true average, evaluation included: the smoothed per-step figure is
                // for the live display and reads above it.
                r.samples_per_sec = Some((epoch + 1) as f64 * n_train as f64 / duration.max(1e-9));
                r.dp = dp_spent.clone();
            })?;
            if let Some(d) = &dp_spent {
                run.log(
                    EventKind::Privacy,
                    format!(
                        "epoch {}: ε = {:.3} spent (δ = {:e}, {} noisy steps)",
                        epoch + 1,
                        d.epsilon,
                        d.delta,
                        d.steps
                    ),
                )?;
            }
            observer.on_event(&TrainEvent::Epoch(summary.clone()));
            if stop {
                let best = self.state.best_epoch.unwrap_or(epoch + 1);
                run.log(
                    EventKind::EarlyStop,
                    format!(
                        "stopped early after epoch {}: no improvement for {} epochs (best epoch {best})",
                        epoch + 1,
                        self.state.bad_epochs
                    ),
                )?;
                observer.on_event(&TrainEvent::EarlyStopped { epoch: epoch + 1, best_epoch: best });
                break;
            }
        }
        self.finish(observer)
    }

    /// Records a finished step in the metrics file and tells the observer.
    #[allow(clippy::too_many_arguments)]
    fn after_step(
        &self,
        observer: &mut dyn TrainObserver,
        epoch: usize,
        step_in_epoch: u64,
        loss: f64,
        lr: f64,
        samples_per_sec: f64,
        session_time: f64,
    ) -> Result<()> {
        self.run.append_metric(&MetricLine::Step {
            step: self.state.step,
            epoch,
            loss,
            lr,
            samples_per_sec,
            time: self.state.duration_s + session_time,
        })?;
        observer.on_event(&TrainEvent::Step {
            epoch,
            step: self.state.step,
            step_in_epoch,
            loss,
            lr,
            samples_per_sec,
        });
        Ok(())
    }

    fn train_batch(&self, chunk: &[usize], rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor> {
        match (&self.spec.augment, &self.data.train.features, &self.data.zero_fill) {
            (Some(aug), Features::Dense { values, dims }, Some(fill)) => {
                let d: usize = dims.iter().product();
                let mut buf = Vec::with_capacity(chunk.len() * d);
                for &j in chunk {
                    buf.extend_from_slice(&values[j * d..(j + 1) * d]);
                }
                augment::apply(&mut buf, &self.data.pipeline.input, fill, aug, rng);
                let mut shape = vec![chunk.len()];
                shape.extend_from_slice(dims);
                Ok(Tensor::from_vec(buf, shape, device)?)
            }
            _ => self.data.train.features.batch(chunk, device),
        }
    }

    /// Saves a checkpoint, with the optimizer's state and the resume state when it is the
    /// rolling last one, in one commit with the manifest (`store::commit`): a kill at any point
    /// leaves either this checkpoint or the previous one, each vouched for and resumable.
    fn save_checkpoint(&self, kind: CheckpointKind, s: &EpochSummary, announce: bool) -> Result<()> {
        let run = self.run;
        let file = kind.file().to_string();
        let bytes = self.net.to_safetensors()?;
        let mut save = run.begin_save();
        save.stage(&file, &bytes)?;
        let mut index = run.checkpoints()?;
        if kind == CheckpointKind::Last {
            save.stage("checkpoints/optimizer.safetensors", &tensors_to_bytes(&self.opt.state())?)?;
            let mut state = self.state.clone();
            state.optimizer_steps = self.opt.steps;
            index.resume = Some(state);
        }
        index.entries.retain(|e| e.kind != kind);
        index.entries.push(CheckpointEntry {
            kind,
            file: file.clone(),
            epoch: s.epoch,
            step: s.step,
            val_loss: s.val_loss,
            val_accuracy: s.val_accuracy,
            val_macro_f1: s.val_macro_f1,
            sha256: sha256_hex(&bytes),
            time: now(),
        });
        save.stage_index(&index)?;
        save.commit()?;
        // Every improvement is worth a line in the log; the rolling "last" checkpoint only at
        // the end, or it would drown everything else.
        if announce {
            run.log(
                EventKind::Checkpoint,
                format!(
                    "saved {kind} checkpoint at epoch {} (val loss {:.4}, val accuracy {:.2}%)",
                    s.epoch,
                    s.val_loss,
                    100.0 * s.val_accuracy
                ),
            )?;
        }
        Ok(())
    }

    fn cancel(
        &mut self,
        observer: &mut dyn TrainObserver,
        epoch: usize,
        session_time: f64,
    ) -> Result<Outcome> {
        let run = self.run;
        let step = self.state.step;
        let duration = self.state.duration_s + session_time;
        run.update_info(|r| {
            r.status = RunStatus::Cancelled;
            r.finished = Some(now());
            r.pid = None;
            r.duration_s = duration;
        })?;
        run.log(
            EventKind::Cancelled,
            format!(
                "stopped at epoch {} step {step}; `vigil train --resume {}` continues from the checkpoint of epoch {}",
                epoch + 1,
                run.id,
                self.state.epoch
            ),
        )?;
        observer.on_event(&TrainEvent::Cancelled { epoch: epoch + 1, step });
        Ok(Outcome::Cancelled)
    }

    fn finish(&mut self, observer: &mut dyn TrainObserver) -> Result<Outcome> {
        let run = self.run;
        // The test split is scored once, with the best checkpoint's weights.
        let best = run.checkpoint_bytes(CheckpointKind::Best)?;
        self.net.load_safetensors(&best, &run.file(CheckpointKind::Best.file()).display().to_string())?;
        let test = evaluate(&self.net, &self.data.test, &self.data.pipeline.classes, "test")?;
        crate::store::write_json(&run.file("eval.json"), &test)?;
        // What the final model leaks about its training set, measured for every run.
        let membership =
            crate::ml::privacy::membership::report(&self.net, &self.data.train, &self.data.test)?;
        crate::store::write_json(
            &run.file("privacy.json"),
            &serde_json::json!({ "membership": membership }),
        )?;
        // The input detector the service flags unusual inputs with, calibrated on validation;
        // data too small for one leaves the reason in detector.json and the log instead.
        let _detector = crate::ml::attack::detector::fit_for_run(run, &self.net, &self.data)?;
        run.log(
            EventKind::Privacy,
            format!(
                "membership inference (loss threshold): advantage {:.3}, AUC {:.3}, TPR {:.3} at 0.1% FPR",
                membership.advantage, membership.auc, membership.tpr_at_0_1pct_fpr
            ),
        )?;
        let best_epoch = self.state.best_epoch.unwrap_or(self.state.epoch);
        let duration = self.state.duration_s;
        run.update_info(|r| {
            r.status = RunStatus::Completed;
            r.finished = Some(now());
            r.pid = None;
            r.test_accuracy = Some(test.accuracy);
            r.test_macro_f1 = Some(test.macro_f1);
            r.membership_advantage = Some(membership.advantage);
            r.duration_s = duration;
        })?;
        run.log(
            EventKind::Finished,
            format!(
                "finished: test accuracy {:.2}%, macro F1 {:.4} (best epoch {best_epoch}, {:.1} s)",
                100.0 * test.accuracy,
                test.macro_f1,
                duration
            ),
        )?;
        run.write_manifest()?;
        observer.on_event(&TrainEvent::Finished { test: test.clone(), best_epoch, duration_s: duration });
        Ok(Outcome::Completed(Box::new(test)))
    }
}

/// Accuracy of a tensor of logits against labels (used by tests and benchmarks).
pub fn accuracy(logits: &Tensor, labels: &[u32]) -> Result<f64> {
    let preds = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    Ok(preds.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len().max(1) as f64)
}
