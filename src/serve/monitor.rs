//! Watching the service from its access log, for the console's Service view (and anything else
//! that wants the numbers): [`LogFollower`] reads the lines appended since its last call, across
//! rotations and restarts, and [`ServiceStats`] turns them into what the view shows over the last
//! minute: requests per second, p50/p99 latency, error rate, per-key counts and budgets left, and
//! alerts. The console keeps its own
//! tail of lines, with its own filter (`tui::state::service`).
//!
//! The log file is the only input, so the view works for a service started by another process
//! just as for one the console started. No UI code here: the computations take the current time
//! as an argument and are unit-tested.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::access_log::{ACCESS_LOG, AccessRecord, rotated_files};
use crate::error::Result;
use crate::store::{RunStore, read_jsonl};

/// Reads an access log incrementally.
#[derive(Debug, Clone)]
pub struct LogFollower {
    dir: PathBuf,
    offset: u64,
    /// Identity of the file being followed, to notice a rotation.
    inode: Option<u64>,
    /// Newest seq returned, so that a file read again from the start gives nothing twice.
    last_seq: u64,
}

#[cfg(unix)]
fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m))
}

#[cfg(not(unix))]
fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len().min(1))
}

impl LogFollower {
    /// Follows the log in `dir` (the run store) from the start of its current file.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogFollower { dir: dir.into(), offset: 0, inode: None, last_seq: 0 }
    }

    /// Follows the log from roughly `bytes` before its end, so that a large log is not read whole
    /// just to show the last minute (the partial first line is skipped).
    pub fn tail(dir: impl Into<PathBuf>, bytes: u64) -> Self {
        let dir = dir.into();
        let path = dir.join(ACCESS_LOG);
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        LogFollower { offset: len.saturating_sub(bytes), inode: inode(&path), dir, last_seq: 0 }
    }

    /// The log file followed.
    pub fn path(&self) -> PathBuf {
        self.dir.join(ACCESS_LOG)
    }

    /// Every complete line appended since the last call, in order.
    pub fn poll(&mut self) -> Result<Vec<AccessRecord>> {
        let path = self.path();
        let current = inode(&path);
        let mut out = Vec::new();
        if self.inode.is_some() && current != self.inode {
            // The file was rotated (maybe more than once since the last call): finish the old
            // one, now `access.N.jsonl`, then read the files rotated after it, then the new one.
            let rotated = rotated_files(&self.dir);
            if let Some(i) = rotated.iter().rposition(|(_, p)| inode(p) == self.inode) {
                let (rest, _) = read_jsonl::<AccessRecord>(&rotated[i].1, self.offset)?;
                out.extend(rest);
                for (_, later) in &rotated[i + 1..] {
                    out.extend(read_jsonl::<AccessRecord>(later, 0)?.0);
                }
            }
            self.offset = 0;
        }
        self.inode = current;
        let (new, offset) = read_jsonl::<AccessRecord>(&path, self.offset)?;
        self.offset = offset;
        out.extend(new);
        out.retain(|r| r.seq > self.last_seq);
        if let Some(r) = out.last() {
            self.last_seq = r.seq;
        }
        Ok(out)
    }
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertLevel {
    Warning,
    Critical,
}

/// Something the operator should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The time of the line that raised it (RFC 3339).
    pub time: String,
    pub level: AlertLevel,
    pub message: String,
}

/// One key's numbers over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRow {
    pub name: String,
    pub requests: u64,
    /// Requests answered 4xx or 5xx.
    pub errors: u64,
    /// What its budget had left at its latest request (`None`: no budget); for a key with a
    /// token budget (language models), tokens.
    pub budget_left: Option<u64>,
    /// Language-model tokens (prompt and completion) it used in the window.
    #[serde(default)]
    pub tokens: u64,
}

/// A served language model's traffic over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    /// Requests to the language-model routes.
    pub requests: u64,
    pub requests_per_s: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Completion tokens per second over the window.
    pub tokens_per_s: f64,
    /// Time to first token.
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    /// Generations cut short because the client left.
    pub cancelled: u64,
}

/// What the Service view shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub window_s: u64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Share of requests answered 4xx or 5xx.
    pub error_rate: f64,
    /// Share answered 5xx (the service's own failures).
    pub server_error_rate: f64,
    /// Requests per status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status_classes: [u64; 5],
    /// Keys seen in the window or with a known budget, by name.
    pub keys: Vec<KeyRow>,
    /// Newest first.
    pub alerts: Vec<Alert>,
    /// Language-model traffic, when there was some in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationStats>,
}

struct Second {
    at: i64,
    requests: u64,
    classes: [u64; 5],
    latency: Histogram<u64>,
    /// Requests, failures and language-model tokens per key.
    keys: HashMap<String, (u64, u64, u64)>,
    refused_by_client: HashMap<String, u64>,
    generation: GenerationSecond,
}

/// One second of language-model traffic.
struct GenerationSecond {
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cancelled: u64,
    ttft: Histogram<u64>,
}

fn micros_histogram() -> Histogram<u64> {
    // Microseconds from 1 to 10 minutes at 2 significant figures: a few KiB a second.
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid bounds")
}

impl Second {
    fn new(at: i64) -> Self {
        Second {
            at,
            requests: 0,
            classes: [0; 5],
            latency: micros_histogram(),
            keys: HashMap::new(),
            refused_by_client: HashMap::new(),
            generation: GenerationSecond {
                requests: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                cancelled: 0,
                ttft: micros_histogram(),
            },
        }
    }
}

/// The last minute of a service, fed line by line.
pub struct ServiceStats {
    window: i64,
    seconds: VecDeque<Second>,
    budgets: BTreeMap<String, Option<u64>>,
    alerts: VecDeque<Alert>,
    /// When each (kind, subject) last raised an alert, to raise it at most once a window.
    raised: HashMap<(String, String), i64>,
}

/// Alerts kept.
const MAX_ALERTS: usize = 100;
/// Refused requests from one address within the window that suggest key guessing.
const GUESSING: u64 = 20;

fn unix_micros(time: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(time, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1000) as i64)
}

impl ServiceStats {
    /// Stats over the last `window_s` seconds.
    pub fn new(window_s: u64) -> Self {
        ServiceStats {
            window: window_s.max(1) as i64,
            seconds: VecDeque::new(),
            budgets: BTreeMap::new(),
            alerts: VecDeque::new(),
            raised: HashMap::new(),
        }
    }

    fn alert(&mut self, kind: &str, subject: &str, at: i64, time: &str, level: AlertLevel, message: String) {
        let k = (kind.to_string(), subject.to_string());
        if self.raised.get(&k).is_some_and(|t| at - t < self.window) {
            return;
        }
        self.raised.insert(k, at);
        self.alerts.push_front(Alert { time: time.to_string(), level, message });
        self.alerts.truncate(MAX_ALERTS);
    }

    /// Adds one line.
    pub fn push(&mut self, r: AccessRecord) {
        let Some(us) = unix_micros(&r.time) else { return };
        let at = us.div_euclid(1_000_000);
        // Lines arrive in completion order, so a second can reappear out of order: find it.
        let idx = match self.seconds.iter().rposition(|s| s.at <= at) {
            Some(i) if self.seconds[i].at == at => i,
            Some(i) => {
                self.seconds.insert(i + 1, Second::new(at));
                i + 1
            }
            None => {
                self.seconds.push_front(Second::new(at));
                0
            }
        };
        let s = &mut self.seconds[idx];
        s.requests += 1;
        let class = (r.status / 100).clamp(1, 5) as usize - 1;
        s.classes[class] += 1;
        let _ = s.latency.record(r.latency_us.max(1));
        let failed = r.status >= 400;
        let tokens = r.generation.as_ref().map_or(0, |g| g.prompt_tokens + g.completion_tokens);
        if let Some(k) = &r.key {
            let e = s.keys.entry(k.clone()).or_default();
            e.0 += 1;
            e.1 += failed as u64;
            e.2 += tokens;
        }
        if let Some(g) = &r.generation {
            let gs = &mut s.generation;
            gs.requests += 1;
            gs.prompt_tokens += g.prompt_tokens;
            gs.completion_tokens += g.completion_tokens;
            gs.cancelled += (g.finish_reason.as_deref() == Some("cancelled")) as u64;
            if let Some(t) = g.ttft_us {
                let _ = gs.ttft.record(t.max(1));
            }
        }
        if r.status == 401
            && let Some(c) = &r.client
        {
            let ip = c.rsplit_once(':').map_or(c.as_str(), |(ip, _)| ip).to_string();
            *s.refused_by_client.entry(ip).or_default() += 1;
        }
        if let Some(k) = &r.key {
            let known = self.budgets.entry(k.clone()).or_default();
            if r.budget_left.is_some() {
                *known = r.budget_left;
            }
        }
        self.alerts_for(&r, at);
        // Keep a little more than the window, for lines that arrive late.
        let newest = self.seconds.back().map_or(at, |s| s.at);
        while self.seconds.front().is_some_and(|s| s.at <= newest - 2 * self.window) {
            self.seconds.pop_front();
        }
    }

    fn alerts_for(&mut self, r: &AccessRecord, at: i64) {
        let key = r.key.as_deref().unwrap_or("-");
        let what = r.route.as_deref().unwrap_or(&r.path);
        let error = r.error.as_deref().unwrap_or("");
        match r.status {
            500..=599 => self.alert(
                "5xx",
                what,
                at,
                &r.time,
                AlertLevel::Critical,
                format!("{} on {} {} (request {}): {error}", r.status, r.method, what, r.request_id),
            ),
            401 if r.key.is_some() => self.alert(
                "stale-key",
                key,
                at,
                &r.time,
                AlertLevel::Warning,
                format!("key {key} is still being used from {}: {error}", r.client.as_deref().unwrap_or("?")),
            ),
            403 => self.alert(
                "scope",
                key,
                at,
                &r.time,
                AlertLevel::Warning,
                format!("key {key} called {} {what} without the scope for it", r.method),
            ),
            429 if error.contains("budget") => self.alert(
                "budget",
                key,
                at,
                &r.time,
                AlertLevel::Warning,
                format!(
                    "key {key} has spent its {} budget",
                    if error.contains("token budget") { "token" } else { "query" }
                ),
            ),
            429 => self.alert(
                "rate",
                key,
                at,
                &r.time,
                AlertLevel::Warning,
                format!("key {key} is hitting its rate limit"),
            ),
            _ => {}
        }
        if r.status == 401
            && let Some(c) = &r.client
        {
            let ip = c.rsplit_once(':').map_or(c.as_str(), |(ip, _)| ip).to_string();
            let from = at - self.window;
            let refused: u64 = self
                .seconds
                .iter()
                .filter(|s| s.at > from)
                .filter_map(|s| s.refused_by_client.get(&ip))
                .sum();
            if refused >= GUESSING {
                self.alert(
                    "guessing",
                    &ip,
                    at,
                    &r.time,
                    AlertLevel::Critical,
                    format!("{refused} requests without a valid key from {ip} in the last minute: someone may be guessing keys"),
                );
            }
        }
        if !r.flags.is_empty() {
            self.alert(
                "flag",
                &r.request_id,
                at,
                &r.time,
                AlertLevel::Warning,
                format!("request {} by {key} flagged: {}", r.request_id, r.flags.join(", ")),
            );
        }
    }

    /// Seeds what each key's budget has left (see [`key_budgets`]), so that keys show their
    /// budget before their first request in the window; later lines update it.
    pub fn seed_budgets(&mut self, budgets: BTreeMap<String, Option<u64>>) {
        for (k, left) in budgets {
            self.budgets.entry(k).or_insert(left);
        }
    }

    /// Adds lines.
    pub fn extend(&mut self, records: impl IntoIterator<Item = AccessRecord>) {
        for r in records {
            self.push(r);
        }
    }

    /// The numbers over the window ending at Unix time `now_s`.
    pub fn snapshot(&self, now_s: i64) -> Snapshot {
        let from = now_s - self.window;
        let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 2).expect("valid bounds");
        let mut requests = 0;
        let mut classes = [0u64; 5];
        let mut keys: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut ttft = micros_histogram();
        let (mut g_requests, mut g_prompt, mut g_completion, mut g_cancelled) = (0, 0, 0, 0);
        for s in self.seconds.iter().filter(|s| s.at > from && s.at <= now_s) {
            requests += s.requests;
            for (c, n) in classes.iter_mut().zip(s.classes) {
                *c += n;
            }
            let _ = latency.add(&s.latency);
            for (k, (n, e, t)) in &s.keys {
                let row = keys.entry(k.clone()).or_default();
                row.0 += n;
                row.1 += e;
                row.2 += t;
            }
            let g = &s.generation;
            g_requests += g.requests;
            g_prompt += g.prompt_tokens;
            g_completion += g.completion_tokens;
            g_cancelled += g.cancelled;
            let _ = ttft.add(&g.ttft);
        }
        let ttft_at = |q: f64| (!ttft.is_empty()).then(|| ttft.value_at_quantile(q) as f64 / 1000.0);
        let generation = (g_requests > 0).then(|| GenerationStats {
            requests: g_requests,
            requests_per_s: g_requests as f64 / self.window as f64,
            prompt_tokens: g_prompt,
            completion_tokens: g_completion,
            tokens_per_s: g_completion as f64 / self.window as f64,
            ttft_p50_ms: ttft_at(0.5),
            ttft_p99_ms: ttft_at(0.99),
            cancelled: g_cancelled,
        });
        for (k, b) in &self.budgets {
            if b.is_some() {
                keys.entry(k.clone()).or_default();
            }
        }
        let pct = |q: f64| (requests > 0).then(|| latency.value_at_quantile(q) as f64 / 1000.0);
        let errors = classes[3] + classes[4];
        let share = |n: u64| if requests == 0 { 0.0 } else { n as f64 / requests as f64 };
        let mut alerts: Vec<Alert> = self.alerts.iter().cloned().collect();
        let error_rate = share(errors);
        if requests >= 20 && error_rate > 0.2 {
            alerts.insert(
                0,
                Alert {
                    time: OffsetDateTime::from_unix_timestamp(now_s)
                        .ok()
                        .and_then(|t| t.format(&Rfc3339).ok())
                        .unwrap_or_default(),
                    level: AlertLevel::Warning,
                    message: format!(
                        "{:.0}% of the last minute's {requests} requests failed",
                        100.0 * error_rate
                    ),
                },
            );
        }
        Snapshot {
            window_s: self.window as u64,
            requests,
            requests_per_s: requests as f64 / self.window as f64,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            error_rate,
            server_error_rate: share(classes[4]),
            status_classes: classes,
            keys: keys
                .into_iter()
                .map(|(name, (requests, errors, tokens))| KeyRow {
                    budget_left: self.budgets.get(&name).copied().flatten(),
                    name,
                    requests,
                    errors,
                    tokens,
                })
                .collect(),
            alerts,
            generation,
        }
    }
}

/// What each key's budget has left at Unix time `now_s`, from the key file and the saved usage
/// (which a running service updates about once a second); `None` for keys without a budget.
/// A key with a token budget and no query budget shows its tokens left, as its log lines do.
/// Revoked keys are left out.
pub fn key_budgets(store: &RunStore, now_s: u64) -> Result<BTreeMap<String, Option<u64>>> {
    let keys = super::keys::KeyFile::load_with_key(&super::keys::key_file_path(store.root()), store.key())?;
    let usage = super::limits::UsageFile::load(&super::limits::UsageFile::path(store.root()))?;
    Ok(keys
        .keys
        .iter()
        .filter(|k| k.revoked.is_none())
        .map(|k| {
            let (budget, counts) = match (k.budget, k.generate.token_budget) {
                (None, Some(tokens)) => (Some(tokens), &usage.tokens),
                (b, _) => (b, &usage.keys),
            };
            let left = budget.map(|b| {
                let used = counts
                    .get(&k.name)
                    .filter(|u| u.window == now_s / b.period.seconds())
                    .map_or(0, |u| u.used);
                b.limit.saturating_sub(used)
            });
            (k.name.clone(), left)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::access_log::Flag;

    /// A line at `t0 + ms` milliseconds, where t0 is 2026-01-01T00:00:00Z (Unix 1767225600).
    fn rec(seq: u64, ms: i64, status: u16, latency_us: u64, key: Option<&str>) -> AccessRecord {
        let t =
            OffsetDateTime::from_unix_timestamp_nanos((1_767_225_600_000 + ms) as i128 * 1_000_000).unwrap();
        AccessRecord {
            seq,
            time: t.format(&Rfc3339).unwrap(),
            request_id: format!("r{seq}"),
            key: key.map(String::from),
            client: Some("10.0.0.7:5000".into()),
            method: "POST".into(),
            route: Some("/v1/models/{name}/predict".into()),
            path: "/v1/models/m/predict".into(),
            model: Some("m".into()),
            version: Some("v".into()),
            variant: None,
            status,
            bytes_in: 1,
            bytes_out: 1,
            latency_us,
            inputs: 1,
            labels: vec![],
            input_sha256: vec![],
            raw_inputs: None,
            policy: None,
            budget_left: None,
            error: None,
            flags: vec![],
            extraction_w: None,
            generation: None,
            prev: String::new(),
            hash: String::new(),
        }
    }

    const T0: i64 = 1_767_225_600;

    #[test]
    fn rate_percentiles_and_error_rate_over_the_window() {
        let mut s = ServiceStats::new(60);
        // 100 requests over the minute: latencies 1..=100 ms; every 10th a 500, and 10 are 401s.
        for i in 0..100u64 {
            let status = if i % 10 == 9 {
                500
            } else if i < 10 {
                401
            } else {
                200
            };
            s.push(rec(i + 1, i as i64 * 500, status, (i + 1) * 1000, Some("a")));
        }
        // Older than the window: must not count.
        s.push(rec(101, -120_000, 200, 5_000_000, Some("a")));
        let snap = s.snapshot(T0 + 50);
        assert_eq!(snap.requests, 100);
        assert!((snap.requests_per_s - 100.0 / 60.0).abs() < 1e-9);
        // Nearest-rank percentiles of 1..=100 ms are 50 and 99; HDR at 2 significant figures
        // reports the top of the bucket holding them.
        let p50 = snap.p50_ms.unwrap();
        let p99 = snap.p99_ms.unwrap();
        assert!((50.0..=50.6).contains(&p50), "{p50}");
        assert!((99.0..=99.6).contains(&p99), "{p99}");
        // 10 of them 500 (i = 9, 19, ..., 99) and 9 more 401 (i = 0..8).
        assert_eq!(snap.status_classes, [0, 81, 0, 9, 10]);
        assert!((snap.error_rate - 0.19).abs() < 1e-9);
        assert!((snap.server_error_rate - 0.10).abs() < 1e-9);
        assert_eq!(
            snap.keys,
            vec![KeyRow { name: "a".into(), requests: 100, errors: 19, budget_left: None, tokens: 0 }]
        );
        // A minute later, nothing is left in the window.
        let later = s.snapshot(T0 + 200);
        assert_eq!((later.requests, later.p50_ms), (0, None));
    }

    #[test]
    fn keys_budgets_and_alerts() {
        let mut s = ServiceStats::new(60);
        let mut a = rec(1, 0, 200, 100, Some("alice"));
        a.budget_left = Some(10);
        s.push(a);
        let mut a = rec(2, 1000, 200, 100, Some("alice"));
        a.budget_left = Some(9);
        s.push(a);
        let mut b = rec(3, 2000, 429, 100, Some("bob"));
        b.error = Some("rate limit: ...".into());
        s.push(b.clone());
        b.seq = 4;
        s.push(b); // the same alert is raised once a minute
        let mut revoked = rec(5, 3000, 401, 100, Some("carol"));
        revoked.error = Some("the key was revoked at ...".into());
        s.push(revoked);
        let mut flagged = rec(6, 4000, 200, 100, Some("alice"));
        flagged.flags = vec![Flag::Extraction];
        s.push(flagged);
        s.push(rec(7, 5000, 503, 100, Some("alice")));
        let snap = s.snapshot(T0 + 10);
        let alice = snap.keys.iter().find(|k| k.name == "alice").unwrap();
        assert_eq!((alice.requests, alice.errors, alice.budget_left), (4, 1, Some(9)));
        let messages: Vec<&str> = snap.alerts.iter().map(|a| a.message.as_str()).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].starts_with("503 on POST"), "newest first: {messages:?}");
        assert!(messages[1].contains("flagged: extraction"));
        assert!(messages[2].contains("carol is still being used"));
        assert!(messages[3].contains("bob is hitting its rate limit"));
        assert_eq!(snap.alerts[0].level, AlertLevel::Critical);
    }

    #[test]
    fn budgets_come_from_the_key_and_usage_files_until_lines_update_them() {
        use crate::serve::keys::{Budget, KeyFile, NewKey, Period, Scope, key_file_path};
        use crate::serve::limits::{Usage, UsageFile};
        let dir = tempfile::tempdir().unwrap();
        let mut file = KeyFile::default();
        let now = OffsetDateTime::from_unix_timestamp(T0).unwrap();
        for (name, budget) in
            [("a", Some(Budget { limit: 100, period: Period::Day })), ("b", None), ("gone", None)]
        {
            file.create(
                NewKey {
                    name: name.into(),
                    scopes: vec![Scope::Predict],
                    expires_in: None,
                    rate: None,
                    budget,
                    output: Default::default(),
                    guard: Default::default(),
                    generate: Default::default(),
                },
                now,
            )
            .unwrap();
        }
        file.revoke("gone", now).unwrap();
        file.save(&key_file_path(dir.path())).unwrap();
        let mut usage = UsageFile::default();
        usage.keys.insert("a".into(), Usage { window: T0 as u64 / 86_400, used: 30 });
        usage.save(&UsageFile::path(dir.path())).unwrap();
        let budgets = key_budgets(&RunStore::new(dir.path()), T0 as u64 + 5).unwrap();
        assert_eq!(budgets.into_iter().collect::<Vec<_>>(), vec![("a".into(), Some(70)), ("b".into(), None)]);
        // The next day the budget is whole again.
        assert_eq!(key_budgets(&RunStore::new(dir.path()), T0 as u64 + 86_400).unwrap()["a"], Some(100));

        let mut s = ServiceStats::new(60);
        s.seed_budgets(key_budgets(&RunStore::new(dir.path()), T0 as u64 + 5).unwrap());
        let snap = s.snapshot(T0 + 5);
        assert_eq!(
            snap.keys,
            vec![KeyRow { name: "a".into(), requests: 0, errors: 0, budget_left: Some(70), tokens: 0 }]
        );
        let mut r = rec(1, 1000, 200, 10, Some("a"));
        r.budget_left = Some(69);
        s.push(r);
        assert_eq!(s.snapshot(T0 + 5).keys[0].budget_left, Some(69));
    }

    #[test]
    fn many_refusals_from_one_address_raise_a_guessing_alert() {
        let mut s = ServiceStats::new(60);
        for i in 0..25 {
            s.push(rec(i + 1, i as i64 * 100, 401, 50, None));
        }
        let snap = s.snapshot(T0 + 5);
        // 25 requests, all refused: the window's error-rate alert comes first, then the one
        // raised at the 20th refusal (once, not again at the 21st to 25th).
        let messages: Vec<&str> = snap.alerts.iter().map(|a| a.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[0], "100% of the last minute's 25 requests failed");
        assert!(messages[1].starts_with("20 requests without a valid key from 10.0.0.7"), "{messages:?}");
        assert_eq!(snap.alerts[1].level, AlertLevel::Critical);
        let mut s2 = ServiceStats::new(60);
        for i in 0..25 {
            s2.push(rec(i + 1, i as i64 * 100, 200, 50, Some("k")));
        }
        for i in 0..10 {
            s2.push(rec(26 + i, 3000, 404, 50, Some("k")));
        }
        let snap = s2.snapshot(T0 + 5);
        assert!(
            snap.alerts[0].message.starts_with("29% of the last minute's 35 requests failed"),
            "{:?}",
            snap.alerts
        );
    }

    #[test]
    fn the_follower_reads_appends_across_rotation_without_repeats() {
        use crate::serve::access_log::{AccessEvent, LogOptions, start};
        let dir = tempfile::tempdir().unwrap();
        let write = |n: usize, max: u64| {
            let (log, w) = start(LogOptions { max_bytes: max, ..LogOptions::new(dir.path()) }).unwrap();
            for i in 0..n {
                let mut ev = AccessEvent::new(format!("r{i}"), "GET", Some("/healthz"), "/healthz");
                (ev.bytes_out, ev.latency_us) = (15, 3);
                log.record(ev);
            }
            drop(log);
            w.close();
        };
        let mut f = LogFollower::new(dir.path());
        assert!(f.poll().unwrap().is_empty(), "no log yet");
        write(3, u64::MAX);
        assert_eq!(f.poll().unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(f.poll().unwrap().is_empty());
        // The next writer rotates after a line or two: the follower finishes the old file first.
        write(4, 900);
        let seqs: Vec<u64> = f.poll().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![4, 5, 6, 7]);
        // Starting near the end skips the partial first line.
        let mut t = LogFollower::tail(dir.path(), 100);
        assert!(t.poll().unwrap().len() <= 1);
    }

    #[test]
    fn generative_lines_give_tokens_per_second_ttft_and_tokens_per_key() {
        use crate::serve::access_log::GenerationRecord;
        let mut stats = ServiceStats::new(60);
        for i in 0..10u64 {
            let mut r = rec(i + 1, 1000 * i as i64, 200, 50_000, Some("alice"));
            r.route = Some("/v1/chat/completions".into());
            r.budget_left = Some(1000 - 30 * (i + 1));
            r.generation = Some(GenerationRecord {
                prompt_tokens: 10,
                completion_tokens: 20,
                ttft_us: Some(1000 * (i + 1)),
                finish_reason: Some(if i == 9 { "cancelled" } else { "stop" }.into()),
                ..GenerationRecord::default()
            });
            stats.push(r);
        }
        stats.push(rec(11, 500, 200, 100, Some("bob")));
        let snap = stats.snapshot(1_767_225_600 + 30);
        let g = snap.generation.expect("generation stats");
        assert_eq!((g.requests, g.prompt_tokens, g.completion_tokens, g.cancelled), (10, 100, 200, 1));
        assert!((g.tokens_per_s - 200.0 / 60.0).abs() < 1e-9);
        // TTFTs of 1..10 ms: the median is 5 ms, p99 10 ms (to the histogram's precision).
        assert!((g.ttft_p50_ms.unwrap() - 5.0).abs() < 0.1, "{:?}", g.ttft_p50_ms);
        assert!((g.ttft_p99_ms.unwrap() - 10.0).abs() < 0.1, "{:?}", g.ttft_p99_ms);
        let alice = snap.keys.iter().find(|k| k.name == "alice").unwrap();
        assert_eq!((alice.tokens, alice.budget_left), (300, Some(700)));
        assert_eq!(snap.keys.iter().find(|k| k.name == "bob").unwrap().tokens, 0);
        assert_eq!(snap.requests, 11);
    }
}
