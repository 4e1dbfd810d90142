//! API keys: creating them, the key file, and checking a presented key.
//!
//! A key is `vigil_` followed by 64 hex digits (256 random bits from the operating system). It is
//! printed once when created; the key file (`<runs-dir>/keys.json`, mode 0600) keeps only its
//! SHA-256, so a leaked key file gives no usable key. Plain SHA-256 (not a slow password hash) is
//! enough because the secret has 256 bits of entropy: there is nothing to brute-force. A presented
//! key is hashed and compared with every stored hash in constant time, without stopping at a
//! match, so timing tells an attacker neither how much of a key matched nor which key it was.
//!
//! This module owns the key file's format and the per-key settings (scopes, expiry, rate, budget,
//! output policy). It does not count requests or budgets at run time ([`super::limits`] does) and
//! knows nothing of HTTP.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::policy::OutputPolicy;
use crate::error::{Error, Result};
use crate::store::seal::SealKey;

/// The key file's name inside the run store.
pub const KEY_FILE: &str = "keys.json";
/// What every key starts with, so that secret scanners and people recognise one.
pub const KEY_PREFIX: &str = "vigil_";
/// Random bytes per key (256 bits; the issue asks for at least 128).
const KEY_BYTES: usize = 32;
/// Hex digits of a key kept in the key file to recognise it by ([`KeyRecord::prefix`]).
const PREFIX_HEX: usize = 6;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Ask models for predictions.
    Predict,
    /// Ask models for explanations.
    Explain,
    /// Read the service's metrics and other operator routes.
    Admin,
    /// Ask a language model for completions (`/v1/chat/completions`, `/v1/completions`).
    Generate,
    /// Ask a Transformer or pretrained encoder for sentence embeddings (`/v1/models/{name}/embed`).
    Embed,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 5] = [Scope::Predict, Scope::Explain, Scope::Admin, Scope::Generate, Scope::Embed];

    /// The scope's name as typed on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Predict => "predict",
            Scope::Explain => "explain",
            Scope::Admin => "admin",
            Scope::Generate => "generate",
            Scope::Embed => "embed",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "predict" => Ok(Scope::Predict),
            "explain" => Ok(Scope::Explain),
            "admin" => Ok(Scope::Admin),
            "generate" => Ok(Scope::Generate),
            "embed" => Ok(Scope::Embed),
            other => Err(format!("unknown scope {other:?}: use predict, explain, admin, generate or embed")),
        }
    }
}

/// A steady request rate with a burst allowance (a GCRA cell: `per_second` requests per second
/// on average, up to `burst` at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// The period over which a query budget is counted; windows are aligned to the Unix epoch (a
/// day budget renews at midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hour,
    Day,
    /// 30 days.
    Month,
}

impl Period {
    /// Length of one window in seconds.
    pub fn seconds(&self) -> u64 {
        match self {
            Period::Hour => 3600,
            Period::Day => 86_400,
            Period::Month => 30 * 86_400,
        }
    }

    fn as_str(&self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// At most `limit` inputs predicted per `period` (each input of a batch counts: the budget bounds
/// how much a caller can learn about the model, whatever the batch size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub limit: u64,
    pub period: Period,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, self.period.as_str())
    }
}

impl FromStr for Budget {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (n, p) = s
            .split_once('/')
            .ok_or_else(|| format!("budget {s:?} must look like 10000/day (per hour, day or month)"))?;
        let limit: u64 =
            n.trim().replace('_', "").parse().map_err(|_| format!("budget {s:?}: {n:?} is not a count"))?;
        if limit == 0 {
            return Err(format!("budget {s:?} allows nothing; revoke the key instead"));
        }
        let period = match p.trim() {
            "hour" | "h" => Period::Hour,
            "day" | "d" => Period::Day,
            "month" | "30d" => Period::Month,
            other => return Err(format!("budget {s:?}: unknown period {other:?}; use hour, day or month")),
        };
        Ok(Budget { limit, period })
    }
}

/// One key as stored in the key file. It never holds the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// The name callers are known by in logs and metrics.
    pub name: String,
    /// `sha256:` and the hex SHA-256 of the key.
    pub hash: String,
    pub scopes: Vec<Scope>,
    /// RFC 3339 times.
    pub created: String,
    pub expires: Option<String>,
    pub revoked: Option<String>,
    /// `None`: no rate limit.
    pub rate: Option<RateLimit>,
    /// `None`: no budget.
    pub budget: Option<Budget>,
    /// What callers with this key learn from a prediction.
    pub output: OutputPolicy,
    /// What the service does about this key's suspicious traffic.
    #[serde(default)]
    pub guard: Guard,
    /// The key's first characters (`vigil_3fa2c1`), so that a person can tell keys apart after
    /// the key itself was shown once; 24 of its 256 bits, which leaves nothing to guess with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Limits and output policy on the language-model routes (`generate` scope). Left out of
    /// the file while it holds only defaults, so key files without generation read and write
    /// as before.
    #[serde(default, skip_serializing_if = "GeneratePolicy::is_default")]
    pub generate: GeneratePolicy,
}

/// What a key may do on the language-model routes, in tokens (prompt and completion tokens
/// both count): the request rate of [`KeyRecord::rate`] applies there too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratePolicy {
    /// Tokens per minute on average (`None`: no limit). A request is refused (429) while the
    /// key has spent more than its allowance; what it spends is counted as generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Tokens per hour, day or month. A request reserves its prompt and `max_tokens` up front
    /// (refused with 429 when that does not fit) and gets back what it did not generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<Budget>,
    /// `None`: no log-probabilities at all (the default: they make distillation cheap).
    /// `Some(k)`: each token's log-probability, with up to `k` alternatives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<usize>,
}

impl GeneratePolicy {
    pub fn is_default(&self) -> bool {
        *self == GeneratePolicy::default()
    }

    /// `logprobs:none` or `logprobs:top-3`, for listings.
    pub fn logprobs_text(&self) -> String {
        match self.logprobs {
            None => "no".into(),
            Some(k) => format!("top-{k}"),
        }
    }
}

/// What the service does about a key's suspicious traffic. Inputs the run's input detector
/// flags are marked `ood` in the access log either way, and a key in PRADA's extraction alarm is
/// marked `extraction`; the guard says whether to do more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    /// Refuse requests with a flagged input (422, with the reason).
    #[serde(default)]
    pub reject_ood: bool,
    #[serde(default)]
    pub on_extraction: OnExtraction,
}

/// What an extraction alarm does to a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnExtraction {
    /// Answer, and mark the key's requests in the log.
    #[default]
    Flag,
    /// Answer one request per second at most (429 beyond).
    Throttle,
    /// Refuse every request (403) until the service restarts or the key is replaced.
    Block,
}

impl std::fmt::Display for OnExtraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnExtraction::Flag => "flag",
            OnExtraction::Throttle => "throttle",
            OnExtraction::Block => "block",
        })
    }
}

/// Whether a key may be used now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Expired(String),
    Revoked(String),
}

impl KeyRecord {
    /// The key's status at `now`.
    pub fn status(&self, now: OffsetDateTime) -> KeyStatus {
        if let Some(r) = &self.revoked {
            return KeyStatus::Revoked(r.clone());
        }
        match self.expires_at() {
            Some(t) if t <= now => KeyStatus::Expired(self.expires.clone().unwrap_or_default()),
            _ => KeyStatus::Active,
        }
    }

    /// The expiry time, when there is one and it parses.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.expires.as_deref().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    }

    /// The raw SHA-256 of the key.
    pub fn hash_bytes(&self) -> Option<[u8; 32]> {
        let hex = self.hash.strip_prefix("sha256:")?;
        let bytes = hex::decode(hex).ok()?;
        bytes.try_into().ok()
    }

    /// Whether the key has `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The scopes as `predict,admin`.
    pub fn scope_list(&self) -> String {
        self.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// The key file: every key ever created, revoked ones included (their names stay taken, so an
/// access log never has two callers under one name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub keys: Vec<KeyRecord>,
}

/// What to create a key with.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// How long until it expires; `None` for never.
    pub expires_in: Option<std::time::Duration>,
    pub rate: Option<RateLimit>,
    pub budget: Option<Budget>,
    pub output: OutputPolicy,
    pub guard: Guard,
    pub generate: GeneratePolicy,
}

/// The key file of a run store.
pub fn key_file_path(runs_dir: &Path) -> PathBuf {
    runs_dir.join(KEY_FILE)
}

/// SHA-256 of a presented key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh key: the prefix and 256 bits from the operating system's random source.
pub fn generate_key() -> Result<String> {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::internal(format!("the operating system's random source failed: {e}")))?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

/// Checks a key name: it appears in logs, metrics labels and file names.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::argument(format!("key name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'")))
    }
}

/// Parses a duration such as `30d`, `12h`, `90m`, `2w`, `45s` or `500ms`.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{text:?} must look like 30d, 12h, 90m, 45s or 500ms"))?;
    if n == 0 {
        return Err(format!("{text:?} must be longer than zero"));
    }
    let secs = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use ms, s, m, h, d or w")),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

/// Formats a time as RFC 3339 (UTC, whole seconds).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0).unwrap_or(t).format(&Rfc3339).expect("UTC times always format")
}

impl KeyFile {
    /// Reads a key file that is not sealed; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_key(path, None)
    }

    /// Reads the key file, opening it with `seal` when `vigil seal` sealed it; a missing file
    /// is an empty one.
    pub fn load_with_key(path: &Path, seal: Option<&SealKey>) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeyFile::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        // `vigil seal` seals the key file with the runs; it opens with the store's key.
        let bytes = crate::store::seal::open_bytes(bytes, path, "keys.json", seal)?;
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            msg: format!("line {}, column {}: {e}", e.line(), e.column()),
        })?;
        for k in &file.keys {
            if k.hash_bytes().is_none() {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    msg: format!("key {:?} has no valid sha256 hash", k.name),
                });
            }
        }
        Ok(file)
    }

    /// Writes a key file that is not sealed atomically with mode 0600 (owner read and write
    /// only).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with_key(path, None)
    }

    /// Writes the key file atomically with mode 0600, sealed with `seal` when it was sealed.
    pub fn save_with_key(&self, path: &Path, seal: Option<&SealKey>) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("key files always serialise");
        // A sealed key file stays sealed when keys are added or revoked.
        let sealed = std::fs::read(path).is_ok_and(|b| crate::store::seal::is_sealed(&b));
        if sealed {
            let key = seal.ok_or_else(|| {
                Error::sealed(format!("{} is sealed: give the sealing key to change it", path.display()))
            })?;
            return write_private(path, &key.seal("keys.json", &text));
        }
        write_private(path, &text)
    }

    /// Adds a key and returns it with the key itself, which is never stored.
    pub fn create(&mut self, new: NewKey, now: OffsetDateTime) -> Result<(KeyRecord, String)> {
        check_name(&new.name)?;
        if let Some(old) = self.keys.iter().find(|k| k.name == new.name) {
            let state = match &old.revoked {
                Some(t) => format!("revoked on {t}"),
                None => "in use".into(),
            };
            return Err(Error::refused(format!(
                "a key named {:?} already exists ({state}); names stay unique so that access logs \
                 never mix two callers: choose another name",
                new.name
            )));
        }
        if new.scopes.is_empty() {
            return Err(Error::argument(
                "a key needs at least one scope (predict, explain, admin, generate, embed)",
            ));
        }
        if let Some(r) = new.rate
            && (r.per_second == 0 || r.burst == 0)
        {
            return Err(Error::argument("a rate limit must allow at least 1 request per second"));
        }
        if new.generate.tokens_per_minute == Some(0) {
            return Err(Error::argument("--tokens-per-minute must allow at least 1 token (or leave it out)"));
        }
        let key = generate_key()?;
        let mut scopes = new.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let record = KeyRecord {
            name: new.name,
            hash: format!("sha256:{}", hex::encode(hash_key(&key))),
            scopes,
            created: rfc3339(now),
            expires: new.expires_in.map(|d| rfc3339(now + d)),
            revoked: None,
            rate: new.rate,
            budget: new.budget,
            output: new.output,
            guard: new.guard,
            prefix: Some(key.chars().take(KEY_PREFIX.len() + PREFIX_HEX).collect()),
            generate: new.generate,
        };
        self.keys.push(record.clone());
        Ok((record, key))
    }

    /// Marks a key revoked; returns false when it already was.
    pub fn revoke(&mut self, name: &str, now: OffsetDateTime) -> Result<bool> {
        let key = self.keys.iter_mut().find(|k| k.name == name).ok_or_else(|| {
            Error::not_found(format!("no key named {name:?} (`vigil keys list` shows them)"))
        })?;
        if key.revoked.is_some() {
            return Ok(false);
        }
        key.revoked = Some(rfc3339(now));
        Ok(true)
    }
}

/// The key file of a run store opened with the store's sealing key: what `vigil keys` and the
/// console's Service view both create, list and revoke keys through, so that the rules (unique
/// names, scopes, sealing, mode 0600) live in one place.
#[derive(Debug, Clone)]
pub struct KeyStore {
    path: PathBuf,
    seal: Option<std::sync::Arc<SealKey>>,
}

impl KeyStore {
    /// The key file of `store`.
    pub fn of(store: &crate::store::RunStore) -> Self {
        KeyStore { path: key_file_path(store.root()), seal: store.shared_key() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<KeyFile> {
        KeyFile::load_with_key(&self.path, self.seal.as_deref())
    }

    /// Every key, revoked ones included.
    pub fn list(&self) -> Result<Vec<KeyRecord>> {
        Ok(self.load()?.keys)
    }

    /// Creates a key, saves the file and returns the record with the key itself (shown once).
    pub fn create(&self, new: NewKey) -> Result<(KeyRecord, String)> {
        let mut file = self.load()?;
        let made = file.create(new, OffsetDateTime::now_utc())?;
        file.save_with_key(&self.path, self.seal.as_deref())?;
        Ok(made)
    }

    /// Revokes a key; false when it already was.
    pub fn revoke(&self, name: &str) -> Result<bool> {
        let mut file = self.load()?;
        let changed = file.revoke(name, OffsetDateTime::now_utc())?;
        if changed {
            file.save_with_key(&self.path, self.seal.as_deref())?;
        }
        Ok(changed)
    }
}

/// Parses a rate (`100` requests per second, or `none`) with an optional burst (default twice
/// the rate).
pub fn parse_rate(text: &str, burst: Option<u32>) -> std::result::Result<Option<RateLimit>, String> {
    if text.trim() == "none" {
        if burst.is_some() {
            return Err("a burst needs a rate".into());
        }
        return Ok(None);
    }
    let per_second: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("rate {text:?} must be requests per second (e.g. 100) or `none`"))?;
    if per_second == 0 {
        return Err("the rate must be at least 1 (or `none` for no limit)".into());
    }
    let burst = burst.unwrap_or(per_second.saturating_mul(2));
    if burst == 0 {
        return Err("the burst must be at least 1".into());
    }
    Ok(Some(RateLimit { per_second, burst }))
}

/// Parses a key's tokens per minute on the language-model routes: a whole number above 0, or
/// `none` (`vigil keys create --tokens-per-minute` and the console's key form).
pub fn parse_tokens_per_minute(text: &str) -> std::result::Result<Option<u64>, String> {
    match text.trim() {
        "none" | "" => Ok(None),
        n => n
            .replace('_', "")
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("{n:?} must be a whole number of tokens above 0, or none")),
    }
}

/// Checks a key's log-probability allowance: at most the API's most alternatives per token.
pub fn check_logprobs(k: Option<usize>) -> std::result::Result<Option<usize>, String> {
    let most = crate::serve::llm::openai::MAX_TOP_LOGPROBS;
    match k {
        Some(k) if k > most => Err(format!("allows at most {most} alternatives per token, not {k}")),
        k => Ok(k),
    }
}

/// Parses a key's log-probability allowance as the key form takes it: `none` or K.
pub fn parse_logprobs(text: &str) -> std::result::Result<Option<usize>, String> {
    match text.trim() {
        "none" | "" => Ok(None),
        k => check_logprobs(Some(
            k.parse::<usize>()
                .map_err(|_| format!("{k:?} is not a whole number of alternatives per token, or none"))?,
        )),
    }
}

/// Parses a budget (`10000/day`) or `none`.
pub fn parse_budget(text: &str) -> std::result::Result<Option<Budget>, String> {
    match text.trim() {
        "none" | "" => Ok(None),
        b => b.parse().map(Some),
    }
}

/// Parses comma-separated scopes (`predict,explain`).
pub fn parse_scopes(text: &str) -> std::result::Result<Vec<Scope>, String> {
    let scopes: Vec<Scope> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    if scopes.is_empty() {
        return Err("a key needs at least one scope (predict, explain, admin, generate, embed)".into());
    }
    Ok(scopes)
}

/// A rate as people read it: `100/s (burst 200)` or `none`.
pub fn rate_text(r: Option<RateLimit>) -> String {
    r.map_or("none".into(), |r| format!("{}/s (burst {})", r.per_second, r.burst))
}

/// Finds the record whose hash matches `presented` in time independent of which record (if any)
/// matches and of how many bytes of a wrong hash agree.
pub fn find_by_hash(hashes: &[[u8; 32]], presented: &[u8; 32]) -> Option<usize> {
    let mut found = u32::MAX;
    for (i, h) in hashes.iter().enumerate() {
        let eq = h.ct_eq(presented);
        found.conditional_assign(&(i as u32), eq);
    }
    (found != u32::MAX).then_some(found as usize)
}

pub use crate::store::atomic::write_private;

/// A warning when a file holding key material is readable by other users.
pub fn permission_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{} has mode {mode:o}: other users can read the key hashes; run `chmod 600 {}`",
                path.display(),
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(name: &str) -> NewKey {
        NewKey {
            name: name.into(),
            scopes: vec![Scope::Predict],
            expires_in: None,
            rate: None,
            budget: None,
            output: OutputPolicy::default(),
            guard: Default::default(),
            generate: Default::default(),
        }
    }

    #[test]
    fn keys_carry_256_random_bits_and_only_their_hash_is_kept() {
        let mut file = KeyFile::default();
        let now = OffsetDateTime::now_utc();
        let (rec, key) = file.create(new_key("alice"), now).unwrap();
        let hex_part = key.strip_prefix(KEY_PREFIX).unwrap();
        assert_eq!(hex_part.len(), 64);
        assert!(hex_part.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(rec.hash_bytes().unwrap(), hash_key(&key));
        let (_, other) = file.create(new_key("bob"), now).unwrap();
        assert_ne!(key, other);
        let text = serde_json::to_string(&file).unwrap();
        assert!(!text.contains(hex_part), "the key file must not hold the key");
        assert!(!text.contains(&hex_part[..16]), "nor a part of it");
        assert_eq!(
            rec.prefix.as_deref(),
            Some(&key[..KEY_PREFIX.len() + PREFIX_HEX]),
            "but its first digits"
        );
    }

    #[test]
    fn saved_key_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let mut file = KeyFile::default();
        file.create(new_key("a"), OffsetDateTime::now_utc()).unwrap();
        file.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(permission_warning(&path).is_none());
        assert_eq!(KeyFile::load(&path).unwrap(), file);
    }

    #[test]
    fn names_are_unique_even_after_revocation() {
        let mut file = KeyFile::default();
        let now = OffsetDateTime::now_utc();
        file.create(new_key("a"), now).unwrap();
        assert!(file.revoke("a", now).unwrap());
        assert!(!file.revoke("a", now).unwrap(), "a second revoke changes nothing");
        let err = file.create(new_key("a"), now).unwrap_err().to_string();
        assert!(err.contains("already exists") && err.contains("revoked"), "{err}");
        assert!(file.revoke("zzz", now).unwrap_err().to_string().contains("no key named"));
        assert!(file.create(new_key("bad name"), now).is_err());
    }

    #[test]
    fn status_follows_expiry_and_revocation() {
        let mut file = KeyFile::default();
        let now = OffsetDateTime::now_utc();
        let mut k = new_key("a");
        k.expires_in = Some(std::time::Duration::from_secs(3600));
        let (rec, _) = file.create(k, now).unwrap();
        assert_eq!(rec.status(now), KeyStatus::Active);
        assert!(matches!(rec.status(now + time::Duration::hours(2)), KeyStatus::Expired(_)));
        file.revoke("a", now).unwrap();
        assert!(matches!(file.keys[0].status(now), KeyStatus::Revoked(_)));
    }

    #[test]
    fn lookup_finds_the_matching_hash_or_none() {
        let hashes = [hash_key("a"), hash_key("b"), hash_key("c")];
        assert_eq!(find_by_hash(&hashes, &hash_key("b")), Some(1));
        assert_eq!(find_by_hash(&hashes, &hash_key("c")), Some(2));
        assert_eq!(find_by_hash(&hashes, &hash_key("d")), None);
        assert_eq!(find_by_hash(&[], &hash_key("a")), None);
    }

    #[test]
    fn rates_and_scopes_parse_or_say_why_not() {
        assert_eq!(parse_rate("100", None).unwrap(), Some(RateLimit { per_second: 100, burst: 200 }));
        assert_eq!(parse_rate("5", Some(7)).unwrap(), Some(RateLimit { per_second: 5, burst: 7 }));
        assert_eq!(parse_rate("none", None).unwrap(), None);
        assert!(parse_rate("none", Some(3)).is_err());
        assert!(parse_rate("0", None).unwrap_err().contains("at least 1"));
        assert!(parse_rate("fast", None).unwrap_err().contains("requests per second"));
        assert_eq!(parse_scopes("predict, explain").unwrap(), vec![Scope::Predict, Scope::Explain]);
        assert!(parse_scopes("").unwrap_err().contains("at least one scope"));
        assert!(parse_scopes("predict,root").unwrap_err().contains("unknown scope"));
        assert_eq!(parse_budget("none").unwrap(), None);
        assert!(parse_budget("7").is_err());
    }

    #[test]
    fn the_key_store_creates_lists_and_revokes_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::of(&crate::store::RunStore::new(dir.path()));
        let (rec, key) = keys.create(new_key("ci")).unwrap();
        assert!(key.starts_with(rec.prefix.as_deref().unwrap()));
        assert_eq!(keys.list().unwrap(), vec![rec]);
        assert!(keys.revoke("ci").unwrap());
        assert!(!keys.revoke("ci").unwrap());
        assert!(keys.list().unwrap()[0].revoked.is_some());
        assert!(keys.create(new_key("ci")).is_err(), "names stay taken");
    }

    #[test]
    fn durations_and_budgets_parse_or_say_why_not() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("0h").is_err());
        assert_eq!("10_000/day".parse::<Budget>().unwrap(), Budget { limit: 10_000, period: Period::Day });
        assert!("100".parse::<Budget>().unwrap_err().contains("10000/day"));
        assert!("0/day".parse::<Budget>().is_err());
        assert!("5/year".parse::<Budget>().unwrap_err().contains("unknown period"));
    }
}
