//! The run store on disk: `runs/<run-id>/` holds everything about one training run, and is the
//! source of truth for every view of it, so that a run started by another process shows up and
//! updates live. Files that are rewritten are written atomically (write a temporary file, then
//! rename); logs are appended one whole line per write, and readers skip a torn last line.
//!
//! ```text
//! runs/<id>/run.json            status, progress and headline metrics (RunInfo)
//!          spec.ron             the spec as run (after command-line overrides)
//!          preprocess.json      the fitted preprocessing (Pipeline)
//!          metrics.jsonl        one line per step and per epoch (MetricLine)
//!          events.jsonl         the run's log: started, checkpoint saved, paused, failed (EventLine)
//!          checkpoints/best.safetensors, last.safetensors, optimizer.safetensors, index.json
//!                               (saved together with the manifest, or not at all: commit.rs)
//!          eval.json            the final evaluation on the test split
//!          manifest.json        SHA-256 of every other file
//!          notes.json           tags and a note set by the user (notes.rs)
//! runs/system.jsonl             the machine's history, one point per 10 s (system_log.rs)
//! ```

pub mod atomic;
pub mod commit;
pub mod notes;
mod run_id;
mod run_store;
pub mod seal;
pub mod sign;
pub mod system_log;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use self::atomic::{append_line, write_atomic};
pub use self::run_id::RunId;
pub use self::run_store::RunStore;
use self::seal::SealKey;
use crate::error::{Error, Result};
use crate::ml::data::preprocess::Pipeline;
use crate::ml::metrics::Evaluation;
use crate::ml::spec::ExperimentSpec;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// Whether the run may still change.
    pub fn is_active(&self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running | RunStatus::Paused)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `run.json`: what a table of runs shows, rewritten as the run goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: RunId,
    /// The spec's name.
    pub spec: String,
    /// The model family (mlp, cnn, lstm, ...).
    pub model: String,
    pub status: RunStatus,
    /// RFC 3339 times.
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub updated: String,
    /// Completed epochs.
    pub epoch: usize,
    pub epochs: usize,
    /// Completed optimiser steps.
    pub step: u64,
    pub steps_per_epoch: u64,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub best_val_accuracy: Option<f64>,
    pub best_epoch: Option<usize>,
    pub test_accuracy: Option<f64>,
    pub test_macro_f1: Option<f64>,
    /// The membership-inference attacker's advantage on the final model (see `privacy.json`).
    #[serde(default)]
    pub membership_advantage: Option<f64>,
    /// Privacy spent so far by DP-SGD training, updated every epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpSpent>,
    /// Seconds spent training, pauses excluded.
    pub duration_s: f64,
    pub samples_per_sec: Option<f64>,
    pub failure: Option<String>,
    /// The process training it, so that a viewer can tell a run whose trainer died.
    pub pid: Option<u32>,
    pub seed: u64,
}

/// The (ε, δ) a DP-SGD run has spent, and the settings that spent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpSpent {
    pub epsilon: f64,
    pub delta: f64,
    /// The noise multiplier σ.
    pub sigma: f64,
    pub clip_norm: f64,
    /// Poisson sampling rate: expected batch / training examples.
    pub sample_rate: f64,
    /// Noisy optimiser steps taken.
    pub steps: u64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricLine {
    Step {
        step: u64,
        epoch: usize,
        loss: f64,
        lr: f64,
        samples_per_sec: f64,
        /// Seconds of training since the run started.
        time: f64,
    },
    Epoch(EpochMetrics),
}

/// One finished epoch's numbers: the `epoch` line of `metrics.jsonl`, the console's per-epoch
/// curves, and (with what a live run adds) the training loop's epoch report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_macro_f1: f64,
    pub lr: f64,
    /// Seconds of training since the run started.
    pub time: f64,
}

impl MetricLine {
    /// The global step the line belongs to.
    pub fn step(&self) -> u64 {
        match self {
            MetricLine::Step { step, .. } => *step,
            MetricLine::Epoch(m) => m.step,
        }
    }
}

/// One line of `events.jsonl`: the run's log as a person reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    pub time: String,
    pub kind: EventKind,
    pub message: String,
}

/// What a line of a run's log is about; written in snake case (`early_stop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    Data,
    Privacy,
    Checkpoint,
    Paused,
    Resumed,
    EarlyStop,
    Finished,
    Failed,
    Cancelled,
    /// The attempt before ended without a final status (its process was killed or the machine
    /// stopped); written by the resume that notices it.
    Interrupted,
    Detector,
    /// Something in an external run's logs could not be read (file and position named).
    Warning,
}

impl EventKind {
    /// The kind as written in `events.jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Data => "data",
            EventKind::Privacy => "privacy",
            EventKind::Checkpoint => "checkpoint",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::EarlyStop => "early_stop",
            EventKind::Finished => "finished",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
            EventKind::Interrupted => "interrupted",
            EventKind::Detector => "detector",
            EventKind::Warning => "warning",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that the console's `{:<10}` aligns the kinds.
        f.pad(self.as_str())
    }
}

/// A saved checkpoint with the metrics it was saved at (`checkpoints/index.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    pub kind: CheckpointKind,
    pub file: String,
    pub epoch: usize,
    pub step: u64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_macro_f1: f64,
    pub sha256: String,
    pub time: String,
}

/// What `--resume` needs to continue a run exactly where its last checkpoint left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    pub epoch: usize,
    pub step: u64,
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Best value of the early-stopping metric, which may differ from the checkpoint's.
    #[serde(default)]
    pub es_best: Option<f64>,
    pub bad_epochs: usize,
    pub duration_s: f64,
    pub optimizer_steps: u64,
}

/// Where a run's [`CheckpointIndex`] is kept.
pub const INDEX: &str = "checkpoints/index.json";

/// `checkpoints/index.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointIndex {
    pub entries: Vec<CheckpointEntry>,
    pub resume: Option<ResumeState>,
}

/// `manifest.json`: the SHA-256 of every file in the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// Checks that `bytes`, read from `path` (the run's file `rel`), are the bytes the manifest
    /// lists: a file missing from the manifest is treated like a changed one.
    pub fn vouch(&self, rel: &str, path: &Path, bytes: &[u8]) -> Result<()> {
        let want = self.files.get(rel).ok_or_else(|| Error::Corrupt {
            path: path.to_path_buf(),
            msg: "is not listed in the run's manifest".into(),
        })?;
        let got = sha256_hex(bytes);
        if &got != want {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                msg: format!(
                    "SHA-256 {} does not match the run's manifest ({}): the file was changed after training",
                    &got[..16],
                    &want[..16.min(want.len())]
                ),
            });
        }
        Ok(())
    }
}

/// A request to a run's trainer, written to the run's `control` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    Pause,
    Run,
    Stop,
}

impl ControlRequest {
    pub fn as_str(&self) -> &'static str {
        match self {
            ControlRequest::Pause => "pause",
            ControlRequest::Run => "run",
            ControlRequest::Stop => "stop",
        }
    }
}

/// A run's two checkpoints: the one with the best validation metric and the rolling last one.
/// Written as `"best"` / `"last"` in `checkpoints/index.json` and in training events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    Best,
    Last,
}

impl CheckpointKind {
    /// `"best"` or `"last"`, as in file names and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Best => "best",
            CheckpointKind::Last => "last",
        }
    }

    /// The checkpoint's file inside the run folder.
    pub fn file(&self) -> &'static str {
        match self {
            CheckpointKind::Best => "checkpoints/best.safetensors",
            CheckpointKind::Last => "checkpoints/last.safetensors",
        }
    }
}

impl std::fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a process is alive (Linux: its /proc entry exists). Elsewhere, assume it is, so that
/// nothing is ever resumed twice.
pub fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") { Path::new(&format!("/proc/{pid}")).exists() } else { true }
}

/// A duration for people: "42s", "1m05s", "2h03m".
pub fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Current time as RFC 3339 (UTC).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times always format")
}

/// One run's folder, with the store's sealing key.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub id: RunId,
    pub path: PathBuf,
    key: Option<Arc<SealKey>>,
}

/// SHA-256 of bytes, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        msg: format!("line {}, column {}: {e}", e.line(), e.column()),
    })
}

/// Writes a JSON file atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).expect("store types always serialise");
    write_atomic(path, &text)
}

/// Reads the complete JSON lines of a file from byte `offset`; returns them and the offset
/// after the last complete line, so that a follower can call again for what comes next.
/// A torn last line (a writer mid-append, or a crash) is left for the next call.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path, offset: u64) -> Result<(Vec<T>, u64)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], offset)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    // A file that shrank was rewritten (a resumed run trims it): read it again from the start.
    let offset = if offset > len { 0 } else { offset };
    file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut pos = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| Error::io(path, e))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        pos += n as u64;
        if let Ok(v) = serde_json::from_str(line.trim_end()) {
            out.push(v);
        }
    }
    Ok((out, pos))
}

impl RunDir {
    /// A file inside the run.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn info(&self) -> Result<RunInfo> {
        read_json(&self.file("run.json"))
    }

    pub fn write_info(&self, info: &RunInfo) -> Result<()> {
        write_json(&self.file("run.json"), info)
    }

    /// Reads `run.json`, changes it and writes it back.
    pub fn update_info(&self, f: impl FnOnce(&mut RunInfo)) -> Result<RunInfo> {
        let mut info = self.info()?;
        f(&mut info);
        info.updated = now();
        self.write_info(&info)?;
        Ok(info)
    }

    /// The spec as run.
    pub fn spec(&self) -> Result<ExperimentSpec> {
        ExperimentSpec::load(&self.file("spec.ron"))
    }

    pub fn pipeline(&self) -> Result<Pipeline> {
        let path = self.file("preprocess.json");
        let bytes = self.read_sensitive("preprocess.json")?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path,
            msg: format!("line {}, column {}: {e}", e.line(), e.column()),
        })
    }

    pub fn write_pipeline(&self, p: &Pipeline) -> Result<()> {
        self.write_sensitive("preprocess.json", &serde_json::to_vec_pretty(p).expect("serialises"))
    }

    /// The key the run's sealed files open with (the store's), if one was given.
    pub fn key(&self) -> Option<&SealKey> {
        self.key.as_deref()
    }

    /// Whether the run's sensitive files are sealed (`vigil seal`).
    pub fn is_sealed(&self) -> bool {
        self.file("sealed").exists()
    }

    /// Reads a file of the run, decrypting it when it is sealed.
    pub fn read_sensitive(&self, rel: &str) -> Result<Vec<u8>> {
        seal::read(&self.file(rel), rel, self.key())
    }

    /// Writes a file of the run atomically, sealed when the run is sealed.
    pub fn write_sensitive(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        seal::write(&self.file(rel), rel, bytes, self.is_sealed(), self.key())
    }

    /// Encrypts the run's sensitive files in place. Nothing is written for a file that is
    /// already sealed; a failure leaves the files written so far sealed and the rest as they were.
    pub fn seal(&self, key: &seal::SealKey) -> Result<usize> {
        let mut n = 0;
        for rel in seal::SENSITIVE {
            let path = self.file(rel);
            let Ok(bytes) = std::fs::read(&path) else { continue };
            if seal::is_sealed(&bytes) {
                continue;
            }
            write_atomic(&path, &key.seal(rel, &bytes))?;
            n += 1;
        }
        write_atomic(&self.file("sealed"), key.id().as_bytes())?;
        Ok(n)
    }

    /// Decrypts the run's sealed files in place, after checking every one of them opens, so a
    /// wrong key or a damaged file changes nothing.
    pub fn unseal(&self, key: &seal::SealKey) -> Result<usize> {
        let mut plain = Vec::new();
        for rel in seal::SENSITIVE {
            let path = self.file(rel);
            let Ok(bytes) = std::fs::read(&path) else { continue };
            if seal::is_sealed(&bytes) {
                plain.push((path.clone(), key.open(rel, &bytes, &path)?));
            }
        }
        for (path, bytes) in &plain {
            write_atomic(path, bytes)?;
        }
        let marker = self.file("sealed");
        if marker.exists() {
            std::fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
        }
        Ok(plain.len())
    }

    pub fn append_metric(&self, line: &MetricLine) -> Result<()> {
        append_line(&self.file("metrics.jsonl"), &serde_json::to_string(line).expect("serialises"))
    }

    /// Every complete metrics line.
    pub fn metrics(&self) -> Result<Vec<MetricLine>> {
        Ok(read_jsonl(&self.file("metrics.jsonl"), 0)?.0)
    }

    /// Drops metric lines after `step` (a resumed run repeats the steps after its checkpoint).
    /// The lines kept are written back byte for byte: parsing and printing them again moved
    /// some values by one unit in the last place, so a resumed run's early epochs differed from
    /// an uninterrupted run's.
    pub fn truncate_metrics(&self, step: u64) -> Result<()> {
        let path = self.file("metrics.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut kept = String::with_capacity(text.len());
        // Whole lines only: a torn last line (the kill came mid-append) is dropped too.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            if serde_json::from_str::<MetricLine>(line.trim_end()).is_ok_and(|m| m.step() <= step) {
                kept.push_str(line);
            }
        }
        write_atomic(&path, kept.as_bytes())
    }

    pub fn log(&self, kind: EventKind, message: impl Into<String>) -> Result<()> {
        let line = EventLine { time: now(), kind, message: message.into() };
        append_line(&self.file("events.jsonl"), &serde_json::to_string(&line).expect("serialises"))
    }

    pub fn events(&self) -> Result<Vec<EventLine>> {
        Ok(read_jsonl(&self.file("events.jsonl"), 0)?.0)
    }

    pub fn checkpoints(&self) -> Result<CheckpointIndex> {
        let path = self.file(INDEX);
        if !path.exists() {
            return Ok(CheckpointIndex::default());
        }
        read_json(&path)
    }

    pub fn write_checkpoints(&self, index: &CheckpointIndex) -> Result<()> {
        write_json(&self.file(INDEX), index)
    }

    pub fn evaluation(&self) -> Result<Evaluation> {
        read_json(&self.file("eval.json"))
    }

    /// Reads a checkpoint's bytes after checking them against the manifest, so that a file
    /// changed on disk is refused by name rather than loaded.
    pub fn checkpoint_bytes(&self, which: CheckpointKind) -> Result<Vec<u8>> {
        let rel = which.file();
        let path = self.file(rel);
        if !path.exists() && !self.file(&commit::pending_rel(rel)).exists() {
            return Err(Error::not_found(format!(
                "run {} has no {} checkpoint yet ({} is missing)",
                self.id,
                which,
                path.display()
            )));
        }
        // A checkpoint is only trusted when the manifest vouches for it: a deleted manifest or
        // an entry that is missing is treated like a changed file.
        let manifest = self.manifest().map_err(|e| Error::Corrupt {
            path: self.file("manifest.json"),
            msg: format!("cannot verify {rel} without the run's manifest: {e}"),
        })?;
        self.vouched_bytes(rel, &manifest)
    }

    /// Asks whatever process trains this run to pause, resume or stop, through the run's
    /// `control` file; the trainer reads it between steps. This is how a console steers a run
    /// that another process (`vigil train` in another shell, a batch job) is training.
    pub fn write_control(&self, request: ControlRequest) -> Result<()> {
        write_atomic(&self.file("control"), request.as_str().as_bytes())
    }

    /// The last request written to the `control` file, if any.
    pub fn read_control(&self) -> Option<ControlRequest> {
        let text = std::fs::read_to_string(self.file("control")).ok()?;
        match text.trim() {
            "pause" => Some(ControlRequest::Pause),
            "run" => Some(ControlRequest::Run),
            "stop" => Some(ControlRequest::Stop),
            _ => None,
        }
    }

    pub fn manifest(&self) -> Result<Manifest> {
        read_json(&self.file("manifest.json"))
    }

    /// Hashes every file in the run (but the manifest itself and temporary files) into
    /// `manifest.json`.
    pub fn write_manifest(&self) -> Result<Manifest> {
        self.write_manifest_with(&[])
    }

    /// Like [`RunDir::write_manifest`], with the files of a checkpoint save listed by the
    /// hashes they are staged with (`(file, SHA-256)`), not those of the files in place.
    pub(crate) fn write_manifest_with(&self, staged: &[(String, String)]) -> Result<Manifest> {
        let previous = self.manifest().unwrap_or_default();
        let mut files = BTreeMap::new();
        let mut stack = vec![self.path.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            for entry in entries.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p
                    .strip_prefix(&self.path)
                    .expect("walked from the run folder")
                    .to_string_lossy()
                    .replace('\\', "/");
                // The control file is a mailbox, not part of what was trained; the signature
                // signs the manifest, so it cannot be in it. Saved attacks are analyses redone at
                // will, with their own hashes in attacks/index.json: a signed run stays
                // verifiable after `vigil attack`.
                // A Slurm job's state (slurm.json) is the scheduler's news, rewritten after; tags
                // and notes (notes.json) describe the run: neither is what was trained.
                if matches!(
                    rel.as_str(),
                    "manifest.json" | "control" | "signature.json" | "slurm.json" | notes::FILE
                ) || rel.ends_with(".tmp")
                    || rel.ends_with(commit::PENDING)
                    || rel.starts_with("attacks/")
                {
                    continue;
                }
                let mut bytes = Vec::new();
                std::fs::File::open(&p)
                    .and_then(|mut f| f.read_to_end(&mut bytes))
                    .map_err(|e| Error::io(&p, e))?;
                // Hashes are of the plain content, so sealing does not change the manifest; a
                // sealed file this process cannot open keeps the hash it had.
                if seal::is_sealed(&bytes) {
                    match self.key().map(|k| k.open(&rel, &bytes, &p)) {
                        Some(Ok(plain)) => bytes = plain,
                        _ => {
                            if let Some(h) = previous.files.get(&rel) {
                                files.insert(rel, h.clone());
                            }
                            continue;
                        }
                    }
                }
                files.insert(rel, sha256_hex(&bytes));
            }
        }
        for (rel, sha) in staged {
            files.insert(rel.clone(), sha.clone());
        }
        let manifest = Manifest { files };
        write_json(&self.file("manifest.json"), &manifest)?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_reader_skips_a_torn_last_line_and_follows_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let (lines, offset) = read_jsonl::<serde_json::Value>(&path, 0).unwrap();
        assert_eq!(lines.len(), 2);
        // The writer finishes the line: the follower picks it up from where it stopped.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b"3}\n").unwrap();
        let (more, _) = read_jsonl::<serde_json::Value>(&path, offset).unwrap();
        assert_eq!(more, vec![serde_json::json!({"a": 3})]);
    }
}
