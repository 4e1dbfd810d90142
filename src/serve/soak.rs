//! `vigil soak`: a long run of mixed, partly hostile traffic against a service it starts, ending
//! with a report that checks what must hold after it: the service did not crash (it is still
//! running, printed no panic, and stops cleanly), its memory stayed flat, the access log has one
//! line per routed request, its hash chain is intact, and a key revoked half-way was refused
//! within a second.
//!
//! The service is `vigil serve` in a child process (so its memory is its own, and a crash is a
//! crash), serving a copy of the run in a scratch run store, so the soak's keys and log lines
//! never mix with the operator's. The traffic: valid predictions from several workers; invalid
//! requests of every kind (bad JSON, wrong shapes, no key, wrong key, unknown model or route,
//! oversized, wrong content type); a rate-limited key sent over its rate; slow clients (headers
//! never finished, bodies that stall, malformed request lines); and a key revoked half-way while
//! a worker keeps using it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;

use super::access_log::log_files;
use super::audit::verify_dir;
use super::keys::{KeyFile, NewKey, RateLimit, Scope, key_file_path};
use crate::error::{Error, Result};
use crate::store::RunStore;

/// What `vigil soak` is told.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub store: RunStore,
    /// The run to serve (id, prefix, suffix or `latest`).
    pub run: String,
    pub duration: Duration,
    /// Valid predictions per second, spread over the workers.
    pub rate: f64,
    /// The `vigil` binary that serves (normally this one).
    pub exe: PathBuf,
    /// Keep the scratch store (log, keys) afterwards.
    pub keep: bool,
}

/// Requests of one kind: how many and what came back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Kind {
    pub sent: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Connections that ended without an answer.
    pub no_answer: u64,
}

/// The soak's findings.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub seconds: f64,
    pub kinds: BTreeMap<&'static str, Kind>,
    /// Answers that carried a request id (the gate saw them, so each must have a log line).
    pub routed: u64,
    pub log_lines: u64,
    pub chain_intact: bool,
    pub chain_problem: Option<String>,
    /// Whether the service died, printed a panic, or did not stop cleanly.
    pub crashes: u64,
    pub crash_notes: Vec<String>,
    /// (seconds since start, resident memory in MiB) of the service.
    pub rss_mib: Vec<(f64, f64)>,
    /// Growth of the memory from the second quarter of the run to the last, in percent.
    pub rss_growth_pct: Option<f64>,
    /// Time from the revocation being saved to the first refusal of the key, in ms.
    pub revoked_refused_after_ms: Option<f64>,
    /// Predictions the revoked key still got answered a second or more after the revocation.
    pub revoked_served_late: u64,
    /// The scratch store, when kept.
    pub store: Option<PathBuf>,
}

impl SoakReport {
    /// Memory growth up to this is flat (allocator pools settle during the first quarter).
    pub const FLAT_PCT: f64 = 10.0;

    /// What failed, if anything.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.crashes > 0 {
            f.push(format!("{} crashes: {}", self.crashes, self.crash_notes.join("; ")));
        }
        if self.log_lines != self.routed {
            f.push(format!("{} log lines for {} routed requests", self.log_lines, self.routed));
        }
        if !self.chain_intact {
            f.push(format!("the hash chain is broken: {}", self.chain_problem.clone().unwrap_or_default()));
        }
        match self.revoked_refused_after_ms {
            None => f.push("the revoked key was never refused".into()),
            Some(ms) if ms > 1000.0 => f.push(format!("the revoked key was refused only after {ms:.0} ms")),
            _ => {}
        }
        if self.revoked_served_late > 0 {
            f.push(format!("the revoked key was served {} times after a second", self.revoked_served_late));
        }
        if let Some(g) = self.rss_growth_pct
            && g > Self::FLAT_PCT
        {
            f.push(format!("memory grew {g:.1}% (flat is at most {}%)", Self::FLAT_PCT));
        }
        f
    }
}

/// Counters the traffic tasks share.
#[derive(Default)]
struct Tally {
    kinds: Mutex<BTreeMap<&'static str, Kind>>,
    routed: AtomicU64,
}

impl Tally {
    fn answer(&self, kind: &'static str, status: Option<u16>, routed: bool) {
        let mut k = self.kinds.lock().expect("never poisoned");
        let e = k.entry(kind).or_default();
        e.sent += 1;
        match status {
            Some(s) => *e.statuses.entry(s).or_default() += 1,
            None => e.no_answer += 1,
        }
        if routed {
            self.routed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The service under test, a child process.
struct Service {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Service {
    fn start(exe: &Path, store: &Path, run: &str) -> Result<Service> {
        let mut child = Command::new(exe)
            .arg("--runs-dir")
            .arg(store)
            .args(["serve", run, "--addr", "127.0.0.1:0", "--header-timeout", "2s", "--body-timeout", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::startup("the service to soak", e))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut err = child.stderr.take().expect("piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("never poisoned").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        let mut addr = None;
        while out.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(a) = line.trim().strip_prefix("serving on http://") {
                addr = Some(a.to_string());
                break;
            }
            line.clear();
        }
        // The rest of stdout is read (and dropped), so the service never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        match addr {
            Some(addr) => Ok(Service { child, addr, stderr }),
            None => {
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let err = stderr.lock().expect("never poisoned").clone();
                Err(Error::service_failed(format!("the service did not start: {}", err.trim())))
            }
        }
    }

    /// Resident memory in MiB (Linux; `None` elsewhere).
    fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    /// Stops it as an operator does (SIGTERM: graceful) and says whether it stopped cleanly.
    fn stop(mut self) -> std::result::Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("the service had already exited ({status})"));
        }
        let term = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        if !term.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let t0 = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("the service stopped with {s}")),
                _ if t0.elapsed() > Duration::from_secs(30) => {
                    let _ = self.child.kill();
                    return Err("the service did not stop within 30 s of SIGTERM".into());
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for e in std::fs::read_dir(from).map_err(|e| Error::io(from, e))?.flatten() {
        let target = to.join(e.file_name());
        if e.file_type().map_err(|err| Error::io(e.path(), err))?.is_dir() {
            copy_tree(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target).map_err(|err| Error::io(e.path(), err))?;
        }
    }
    Ok(())
}

fn new_key(file: &mut KeyFile, name: &str, scopes: &[Scope], rate: Option<RateLimit>) -> Result<String> {
    let new = NewKey {
        name: name.into(),
        scopes: scopes.to_vec(),
        expires_in: None,
        rate,
        budget: None,
        output: "full".parse().map_err(|e: String| Error::internal(e))?,
        guard: Default::default(),
        generate: Default::default(),
    };
    Ok(file.create(new, OffsetDateTime::now_utc())?.1)
}

/// Runs the soak; `progress` is told about each phase.
pub fn run(config: SoakConfig, progress: impl Fn(&str)) -> Result<SoakReport> {
    let dir = config.store.resolve(&config.run)?;
    let scratch = std::env::temp_dir().join(format!(
        "vigil-soak-{}-{}",
        std::process::id(),
        OffsetDateTime::now_utc().unix_timestamp()
    ));
    copy_tree(&dir.path, &scratch.join(dir.id.as_str()))?;
    let key_path = key_file_path(&scratch);
    let mut keys = KeyFile::load(&key_path)?;
    let valid = new_key(&mut keys, "soak", &[Scope::Predict, Scope::Admin], None)?;
    let limited =
        new_key(&mut keys, "soak-limited", &[Scope::Predict], Some(RateLimit { per_second: 5, burst: 5 }))?;
    let doomed = new_key(&mut keys, "soak-revoked", &[Scope::Predict], None)?;
    keys.save(&key_path)?;

    let service = Service::start(&config.exe, &scratch, dir.id.as_str())?;
    progress(&format!("serving {} on http://{} from {}", dir.id, service.addr, scratch.display()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::startup("the soak's runtime", e))?;
    let tally = Arc::new(Tally::default());
    let t0 = Instant::now();
    let mut rss = Vec::new();
    let revocation = runtime.block_on(traffic(
        &config,
        &service,
        &tally,
        &key_path,
        [valid, limited, doomed],
        &mut rss,
        t0,
        &progress,
    ))?;
    let seconds = t0.elapsed().as_secs_f64();

    progress("stopping the service (SIGTERM) and checking its log");
    let panics = service.stderr.lock().expect("never poisoned").matches("panicked at").count() as u64;
    let stderr = service.stderr.clone();
    let stopped = service.stop();
    let mut crash_notes = Vec::new();
    if let Err(e) = &stopped {
        crash_notes.push(e.clone());
    }
    if panics > 0 {
        let text = stderr.lock().expect("never poisoned").clone();
        let first = text.lines().find(|l| l.contains("panicked at")).unwrap_or("").to_string();
        crash_notes.push(format!("{panics} panics in the service's output, the first: {first}"));
    }
    let mut log_lines = 0u64;
    for f in log_files(&scratch) {
        let file = std::fs::File::open(&f).map_err(|e| Error::io(&f, e))?;
        log_lines += BufReader::new(file).lines().count() as u64;
    }
    let audit = verify_dir(&scratch)?;
    let rss_growth_pct = growth(&rss);
    let kinds = tally.kinds.lock().expect("never poisoned").clone();
    let report = SoakReport {
        seconds,
        kinds,
        routed: tally.routed.load(Ordering::Relaxed),
        log_lines,
        chain_intact: audit.finding.is_none(),
        chain_problem: audit.finding.map(|f| f.to_string()),
        crashes: u64::from(stopped.is_err()) + panics,
        crash_notes,
        rss_mib: rss,
        rss_growth_pct,
        revoked_refused_after_ms: revocation.0,
        revoked_served_late: revocation.1,
        store: config.keep.then(|| scratch.clone()),
    };
    if !config.keep {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(report)
}

/// Growth from the median of the second quarter's samples to the median of the last quarter's.
fn growth(samples: &[(f64, f64)]) -> Option<f64> {
    let n = samples.len();
    if n < 8 {
        return None;
    }
    let median = |s: &[(f64, f64)]| {
        let mut v: Vec<f64> = s.iter().map(|p| p.1).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let early = median(&samples[n / 4..n / 2]);
    let late = median(&samples[n * 3 / 4..]);
    Some(100.0 * (late - early) / early)
}

/// Drives every kind of traffic until the duration is up, revoking the doomed key half-way and
/// sampling the service's memory; returns when the revoked key was first refused (ms after
/// the revocation) and how often it was served a second or more after it.
#[allow(clippy::too_many_arguments)]
async fn traffic(
    config: &SoakConfig,
    service: &Service,
    tally: &Arc<Tally>,
    key_path: &Path,
    [valid, limited, doomed]: [String; 3],
    rss: &mut Vec<(f64, f64)>,
    t0: Instant,
    progress: &impl Fn(&str),
) -> Result<(Option<f64>, u64)> {
    crate::serve::server::install_crypto();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::startup("the soak's HTTP client", e))?;
    let base = format!("http://{}", service.addr);
    let list = async {
        let r = client.get(format!("{base}/v1/models")).bearer_auth(&valid).send().await?;
        r.error_for_status()?.text().await
    };
    let text = list.await.map_err(|e| Error::service_failed(format!("GET /v1/models: {e}")))?;
    // That request has its log line too.
    tally.answer("setup", Some(200), true);
    let models: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::service_failed(format!("GET /v1/models answered no JSON: {e}")))?;
    let model = &models["models"][0];
    let name = model["name"].as_str().unwrap_or_default().to_string();
    let width = model["values"].as_u64().unwrap_or(0) as usize;
    let good = if width > 0 {
        serde_json::json!({"inputs": [vec![0.0f32; width]]}).to_string()
    } else {
        r#"{"texts": ["a quiet text about nothing much"]}"#.to_string()
    };
    let predict = format!("{base}/v1/models/{name}/predict");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();

    // Valid predictions: four workers, paced to the rate, each input different (random 0s and
    // 1s, inside any model's range), so that per-key state such as PRADA's sees new queries.
    let workers = 4;
    let gap = Duration::from_secs_f64(workers as f64 / config.rate.max(1.0));
    for _ in 0..workers {
        let (c, url, key, text, tally, stop) =
            (client.clone(), predict.clone(), valid.clone(), good.clone(), tally.clone(), stop.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(gap);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let body = if width > 0 {
                    let row: Vec<f32> =
                        (0..width).map(|_| f32::from(u8::from(rand::random::<bool>()))).collect();
                    serde_json::json!({"inputs": [row]}).to_string()
                } else {
                    text.clone()
                };
                let r = c
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                record(&tally, "valid", r).await;
            }
        });
    }
    // Invalid requests of every kind, 20 a second.
    {
        let (c, base, url, key, tally, stop) =
            (client.clone(), base.clone(), predict.clone(), valid.clone(), tally.clone(), stop.clone());
        let width = width.max(1);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let json = |b: String| {
                    c.post(&url).bearer_auth(&key).header("content-type", "application/json").body(b)
                };
                let req = match i % 8 {
                    0 => json("{\"inputs\": [[1, 2,".into()),
                    1 => json(serde_json::json!({"inputs": [vec![0.0; width + 1]]}).to_string()),
                    2 => c.post(&url).header("content-type", "application/json").body("{}"),
                    3 => c
                        .post(&url)
                        .bearer_auth("vk_not-a-key")
                        .header("content-type", "application/json")
                        .body("{}"),
                    4 => {
                        c.post(format!("{base}/v1/models/no-such-model/predict")).bearer_auth(&key).body("{}")
                    }
                    5 => c.get(format!("{base}/no/such/route")).bearer_auth(&key),
                    6 => json(" ".repeat(1100 * 1024)),
                    _ => c.post(&url).bearer_auth(&key).header("content-type", "text/plain").body("hello"),
                };
                record(&tally, "invalid", req.send().await).await;
                i += 1;
            }
        });
    }
    // A key sent at four times its rate.
    {
        let (c, url, body, tally, stop) =
            (client.clone(), predict.clone(), good.clone(), tally.clone(), stop.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let r = c
                    .post(&url)
                    .bearer_auth(&limited)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                record(&tally, "over-rate", r).await;
            }
        });
    }
    // Slow clients, and broken request lines, a few a second.
    {
        let (addr, path, key, tally, stop) = (
            service.addr.clone(),
            format!("/v1/models/{name}/predict"),
            valid.clone(),
            tally.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (addr, path, key, tally) = (addr.clone(), path.clone(), key.clone(), tally.clone());
                tokio::spawn(async move {
                    let head = format!(
                        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                    );
                    let (kind, bytes) = match i % 3 {
                        // Headers never finished: dropped at the header timeout, never routed.
                        0 => ("slow-headers", head.into_bytes()),
                        // A body that stalls: 408 at the body timeout.
                        1 => ("slow-body", format!("{head}Content-Length: 100\r\n\r\n{{\"inputs\"").into_bytes()),
                        // Not HTTP: hyper's 400.
                        _ => ("bad-request-line", b"BLAH\x01 / HTTP/9\r\n\r\n".to_vec()),
                    };
                    let (status, routed) = raw(&addr, &bytes).await;
                    tally.answer(kind, status, routed);
                });
                i += 1;
            }
        });
    }
    // The doomed key, used until (and after) it is revoked.
    let revoked_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let first_refusal: Arc<Mutex<Option<Instant>>> = Arc::default();
    let served_late = Arc::new(AtomicU64::new(0));
    {
        let (c, url, body, tally, stop) =
            (client.clone(), predict.clone(), good.clone(), tally.clone(), stop.clone());
        let (revoked_at, first_refusal, served_late) =
            (revoked_at.clone(), first_refusal.clone(), served_late.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let sent = Instant::now();
                let r = c
                    .post(&url)
                    .bearer_auth(&doomed)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let status = r.as_ref().ok().map(|r| r.status().as_u16());
                let when = *revoked_at.lock().expect("never poisoned");
                if let Some(at) = when {
                    if status == Some(401) {
                        first_refusal.lock().expect("never poisoned").get_or_insert(Instant::now());
                    } else if status == Some(200) && sent >= at + Duration::from_secs(1) {
                        served_late.fetch_add(1, Ordering::Relaxed);
                    }
                }
                record(&tally, "revoked-key", r).await;
            }
        });
    }

    // The clock: memory every 5 s, the revocation half-way, progress every minute.
    let half = t0 + config.duration / 2;
    let end = t0 + config.duration;
    let mut next_sample = Instant::now();
    let mut next_note = t0 + Duration::from_secs(60);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            if let Some(m) = service.rss_mib() {
                rss.push((t0.elapsed().as_secs_f64(), m));
            }
            next_sample += Duration::from_secs(5);
        }
        if now >= half && revoked_at.lock().expect("never poisoned").is_none() {
            let mut keys = KeyFile::load(key_path)?;
            keys.revoke("soak-revoked", OffsetDateTime::now_utc())?;
            keys.save(key_path)?;
            *revoked_at.lock().expect("never poisoned") = Some(Instant::now());
            progress("revoked the key soak-revoked");
        }
        if now >= next_note {
            let routed = tally.routed.load(Ordering::Relaxed);
            let mem = rss.last().map_or("?".into(), |r| format!("{:.1} MiB", r.1));
            progress(&format!(
                "{:.0} s: {routed} routed requests, service memory {mem}",
                t0.elapsed().as_secs_f64()
            ));
            next_note += Duration::from_secs(60);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    // The slow clients' own tasks finish within the service's timeouts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at = *revoked_at.lock().expect("never poisoned");
    let refused = *first_refusal.lock().expect("never poisoned");
    let after = at.zip(refused).map(|(a, r)| r.saturating_duration_since(a).as_secs_f64() * 1000.0);
    Ok((after, served_late.load(Ordering::Relaxed)))
}

/// Counts an answer (routed when it carries a request id).
async fn record(tally: &Tally, kind: &'static str, r: reqwest::Result<reqwest::Response>) {
    match r {
        Ok(resp) => {
            let routed = resp.headers().contains_key("x-request-id");
            let status = resp.status().as_u16();
            // Read the body, so the connection goes back to the pool.
            let _ = resp.bytes().await;
            tally.answer(kind, Some(status), routed);
        }
        Err(_) => tally.answer(kind, None, false),
    }
}

/// Sends raw bytes on a fresh connection and reads the answer until the server closes it or
/// 10 s pass; returns the status and whether it carried a request id.
async fn raw(addr: &str, bytes: &[u8]) -> (Option<u16>, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return (None, false) };
    if s.write_all(bytes).await.is_err() {
        return (None, false);
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).and_then(|c| c.parse().ok());
    (status, text.to_ascii_lowercase().contains("\r\nx-request-id:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_compares_the_second_quarter_with_the_last() {
        let flat: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, if i < 3 { 50.0 } else { 100.0 })).collect();
        assert_eq!(growth(&flat), Some(0.0), "the warm-up is not counted");
        let rising: Vec<(f64, f64)> = (0..20).map(|i| (i as f64, 100.0 + 10.0 * i as f64)).collect();
        let g = growth(&rising).unwrap();
        assert!(g > 50.0, "{g}");
        assert_eq!(growth(&flat[..5]), None, "too few samples to say");
    }
}
