//! One external run folder, followed: its log files are listed now and then (a writer may add
//! one), each is read from where it stopped when its size or time changes, and the run's
//! status is worked out: running while a writer process lives or a file changed within
//! [`ACTIVE_WINDOW`], completed otherwise (at once when a writer was found and has exited,
//! until the files change again). What changed comes out as a [`Change`]: the run's
//! info as Vigil's tables show it, its new points, and warnings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::csv_log::{CsvLog, Outcome};
use super::event::EventReader;
use super::jsonl::JsonLog;
use super::{ExternalFeed, Format, ScalarPoint, Scalars, TagKind, Warning, discover};
use crate::store::{RunId, RunInfo, RunStatus};

/// A run whose files have not changed for this long, and with no writer process found, is
/// taken as finished. PyTorch's `SummaryWriter` flushes at least every 120 s (`flush_secs`).
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(120);
/// How often a folder is listed for new log files.
const LISTING_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
enum Reader {
    Event(EventReader),
    Csv(CsvLog),
    Json(JsonLog),
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    format: Format,
    reader: Reader,
    len: u64,
    mtime: Option<SystemTime>,
}

impl LogFile {
    fn new(path: PathBuf, format: Format) -> Self {
        let reader = match format {
            Format::TensorBoard => Reader::Event(EventReader::new(&path)),
            Format::Csv => Reader::Csv(CsvLog::new(&path)),
            Format::JsonLines => Reader::Json(JsonLog::new(&path)),
        };
        LogFile { path, format, reader, len: 0, mtime: None }
    }

    /// Reads what is new; says whether the file was rewritten (its points before are void).
    fn read(&mut self, out: &mut Scalars, warnings: &mut Vec<Warning>) -> bool {
        let result = match &mut self.reader {
            Reader::Event(r) => r.read(out, warnings).map(|_| false),
            Reader::Csv(r) => r.read(out, warnings).map(|o| o == Outcome::Rewritten),
            Reader::Json(r) => r.read(out, warnings),
        };
        result.unwrap_or_else(|e| {
            // Gone between the listing and the read, or unreadable: say so once per change.
            warnings.push(Warning {
                file: self.path.clone(),
                at: super::Position::Offset(0),
                msg: format!("cannot be read: {e}"),
            });
            false
        })
    }
}

/// What changed in a run folder since the last poll.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub info: RunInfo,
    pub feed: ExternalFeed,
    pub warnings: Vec<Warning>,
    /// The status changed (or this is the first look).
    pub status_changed: bool,
}

/// A run folder being followed.
#[derive(Debug)]
pub struct RunSource {
    pub id: RunId,
    pub dir: PathBuf,
    files: Vec<LogFile>,
    next_listing: Option<Instant>,
    /// The newest point of each tag, and each tag's largest value (for `best val`).
    last: BTreeMap<String, ScalarPoint>,
    max: BTreeMap<String, f64>,
    max_step: i64,
    first_wall: f64,
    last_wall: f64,
    first_mtime: Option<SystemTime>,
    newest_mtime: Option<SystemTime>,
    /// Processes writing the folder, as the watcher last found them.
    pub pids: Vec<u32>,
    status: Option<RunStatus>,
    sent_pid: Option<u32>,
    /// The newest file time when the writer last seen went away: a run whose writer was found
    /// and has exited is finished at once, until its files change again.
    writer_left_at: Option<Option<SystemTime>>,
}

impl RunSource {
    pub fn new(id: RunId, dir: PathBuf) -> Self {
        RunSource {
            id,
            dir,
            files: Vec::new(),
            next_listing: None,
            last: BTreeMap::new(),
            max: BTreeMap::new(),
            max_step: 0,
            first_wall: f64::NAN,
            last_wall: f64::NAN,
            first_mtime: None,
            newest_mtime: None,
            pids: Vec::new(),
            status: None,
            sent_pid: None,
            writer_left_at: None,
        }
    }

    /// Whether the run is running (as of the last poll).
    pub fn is_live(&self) -> bool {
        self.status.is_none_or(|s| s == RunStatus::Running)
    }

    /// Reads what changed; `None` when nothing did.
    pub fn poll(&mut self, now: Instant) -> Option<Change> {
        let mut files_changed = false;
        if self.next_listing.is_none_or(|n| now >= n) {
            self.next_listing = Some(now + LISTING_EVERY);
            let listed = discover::log_files(&self.dir);
            let before = self.files.len();
            self.files.retain(|f| listed.iter().any(|(p, _)| *p == f.path));
            for (path, format) in listed {
                if !self.files.iter().any(|f| f.path == path) {
                    self.files.push(LogFile::new(path, format));
                    files_changed = true;
                }
            }
            files_changed |= self.files.len() != before;
        }
        let mut scalars = Scalars::new();
        let mut warnings = Vec::new();
        let mut reset = false;
        for f in &mut self.files {
            let Ok(meta) = std::fs::metadata(&f.path) else { continue };
            let (len, mtime) = (meta.len(), meta.modified().ok());
            if len == f.len && mtime == f.mtime {
                continue;
            }
            reset |= len < f.len;
            f.len = len;
            f.mtime = mtime;
            if let Some(m) = mtime {
                self.first_mtime = Some(self.first_mtime.map_or(m, |f| f.min(m)));
                self.newest_mtime = Some(self.newest_mtime.map_or(m, |n| n.max(m)));
            }
            reset |= f.read(&mut scalars, &mut warnings);
        }
        if reset {
            // A file was rewritten (Lightning's CSV with a new column) or truncated: read the
            // whole run anew, so its points are what the files hold now.
            scalars.clear();
            self.last.clear();
            self.max.clear();
            for f in &mut self.files {
                *f = LogFile { len: f.len, mtime: f.mtime, ..LogFile::new(f.path.clone(), f.format) };
                f.read(&mut scalars, &mut warnings);
            }
        }
        self.summarise(&scalars);
        let recent = self
            .newest_mtime
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < ACTIVE_WINDOW);
        if !self.pids.is_empty() {
            self.writer_left_at = None;
        } else if self.sent_pid.is_some() {
            self.writer_left_at = Some(self.newest_mtime);
        }
        let writer_gone = self.writer_left_at.is_some_and(|at| at == self.newest_mtime);
        let status = if !self.pids.is_empty() || (recent && !writer_gone) {
            RunStatus::Running
        } else {
            RunStatus::Completed
        };
        let status_changed = self.status != Some(status);
        if status_changed && status == RunStatus::Completed {
            // The writer is gone: what never became a whole record will not.
            for f in &mut self.files {
                if let Reader::Event(r) = &mut f.reader {
                    r.finish(&mut warnings);
                }
            }
        }
        self.status = Some(status);
        let pid = self.pids.first().copied();
        let pid_changed = pid != self.sent_pid;
        self.sent_pid = pid;
        if scalars.is_empty()
            && warnings.is_empty()
            && !files_changed
            && !status_changed
            && !pid_changed
            && !reset
        {
            return None;
        }
        let files = if files_changed || reset {
            self.files.iter().map(|f| (f.path.clone(), f.format)).collect()
        } else {
            vec![]
        };
        Some(Change {
            info: self.info(status),
            feed: ExternalFeed { dir: self.dir.clone(), files, scalars, reset },
            warnings,
            status_changed,
        })
    }

    fn summarise(&mut self, scalars: &Scalars) {
        for (tag, points) in scalars {
            for p in points {
                self.max_step = self.max_step.max(p.step);
                if p.wall.is_finite() {
                    self.first_wall =
                        if self.first_wall.is_nan() { p.wall } else { self.first_wall.min(p.wall) };
                    self.last_wall =
                        if self.last_wall.is_nan() { p.wall } else { self.last_wall.max(p.wall) };
                }
                let m = self.max.entry(tag.clone()).or_insert(p.value);
                *m = m.max(p.value);
            }
            if let Some(p) = points.iter().max_by_key(|p| p.step)
                && self.last.get(tag).is_none_or(|l| l.step <= p.step)
            {
                self.last.insert(tag.clone(), *p);
            }
        }
    }

    /// The run as Vigil's tables show one: the format for the spec, the newest training loss,
    /// the best held-out accuracy, the steps, the time from the first point to the last.
    fn info(&self, status: RunStatus) -> RunInfo {
        let tags = || self.last.keys().map(String::as_str);
        let last = |t: Option<&str>| t.and_then(|t| self.last.get(t)).map(|p| p.value);
        let held_out = |kind| tags().filter(|t| super::is_held_out(t)).find(|t| super::classify(t) == kind);
        let acc = super::primary(tags(), TagKind::Accuracy);
        let mut formats: Vec<&str> = self.files.iter().map(|f| f.format.as_str()).collect();
        formats.sort();
        formats.dedup();
        let first =
            if self.first_wall.is_finite() { Some(self.first_wall) } else { self.first_mtime.map(secs) };
        let newest = self.newest_mtime.map(secs);
        let end = if self.last_wall.is_finite() { Some(self.last_wall) } else { newest };
        let duration_s = match (first, end) {
            (Some(a), Some(b)) if b >= a => b - a,
            _ => 0.0,
        };
        RunInfo {
            id: self.id.clone(),
            spec: if formats.is_empty() { "external".into() } else { formats.join("+") },
            model: "external".into(),
            status,
            created: first.map_or_else(crate::store::now, rfc3339),
            started: first.map(rfc3339),
            finished: (status == RunStatus::Completed).then(|| end.map_or_else(crate::store::now, rfc3339)),
            updated: newest.map_or_else(crate::store::now, rfc3339),
            epoch: last(Some("epoch")).map_or(0, |e| e.max(0.0) as usize),
            epochs: 0,
            step: self.max_step.max(0) as u64,
            steps_per_epoch: 0,
            train_loss: last(super::primary(tags(), TagKind::Loss)),
            val_loss: last(held_out(TagKind::Loss)),
            val_accuracy: last(acc),
            best_val_accuracy: acc.and_then(|t| self.max.get(t).copied()),
            best_epoch: None,
            test_accuracy: None,
            test_macro_f1: None,
            membership_advantage: None,
            dp: None,
            duration_s,
            samples_per_sec: None,
            failure: None,
            pid: self.pids.first().copied(),
            seed: 0,
        }
    }
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since the epoch as RFC 3339 (UTC).
fn rfc3339(s: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos((s * 1e9) as i128)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(crate::store::now)
}

/// Reads a run folder once, whole (the CLI's listing): its change as a first poll sees it.
pub fn read_once(id: RunId, dir: &Path, pids: Vec<u32>) -> Option<Change> {
    let mut s = RunSource::new(id, dir.to_path_buf());
    s.pids = pids;
    s.poll(Instant::now())
}
