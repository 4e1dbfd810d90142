//! Metric logs as CSV with a header: `step,loss,...` as hand-written loops write them, and
//! Lightning's `CSVLogger` (`metrics.csv`: `epoch,step,train_loss,val_loss,...`, each row filling
//! only the columns logged at that step, the others empty). Read from where the last read
//! stopped, whole lines only. Lightning rewrites the whole file when a new metric appears, with a
//! wider header: a changed header or a shorter file reads the file anew.
//!
//! A row with more or fewer cells than the header is skipped with a warning naming its line;
//! a cell that is not a number is skipped, with one warning per column.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Position, ScalarPoint, Scalars, Warning, push};

/// Column names taken for the step, in order of preference.
pub const STEP_COLUMNS: &[&str] = &["step", "global_step", "iteration", "iter"];
/// Column names taken for the wall time (seconds since the Unix epoch).
pub const TIME_COLUMNS: &[&str] = &["wall_time", "timestamp", "time", "created_at"];

/// Whether a header line is a metric log's: it has a step column.
pub fn is_metric_header(line: &str) -> bool {
    line.split(',')
        .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
        .any(|c| STEP_COLUMNS.contains(&c.as_str()))
}

/// What a read found besides points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New lines were read (or none).
    Appended,
    /// The file was rewritten: every point before is to be forgotten.
    Rewritten,
}

/// Follows one CSV metric log.
#[derive(Debug)]
pub struct CsvLog {
    path: PathBuf,
    offset: u64,
    /// Lines read so far (the header included).
    lines: u64,
    header: Option<Vec<String>>,
    /// The header line's bytes, to notice a rewrite.
    header_bytes: Vec<u8>,
    step_col: Option<usize>,
    time_col: Option<usize>,
    warned_cols: HashSet<usize>,
    /// Rows so far, the step of a row without one.
    rows: i64,
}

impl CsvLog {
    pub fn new(path: &Path) -> Self {
        CsvLog {
            path: path.to_path_buf(),
            offset: 0,
            lines: 0,
            header: None,
            header_bytes: Vec::new(),
            step_col: None,
            time_col: None,
            warned_cols: HashSet::new(),
            rows: 0,
        }
    }

    /// Reads the lines written since the last call.
    pub fn read(&mut self, out: &mut Scalars, warnings: &mut Vec<Warning>) -> std::io::Result<Outcome> {
        let mut f = std::fs::File::open(&self.path)?;
        let len = f.metadata()?.len();
        let mut result = Outcome::Appended;
        if self.header.is_some() {
            let mut head = vec![0u8; self.header_bytes.len()];
            let same = len >= self.offset && f.read_exact(&mut head).is_ok() && head == self.header_bytes;
            if !same {
                *self = CsvLog::new(&self.path);
                result = Outcome::Rewritten;
            }
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        // Whole lines only: a torn last line is read when it is finished.
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else { return Ok(result) };
        let bytes = &bytes[..=end];
        let mut body = bytes;
        if self.header.is_none() {
            let nl = bytes.iter().position(|b| *b == b'\n').expect("there is a newline");
            let line = String::from_utf8_lossy(&bytes[..nl]).trim_end_matches('\r').to_string();
            let cols: Vec<String> = line.split(',').map(|c| c.trim().trim_matches('"').to_string()).collect();
            let find =
                |names: &[&str]| cols.iter().position(|c| names.contains(&c.to_ascii_lowercase().as_str()));
            self.step_col = find(STEP_COLUMNS);
            self.time_col = find(TIME_COLUMNS);
            self.header = Some(cols);
            self.header_bytes = bytes[..=nl].to_vec();
            self.lines = 1;
            body = &bytes[nl + 1..];
        }
        self.offset += bytes.len() as u64;
        let header = self.header.clone().unwrap_or_default();
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(body);
        let first_line = self.lines;
        let mut record = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = first_line + e.position().map_or(1, |p| p.line());
                    self.warn(warnings, line, format!("not CSV ({e}): line skipped"));
                    continue;
                }
            }
            let line = first_line + record.position().map_or(1, |p| p.line());
            self.lines = line;
            if record.len() == 1 && record[0].trim().is_empty() {
                continue; // a blank line
            }
            if record.len() != header.len() {
                let msg =
                    format!("{} cells where the header has {}: row skipped", record.len(), header.len());
                self.warn(warnings, line, msg);
                continue;
            }
            self.rows += 1;
            let num = |i: usize| record.get(i).and_then(|c| c.trim().parse::<f64>().ok());
            let step = self.step_col.and_then(num).map_or(self.rows - 1, |s| s as i64);
            let wall = self.time_col.and_then(num).unwrap_or(f64::NAN);
            for (i, cell) in record.iter().enumerate() {
                let cell = cell.trim();
                if Some(i) == self.step_col || Some(i) == self.time_col || cell.is_empty() {
                    continue;
                }
                match cell.parse::<f64>() {
                    Ok(value) => push(out, &header[i], ScalarPoint { step, wall, value }),
                    Err(_) => {
                        if self.warned_cols.insert(i) {
                            let msg = format!(
                                "column `{}` holds {cell:?}, not a number: such cells are skipped",
                                header[i]
                            );
                            self.warn(warnings, line, msg);
                        }
                    }
                }
            }
        }
        self.lines = first_line + body.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(result)
    }

    fn warn(&self, warnings: &mut Vec<Warning>, line: u64, msg: String) {
        warnings.push(Warning { file: self.path.clone(), at: Position::Line(line), msg });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lightning_sparse_rows_and_a_ragged_row_and_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        std::fs::write(&path, "epoch,step,train_loss,val_loss\n0,9,0.9,\n0,9,,0.8\n0,19,0.7\n1,29,0.5,")
            .unwrap();
        let mut log = CsvLog::new(&path);
        let (mut out, mut w) = (Scalars::new(), vec![]);
        assert_eq!(log.read(&mut out, &mut w).unwrap(), Outcome::Appended);
        assert_eq!(out["train_loss"].iter().map(|p| (p.step, p.value)).collect::<Vec<_>>(), vec![(9, 0.9)]);
        assert_eq!(out["val_loss"][0].value, 0.8);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].at, Position::Line(4));
        assert!(w[0].msg.contains("3 cells where the header has 4"), "{}", w[0]);
        // The torn last line is finished.
        std::fs::write(&path, "epoch,step,train_loss,val_loss\n0,9,0.9,\n0,9,,0.8\n0,19,0.7\n1,29,0.5,\n")
            .unwrap();
        let (mut out, mut w) = (Scalars::new(), vec![]);
        log.read(&mut out, &mut w).unwrap();
        assert_eq!(out["train_loss"][0].step, 29);
        assert!(w.is_empty());
        // Lightning rewrites the file with a new column.
        std::fs::write(&path, "epoch,step,train_loss,val_loss,val_acc\n0,9,0.9,,\n").unwrap();
        let (mut out, mut w) = (Scalars::new(), vec![]);
        assert_eq!(log.read(&mut out, &mut w).unwrap(), Outcome::Rewritten);
        assert_eq!(out["train_loss"].len(), 1);
    }

    #[test]
    fn metric_headers_have_a_step_column() {
        assert!(is_metric_header("epoch,step,loss"));
        assert!(is_metric_header("\"global_step\",acc"));
        assert!(!is_metric_header("sepal_length,sepal_width,species"));
    }
}
