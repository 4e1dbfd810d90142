//! The access log: one JSON line per request in `<runs-dir>/access.jsonl`, hash-chained and
//! rotated by size.
//!
//! Requests never wait for the disk: a handler hands an [`AccessEvent`] to a channel and a
//! writer thread formats, hashes and appends the lines in batches, writing whatever has queued
//! up with one `write` about every millisecond under load (so a line reaches the file a
//! millisecond or two after its response). The channel is unbounded, so nothing is ever
//! dropped; the writer drains it completely, and syncs the file, before it stops at shutdown.
//!
//! Each line carries `seq` (1, 2, 3, ... across files and restarts), `prev` (the hash of the
//! line before) and `hash`, the SHA-256 of the line's text without its `hash` field. When the
//! file passes the size limit it is renamed `access.<N>.jsonl` (N = 1, 2, ...; rotated files are
//! never overwritten) and the chain continues in a fresh `access.jsonl`. `access.head.json`
//! records the newest line's seq and hash about once a second, so that cutting lines off the
//! end is caught too. Checking the chain is [`super::audit`]'s job; reading the log as it grows
//! is [`super::monitor`]'s.
//!
//! For data minimisation a line holds a SHA-256 of each input (its f32 values, little-endian, or
//! its UTF-8 text), not the input; raw inputs are logged only when the operator asks.
//!
//! When a write fails (a full disk), the writer cuts whatever part of the batch reached the file,
//! so the file still ends in a whole line, keeps the batch and tries again every 100 ms. While it
//! fails, [`AccessLog::refusal`] tells the gate to answer 503 (fail closed: the service does not
//! serve requests it cannot log), unless the operator chose fail-open; lines that arrive
//! meanwhile wait in memory up to [`MAX_PENDING`] bytes and are counted, not kept, past that.
//! When a write works again the waiting lines go out in order and one more line records the
//! outage (when, why, how many requests were refused or went unlogged), so the chain has no gap.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::{RawBatch, ServedModel};
use super::policy::OutputPolicy;
use crate::error::{Error, Result};

/// The current log file's name inside the run store.
pub const ACCESS_LOG: &str = "access.jsonl";
/// The file that remembers the newest line, to catch lines cut off the end.
pub const ACCESS_HEAD: &str = "access.head.json";
/// `prev` of the very first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The longest request path logged (a client chooses it; the rest is cut).
const MAX_PATH: usize = 256;
/// Bytes of formatted lines kept in memory while the log cannot be written; requests past that
/// are counted as unlogged instead, so a long outage under fail-open cannot exhaust memory.
pub const MAX_PENDING: usize = 16 * 1024 * 1024;
/// The `request_id` of the line that records an outage of the log.
pub const OUTAGE_ID: &str = "log-outage";

/// A mark a detector leaves on a request in the access log; written as `"ood"` or
/// `"extraction"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flag {
    /// The input detector found an input unlike the training data.
    Ood,
    /// The key is in PRADA's model-extraction alarm (or, on the language-model routes, its
    /// traffic looks like distillation: see `serve::llm::extraction`).
    Extraction,
    /// The sensitive-data screen found something in a completion (e-mail address, key-like
    /// string); the line's `generation.screened` says what.
    Sensitive,
}

impl Flag {
    /// The flag as written in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Ood => "ood",
            Flag::Extraction => "extraction",
            Flag::Sensitive => "sensitive",
        }
    }
}

impl std::fmt::Display for Flag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Flag {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ood" => Ok(Flag::Ood),
            "extraction" => Ok(Flag::Extraction),
            "sensitive" => Ok(Flag::Sensitive),
            other => Err(format!("unknown flag {other:?} (expected ood, extraction or sensitive)")),
        }
    }
}

/// So that a list of flags joins into text (`flags.join(",")`) as a list of strings did.
impl std::borrow::Borrow<str> for Flag {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// What a handler found out about a request, for its log line: the handler hands it to the gate
/// (as a response extension), and the gate adds what it knows ([`AccessEvent`]).
#[derive(Debug, Clone, Default)]
pub struct RequestNote {
    pub model: Option<Arc<ServedModel>>,
    /// Number of inputs in the request (0 when it never got that far).
    pub inputs: usize,
    /// Predicted class indices, one per input.
    pub labels: Vec<u32>,
    /// The raw inputs, hashed by the writer (and written out when raw logging is on).
    pub raw: Option<RawBatch>,
    pub policy: Option<OutputPolicy>,
    /// What is left of the key's budget after this request.
    pub budget_left: Option<u64>,
    /// The body's size as the handler read it, when it did (the gate knows only the header's).
    pub body_bytes: Option<u64>,
    /// Marks left by detectors: `ood` (the input detector flagged an input), `extraction`
    /// (the key is in PRADA's extraction alarm).
    pub flags: Vec<Flag>,
    /// The key's current PRADA statistic (Shapiro–Wilk W of its queries' distances), once known.
    pub extraction_w: Option<f64>,
    /// What a language-model request did (`None` on every other route).
    pub generation: Option<GenerationNote>,
}

/// What a language-model request did, as the handler saw it; the writer hashes the texts and
/// turns it into the line's [`GenerationRecord`].
#[derive(Debug, Clone, Default)]
pub struct GenerationNote {
    /// The model's name (the `model` field of the line).
    pub model: String,
    pub stream: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub max_tokens: u64,
    /// From the request's arrival to the first token.
    pub ttft: Option<Duration>,
    /// From the first token to the last.
    pub decode: Option<Duration>,
    /// `stop`, `length`, `cancelled` (the client went away or time ran out) or `error`;
    /// `None` while the generation runs.
    pub finish_reason: Option<String>,
    /// The prompt as the model saw it (chat template applied).
    pub prompt: String,
    /// The completion as generated, before any redaction.
    pub completion: String,
    /// Kinds of sensitive data the screen found in the completion.
    pub screened: Vec<String>,
    /// Whether what it found was redacted in the answer.
    pub redacted: bool,
    /// Alternatives per token the caller asked log-probabilities for (`None`: no logprobs).
    pub logprobs: Option<usize>,
    /// Why the distillation watch put the key in alarm, when it is.
    pub extraction: Option<String>,
}

/// The generative part of a log line (absent from classifier lines, which stay byte for byte
/// what they were).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub stream: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub max_tokens: u64,
    /// Time to first token, microseconds from the request's arrival.
    pub ttft_us: Option<u64>,
    /// Completion tokens per second after the first one.
    pub tokens_per_s: Option<f64>,
    pub finish_reason: Option<String>,
    pub prompt_sha256: String,
    pub completion_sha256: String,
    /// The prompt itself, only with raw logging on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_prompt: Option<String>,
    /// The completion itself (before redaction), only with raw logging on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_completion: Option<String>,
    pub screened: Vec<String>,
    pub redacted: bool,
    pub logprobs: Option<usize>,
    /// Why the distillation watch put the key in alarm (`120 prompts within 600 s, 98%
    /// distinct, 100% from one template`), on the key's lines once it is; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extraction: Option<String>,
}

impl GenerationNote {
    /// The line's record: hashes always, the texts only when `raw`.
    pub fn record(&self, raw: bool) -> GenerationRecord {
        let sha = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
        let tokens_per_s = self.decode.filter(|d| !d.is_zero() && self.completion_tokens > 1).map(|d| {
            let rate = (self.completion_tokens - 1) as f64 / d.as_secs_f64();
            (rate * 10.0).round() / 10.0
        });
        GenerationRecord {
            stream: self.stream,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            max_tokens: self.max_tokens,
            ttft_us: self.ttft.map(|d| d.as_micros() as u64),
            tokens_per_s,
            finish_reason: self.finish_reason.clone(),
            prompt_sha256: sha(&self.prompt),
            completion_sha256: sha(&self.completion),
            raw_prompt: raw.then(|| self.prompt.clone()),
            raw_completion: raw.then(|| self.completion.clone()),
            screened: self.screened.clone(),
            redacted: self.redacted,
            logprobs: self.logprobs,
            extraction: self.extraction.clone(),
        }
    }
}

/// What the service knows about a finished request; the writer turns it into a line.
#[derive(Debug)]
pub struct AccessEvent {
    /// When the request arrived.
    pub time: SystemTime,
    pub request_id: Arc<str>,
    /// The key's name, when the request carried a valid key.
    pub key: Option<Arc<str>>,
    pub client: Option<SocketAddr>,
    pub method: &'static str,
    /// The route template (`/v1/models/{name}/predict`), `None` for paths the service lacks.
    pub route: Option<&'static str>,
    pub path: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency_us: u64,
    /// Why the request failed, for 4xx and 5xx.
    pub error: Option<String>,
    /// What the handler found out (nothing for requests no handler saw).
    pub note: RequestNote,
}

impl AccessEvent {
    /// A request that arrived now, answered 200 with nothing else known yet; set the rest
    /// field by field.
    pub fn new(
        request_id: impl Into<Arc<str>>,
        method: &'static str,
        route: Option<&'static str>,
        path: impl Into<String>,
    ) -> Self {
        AccessEvent {
            time: SystemTime::now(),
            request_id: request_id.into(),
            key: None,
            client: None,
            method,
            route,
            path: path.into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            latency_us: 0,
            error: None,
            note: RequestNote::default(),
        }
    }
}

/// One line of the access log: what the writer serialises (field order is the line's order) and
/// what readers parse back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    pub seq: u64,
    /// RFC 3339, microseconds, UTC.
    pub time: String,
    pub request_id: String,
    pub key: Option<String>,
    pub client: Option<String>,
    pub method: String,
    pub route: Option<String>,
    pub path: String,
    pub model: Option<String>,
    pub version: Option<String>,
    /// The variant that answered (`q8_0`), when not the run's f32 checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency_us: u64,
    pub inputs: usize,
    pub labels: Vec<String>,
    /// SHA-256 of each input.
    pub input_sha256: Vec<String>,
    /// The inputs themselves, only when the operator turned raw logging on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_inputs: Option<serde_json::Value>,
    pub policy: Option<String>,
    pub budget_left: Option<u64>,
    pub error: Option<String>,
    pub flags: Vec<Flag>,
    /// The key's PRADA W at this request (lower is more like extraction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extraction_w: Option<f64>,
    /// What a language-model request did; absent on every other line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationRecord>,
    pub prev: String,
    /// SHA-256 of the line's text without this field; empty (and not written) while the writer
    /// hashes the rest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// Raw inputs as a line holds them: rows of numbers (null for a missing value) or texts. Each
/// f32 is written with the shortest digits that read back as the same f32 (`0.1`, not
/// `0.10000000149011612`), so a logged input reads back exactly as the service received it.
pub fn raw_json(raw: &RawBatch) -> serde_json::Value {
    use serde_json::Value;
    match raw {
        RawBatch::Dense { width, values } => Value::Array(
            values
                .chunks((*width).max(1))
                .map(|row| {
                    Value::Array(
                        row.iter()
                            .map(|v| {
                                // f32 -> its shortest decimal -> the f64 nearest it, which
                                // serde_json prints back with the same digits.
                                let shortest: f64 = v.to_string().parse().unwrap_or(f64::NAN);
                                serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
        RawBatch::Texts(t) => Value::Array(t.iter().cloned().map(Value::String).collect()),
    }
}

/// SHA-256 of each input: its f32 values little-endian, or its UTF-8 text.
pub fn input_hashes(raw: &RawBatch) -> Vec<String> {
    match raw {
        RawBatch::Dense { width, values } => values
            .chunks((*width).max(1))
            .map(|row| {
                let mut h = Sha256::new();
                for v in row {
                    h.update(v.to_le_bytes());
                }
                hex::encode(h.finalize())
            })
            .collect(),
        RawBatch::Texts(t) => t.iter().map(|s| hex::encode(Sha256::digest(s.as_bytes()))).collect(),
    }
}

/// The text of a line without its `hash` field and that hash, or `None` when the line does not
/// end in a hash.
pub fn split_hash(line: &str) -> Option<(String, &str)> {
    const TAIL: usize = r#","hash":""#.len() + 64 + r#""}"#.len();
    if line.len() < TAIL || !line.is_char_boundary(line.len() - TAIL) {
        return None;
    }
    let (body, tail) = line.split_at(line.len() - TAIL);
    let hash = tail.strip_prefix(r#","hash":""#)?.strip_suffix(r#""}"#)?;
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut content = String::with_capacity(body.len() + 1);
    content.push_str(body);
    content.push('}');
    Some((content, hash))
}

/// One line as the writer serialises it: [`AccessRecord`]'s fields in its order, borrowed from
/// the event instead of copied into Strings (a dozen allocations a line, on the writer thread
/// that shares the cores with the requests). A test checks that it writes what
/// [`AccessRecord`] would.
#[derive(Serialize)]
struct LineOut<'a> {
    seq: u64,
    time: &'a str,
    request_id: &'a str,
    key: Option<&'a str>,
    client: Option<String>,
    method: &'a str,
    route: Option<&'a str>,
    path: &'a str,
    model: Option<&'a str>,
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    latency_us: u64,
    inputs: usize,
    labels: Labels<'a>,
    input_sha256: Hashes<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_inputs: Option<serde_json::Value>,
    policy: Option<String>,
    budget_left: Option<u64>,
    error: Option<&'a str>,
    flags: &'a [Flag],
    #[serde(skip_serializing_if = "Option::is_none")]
    extraction_w: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<GenerationRecord>,
    prev: &'a str,
}

/// Class names where the model has them, else the class index (as a string).
struct Labels<'a>(&'a [u32], Option<&'a ServedModel>);

impl Serialize for Labels<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for &i in self.0 {
            match self.1.and_then(|m| m.classes.get(i as usize)) {
                Some(name) => seq.serialize_element(name.as_str())?,
                None => seq.serialize_element(&i.to_string())?,
            }
        }
        seq.end()
    }
}

/// [`input_hashes`] written straight into the line, each hex digest from a stack buffer.
struct Hashes<'a>(Option<&'a RawBatch>);

impl Serialize for Hashes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let hex_of = |digest: &[u8]| {
            let mut out = [0u8; 64];
            hex::encode_to_slice(digest, &mut out).expect("64 hex digits for 32 bytes");
            out
        };
        match self.0 {
            None => s.serialize_seq(Some(0))?.end(),
            Some(RawBatch::Dense { width, values }) => {
                let rows = values.chunks((*width).max(1));
                let mut seq = s.serialize_seq(Some(rows.len()))?;
                let mut bytes = Vec::with_capacity(4 * width);
                for row in rows {
                    bytes.clear();
                    for v in row {
                        bytes.extend_from_slice(&v.to_le_bytes());
                    }
                    let hex = hex_of(&Sha256::digest(&bytes));
                    seq.serialize_element(std::str::from_utf8(&hex).expect("hex is ASCII"))?;
                }
                seq.end()
            }
            Some(RawBatch::Texts(t)) => {
                let mut seq = s.serialize_seq(Some(t.len()))?;
                for text in t {
                    let hex = hex_of(&Sha256::digest(text.as_bytes()));
                    seq.serialize_element(std::str::from_utf8(&hex).expect("hex is ASCII"))?;
                }
                seq.end()
            }
        }
    }
}

/// An event's line, newline-terminated, with its hash (the SHA-256 of the line's text without
/// the `hash` field), and that hash.
fn line_bytes(
    ev: &AccessEvent,
    seq: u64,
    time: &str,
    path: &str,
    prev: &str,
    raw_inputs: bool,
) -> (Vec<u8>, String) {
    let model = ev.note.model.as_deref();
    let out = LineOut {
        seq,
        time,
        request_id: &ev.request_id,
        key: ev.key.as_deref(),
        client: ev.client.map(|c| c.to_string()),
        method: ev.method,
        route: ev.route,
        path,
        model: model.map(|m| m.info.name.as_str()).or(ev.note.generation.as_ref().map(|g| g.model.as_str())),
        version: model.map(|m| m.info.version.as_str()),
        variant: model.and_then(|m| m.info.variant.as_deref()),
        status: ev.status,
        bytes_in: ev.bytes_in,
        bytes_out: ev.bytes_out,
        latency_us: ev.latency_us,
        inputs: ev.note.inputs,
        labels: Labels(&ev.note.labels, model),
        input_sha256: Hashes(ev.note.raw.as_ref()),
        raw_inputs: if raw_inputs { ev.note.raw.as_ref().map(raw_json) } else { None },
        policy: ev.note.policy.map(|p| p.to_string()),
        budget_left: ev.note.budget_left,
        error: ev.error.as_deref(),
        flags: &ev.note.flags,
        extraction_w: ev.note.extraction_w.map(|w| (w * 1e4).round() / 1e4),
        generation: ev.note.generation.as_ref().map(|g| g.record(raw_inputs)),
        prev,
    };
    let mut line = Vec::with_capacity(1024);
    serde_json::to_writer(&mut line, &out).expect("access lines always serialise");
    let mut hash = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(&line), &mut hash).expect("64 hex digits for 32 bytes");
    line.pop(); // the closing brace; the hash goes before it
    line.extend_from_slice(br#","hash":""#);
    line.extend_from_slice(&hash);
    line.extend_from_slice(b"\"}\n");
    (line, String::from_utf8(hash.to_vec()).expect("hex is ASCII"))
}

/// `access.head.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// Settings of the access log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The folder (the run store).
    pub dir: PathBuf,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// Write raw inputs too (off by default: inputs may be personal data).
    pub raw_inputs: bool,
    /// Keep serving while the log cannot be written (the outage is logged afterwards) instead
    /// of refusing requests with 503.
    pub fail_open: bool,
    /// Makes writes fail on demand, for tests and drills of a full disk.
    pub fault: Option<Arc<WriteFault>>,
}

impl LogOptions {
    /// A log in `dir`, rotated at 64 MiB, hashes only, failing closed.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogOptions {
            dir: dir.into(),
            max_bytes: 64 * 1024 * 1024,
            raw_inputs: false,
            fail_open: false,
            fault: None,
        }
    }
}

/// A switch that makes the writer's writes fail as on a full disk: half of each batch reaches
/// the file, then the write fails with `StorageFull`. Lets tests and drills watch the service
/// fail closed and recover without filling a real disk.
#[derive(Debug, Default)]
pub struct WriteFault {
    on: AtomicBool,
}

impl WriteFault {
    /// Turns the failure on or off.
    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }
}

/// The current outage of the log, counted under one lock so that the writer's outage line holds
/// exactly the requests refused or unlogged during it.
#[derive(Debug, Default)]
struct Outage {
    since: Option<SystemTime>,
    error: String,
    refused: u64,
    unlogged: u64,
}

/// Counters the service exports about its log.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Events handed to the writer.
    pub sent: AtomicU64,
    /// Lines written to the file.
    pub written: AtomicU64,
    /// Failed writes (each retried).
    pub errors: AtomicU64,
    /// Why the log cannot be written now; `None` while it can.
    pub last_error: Mutex<Option<String>>,
    /// Set while writes fail.
    pub failing: AtomicBool,
    /// Requests refused with 503 because the log could not be written.
    pub refused: AtomicU64,
    /// Requests answered without a line (fail-open, past [`MAX_PENDING`]).
    pub unlogged: AtomicU64,
    /// Outages so far (each recorded by a line once over).
    pub outages: AtomicU64,
    outage: Mutex<Outage>,
}

impl LogStats {
    /// Whether the log can be written now.
    pub fn writable(&self) -> bool {
        !self.failing.load(Ordering::Acquire)
    }

    /// Why it cannot, while it cannot.
    pub fn error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// The sending side, shared by every request.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Sender<AccessEvent>,
    pub stats: Arc<LogStats>,
    pub path: PathBuf,
    /// Serve on while the log cannot be written.
    pub fail_open: bool,
}

impl AccessLog {
    /// While the log cannot be written and the service fails closed: why the request is
    /// refused (and it is counted for the outage's line). `None` when the request may be
    /// served. One atomic load when the log is fine.
    pub fn refusal(&self) -> Option<String> {
        if self.fail_open || self.stats.writable() {
            return None;
        }
        let mut outage = self.stats.outage.lock().expect("the outage lock is never poisoned");
        // Checked again under the lock: the writer may have recovered in between.
        if self.stats.writable() {
            return None;
        }
        outage.refused += 1;
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        Some(format!(
            "the service cannot write its access log ({}), and it does not serve requests it cannot \
             log; it resumes by itself when the log can be written again",
            outage.error
        ))
    }

    /// Queues a request's line; never blocks.
    pub fn record(&self, event: AccessEvent) {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        // A send fails only once the writer has stopped, which happens after the server has.
        if self.tx.send(event).is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread's handle.
pub struct LogWriter {
    thread: std::thread::JoinHandle<()>,
    closing: Arc<AtomicBool>,
}

impl LogWriter {
    /// Stops the writer once every queued line is written; waits for it.
    pub fn close(self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

/// Opens the log (continuing its chain) and starts the writer thread.
pub fn start(opts: LogOptions) -> Result<(AccessLog, LogWriter)> {
    let writer = Writer::open(&opts)?;
    let stats = writer.stats.clone();
    let path = writer.path.clone();
    let fail_open = opts.fail_open;
    let (tx, rx) = std::sync::mpsc::channel();
    let closing = Arc::new(AtomicBool::new(false));
    let flag = closing.clone();
    let thread = std::thread::Builder::new()
        .name("vigil-access-log".into())
        .spawn(move || writer.run(rx, &flag))
        .map_err(|e| Error::io(&opts.dir, e))?;
    Ok((AccessLog { tx, stats, path, fail_open }, LogWriter { thread, closing }))
}

struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    size: u64,
    seq: u64,
    prev: String,
    max_bytes: u64,
    raw_inputs: bool,
    stats: Arc<LogStats>,
    head_written: Instant,
    head_seq: u64,
    fail_open: bool,
    fault: Option<Arc<WriteFault>>,
    /// A failed write left bytes past `size` that could not be cut yet.
    torn: bool,
}

/// The rotated files of a log folder, oldest first, with their numbers.
pub fn rotated_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let n = name.to_str()?.strip_prefix("access.")?.strip_suffix(".jsonl")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every file of the log in order: rotated files, then the current one.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = rotated_files(dir).into_iter().map(|(_, p)| p).collect();
    let current = dir.join(ACCESS_LOG);
    if current.exists() {
        files.push(current);
    }
    files
}

/// The last complete line of a file and the offset just after it (where a torn fragment, if
/// any, begins). Reads backwards, so a large log costs only its tail.
fn last_complete_line(file: &mut File) -> std::io::Result<Option<(String, u64)>> {
    let len = file.metadata()?.len();
    let mut end: Option<u64> = None; // offset just after the last '\n'
    let mut tail: Vec<u8> = Vec::new(); // bytes from `pos` to the end
    let mut pos = len;
    const CHUNK: u64 = 64 * 1024;
    while pos > 0 {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        pos = start;
        if end.is_none()
            && let Some(i) = tail.iter().rposition(|b| *b == b'\n')
        {
            end = Some(pos + i as u64 + 1);
        }
        if let Some(e) = end {
            let upto = (e - pos) as usize - 1; // index of that '\n' in `tail`
            if let Some(j) = tail[..upto].iter().rposition(|b| *b == b'\n') {
                return Ok(Some((String::from_utf8_lossy(&tail[j + 1..upto]).into_owned(), e)));
            }
            if pos == 0 {
                return Ok(Some((String::from_utf8_lossy(&tail[..upto]).into_owned(), e)));
            }
        }
    }
    Ok(None)
}

/// The seq and hash of a line, for continuing the chain after it.
fn chain_point(line: &str) -> Option<(u64, String)> {
    let (_, hash) = split_hash(line)?;
    let rec: serde_json::Value = serde_json::from_str(line).ok()?;
    Some((rec.get("seq")?.as_u64()?, hash.to_string()))
}

impl Writer {
    fn open(opts: &LogOptions) -> Result<Self> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| Error::io(&opts.dir, e))?;
        let path = opts.dir.join(ACCESS_LOG);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut last = last_complete_line(&mut file).map_err(|e| Error::io(&path, e))?;
        let complete = last.as_ref().map_or(0, |(_, end)| *end);
        if complete < size {
            // A crash in the middle of a write left a fragment that was never a whole line:
            // cut it, as a database recovers a torn log tail, so the chain goes on from the
            // last whole line.
            eprintln!(
                "access log {}: removed an incomplete last line ({} bytes) left by an interrupted write",
                path.display(),
                size - complete
            );
            file.set_len(complete).map_err(|e| Error::io(&path, e))?;
            size = complete;
        }
        if last.is_none()
            && let Some((_, newest)) = rotated_files(&opts.dir).pop()
        {
            let mut f = File::open(&newest).map_err(|e| Error::io(&newest, e))?;
            last = last_complete_line(&mut f).map_err(|e| Error::io(&newest, e))?;
        }
        let (seq, prev) = match &last {
            None => (0, GENESIS.to_string()),
            Some((line, _)) => chain_point(line).ok_or_else(|| Error::Corrupt {
                path: path.clone(),
                msg: "the last line is not an access record, so the hash chain cannot continue; \
                      run `vigil audit verify` and move the file aside"
                    .into(),
            })?,
        };
        Ok(Writer {
            dir: opts.dir.clone(),
            path,
            file,
            size,
            seq,
            prev,
            max_bytes: opts.max_bytes.max(1),
            raw_inputs: opts.raw_inputs,
            stats: Arc::new(LogStats::default()),
            head_written: Instant::now(),
            head_seq: seq,
            fail_open: opts.fail_open,
            fault: opts.fault.clone(),
            torn: false,
        })
    }

    fn run(mut self, rx: Receiver<AccessEvent>, closing: &AtomicBool) {
        let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
        let mut lines = 0u64;
        let mut idle_polls = 0u32;
        loop {
            // Under load, poll every millisecond instead of blocking in `recv`: a blocked
            // receiver makes every request's `send` a futex wake-up and a context switch (a
            // tenth of the server's CPU in profiles), while a polling one lets lines pile up
            // and go out in one write. After 50 idle polls it blocks until the next request.
            // While the log fails, the queue is drained anyway: `append` keeps lines up to
            // MAX_PENDING and counts the rest, so the channel cannot grow without bound.
            let batch_cap = if self.stats.writable() { 4 * 1024 * 1024 } else { usize::MAX };
            while buf.len() < batch_cap {
                match rx.try_recv() {
                    Ok(ev) => self.append(ev, &mut buf, &mut lines),
                    Err(_) => break,
                }
            }
            if !buf.is_empty() {
                self.flush(&mut buf, &mut lines);
                if self.head_written.elapsed() >= Duration::from_secs(1) {
                    self.write_head(false);
                }
                idle_polls = 0;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if idle_polls < 50 {
                idle_polls += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(ev) => {
                    self.append(ev, &mut buf, &mut lines);
                    idle_polls = 0;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // Idle: keep the head current, and stop when the server has.
                    self.write_head(false);
                    if closing.load(Ordering::SeqCst) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Drain anything sent after the last batch, then make it all durable.
        while let Ok(ev) = rx.try_recv() {
            self.append(ev, &mut buf, &mut lines);
        }
        self.flush(&mut buf, &mut lines);
        let _ = self.file.sync_all();
        self.write_head(true);
    }

    /// Formats one event into `buf`, rotating first when the line would pass the size limit.
    fn append(&mut self, ev: AccessEvent, buf: &mut Vec<u8>, lines: &mut u64) {
        if buf.len() >= MAX_PENDING && !self.stats.writable() {
            // Dropped before it has a seq, so the chain stays whole; the outage line counts it.
            let mut outage = self.stats.outage.lock().expect("the outage lock is never poisoned");
            outage.unlogged += 1;
            self.stats.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let time = time::OffsetDateTime::from(ev.time);
        // Microseconds: enough to order lines, and a fixed width that is easy to read.
        let time = time.replace_nanosecond(time.microsecond() * 1000).unwrap_or(time);
        let time = time.format(&time::format_description::well_known::Rfc3339).expect("UTC formats");
        let path = if ev.path.len() > MAX_PATH {
            let mut cut = MAX_PATH;
            while !ev.path.is_char_boundary(cut) {
                cut -= 1;
            }
            &ev.path[..cut]
        } else {
            &ev.path
        };
        let seq = self.seq + 1;
        let (line, hash) = line_bytes(&ev, seq, &time, path, &self.prev, self.raw_inputs);
        let pending = self.size + buf.len() as u64;
        if pending > 0 && pending + line.len() as u64 > self.max_bytes {
            self.flush(buf, lines);
            self.rotate();
        }
        buf.extend_from_slice(&line);
        *lines += 1;
        self.seq = seq;
        self.prev = hash;
    }

    /// Writes the batch; on failure keeps it and tries again with the next batch, so a full
    /// disk delays lines instead of losing them (see the module documentation).
    fn flush(&mut self, buf: &mut Vec<u8>, lines: &mut u64) {
        if buf.is_empty() {
            return;
        }
        match self.write_batch(buf) {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.stats.written.fetch_add(*lines, Ordering::Relaxed);
                buf.clear();
                *lines = 0;
                if !self.stats.writable() {
                    self.recovered(buf, lines);
                }
            }
            Err(e) => {
                // Part of the batch may have reached the file: cut it back to the last whole
                // line, so that no torn line stays and the whole batch goes again next time.
                self.torn = self.file.set_len(self.size).is_err();
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let msg = format!("{}: {e}", self.path.display());
                if self.stats.writable() {
                    let mut outage = self.stats.outage.lock().expect("the outage lock is never poisoned");
                    *outage = Outage {
                        since: Some(SystemTime::now()),
                        error: msg.clone(),
                        refused: 0,
                        unlogged: 0,
                    };
                    self.stats.failing.store(true, Ordering::Release);
                    eprintln!(
                        "access log: cannot write ({msg}); {} until it can",
                        if self.fail_open {
                            "serving without a log (--log-fail-open)"
                        } else {
                            "refusing requests with 503"
                        }
                    );
                }
                *self.stats.last_error.lock().expect("no panics while held") = Some(msg);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn write_batch(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.torn {
            self.file.set_len(self.size)?;
            self.torn = false;
        }
        if let Some(fault) = &self.fault
            && fault.is_on()
        {
            self.file.write_all(&buf[..buf.len() / 2])?;
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected)",
            ));
        }
        self.file.write_all(buf)
    }

    /// The first write after an outage worked: serve again, and record the outage in the chain.
    fn recovered(&mut self, buf: &mut Vec<u8>, lines: &mut u64) {
        let outage = {
            let mut o = self.stats.outage.lock().expect("the outage lock is never poisoned");
            self.stats.failing.store(false, Ordering::Release);
            std::mem::take(&mut *o)
        };
        *self.stats.last_error.lock().expect("no panics while held") = None;
        self.stats.outages.fetch_add(1, Ordering::Relaxed);
        let since = outage.since.unwrap_or_else(SystemTime::now);
        let lasted = since.elapsed().unwrap_or_default();
        let what = if self.fail_open {
            format!("{} requests were answered without a line", outage.unlogged)
        } else {
            format!(
                "{} requests were refused with 503 and {} answered without a line",
                outage.refused, outage.unlogged
            )
        };
        eprintln!("access log: writing again after {:.1} s; {what}", lasted.as_secs_f64());
        let began = time::OffsetDateTime::from(since)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        // Written when the outage ends (lines stay in time order); `latency_us` is its length.
        let mut ev = AccessEvent::new(OUTAGE_ID, "-", None, "");
        ev.status = 503;
        ev.latency_us = lasted.as_micros() as u64;
        ev.error = Some(format!(
            "the access log could not be written from {began} for {:.1} s ({}); {what}",
            lasted.as_secs_f64(),
            outage.error
        ));
        self.append(ev, buf, lines);
    }

    fn rotate(&mut self) {
        let next = rotated_files(&self.dir).last().map_or(1, |(n, _)| n + 1);
        let target = self.dir.join(format!("access.{next:06}.jsonl"));
        // No fsync here: appends are not synced line by line either (the kernel writes them back
        // within seconds, and shutdown syncs), and forcing 64 MiB to disk at every rotation
        // stalled the machine for tens of milliseconds under load.
        let result = std::fs::rename(&self.path, &target)
            .and_then(|_| std::fs::OpenOptions::new().create(true).read(true).append(true).open(&self.path));
        match result {
            Ok(f) => {
                self.file = f;
                self.size = 0;
            }
            Err(e) => {
                // Keep appending to the current file: a rotation that fails must not lose lines.
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("access log: cannot rotate {} ({e}); continuing in it", self.path.display());
                self.size = 0;
            }
        }
    }

    fn write_head(&mut self, force: bool) {
        if self.head_seq == self.seq && !force {
            return;
        }
        let head = Head { seq: self.seq, hash: self.prev.clone() };
        let path = self.dir.join(ACCESS_HEAD);
        let text = serde_json::to_vec(&head).expect("heads serialise");
        if crate::store::write_atomic(&path, &text).is_ok() {
            self.head_seq = self.seq;
            self.head_written = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: u16) -> AccessEvent {
        let mut ev =
            AccessEvent::new("r1", "POST", Some("/v1/models/{name}/predict"), "/v1/models/m/predict");
        ev.key = Some("alice".into());
        ev.client = Some("127.0.0.1:5000".parse().unwrap());
        (ev.status, ev.bytes_in, ev.bytes_out, ev.latency_us) = (status, 10, 20, 30);
        ev.note = RequestNote {
            inputs: 2,
            labels: vec![1, 0],
            raw: Some(RawBatch::Dense { width: 2, values: vec![1.0, f32::NAN, 3.0, 4.0] }),
            policy: Some("top-k:1".parse().unwrap()),
            budget_left: Some(5),
            ..RequestNote::default()
        };
        ev
    }

    fn write_events(dir: &Path, n: usize, max_bytes: u64, raw: bool) {
        let (log, writer) = start(LogOptions { max_bytes, raw_inputs: raw, ..LogOptions::new(dir) }).unwrap();
        for i in 0..n {
            log.record(event(200 + i as u16));
        }
        drop(log);
        writer.close();
    }

    fn read(path: &Path) -> Vec<AccessRecord> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The borrowed line writes exactly what [`AccessRecord`] serialises to.
    #[test]
    fn lines_are_written_as_access_records_serialise() {
        for ev in [event(200), AccessEvent::new("r2", "GET", None, "/nope")] {
            let (line, hash) = line_bytes(&ev, 7, "2026-12-02T15:00:00.000001Z", &ev.path, GENESIS, true);
            let text = std::str::from_utf8(&line).unwrap();
            let (content, written) = split_hash(text.trim_end()).unwrap();
            assert_eq!(written, hash);
            let rec: AccessRecord = serde_json::from_str(text).unwrap();
            let again = AccessRecord { hash: String::new(), ..rec.clone() };
            assert_eq!(serde_json::to_string(&again).unwrap(), content);
            assert_eq!(rec.input_sha256, ev.note.raw.as_ref().map(input_hashes).unwrap_or_default());
            assert_eq!((rec.seq, rec.key.as_deref(), rec.prev.as_str()), (7, ev.key.as_deref(), GENESIS));
        }
    }

    #[test]
    fn lines_chain_across_restarts_and_hash_their_own_text() {
        let dir = tempfile::tempdir().unwrap();
        write_events(dir.path(), 3, u64::MAX, false);
        write_events(dir.path(), 2, u64::MAX, false);
        let text = std::fs::read_to_string(dir.path().join(ACCESS_LOG)).unwrap();
        let recs = read(&dir.path().join(ACCESS_LOG));
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(recs[0].prev, GENESIS);
        for (i, line) in text.lines().enumerate() {
            let (content, hash) = split_hash(line).unwrap();
            assert_eq!(hex::encode(Sha256::digest(content.as_bytes())), hash);
            assert_eq!(recs[i].hash, hash);
            if i > 0 {
                assert_eq!(recs[i].prev, recs[i - 1].hash);
            }
        }
        let head: Head =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(ACCESS_HEAD)).unwrap()).unwrap();
        assert_eq!(head, Head { seq: 5, hash: recs[4].hash.clone() });
    }

    #[test]
    fn inputs_are_hashed_not_logged_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        write_events(dir.path(), 1, u64::MAX, false);
        let r = &read(&dir.path().join(ACCESS_LOG))[0];
        // Reference: python3 -c "import hashlib,struct;
        //   print(hashlib.sha256(struct.pack('<ff', 3.0, 4.0)).hexdigest())"
        assert_eq!(r.input_sha256[1], "986c627ee6ef1bcc3d746256a7045624ceeb44c4ed557ca055b2d43933de3489");
        assert_eq!(r.input_sha256.len(), 2);
        assert!(r.raw_inputs.is_none());
        assert_eq!(r.labels, vec!["1", "0"]);
        assert_eq!(r.policy.as_deref(), Some("top-k:1"));
        assert!(r.flags.is_empty());

        let dir = tempfile::tempdir().unwrap();
        write_events(dir.path(), 1, u64::MAX, true);
        let r = &read(&dir.path().join(ACCESS_LOG))[0];
        assert_eq!(r.raw_inputs, Some(serde_json::json!([[1.0, null], [3.0, 4.0]])));
    }

    #[test]
    fn rotation_keeps_every_line_and_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        write_events(dir.path(), 20, 2000, false);
        let files = log_files(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        let all: Vec<AccessRecord> = files.iter().flat_map(|f| read(f)).collect();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
        for w in all.windows(2) {
            assert_eq!(w[1].prev, w[0].hash);
        }
        for f in &files[..files.len() - 1] {
            assert!(std::fs::metadata(f).unwrap().len() <= 2000);
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        write_events(dir.path(), 2, u64::MAX, false);
        let path = dir.path().join(ACCESS_LOG);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":3,"time":"#).unwrap();
        write_events(dir.path(), 1, u64::MAX, false);
        let recs = read(&path);
        assert_eq!(recs.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(recs[2].prev, recs[1].hash);
    }

    #[test]
    fn the_last_line_is_found_in_files_larger_than_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let long = "a".repeat(70_000);
        std::fs::write(&path, format!("{long}\nlast\npartial")).unwrap();
        let mut f = File::open(&path).unwrap();
        let (line, end) = last_complete_line(&mut f).unwrap().unwrap();
        assert_eq!(line, "last");
        assert_eq!(end, 70_006);
        std::fs::write(&path, format!("{long}\n")).unwrap();
        let mut f = File::open(&path).unwrap();
        assert_eq!(last_complete_line(&mut f).unwrap().unwrap().0, long);
        std::fs::write(&path, "partial").unwrap();
        let mut f = File::open(&path).unwrap();
        assert_eq!(last_complete_line(&mut f).unwrap(), None);
    }
}
