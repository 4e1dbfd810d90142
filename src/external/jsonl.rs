//! Metric logs as JSON lines: one object per line, `{"step": 10, "loss": 0.3, ...}`, as
//! hand-written loops write them. Read from where the last read stopped, whole lines only (a
//! torn last line is read once it is finished). Numbers become tags; nested objects are
//! flattened with `/` (`{"train": {"loss": 1}}` is `train/loss`); other values are ignored. A
//! line that does not parse is skipped with a warning naming its line.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Position, ScalarPoint, Scalars, Warning, push};

/// Keys taken for the step, in order of preference.
pub const STEP_KEYS: &[&str] = &["step", "global_step", "iteration", "iter", "_step"];
/// Keys taken for the wall time (seconds since the Unix epoch).
pub const TIME_KEYS: &[&str] = &["wall_time", "timestamp", "time", "_timestamp"];

/// Whether a file name is a JSON-lines log's.
pub fn is_jsonl_file(name: &str) -> bool {
    name.ends_with(".jsonl") || name.ends_with(".ndjson")
}

/// Follows one JSON-lines log.
#[derive(Debug)]
pub struct JsonLog {
    path: PathBuf,
    offset: u64,
    /// Lines read so far.
    lines: u64,
}

impl JsonLog {
    pub fn new(path: &Path) -> Self {
        JsonLog { path: path.to_path_buf(), offset: 0, lines: 0 }
    }

    /// Reads the lines written since the last call; says whether the file was rewritten
    /// (shorter than what was read: every point before is to be forgotten).
    pub fn read(&mut self, out: &mut Scalars, warnings: &mut Vec<Warning>) -> std::io::Result<bool> {
        let mut f = std::fs::File::open(&self.path)?;
        let len = f.metadata()?.len();
        let rewritten = len < self.offset;
        if rewritten {
            *self = JsonLog::new(&self.path);
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return Ok(rewritten) };
        self.offset += end as u64 + 1;
        for raw in bytes[..end].split(|b| *b == b'\n') {
            self.lines += 1;
            let text = String::from_utf8_lossy(raw);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let obj: Map<String, Value> = match serde_json::from_str(text) {
                Ok(Value::Object(o)) => o,
                Ok(_) => {
                    self.warn(warnings, "is JSON but not an object: skipped".into());
                    continue;
                }
                Err(e) => {
                    self.warn(warnings, format!("not JSON (column {}: {e}): skipped", e.column()));
                    continue;
                }
            };
            let find = |keys: &[&str]| keys.iter().find_map(|k| obj.get(*k).and_then(Value::as_f64));
            let step = find(STEP_KEYS).map_or(self.lines as i64 - 1, |s| s as i64);
            let wall = find(TIME_KEYS).unwrap_or(f64::NAN);
            for (k, v) in &obj {
                if !STEP_KEYS.contains(&k.as_str()) && !TIME_KEYS.contains(&k.as_str()) {
                    flatten(k, v, step, wall, out);
                }
            }
        }
        Ok(rewritten)
    }

    fn warn(&self, warnings: &mut Vec<Warning>, msg: String) {
        warnings.push(Warning { file: self.path.clone(), at: Position::Line(self.lines), msg });
    }
}

fn flatten(key: &str, v: &Value, step: i64, wall: f64, out: &mut Scalars) {
    match v {
        Value::Number(n) => {
            if let Some(value) = n.as_f64() {
                push(out, key, ScalarPoint { step, wall, value });
            }
        }
        Value::Object(o) => {
            for (k, v) in o {
                flatten(&format!("{key}/{k}"), v, step, wall, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_whole_nested_keys_flattened_and_a_bad_line_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"step\": 1, \"loss\": 0.5, \"train\": {\"acc\": 0.1}}\n{oops\n{\"step\": 2, \"loss\": 0.4}\n{\"step\": 3").unwrap();
        let mut log = JsonLog::new(&path);
        let (mut out, mut w) = (Scalars::new(), vec![]);
        log.read(&mut out, &mut w).unwrap();
        assert_eq!(out["loss"].iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(out["train/acc"][0].value, 0.1);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].at, Position::Line(2));
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, b", \"loss\": 0.3}\n").unwrap();
        let (mut out, mut w) = (Scalars::new(), vec![]);
        log.read(&mut out, &mut w).unwrap();
        assert_eq!(out["loss"][0].step, 3);
        assert!(w.is_empty());
    }
}
