//! The watcher: every external run under the watched directories, followed. New run folders are
//! found every [`DISCOVER_EVERY`], removed ones reported; the processes writing live runs are
//! looked for every [`PID_SCAN_EVERY`] (and only while some run is live, so that a console
//! watching finished runs reads nothing but a few file sizes). The writers found are also
//! published on a `watch` channel, for the system sampler to show beside the runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::source::{Change, RunSource};
use super::{discover, process};
use crate::store::RunId;

/// How often the watched directories are walked for new run folders.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(5);
/// How often the processes writing live runs are looked for.
pub const PID_SCAN_EVERY: Duration = Duration::from_secs(3);
/// How often a finished run's files are looked at (a live one's on every poll).
const SETTLED_EVERY: Duration = Duration::from_secs(2);

/// The processes writing external runs: pid to run ids.
pub type Writers = BTreeMap<u32, Vec<String>>;

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchUpdate {
    Run(RunId, Box<Change>),
    Removed(RunId),
}

/// Follows every run folder under some directories.
pub struct Watcher {
    roots: Vec<PathBuf>,
    sources: BTreeMap<RunId, (RunSource, Option<Instant>)>,
    next_discovery: Instant,
    next_pid_scan: Instant,
    writers: Option<tokio::sync::watch::Sender<Writers>>,
}

impl Watcher {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        let now = Instant::now();
        Watcher { roots, sources: BTreeMap::new(), next_discovery: now, next_pid_scan: now, writers: None }
    }

    /// Publishes the writers found on a channel.
    pub fn with_writers(mut self, tx: tokio::sync::watch::Sender<Writers>) -> Self {
        self.writers = Some(tx);
        self
    }

    /// Reads what changed since the last call.
    pub fn poll(&mut self) -> Vec<WatchUpdate> {
        let now = Instant::now();
        let mut out = Vec::new();
        if now >= self.next_discovery {
            self.next_discovery = now + DISCOVER_EVERY;
            let found = discover::run_folders(&self.roots);
            let gone: Vec<RunId> =
                self.sources.keys().filter(|id| !found.iter().any(|f| &f.id == *id)).cloned().collect();
            for id in gone {
                self.sources.remove(&id);
                out.push(WatchUpdate::Removed(id));
            }
            for f in found {
                self.sources.entry(f.id.clone()).or_insert_with(|| (RunSource::new(f.id, f.dir), None));
            }
        }
        if now >= self.next_pid_scan {
            self.next_pid_scan = now + PID_SCAN_EVERY;
            self.scan_writers();
        } else {
            // Between scans, a writer that exits is noticed at once.
            for (s, _) in self.sources.values_mut() {
                s.pids.retain(|p| crate::store::process_alive(*p));
            }
        }
        for (id, (s, next)) in &mut self.sources {
            if next.is_some_and(|n| now < n) {
                continue;
            }
            let change = s.poll(now);
            *next = (!s.is_live()).then_some(now + SETTLED_EVERY);
            if let Some(c) = change {
                out.push(WatchUpdate::Run(id.clone(), Box::new(c)));
            }
        }
        out
    }

    fn scan_writers(&mut self) {
        let live: Vec<&RunId> =
            self.sources.iter().filter(|(_, (s, _))| s.is_live()).map(|(id, _)| id).collect();
        let dirs: Vec<PathBuf> = live.iter().map(|id| self.sources[*id].0.dir.clone()).collect();
        let found = process::writers(&dirs);
        let ids: Vec<RunId> = live.into_iter().cloned().collect();
        let mut writers = Writers::new();
        for (id, pids) in ids.iter().zip(found) {
            for p in &pids {
                writers.entry(*p).or_default().push(id.to_string());
            }
            if let Some((s, _)) = self.sources.get_mut(id) {
                s.pids = pids;
            }
        }
        if let Some(tx) = &self.writers {
            tx.send_if_modified(|w| {
                let changed = *w != writers;
                *w = writers;
                changed
            });
        }
    }
}
