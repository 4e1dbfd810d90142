//! Smaller models from trained ones: weights quantised to f16, Q8_0 or Q4_0 (ggml's formats, run
//! by candle's quantised matrix product), magnitude pruning (global or per layer) with optional
//! fine-tuning that keeps pruned weights at zero, and the measurements an operator decides by:
//! bytes on disk and in memory, test accuracy and agreement with the original, single-input
//! latency and batch throughput. A variant lives in its run's folder (`variants/<name>/`) as a
//! GGUF file (gzip-compressed when pruned, so that the zeros really cost less), its report and
//! its own manifest. This module owns the arithmetic and the variant files; the CLI prints,
//! the service serves.

use std::io::{Read, Write};
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{D, Device, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ml::data::preprocess::{Prepared, PreparedData};
use crate::ml::model::{LayerStorage, Network};
use crate::ml::optim::Optimizer;
use crate::ml::train::{Trained, build_network, device_for, load_trained, predict};
use crate::store::{CheckpointKind, Manifest, RunDir, read_json, sha256_hex, write_json};

/// The storage a variant's dense weights get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    F16,
    Q8_0,
    Q4_0,
}

impl Precision {
    /// `f16`, `q8_0`, `q4_0` or `f32` (no quantisation).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" | "none" => Precision::F32,
            "f16" => Precision::F16,
            "q8_0" | "q8" => Precision::Q8_0,
            "q4_0" | "q4" => Precision::Q4_0,
            other => {
                return Err(Error::argument(format!(
                    "--quantize: unknown format {other:?}; use f16, q8_0, q4_0 or none"
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Q8_0 => "q8_0",
            Precision::Q4_0 => "q4_0",
        }
    }

    fn ggml(self) -> Option<GgmlDType> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(GgmlDType::F16),
            Precision::Q8_0 => Some(GgmlDType::Q8_0),
            Precision::Q4_0 => Some(GgmlDType::Q4_0),
        }
    }
}

/// Magnitude pruning: the `ratio` of weights smallest in magnitude become zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prune {
    pub ratio: f64,
    /// The ratio within each layer, instead of one threshold over all weights.
    pub per_layer: bool,
    /// Epochs of fine-tuning after pruning (pruned weights stay zero).
    pub finetune_epochs: usize,
}

/// What to derive from a run's best checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VariantSpec {
    pub precision: Precision,
    pub prune: Option<Prune>,
}

impl VariantSpec {
    /// Checks the settings; every refusal names the flag.
    pub fn check(&self) -> Result<()> {
        if let Some(p) = &self.prune
            && !(p.ratio > 0.0 && p.ratio < 1.0)
        {
            return Err(Error::argument(format!(
                "--prune {}: give a fraction between 0 and 1, e.g. 0.5",
                p.ratio
            )));
        }
        if self.precision == Precision::F32 && self.prune.is_none() {
            return Err(Error::argument("nothing to do: give --quantize f16|q8_0|q4_0, --prune R, or both"));
        }
        Ok(())
    }

    /// The variant's name: `q8_0`, `prune50`, `prune50-q4_0`, `prune50l-ft1-q8_0`.
    pub fn name(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.prune {
            let mut s = format!("prune{}", (p.ratio * 100.0).round() as u32);
            if p.per_layer {
                s.push('l');
            }
            if p.finetune_epochs > 0 {
                s.push_str(&format!("-ft{}", p.finetune_epochs));
            }
            parts.push(s);
        }
        if self.precision != Precision::F32 {
            parts.push(self.precision.name().to_string());
        }
        parts.join("-")
    }
}

/// One side of a comparison: the original model or the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Bytes of the model file on disk.
    pub disk_bytes: u64,
    /// Bytes the parameters take in memory.
    pub memory_bytes: u64,
    /// Bytes of the weight matrices alone (dense layers), as stored.
    pub dense_weight_bytes: u64,
    pub test_accuracy: f64,
    /// Median milliseconds to predict one input.
    pub latency_ms: f64,
    /// Median inputs per second in batches of 256.
    pub throughput: f64,
}

/// What `vigil optimize` reports, and what a variant keeps of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run: String,
    pub variant: String,
    pub spec: VariantSpec,
    /// SHA-256 of the checkpoint the variant was made from.
    pub base_sha256: String,
    pub original: Measured,
    #[serde(rename = "variant_measured")]
    pub measured: Measured,
    /// Share of test predictions equal to the original's.
    pub agreement: f64,
    /// Share of weights that are zero (after pruning and fine-tuning), when pruned.
    pub sparsity: Option<f64>,
    pub layers: Vec<LayerStorage>,
    /// Why the variant predicts one input more slowly than the original, when it does.
    pub slower: Option<String>,
    /// The pretrained folder a frozen encoder is read from, when the original's checkpoint
    /// holds only what it trained (the head): its "file on disk" leaves the encoder out, and
    /// the variant still reads its f32 layers (embeddings, layer norms) from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_encoder: Option<String>,
}

impl Report {
    /// Accuracy change in points (negative: worse).
    pub fn accuracy_delta_points(&self) -> f64 {
        100.0 * (self.measured.test_accuracy - self.original.test_accuracy)
    }

    /// How many times smaller the dense weights are.
    pub fn weight_ratio(&self) -> f64 {
        self.original.dense_weight_bytes as f64 / self.measured.dense_weight_bytes.max(1) as f64
    }
}

/// The magnitude-pruning masks: for each pruned parameter (by name), 1 where a weight is kept.
pub struct Masks(Vec<(String, Tensor)>);

/// Zeroes the `ratio` of weights smallest in magnitude: weight matrices and kernels of every
/// layer, not biases or embeddings (a zeroed embedding row is a word forgotten, not a saving).
pub fn prune(net: &Network, ratio: f64, per_layer: bool) -> Result<Masks> {
    let prunable: Vec<(String, Tensor)> = net
        .vars()
        .iter()
        .filter(|(n, _)| n.contains("weight") && !n.starts_with("embedding"))
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let values: Vec<Vec<f32>> =
        prunable.iter().map(|(_, t)| Ok(t.flatten_all()?.to_vec1::<f32>()?)).collect::<Result<_>>()?;
    // The threshold below which a weight goes: the ratio-quantile of |w|, over all or per layer.
    let quantile = |mut mags: Vec<f32>| -> f32 {
        let k = ((mags.len() as f64 * ratio).floor() as usize).min(mags.len());
        if k == 0 {
            return f32::NEG_INFINITY;
        }
        let (_, kth, _) = mags.select_nth_unstable_by(k - 1, f32::total_cmp);
        *kth
    };
    let global = (!per_layer).then(|| quantile(values.iter().flatten().map(|v| v.abs()).collect()));
    let mut masks = Vec::new();
    for ((name, t), vals) in prunable.iter().zip(&values) {
        let cut = global.unwrap_or_else(|| quantile(vals.iter().map(|v| v.abs()).collect()));
        let mask: Vec<f32> = vals.iter().map(|v| if v.abs() <= cut { 0.0 } else { 1.0 }).collect();
        masks.push((name.clone(), Tensor::from_vec(mask, t.shape(), t.device())?));
    }
    let masks = Masks(masks);
    masks.apply(net)?;
    Ok(masks)
}

impl Masks {
    /// Multiplies the pruned parameters by their masks.
    pub fn apply(&self, net: &Network) -> Result<()> {
        for (name, mask) in &self.0 {
            if let Some((_, v)) = net.vars().iter().find(|(n, _)| n == name) {
                v.set(&v.as_tensor().mul(mask)?)?;
            }
        }
        Ok(())
    }
}

/// Share of the network's weight values (not biases) that are zero.
pub fn sparsity(net: &Network) -> Result<f64> {
    let (mut zeros, mut total) = (0usize, 0usize);
    for (n, v) in net.vars() {
        if n.contains("weight") && !n.starts_with("embedding") {
            let vals = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            zeros += vals.iter().filter(|x| **x == 0.0).count();
            total += vals.len();
        }
    }
    Ok(zeros as f64 / total.max(1) as f64)
}

/// Fine-tunes a pruned network on the training split with the run's optimiser and batch size,
/// putting the masks back after every step so that pruned weights stay zero.
pub fn finetune(trained: &Trained, data: &PreparedData, masks: &Masks, epochs: usize) -> Result<()> {
    let net = &trained.network;
    let spec = &trained.spec;
    let mut opt = Optimizer::new(&spec.optimizer, net.vars());
    let n = data.train.labels.len();
    let batch = spec.batch.size(n).min(n.max(1)).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x0f1e_2d3c);
    for _ in 0..epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch) {
            let x = data.train.features.batch(chunk, net.device())?;
            let labels: Vec<u32> = chunk.iter().map(|&i| data.train.labels[i]).collect();
            let y = Tensor::from_vec(labels, chunk.len(), net.device())?;
            let logits = net.forward(&x, Some(&mut rng))?;
            let loss = crate::ml::kernels::cross_entropy(&logits, &y)?;
            let grads = crate::ml::kernels::backward(&loss)?;
            opt.step(&grads)?;
            masks.apply(net)?;
        }
    }
    Ok(())
}

/// Median milliseconds per single-input prediction and median inputs per second in batches of
/// 256, over `rounds` timed repetitions (after a warm-up).
pub fn speed(net: &Network, data: &Prepared, rounds: usize) -> Result<(f64, f64)> {
    let n = data.labels.len();
    if n == 0 {
        return Err(Error::unsuitable("the test split is empty: nothing to time"));
    }
    let one = data.features.batch(&[0], net.device())?;
    let idx: Vec<usize> = (0..256).map(|i| i % n).collect();
    let batch = data.features.batch(&idx, net.device())?;
    for _ in 0..3 {
        net.infer(&one)?;
        net.infer(&batch)?;
    }
    let time = |x: &Tensor, reps: usize| -> Result<Vec<f64>> {
        (0..reps)
            .map(|_| {
                let t0 = Instant::now();
                // Reading the result back is part of a prediction.
                net.infer(x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
                Ok(t0.elapsed().as_secs_f64())
            })
            .collect()
    };
    let latency = median(time(&one, rounds * 10)?) * 1000.0;
    let throughput = 256.0 / median(time(&batch, rounds)?);
    Ok((latency, throughput))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The variant's folder in its run.
pub fn variant_dir(run: &RunDir, name: &str) -> std::path::PathBuf {
    run.file("variants").join(name)
}

const MODEL_FILE: &str = "model.gguf";
/// The metadata key naming a variant in its GGUF file; the language-model loader reads it to
/// say that such a file is a classifier, not a language model.
pub const VARIANT_KEY: &str = "vigil.variant";
const PACKED_FILE: &str = "model.gguf.gz";

/// Writes a network (its quantised and f32 parameters) as GGUF bytes.
fn to_gguf(net: &Network, report_name: &str, base_sha: &str) -> Result<Vec<u8>> {
    let mut stored: Vec<(String, std::sync::Arc<QTensor>)> = Vec::new();
    for q in net.quantized() {
        stored.push((q.name.clone(), q.stored()?));
    }
    for (name, v) in net.vars() {
        stored.push((name.clone(), std::sync::Arc::new(QTensor::quantize(v.as_tensor(), GgmlDType::F32)?)));
    }
    stored.sort_by(|a, b| a.0.cmp(&b.0));
    let tensors: Vec<(&str, &QTensor)> = stored.iter().map(|(n, t)| (n.as_str(), t.as_ref())).collect();
    let name = gguf_file::Value::String(report_name.to_string());
    let base = gguf_file::Value::String(base_sha.to_string());
    let meta = [(VARIANT_KEY, &name), ("vigil.base_sha256", &base)];
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta, &tensors)?;
    Ok(out.into_inner())
}

/// Makes a variant of a run's best checkpoint, measures it against the original and stores it
/// (replacing a variant of the same name). `rounds` sets how long the speed is timed.
pub fn optimize(run: &RunDir, spec: &VariantSpec, rounds: usize) -> Result<Report> {
    spec.check()?;
    if run.is_sealed() {
        return Err(Error::refused(format!(
            "{} is sealed: variants are written in the clear, so unseal it first (vigil unseal {})",
            run.id, run.id
        )));
    }
    let manifest = run.manifest()?;
    let base_sha =
        manifest.files.get(CheckpointKind::Best.file()).cloned().ok_or_else(|| Error::Corrupt {
            path: run.file(CheckpointKind::Best.file()),
            msg: "is not listed in the run's manifest".into(),
        })?;
    let original = load_trained(run, CheckpointKind::Best)?;
    if original.spec.privacy.is_some() && spec.prune.is_some_and(|p| p.finetune_epochs > 0) {
        return Err(Error::refused(
            "--finetune-epochs: fine-tuning a DP-SGD run without its noise would spend privacy the \
             run never accounted for; prune without fine-tuning",
        ));
    }
    let data = crate::ml::data::splits::for_run(run, &original.spec, &original.pipeline, false)?;
    // A second copy to change: a cloned `Network` would share its variables with the original.
    let variant = load_trained(run, CheckpointKind::Best)?;
    let mut sparsity_after = None;
    if let Some(p) = &spec.prune {
        let masks = prune(&variant.network, p.ratio, p.per_layer)?;
        if p.finetune_epochs > 0 {
            finetune(&variant, &data, &masks, p.finetune_epochs)?;
        }
        sparsity_after = Some(sparsity(&variant.network)?);
    }
    let mut net = variant.network;
    if let Some(dtype) = spec.precision.ggml() {
        net.quantize(dtype)?;
    }
    let name = spec.name();
    let gguf = to_gguf(&net, &name, &base_sha)?;
    let (file, bytes) = if spec.prune.is_some() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&gguf).map_err(|e| Error::internal(format!("compressing the variant: {e}")))?;
        (PACKED_FILE, gz.finish().map_err(|e| Error::internal(format!("compressing the variant: {e}")))?)
    } else {
        (MODEL_FILE, gguf)
    };

    let (_, base_preds, _) = predict(&original.network, &data.test)?;
    let (_, preds, _) = predict(&net, &data.test)?;
    let acc = |p: &[u32]| {
        p.iter().zip(&data.test.labels).filter(|(a, b)| a == b).count() as f64 / p.len().max(1) as f64
    };
    let agreement =
        base_preds.iter().zip(&preds).filter(|(a, b)| a == b).count() as f64 / preds.len().max(1) as f64;
    // Alternate the two models' timings, so that a change in the machine's load falls on both.
    let mut lat = (Vec::new(), Vec::new());
    let mut thr = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (l, t) = speed(&original.network, &data.test, rounds)?;
        lat.0.push(l);
        thr.0.push(t);
        let (l, t) = speed(&net, &data.test, rounds)?;
        lat.1.push(l);
        thr.1.push(t);
    }
    let base_disk = std::fs::metadata(run.file(CheckpointKind::Best.file()))
        .map_err(|e| Error::io(run.file(CheckpointKind::Best.file()), e))?
        .len();
    let original_m = Measured {
        disk_bytes: base_disk,
        memory_bytes: original.network.weight_bytes() as u64,
        dense_weight_bytes: original.network.dense_weight_bytes() as u64,
        test_accuracy: acc(&base_preds),
        latency_ms: median(lat.0),
        throughput: median(thr.0),
    };
    let measured = Measured {
        disk_bytes: bytes.len() as u64,
        memory_bytes: net.weight_bytes() as u64,
        dense_weight_bytes: net.dense_weight_bytes() as u64,
        test_accuracy: acc(&preds),
        latency_ms: median(lat.1),
        throughput: median(thr.1),
    };
    let slower = (measured.latency_ms > original_m.latency_ms * 1.05).then(|| match spec.precision {
        Precision::F16 => "f16 weights are widened to f32 on every call (this CPU path has no fast f16 \
                           product), which costs more than the product itself for one input; f16 \
                           saves memory at rest, not time"
            .to_string(),
        Precision::F32 => "pruned weights are stored as dense matrices with zeros (unstructured sparsity \
                           saves bytes on disk, not multiplications)"
            .to_string(),
        _ if net.encoder().is_some()
            && net.quantized().iter().any(|q| q.padded < crate::ml::model::layers::QUANTISED_BATCH_WIDTH) =>
        {
            format!(
                "a Transformer sends each of the input's tokens through its layers as a row, and a \
                 layer narrower than {} inputs widens its weight to f32 for such a batch (quantising \
                 each row to 8-bit blocks does not pay back on so few values a row): for a model \
                 this small the variant saves memory and disk, not time",
                crate::ml::model::layers::QUANTISED_BATCH_WIDTH
            )
        }
        _ if net.encoder().is_some() => "a Transformer sends each of the input's tokens through its \
              layers as a row; Vigil's quantised product reads a quarter of the f32 bytes but \
              quantises every row to 8-bit blocks first, and the attention, GELU and layer norms \
              cost the same in both: here that did not pay back; the variant saves memory and disk"
            .to_string(),
        _ => "for one input, the quantised product quantises the input to 8-bit blocks on every \
              call and adds the bias in a second pass, where the original's fused f32 layer does one \
              pass; reading fewer weight bytes does not pay that back at this size"
            .to_string(),
    });
    let frozen_encoder = match &original.spec.model {
        crate::ml::spec::ModelSpec::Pretrained { path, freeze: true, .. } => Some(path.clone()),
        _ => None,
    };
    let report = Report {
        run: run.id.to_string(),
        variant: name.clone(),
        spec: *spec,
        base_sha256: base_sha,
        original: original_m,
        measured,
        agreement,
        sparsity: sparsity_after,
        layers: net.storage(),
        slower,
        frozen_encoder,
    };
    save(run, &name, file, &bytes, &report)?;
    Ok(report)
}

/// Writes the variant's folder: its model file, report and manifest (written last, so a variant
/// whose manifest exists is whole).
fn save(run: &RunDir, name: &str, file: &str, bytes: &[u8], report: &Report) -> Result<()> {
    let dir = variant_dir(run, name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    crate::store::atomic::write_atomic(&dir.join(file), bytes)?;
    write_json(&dir.join("variant.json"), report)?;
    let report_bytes =
        std::fs::read(dir.join("variant.json")).map_err(|e| Error::io(dir.join("variant.json"), e))?;
    let mut manifest = Manifest::default();
    manifest.files.insert(file.into(), sha256_hex(bytes));
    manifest.files.insert("variant.json".into(), sha256_hex(&report_bytes));
    write_json(&dir.join("manifest.json"), &manifest)
}

/// The variants stored with a run, by name, with their reports.
pub fn list(run: &RunDir) -> Vec<Report> {
    let Ok(entries) = std::fs::read_dir(run.file("variants")) else { return vec![] };
    let mut out: Vec<Report> =
        entries.flatten().filter_map(|e| read_json::<Report>(&e.path().join("variant.json")).ok()).collect();
    out.sort_by(|a, b| a.variant.cmp(&b.variant));
    out
}

/// A stored variant, loaded.
pub struct Variant {
    pub trained: Trained,
    pub report: Report,
    /// SHA-256 of the variant's model file (its version when served).
    pub sha256: String,
}

/// A stored variant loaded for prediction: the run's spec and preprocessing with the variant's
/// weights. Its file is checked against the variant's manifest, and the variant against the
/// checkpoint it was made from (a run trained further since has a new best checkpoint).
pub fn load_variant(run: &RunDir, name: &str) -> Result<Variant> {
    let dir = variant_dir(run, name);
    if !dir.join("manifest.json").exists() {
        let have: Vec<String> = list(run).into_iter().map(|r| r.variant).collect();
        return Err(Error::not_found(format!(
            "{} has no variant {name:?}; it has {} (make one with `vigil optimize {} --quantize q8_0`)",
            run.id,
            if have.is_empty() { "none".into() } else { have.join(", ") },
            run.id
        )));
    }
    let manifest: Manifest = read_json(&dir.join("manifest.json"))?;
    let report_path = dir.join("variant.json");
    let report_bytes = std::fs::read(&report_path).map_err(|e| Error::io(&report_path, e))?;
    manifest.vouch("variant.json", &report_path, &report_bytes)?;
    let report: Report = serde_json::from_slice(&report_bytes)
        .map_err(|e| Error::Corrupt { path: report_path.clone(), msg: e.to_string() })?;
    let base = run.manifest()?.files.get(CheckpointKind::Best.file()).cloned().unwrap_or_default();
    if base != report.base_sha256 {
        return Err(Error::refused(format!(
            "variant {name} of {} was made from a checkpoint the run no longer has as its best; \
             make it again with `vigil optimize`",
            run.id
        )));
    }
    let (file, packed) =
        if dir.join(PACKED_FILE).exists() { (PACKED_FILE, true) } else { (MODEL_FILE, false) };
    let path = dir.join(file);
    let stored = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    manifest.vouch(file, &path, &stored)?;
    let sha256 = sha256_hex(&stored);
    let gguf = if packed {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(stored.as_slice()).read_to_end(&mut out).map_err(|e| {
            Error::Corrupt { path: path.clone(), msg: format!("not a readable gzip file: {e}") }
        })?;
        out
    } else {
        stored
    };
    let spec = run.spec()?;
    let pipeline = run.pipeline()?;
    let device = device_for(spec.device)?;
    let mut network = build_network(&spec, &pipeline, &device)?;
    read_gguf(&mut network, &gguf, &path, &device)?;
    Ok(Variant { trained: Trained { spec, pipeline, network }, report, sha256 })
}

/// What a caught panic said.
fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the reader failed".into())
}

/// Reads GGUF bytes into a network (public for the fuzz tests, which feed it broken files).
pub fn read_gguf(net: &mut Network, bytes: &[u8], path: &std::path::Path, device: &Device) -> Result<()> {
    let corrupt = |msg: String| Error::Corrupt { path: path.to_path_buf(), msg };
    let mut r = std::io::Cursor::new(bytes);
    // candle's GGUF reader panics on some broken files (a length past isize::MAX: "capacity
    // overflow", found by tests/fuzz.rs); a broken file must be an error, not a crash.
    let content = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gguf_file::Content::read(&mut r)))
        .map_err(|p| corrupt(format!("not a readable GGUF file: {}", panic_text(&p))))?
        .map_err(|e| corrupt(format!("not a readable GGUF file: {e}")))?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let f32_names: Vec<String> = net.vars().iter().map(|(n, _)| n.clone()).collect();
    for name in &f32_names {
        if !content.tensor_infos.contains_key(name) {
            return Err(corrupt(format!("has no tensor {name:?}")));
        }
    }
    for name in names {
        // A shape the file cannot hold (no format packs a value in under a third of a byte)
        // is refused before reading: candle would allocate for it, and a huge one aborts.
        let dims = content.tensor_infos[name].shape.dims();
        let values = dims.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
        if values.is_none_or(|n| n / 4 > bytes.len()) {
            return Err(corrupt(format!(
                "tensor {name:?} has shape {dims:?}, more values than the file could hold"
            )));
        }
        let t =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| content.tensor(&mut r, name, device)))
                .map_err(|p| corrupt(format!("tensor {name}: {}", panic_text(&p))))?
                .map_err(|e| corrupt(format!("tensor {name}: {e}")))?;
        if t.dtype() == GgmlDType::F32 {
            let Some((_, var)) = net.vars().iter().find(|(n, _)| n == name) else {
                return Err(corrupt(format!("has a tensor {name:?} the model does not")));
            };
            let values = t.dequantize(device)?;
            if values.dims() != var.dims() {
                return Err(corrupt(format!(
                    "tensor {name:?} has shape {:?}, the model needs {:?}",
                    values.dims(),
                    var.dims()
                )));
            }
            var.set(&values)?;
        } else {
            net.set_quantized(name, t).map_err(|e| corrupt(e.to_string()))?;
        }
    }
    Ok(())
}
