//! Finding run folders under the watched directories: every folder, at any depth, that holds
//! an event file, a CSV log with a step column, or a JSON-lines log. The folder is the run (as
//! TensorBoard takes it); several files in one folder are one run, merged by tag.
//!
//! Skipped: hidden folders, virtual environments and caches (`node_modules`, `__pycache__`,
//! `site-packages`), symbolic links to folders (no loops), and Vigil's own run folders
//! (`run.json`: they are the store's, shown as Vigil's runs).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::{Format, ID_PREFIX};
use crate::store::RunId;

/// How deep under a watched directory folders are looked at.
pub const MAX_DEPTH: usize = 12;

const SKIP: &[&str] = &["node_modules", "__pycache__", "site-packages", "venv", "checkpoints", "wandb"];

/// A run folder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: RunId,
    pub dir: PathBuf,
}

/// The log files of a folder, by name, with their format.
pub fn log_files(dir: &Path) -> Vec<(PathBuf, Format)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    if dir.join("run.json").exists() {
        return vec![];
    }
    let mut out: Vec<(PathBuf, Format)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                return None;
            }
            let path = e.path();
            let format = if super::event::is_event_file(&name) {
                Format::TensorBoard
            } else if super::jsonl::is_jsonl_file(&name) {
                Format::JsonLines
            } else if name.ends_with(".csv") && csv_header_is_metrics(&path) {
                Format::Csv
            } else {
                return None;
            };
            Some((path, format))
        })
        .collect();
    // Event files are named by their creation time: name order is write order.
    out.sort();
    out
}

fn csv_header_is_metrics(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else { return false };
    let mut line = String::new();
    // A header is one short line; a data file's first kilobyte is enough to tell.
    let _ = std::io::BufReader::new(std::io::Read::take(f, 4096)).read_line(&mut line);
    super::csv_log::is_metric_header(line.trim_end())
}

/// Every run folder under the roots, each with a stable id: `ext:<root's name>/<path inside>`
/// (`ext:<root's name>` when the root itself is the run).
pub fn run_folders(roots: &[PathBuf]) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for root in roots {
        let base = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
        let mut name = base.file_name().map_or("root".into(), |n| n.to_string_lossy().to_string());
        // Two roots of the same name stay apart.
        let mut n = 2;
        let stem = name.clone();
        while names.contains(&name) {
            name = format!("{stem}~{n}");
            n += 1;
        }
        names.push(name.clone());
        walk(&base, &base, &name, 0, &mut out);
    }
    out
}

fn walk(root: &Path, dir: &Path, name: &str, depth: usize, out: &mut Vec<Found>) {
    if !log_files(dir).is_empty() {
        let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
        let rel = rel.to_string_lossy().replace('\\', "/");
        let id =
            if rel.is_empty() { format!("{ID_PREFIX}{name}") } else { format!("{ID_PREFIX}{name}/{rel}") };
        out.push(Found { id: RunId::from(id), dir: dir.to_path_buf() });
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut subdirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            !n.starts_with('.') && !SKIP.contains(&n.as_str())
        })
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    for d in subdirs {
        walk(root, &d, name, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_folders_are_found_at_any_depth_and_data_files_are_not_logs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("logs");
        let a = root.join("lightning_logs/version_0");
        let b = root.join("tb/run1");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(a.join("metrics.csv"), "epoch,step,loss\n").unwrap();
        std::fs::write(b.join("events.out.tfevents.1.host"), b"").unwrap();
        std::fs::write(root.join("data/iris.csv"), "sepal,petal,species\n").unwrap();
        std::fs::write(root.join("log.jsonl"), "{}\n").unwrap();
        let found = run_folders(std::slice::from_ref(&root));
        let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, vec!["ext:logs", "ext:logs/lightning_logs/version_0", "ext:logs/tb/run1"]);
    }
}
