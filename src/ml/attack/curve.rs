//! Robustness curves: one attack run at several radii ε over a split, reporting per ε the
//! accuracy under attack, the attack's success rate, the mean perturbation norm and, when the run
//! has an input detector, the share of adversarial inputs it flags. The adversarial examples of
//! each ε are kept as an [`AdversarialSet`] and saved with the run
//! (`attacks/<curve>/eps-<ε>.safetensors`, listed in `attacks/index.json` with their SHA-256),
//! where the console's Explain view opens them beside their clean inputs.
//!
//! Definitions: accuracy is over every example of the split, each attacked against its true
//! label. The success rate of an untargeted attack is the share of the examples the model got
//! right that it gets wrong under attack; of a targeted attack, the share of examples not of the
//! target class that end up predicted as the target. The mean norm is over every example.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::detector::Detector;
use super::{Attack, AttackMethod, AttackSpace, InputRange, Norm, fmt_num, norms, perturb, snap_to_words};
use crate::error::{Error, Result};
use crate::ml::data::Features;
use crate::ml::data::preprocess::{Pipeline, Prepared};
use crate::ml::model::{Network, tensors_to_bytes};
use crate::store::{RunDir, now, read_json, sha256_hex, write_atomic, write_json};

/// Examples attacked at once: large enough to amortise per-op overhead, small enough that PGD's
/// autograd graph stays small.
const BATCH: usize = 256;

/// One radius of a robustness curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub eps: f32,
    /// Accuracy on the split under attack.
    pub accuracy: f64,
    pub success_rate: f64,
    /// Mean norm (of the curve's norm) of the perturbations, over every example.
    pub mean_norm: f64,
    /// Share of the adversarial inputs the run's detector flags (at ε = 0 its false-positive
    /// rate on the split); `None` without a detector.
    #[serde(default)]
    pub detected: Option<f64>,
    /// Share of the successful adversarial examples the detector flags.
    #[serde(default)]
    pub detected_successful: Option<f64>,
    /// Text: accuracy once the perturbed embeddings are snapped to the nearest words.
    #[serde(default)]
    pub word_accuracy: Option<f64>,
    /// The saved adversarial examples, relative to the run's folder, and their SHA-256.
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// A robustness curve of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// `fgsm-linf`, `pgd-l2-20`, `pgd-linf-20-to3`: names the attack's folder.
    pub key: String,
    pub method: AttackMethod,
    pub norm: Norm,
    pub steps: usize,
    /// A fixed PGD step; `None` when it is 2.5 ε / steps (FGSM steps ε).
    pub step_size: Option<f32>,
    pub random_start: bool,
    /// PGD kept each example's last iterate (as IBM ART does), not its first successful one.
    #[serde(default)]
    pub last_iterate: bool,
    pub target: Option<usize>,
    pub seed: u64,
    /// `input` (the preprocessed input) or `embedding` (a text model's token embeddings).
    pub space: String,
    /// What ε is measured in, in words.
    pub units: String,
    /// The valid input range the examples are clipped to (`None` for embeddings).
    pub range: Option<String>,
    pub split: String,
    pub checkpoint: String,
    pub examples: usize,
    pub created: String,
    pub points: Vec<CurvePoint>,
    /// The share of benign traffic (the test split shifted and noised as a benign client's
    /// inputs are) the run's detector flags, beside the points' `detected`; `None` without a
    /// detector or for one fitted before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benign_flagged: Option<f64>,
}

impl Curve {
    /// The input detector's two figures side by side: the share of benign traffic it flags and
    /// the share of this attack's inputs it flags at the ε nearest 0.1, with that ε; `None`
    /// unless both were measured. The CLI's report and the Security view both read them here.
    pub fn detector_figures(&self) -> Option<(f64, f64, f32)> {
        let benign = self.benign_flagged?;
        let p = self
            .points
            .iter()
            .filter(|p| p.eps > 0.0 && p.detected.is_some())
            .min_by(|a, b| (a.eps - 0.1).abs().total_cmp(&(b.eps - 0.1).abs()))?;
        Some((benign, p.detected?, p.eps))
    }

    /// `PGD L∞ 20 steps`, for legends.
    pub fn label(&self) -> String {
        let mut s = match self.method {
            AttackMethod::Fgsm => format!("FGSM {}", super::norm_name(self.norm)),
            AttackMethod::Pgd => format!("PGD {} {} steps", super::norm_name(self.norm), self.steps),
        };
        if let Some(t) = self.target {
            s.push_str(&format!(" → {t}"));
        }
        s
    }
}

/// The folder name of an attack's curve.
pub fn curve_key(a: &Attack) -> String {
    let norm = match a.norm {
        Norm::Linf => "linf",
        Norm::L2 => "l2",
    };
    let mut key = match a.method {
        AttackMethod::Fgsm => format!("fgsm-{norm}"),
        AttackMethod::Pgd => format!("pgd-{norm}-{}", a.steps),
    };
    if let Some(t) = a.target {
        key.push_str(&format!("-to{t}"));
    }
    key
}

/// The adversarial examples of one ε, as saved with the run.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialSet {
    pub eps: f32,
    /// Each row's example number in the split.
    pub index: Vec<u32>,
    pub labels: Vec<u32>,
    pub clean: Features,
    /// The adversarial inputs; for text, the snapped words (a real input the model can take).
    pub adversarial: Features,
    pub clean_pred: Vec<u32>,
    pub adversarial_pred: Vec<u32>,
    /// Each row's perturbation norm (in the embedding space for text).
    pub norms: Vec<f32>,
}

impl AdversarialSet {
    /// The row of example `index` of the split.
    pub fn row_of(&self, index: usize) -> Option<usize> {
        self.index.iter().position(|&i| i as usize == index)
    }

    /// Safetensors bytes: `index`, `label`, `clean_pred`, `adversarial_pred` (u32), `norm`
    /// (f32), and `clean`, `adversarial` (f32 inputs, or u32 token ids for text).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let cpu = Device::Cpu;
        let n = self.index.len();
        let u = |v: &[u32]| Tensor::from_slice(v, n, &cpu);
        let mut t: HashMap<String, Tensor> = HashMap::new();
        t.insert("index".into(), u(&self.index)?);
        t.insert("label".into(), u(&self.labels)?);
        t.insert("clean_pred".into(), u(&self.clean_pred)?);
        t.insert("adversarial_pred".into(), u(&self.adversarial_pred)?);
        t.insert("norm".into(), Tensor::from_slice(&self.norms, n, &cpu)?);
        t.insert("eps".into(), Tensor::from_slice(&[self.eps], 1, &cpu)?);
        let all: Vec<usize> = (0..n).collect();
        t.insert("clean".into(), self.clean.batch(&all, &cpu)?);
        t.insert("adversarial".into(), self.adversarial.batch(&all, &cpu)?);
        tensors_to_bytes(&t)
    }

    /// Reads what [`Self::to_bytes`] wrote; `origin` names the file in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        let corrupt = |msg: String| Error::Corrupt { path: origin.to_path_buf(), msg };
        let t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| corrupt(format!("not a readable safetensors file: {e}")))?;
        let get = |name: &str| t.get(name).ok_or_else(|| corrupt(format!("has no tensor {name:?}")));
        let u = |name: &str| -> Result<Vec<u32>> { Ok(get(name)?.to_dtype(DType::U32)?.to_vec1::<u32>()?) };
        let features = |name: &str| -> Result<Features> {
            let x = get(name)?;
            Ok(if x.dtype() == DType::U32 {
                let len = x.dim(1)?;
                Features::Tokens { ids: x.flatten_all()?.to_vec1::<u32>()?, len }
            } else {
                Features::Dense {
                    values: x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?,
                    dims: x.dims()[1..].to_vec(),
                }
            })
        };
        let set = AdversarialSet {
            eps: get("eps")?.to_dtype(DType::F32)?.to_vec1::<f32>()?.first().copied().unwrap_or(0.0),
            index: u("index")?,
            labels: u("label")?,
            clean: features("clean")?,
            adversarial: features("adversarial")?,
            clean_pred: u("clean_pred")?,
            adversarial_pred: u("adversarial_pred")?,
            norms: get("norm")?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        };
        let n = set.index.len();
        if [set.labels.len(), set.clean.len(), set.adversarial.len(), set.clean_pred.len(), set.norms.len()]
            .iter()
            .any(|&m| m != n)
        {
            return Err(corrupt("its tensors have different numbers of rows".into()));
        }
        Ok(set)
    }
}

/// How a curve is run.
#[derive(Debug, Clone)]
pub struct CurveOptions<'a> {
    /// The attack; its ε is replaced by each of `eps`.
    pub attack: Attack,
    pub eps: Vec<f32>,
    /// A fixed PGD step size instead of 2.5 ε / steps.
    pub fixed_step: Option<f32>,
    pub detector: Option<&'a Detector>,
    /// Names for the record.
    pub split: String,
    pub checkpoint: String,
}

/// Runs the attack at every ε of `opts` over `data`, returning the curve and each ε's
/// adversarial examples.
pub fn robustness_curve(
    net: &Network,
    pipeline: &Pipeline,
    data: &Prepared,
    opts: &CurveOptions,
) -> Result<(Curve, Vec<AdversarialSet>)> {
    let n = data.labels.len();
    if n == 0 {
        return Err(Error::unsuitable("the split has no examples to attack"));
    }
    if opts.eps.is_empty() {
        return Err(Error::argument("no ε to attack with"));
    }
    for &e in &opts.eps {
        opts.attack.with_eps(e, opts.fixed_step).check(net.classes)?;
    }
    let range = InputRange::of(pipeline);
    let text = net.takes_tokens();
    let special = match text {
        true => {
            pipeline.token_words(super::token_table(net)?.dim(0)?)?.map(|w| w.special).unwrap_or_default()
        }
        false => vec![],
    };
    let device = net.device().clone();
    let chunks: Vec<Vec<usize>> = (0..n).collect::<Vec<_>>().chunks(BATCH).map(|c| c.to_vec()).collect();
    // Clean predictions once, for the success rates.
    let mut clean_pred = Vec::with_capacity(n);
    for c in &chunks {
        let x = data.features.batch(c, &device)?;
        clean_pred.extend(net.forward(&x, None)?.argmax(D::Minus1)?.to_vec1::<u32>()?);
    }
    let mut points = Vec::new();
    let mut sets = Vec::new();
    for &eps in &opts.eps {
        let attack = opts.attack.with_eps(eps, opts.fixed_step);
        // One stream per ε, so that a curve's points do not depend on which other radii it has.
        let mut rng = ChaCha8Rng::seed_from_u64(attack.seed ^ (eps.to_bits() as u64).rotate_left(17));
        let mut adv_pred = Vec::with_capacity(n);
        let mut word_pred = Vec::with_capacity(n);
        let mut norm_values = Vec::with_capacity(n);
        let mut flags = Vec::with_capacity(n);
        let mut adv_values: Vec<f32> = Vec::new();
        let mut adv_ids: Vec<u32> = Vec::new();
        for c in &chunks {
            let x = data.features.batch(c, &device)?;
            let labels: Vec<u32> = c.iter().map(|&i| data.labels[i]).collect();
            let space = AttackSpace::new(net, &x)?;
            let adv = perturb(net, &space, &labels, &attack, range.as_ref(), &mut rng)?;
            norm_values.extend(norms(&(&adv - &space.values)?, attack.norm)?.to_vec1::<f32>()?);
            adv_pred.extend(space.logits(net, &adv)?.argmax(D::Minus1)?.to_vec1::<u32>()?);
            let model_input = match &space.ids {
                Some(ids) => {
                    let snapped = snap_to_words(net, &adv, ids, &special)?;
                    word_pred.extend(net.forward(&snapped, None)?.argmax(D::Minus1)?.to_vec1::<u32>()?);
                    adv_ids.extend(snapped.flatten_all()?.to_vec1::<u32>()?);
                    snapped
                }
                None => {
                    adv_values.extend(adv.flatten_all()?.to_vec1::<f32>()?);
                    adv
                }
            };
            if let Some(d) = opts.detector {
                flags.extend(d.flags(net, &model_input)?);
            }
        }
        let labels = &data.labels;
        let correct = |p: &[u32]| p.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / n as f64;
        let success = success_rate(&clean_pred, &adv_pred, labels, attack.target);
        let detected = opts.detector.map(|_| flags.iter().filter(|f| **f).count() as f64 / n as f64);
        let succeeded: Vec<usize> = (0..n)
            .filter(|&i| match attack.target {
                Some(t) => adv_pred[i] as usize == t && labels[i] as usize != t,
                None => adv_pred[i] != labels[i] && clean_pred[i] == labels[i],
            })
            .collect();
        let detected_successful = match (opts.detector, succeeded.is_empty()) {
            (Some(_), false) => {
                Some(succeeded.iter().filter(|&&i| flags[i]).count() as f64 / succeeded.len() as f64)
            }
            _ => None,
        };
        points.push(CurvePoint {
            eps,
            accuracy: correct(&adv_pred),
            success_rate: success,
            mean_norm: norm_values.iter().map(|&v| v as f64).sum::<f64>() / n as f64,
            detected,
            detected_successful,
            word_accuracy: text.then(|| correct(&word_pred)),
            file: None,
            sha256: None,
        });
        let adversarial = match &data.features {
            Features::Dense { dims, .. } => Features::Dense { values: adv_values, dims: dims.clone() },
            Features::Tokens { len, .. } => Features::Tokens { ids: adv_ids, len: *len },
        };
        sets.push(AdversarialSet {
            eps,
            index: (0..n as u32).collect(),
            labels: labels.clone(),
            clean: data.features.clone(),
            adversarial,
            clean_pred: clean_pred.clone(),
            adversarial_pred: if text { word_pred } else { adv_pred },
            norms: norm_values,
        });
    }
    let a = &opts.attack;
    let curve = Curve {
        key: curve_key(a),
        method: a.method,
        norm: a.norm,
        steps: a.steps,
        step_size: if a.method == AttackMethod::Pgd { opts.fixed_step } else { None },
        random_start: a.random_start && a.method == AttackMethod::Pgd,
        last_iterate: a.method == AttackMethod::Pgd && !a.keep_first_success,
        target: a.target,
        seed: a.seed,
        space: if text { "embedding" } else { "input" }.into(),
        units: super::units(pipeline),
        range: range.as_ref().map(|r| r.describe()),
        split: opts.split.clone(),
        checkpoint: opts.checkpoint.clone(),
        examples: n,
        created: now(),
        benign_flagged: opts.detector.and_then(|d| d.benign_fpr),
        points,
    };
    Ok((curve, sets))
}

/// The success rate as the module defines it.
pub fn success_rate(clean: &[u32], adversarial: &[u32], labels: &[u32], target: Option<usize>) -> f64 {
    let (mut tried, mut won) = (0usize, 0usize);
    for i in 0..labels.len() {
        match target {
            Some(t) if labels[i] as usize != t => {
                tried += 1;
                won += usize::from(adversarial[i] as usize == t);
            }
            None if clean[i] == labels[i] => {
                tried += 1;
                won += usize::from(adversarial[i] != labels[i]);
            }
            _ => {}
        }
    }
    if tried == 0 { 0.0 } else { won as f64 / tried as f64 }
}

/// `attacks/index.json`: the curves saved with a run, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttackIndex {
    pub curves: Vec<Curve>,
    /// HotFlip reports on a text model ([`super::hotflip`]), by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flips: Vec<super::hotflip::FlipReport>,
}

/// The run's list of saved curves.
pub const INDEX: &str = "attacks/index.json";

/// The curves saved with a run (none when it was never attacked).
pub fn index(run: &RunDir) -> Result<AttackIndex> {
    let path = run.file(INDEX);
    if !path.exists() {
        return Ok(AttackIndex::default());
    }
    read_json(&path)
}

/// Saves a curve's adversarial examples and the curve itself with the run, replacing an earlier
/// curve of the same key (and its files). Each file is written atomically, the index last, so a
/// reader never finds the index pointing at a missing or half-written file.
pub fn save(run: &RunDir, curve: &mut Curve, sets: &[AdversarialSet]) -> Result<()> {
    let folder = format!("attacks/{}", curve.key);
    let dir = run.file(&folder);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for (point, set) in curve.points.iter_mut().zip(sets) {
        let rel = format!("{folder}/eps-{}.safetensors", fmt_num(point.eps));
        let bytes = set.to_bytes()?;
        write_atomic(&run.file(&rel), &bytes)?;
        point.sha256 = Some(sha256_hex(&bytes));
        point.file = Some(rel);
    }
    let mut idx = index(run)?;
    let kept: Vec<String> = curve.points.iter().filter_map(|p| p.file.clone()).collect();
    if let Some(old) = idx.curves.iter().find(|c| c.key == curve.key) {
        for f in old.points.iter().filter_map(|p| p.file.as_ref()) {
            if !kept.contains(f) {
                let _ = std::fs::remove_file(run.file(f));
            }
        }
    }
    idx.curves.retain(|c| c.key != curve.key);
    idx.curves.push(curve.clone());
    write_json(&run.file(INDEX), &idx)
}

/// Loads a saved adversarial set, refusing a file whose SHA-256 is not the one recorded.
pub fn load_set(run: &RunDir, point: &CurvePoint) -> Result<AdversarialSet> {
    let rel =
        point.file.as_deref().ok_or_else(|| Error::not_found("this curve's examples were not saved"))?;
    let path = run.file(rel);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    if let Some(want) = &point.sha256 {
        let got = sha256_hex(&bytes);
        if &got != want {
            return Err(Error::Corrupt {
                path,
                msg: format!(
                    "SHA-256 {} does not match attacks/index.json ({}): the file was changed",
                    &got[..16],
                    &want[..16.min(want.len())]
                ),
            });
        }
    }
    AdversarialSet::from_bytes(&bytes, &path)
}
