//! HotFlip (Ebrahimi et al., 2018): a discrete attack on text models that swaps whole tokens, so
//! that what comes out is a sentence, not a point of the embedding space. Swapping token `i`
//! (embedding `e_i`) for word `w` changes the loss by about `(E_w − e_i) · ∇_{e_i} L`, a first
//! order estimate read off one gradient with respect to the token embeddings (the same gradient
//! path as PGD, [`super::loss_gradient`]) and one product with the embedding table. Each step
//! takes the `candidates` best estimated flips of an example, re-checks them with a real forward
//! pass, and keeps the one that raises the loss most (or that already fools the model): a greedy
//! search, one more token changed per step, never the same position twice, so the number of
//! flips is the number of tokens changed. Special tokens (padding, the unknown word, BERT's
//! `[CLS]`, `[SEP]`, `[MASK]`, `[unused…]`) are never changed nor put in.
//!
//! The report gives the success rate against the number of tokens changed (1, 2, 3, ...) and
//! the adversarial sentences, each re-checked as text: tokenised anew from its words and sent
//! through the model, as a client of the service would.

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use super::AttackSpace;
use crate::error::{Error, Result};
use crate::ml::data::Features;
use crate::ml::data::preprocess::{PAD, Pipeline, Prepared, TokenWords};
use crate::ml::model::Network;
use crate::store::{RunDir, now, write_json};

/// Examples attacked at once: each step sends `BATCH × candidates` sentences forward.
const BATCH: usize = 64;
/// Rows of the `(positions, vocabulary)` score matrix made at once (64 MB of f32 for BERT's
/// 30,522 words), so a large vocabulary does not need gigabytes.
const SCORE_ROWS: usize = 512;
/// Successful adversarial sentences kept in the report (the rest are counted).
pub const KEPT: usize = 200;

/// How a HotFlip attack runs.
#[derive(Debug, Clone, PartialEq)]
pub struct FlipOptions {
    /// The most tokens an example may have changed.
    pub max_flips: usize,
    /// Flips per example and step re-checked with a real forward pass (1 trusts the estimate).
    pub candidates: usize,
    /// Push every input toward this class instead of away from its own.
    pub target: Option<usize>,
    /// Names for the record.
    pub split: String,
    pub checkpoint: String,
}

impl FlipOptions {
    /// Refuses settings that cannot be run, saying which and why.
    pub fn check(&self, classes: usize) -> Result<()> {
        if !(1..=MAX_FLIPS).contains(&self.max_flips) {
            return Err(Error::argument(format!(
                "--flips {}: HotFlip changes between 1 and {MAX_FLIPS} tokens",
                self.max_flips
            )));
        }
        if !(1..=1000).contains(&self.candidates) {
            return Err(Error::argument(format!(
                "--candidates {}: between 1 and 1000 flips are re-checked per step",
                self.candidates
            )));
        }
        if let Some(t) = self.target
            && t >= classes
        {
            return Err(Error::argument(format!(
                "target class {t} does not exist: the model has {classes} classes (0 to {})",
                classes - 1
            )));
        }
        Ok(())
    }
}

/// The most tokens one attack may change.
pub const MAX_FLIPS: usize = 20;

/// The attack's result at one number of tokens changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlipPoint {
    /// Tokens changed (at most).
    pub flips: usize,
    /// Accuracy on the split when each example may have this many tokens changed.
    pub accuracy: f64,
    /// The share of the attacked examples fooled with at most this many tokens changed.
    pub success_rate: f64,
    /// How many that is.
    pub fooled: usize,
}

/// One token swapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flip {
    /// The token's position in the model's input.
    pub position: usize,
    pub from: String,
    pub to: String,
}

/// An adversarial sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlippedExample {
    /// The example's number in the split.
    pub index: usize,
    pub label: usize,
    pub clean_pred: usize,
    /// The prediction on the flipped tokens.
    pub adversarial_pred: usize,
    /// The prediction when the adversarial text is tokenised anew and sent, as a client would.
    pub text_pred: usize,
    /// The swaps, in the order the search made them.
    pub flips: Vec<Flip>,
    pub clean: String,
    /// The adversarial text, the changed tokens in `*stars*`.
    pub adversarial: String,
}

/// A HotFlip attack on one run: the success rate per number of tokens changed and the
/// adversarial sentences, saved in `attacks/index.json` beside the robustness curves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlipReport {
    /// `hotflip`, or `hotflip-to3` when targeted at class 3.
    pub key: String,
    pub max_flips: usize,
    pub candidates: usize,
    pub target: Option<usize>,
    pub split: String,
    pub checkpoint: String,
    /// Examples in the split.
    pub examples: usize,
    /// Examples attacked: those the model gets right (untargeted), or those not of the target
    /// class (targeted); the success rates are shares of these.
    pub attacked: usize,
    pub clean_accuracy: f64,
    /// The run's class names, by index, so that the labels above read without the run.
    #[serde(default)]
    pub classes: Vec<String>,
    pub points: Vec<FlipPoint>,
    /// The successful examples (the first [`KEPT`]), fewest flips first.
    pub adversarial: Vec<FlippedExample>,
    /// Successful examples whose adversarial text, tokenised anew, still fools the model.
    pub fool_as_text: usize,
    pub created: String,
}

impl FlipReport {
    /// `HotFlip ≤3 tokens`, for legends.
    pub fn label(&self) -> String {
        let mut s = format!("HotFlip ≤{} tokens", self.max_flips);
        if let Some(t) = self.target {
            s.push_str(&format!(" → {t}"));
        }
        s
    }
}

/// The report's key for these options.
pub fn key(opts: &FlipOptions) -> String {
    match opts.target {
        Some(t) => format!("hotflip-to{t}"),
        None => "hotflip".into(),
    }
}

/// One example under attack.
struct Search {
    index: usize,
    ids: Vec<u32>,
    label: u32,
    /// The class the loss is taken on: the label (climbed) or the target (descended).
    goal: u32,
    flips: Vec<(usize, u32, u32)>,
    /// Flips it took to succeed.
    fooled_at: Option<usize>,
    pred: u32,
    /// No flip is left to try (every position changed, or no word allowed).
    stuck: bool,
}

/// Runs HotFlip over `data`.
pub fn hotflip(
    net: &Network,
    pipeline: &Pipeline,
    data: &Prepared,
    opts: &FlipOptions,
) -> Result<FlipReport> {
    opts.check(net.classes)?;
    let table = super::token_table(net)?.detach();
    let rows = table.dim(0)?;
    let words = pipeline.token_words(rows)?.ok_or_else(|| {
        Error::unsuitable("this run's preprocessing has no vocabulary: it is not a text model")
    })?;
    let Features::Tokens { ids, len } = &data.features else {
        return Err(Error::unsuitable("HotFlip swaps tokens: this split holds numbers, not token ids"));
    };
    let n = data.labels.len();
    if n == 0 {
        return Err(Error::unsuitable("the split has no examples to attack"));
    }
    let device = net.device().clone();
    let clean_pred = predict(net, ids, *len, &device)?;
    let target = opts.target.map(|t| t as u32);
    let mut searches: Vec<Search> = (0..n)
        .filter(|&i| match target {
            Some(t) => data.labels[i] != t,
            None => clean_pred[i] == data.labels[i],
        })
        .map(|i| {
            let pred = clean_pred[i];
            Search {
                index: i,
                ids: ids[i * len..(i + 1) * len].to_vec(),
                label: data.labels[i],
                goal: target.unwrap_or(data.labels[i]),
                flips: vec![],
                // Targeted: an example already predicted as the target needs no flip.
                fooled_at: (target == Some(pred)).then_some(0),
                pred,
                stuck: false,
            }
        })
        .collect();
    let attacked = searches.len();
    for chunk in searches.chunks_mut(BATCH) {
        for _ in 0..opts.max_flips {
            let mut live: Vec<&mut Search> =
                chunk.iter_mut().filter(|s| s.fooled_at.is_none() && !s.stuck).collect();
            if live.is_empty() {
                break;
            }
            step(net, &table, &words, &mut live, opts, *len)?;
        }
    }
    // Each example's prediction once it may have k tokens changed.
    let mut pred_at: Vec<Vec<u32>> = vec![clean_pred.clone(); opts.max_flips + 1];
    for s in &searches {
        for (k, preds) in pred_at.iter_mut().enumerate() {
            if s.fooled_at.is_some_and(|f| f <= k) {
                preds[s.index] = s.pred;
            }
        }
    }
    let points = (1..=opts.max_flips)
        .map(|k| {
            let fooled = searches.iter().filter(|s| s.fooled_at.is_some_and(|f| f <= k)).count();
            let right = pred_at[k].iter().zip(&data.labels).filter(|(p, y)| p == y).count();
            FlipPoint {
                flips: k,
                accuracy: right as f64 / n as f64,
                success_rate: if attacked == 0 { 0.0 } else { fooled as f64 / attacked as f64 },
                fooled,
            }
        })
        .collect();
    // An example the model already put in the target class is counted, but is no sentence to show.
    let mut won: Vec<&Search> = searches.iter().filter(|s| s.fooled_at.is_some_and(|f| f > 0)).collect();
    won.sort_by_key(|s| (s.fooled_at, s.index));
    won.truncate(KEPT);
    let mut adversarial = Vec::with_capacity(won.len());
    for s in won {
        let marked: Vec<usize> = s.flips.iter().map(|f| f.0).collect();
        let plain = words.text(&s.ids, &[]);
        // What a client sending the text would get: the sentence tokenised anew.
        let again = pipeline.encode(&plain).map_err(Error::argument)?;
        let text_pred = predict(net, &again, again.len(), &device)?[0];
        let word = |id: u32| words.words.get(id as usize).cloned().unwrap_or_default();
        adversarial.push(FlippedExample {
            index: s.index,
            label: s.label as usize,
            clean_pred: clean_pred[s.index] as usize,
            adversarial_pred: s.pred as usize,
            text_pred: text_pred as usize,
            flips: s
                .flips
                .iter()
                .map(|&(p, from, to)| Flip { position: p, from: word(from), to: word(to) })
                .collect(),
            clean: words.text(&ids[s.index * len..(s.index + 1) * len], &[]),
            adversarial: words.text(&s.ids, &marked),
        });
    }
    let fool_as_text = adversarial
        .iter()
        .filter(|e| match target {
            Some(t) => e.text_pred == t as usize,
            None => e.text_pred != e.label,
        })
        .count();
    let right = clean_pred.iter().zip(&data.labels).filter(|(p, y)| p == y).count();
    Ok(FlipReport {
        key: key(opts),
        max_flips: opts.max_flips,
        candidates: opts.candidates,
        target: opts.target,
        split: opts.split.clone(),
        checkpoint: opts.checkpoint.clone(),
        examples: n,
        attacked,
        clean_accuracy: right as f64 / n as f64,
        classes: pipeline.classes.clone(),
        points,
        adversarial,
        fool_as_text,
        created: now(),
    })
}

/// Predictions for rows of `len` token ids.
fn predict(net: &Network, ids: &[u32], len: usize, device: &candle_core::Device) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(ids.len() / len.max(1));
    for rows in ids.chunks(len * 256) {
        let x = Tensor::from_slice(rows, (rows.len() / len, len), device)?;
        out.extend(net.forward(&x, None)?.argmax(D::Minus1)?.to_vec1::<u32>()?);
    }
    Ok(out)
}

/// One greedy step for the live examples: the first-order scores of every flip, the best
/// `candidates` of each example re-checked by a forward pass, the best of those kept.
fn step(
    net: &Network,
    table: &Tensor,
    words: &TokenWords,
    live: &mut [&mut Search],
    opts: &FlipOptions,
    len: usize,
) -> Result<()> {
    let device = table.device();
    let b = live.len();
    let vocab = table.dim(0)?;
    let flat: Vec<u32> = live.iter().flat_map(|s| s.ids.iter().copied()).collect();
    let x = Tensor::from_vec(flat, (b, len), device)?;
    let space = AttackSpace::new(net, &x)?;
    let goal = Tensor::from_vec(live.iter().map(|s| s.goal).collect::<Vec<_>>(), b, device)?;
    let (_, grad) = super::loss_gradient(net, &space, &space.values, &goal)?;
    // Untargeted searches climb the label's loss; targeted ones descend the target's.
    let sign = if opts.target.is_some() { -1.0f32 } else { 1.0 };
    let e = grad.dim(2)?;
    let grad = grad.reshape((b * len, e))?;
    // g_i · e_i, what each position's own token contributes, subtracted from every g_i · E_w.
    let own = (&grad * space.values.reshape((b * len, e))?)?.sum(1)?.to_vec1::<f32>()?;
    let table_t = table.t()?.contiguous()?;
    let mut best: Vec<Vec<(f32, usize, u32)>> = vec![Vec::new(); b];
    let mut row = 0;
    while row < b * len {
        let take = SCORE_ROWS.min(b * len - row);
        let scores = grad.narrow(0, row, take)?.matmul(&table_t)?.to_vec2::<f32>()?;
        for (r, s) in scores.iter().enumerate() {
            let at = row + r;
            let (ex, pos) = (at / len, at % len);
            let search = &live[ex];
            let cur = search.ids[pos];
            if cur == PAD
                || words.special.get(cur as usize).copied().unwrap_or(true)
                || search.flips.iter().any(|f| f.0 == pos)
            {
                continue;
            }
            let top = &mut best[ex];
            for (w, &gw) in s.iter().enumerate().take(vocab) {
                if w as u32 == cur || words.special[w] {
                    continue;
                }
                let gain = sign * (gw - own[at]);
                if top.len() < opts.candidates {
                    top.push((gain, pos, w as u32));
                    if top.len() == opts.candidates {
                        top.sort_by(|a, b| b.0.total_cmp(&a.0));
                    }
                } else if gain > top[top.len() - 1].0 {
                    // Insert in order, dropping the worst: candidates are few, so this is cheap.
                    let at = top.partition_point(|c| c.0 >= gain);
                    top.insert(at, (gain, pos, w as u32));
                    top.pop();
                }
            }
        }
        row += take;
    }
    // The real check: every candidate flip of every example in one batch of sentences.
    let mut sentences = Vec::new();
    let mut owner = Vec::new();
    for (ex, cands) in best.iter().enumerate() {
        for &(_, pos, w) in cands {
            let mut ids = live[ex].ids.clone();
            ids[pos] = w;
            sentences.extend(ids);
            owner.push(ex);
        }
    }
    let mut logp = Vec::with_capacity(owner.len());
    let mut preds = Vec::with_capacity(owner.len());
    for rows in sentences.chunks(len * 256) {
        let x = Tensor::from_slice(rows, (rows.len() / len, len), device)?;
        let logits = net.forward(&x, None)?;
        preds.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        logp.extend(candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?);
    }
    let mut at = 0;
    for (ex, cands) in best.iter().enumerate() {
        let s = &mut *live[ex];
        if cands.is_empty() {
            s.stuck = true;
            continue;
        }
        let won = |p: u32| match opts.target {
            Some(t) => p == t as u32,
            None => p != s.label,
        };
        // A flip that fools the model wins; among equals, the one that moves the loss most.
        let mut pick = at;
        let objective = |i: usize| sign * -logp[i][s.goal as usize];
        for i in at..at + cands.len() {
            let better = (won(preds[i]), objective(i)) > (won(preds[pick]), objective(pick));
            if better {
                pick = i;
            }
        }
        let (_, pos, w) = cands[pick - at];
        s.flips.push((pos, s.ids[pos], w));
        s.ids[pos] = w;
        s.pred = preds[pick];
        if won(s.pred) {
            s.fooled_at = Some(s.flips.len());
        }
        at += cands.len();
    }
    Ok(())
}

/// Saves a HotFlip report with the run in `attacks/index.json`, replacing one of the same key.
pub fn save(run: &RunDir, report: &FlipReport) -> Result<()> {
    let dir = run.file("attacks");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut idx = super::curve::index(run)?;
    idx.flips.retain(|r| r.key != report.key);
    idx.flips.push(report.clone());
    write_json(&run.file(super::curve::INDEX), &idx)
}
