//! The machine's history in the run store: `<runs-dir>/system.jsonl`, one [`SystemPoint`] per
//! line, appended by the console's system sampler at a low rate (one point per
//! [`RECORD_EVERY`]) so that the System view's charts survive a restart. The file is bounded: past
//! [`MAX_BYTES`] it is renamed to `system.jsonl.1` (replacing the older one) and a new one starts,
//! so the store never holds more than twice that. Readers skip a torn or foreign line.
//!
//! This module knows only the file; what a point is made of comes from the sampler
//! ([`crate::engine::system`]), which converts its samples to and from points.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The history file's name inside the run store.
pub const FILE: &str = "system.jsonl";
/// How often the sampler records a point.
pub const RECORD_EVERY: Duration = Duration::from_secs(10);
/// The size past which the file is rotated (about 8,000 points, a day at one per 10 s).
pub const MAX_BYTES: u64 = 1 << 20;

/// One GPU's reading in a [`SystemPoint`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuPoint {
    pub index: u32,
    /// Percent.
    pub util: u32,
    pub mem_used: u64,
    pub mem_total: u64,
}

/// What the System view's history charts show, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemPoint {
    /// Unix time in seconds.
    pub t: f64,
    /// Mean CPU utilisation in percent.
    pub cpu: f32,
    pub mem_used: u64,
    pub mem_total: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuPoint>,
}

/// The history file of a run store.
#[derive(Debug, Clone)]
pub struct SystemLog {
    path: PathBuf,
    max_bytes: u64,
}

impl SystemLog {
    /// The history of the store at `root`.
    pub fn new(root: &Path) -> Self {
        SystemLog { path: root.join(FILE), max_bytes: MAX_BYTES }
    }

    /// The same file with another rotation size (tests).
    pub fn with_max_bytes(self, max_bytes: u64) -> Self {
        SystemLog { max_bytes, ..self }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("jsonl.1")
    }

    /// Appends a point, rotating the file first when it is full. A store folder that does not
    /// exist yet is not created here: the history is a courtesy, not a reason to make one.
    pub fn append(&self, p: &SystemPoint) -> Result<()> {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.max_bytes) {
            std::fs::rename(&self.path, self.rotated()).map_err(|e| Error::io(&self.path, e))?;
        }
        let line = serde_json::to_string(p).expect("points always serialise");
        super::append_line(&self.path, &line)
    }

    /// The points newer than `since` (Unix seconds), oldest first, from the rotated file and the
    /// current one; a missing file is an empty history.
    pub fn load(&self, since: f64) -> Vec<SystemPoint> {
        let mut out = Vec::new();
        for path in [self.rotated(), self.path.clone()] {
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            out.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<SystemPoint>(l).ok())
                    .filter(|p| p.t > since),
            );
        }
        // Two consoles on one store append in turn; the charts want time order.
        out.sort_by(|a, b| a.t.total_cmp(&b.t));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64) -> SystemPoint {
        SystemPoint { t, cpu: 10.0, mem_used: 1, mem_total: 2, gpus: vec![] }
    }

    #[test]
    fn points_come_back_in_order_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = SystemLog::new(dir.path()).with_max_bytes(400);
        for i in 0..100 {
            log.append(&point(i as f64)).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        assert!(size(log.path()) <= 400 + 80, "{}", size(log.path()));
        assert!(size(&log.rotated()) <= 400 + 80);
        let back = log.load(0.0);
        assert!(!back.is_empty() && back.len() < 100, "old points were rotated away: {}", back.len());
        assert!(back.windows(2).all(|w| w[0].t < w[1].t));
        assert_eq!(back.last().unwrap().t, 99.0, "the newest point is kept");
        assert!(log.load(98.0).iter().all(|p| p.t > 98.0));
    }

    #[test]
    fn a_torn_line_and_a_missing_file_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = SystemLog::new(dir.path());
        assert!(log.load(0.0).is_empty());
        log.append(&point(1.0)).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"t\":2,\"cp"))
            .unwrap();
        assert_eq!(log.load(0.0), vec![point(1.0)]);
    }
}
