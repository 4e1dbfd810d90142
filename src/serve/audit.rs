//! `vigil audit verify`: checks the access log's hash chain and reports the first line that was
//! changed, removed or reordered.
//!
//! Each line must hash to its own `hash` (else it was edited), carry the next `seq` (a gap with
//! the missing lines nowhere later means lines were removed; a missing seq that turns up later,
//! or a seq that goes back, means lines were reordered) and name the line before it in `prev`
//! (else a line was rewritten and its hash recomputed). `access.head.json` catches lines cut off
//! the end. The chain has no secret key, so someone who rewrites every line from the edit on can
//! forge it; it catches edits, deletions and reorderings by anyone who does not.
//!
//! Reads files only; never changes them.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::access_log::{ACCESS_HEAD, ACCESS_LOG, GENESIS, Head, log_files, split_hash};
use crate::error::{Error, Result};

/// The first problem found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: PathBuf,
    /// 1-based line number in `file` (0 when the problem is the file's end).
    pub line: usize,
    pub kind: FindingKind,
    pub message: String,
}

/// What kind of tampering a finding points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    Changed,
    Removed,
    Reordered,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}: line {} {}", self.file.display(), self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<PathBuf>,
    pub lines: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first problem, or `None` when the chain is intact.
    pub finding: Option<Finding>,
}

struct Line {
    file: usize,
    number: usize,
    seq: u64,
    hash: String,
}

/// Checks every file of the log in `dir` (rotated files, then `access.jsonl`) as one chain that
/// must start at seq 1, and the head file.
pub fn verify_dir(dir: &Path) -> Result<Report> {
    let files = log_files(dir);
    if files.is_empty() {
        return Err(Error::not_found(format!(
            "no access log in {} (it starts with the first request)",
            dir.display()
        )));
    }
    verify(&files, true, read_head(dir))
}

/// Checks one file on its own (its first line may continue an earlier file). The head is
/// checked too when the file is a current log with a head beside it.
pub fn verify_file(file: &Path) -> Result<Report> {
    if !file.is_file() {
        return Err(Error::not_found(format!("{} is not a file", file.display())));
    }
    let head = match (file.file_name().and_then(|n| n.to_str()), file.parent()) {
        (Some(ACCESS_LOG), Some(dir)) => read_head(dir),
        _ => None,
    };
    verify(&[file.to_path_buf()], false, head)
}

fn read_head(dir: &Path) -> Option<Head> {
    let text = std::fs::read_to_string(dir.join(ACCESS_HEAD)).ok()?;
    serde_json::from_str(&text).ok()
}

fn open_lines(path: &Path) -> Result<impl Iterator<Item = std::io::Result<String>>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(std::io::BufReader::new(f).lines())
}

/// Parses and self-checks one line.
fn check_line(text: &str) -> std::result::Result<(u64, String, String), String> {
    let (content, hash) = split_hash(text)
        .ok_or("is not an access record: it does not end with its hash (was it edited or cut?)")?;
    #[derive(serde::Deserialize)]
    struct Chain {
        seq: u64,
        prev: String,
    }
    let chain: Chain = serde_json::from_str(text)
        .map_err(|e| format!("is not an access record ({e}): it was edited or damaged"))?;
    if hex::encode(Sha256::digest(content.as_bytes())) != hash {
        return Err(format!("(seq {}) was changed: its content no longer matches its hash", chain.seq));
    }
    Ok((chain.seq, chain.prev, hash.to_string()))
}

/// Whether a line with seq in `missing` appears from file `file`, line `after` on.
fn appears_later(files: &[PathBuf], file: usize, after: usize, missing: std::ops::Range<u64>) -> bool {
    for (fi, path) in files.iter().enumerate().skip(file) {
        let Ok(lines) = open_lines(path) else { continue };
        for (li, text) in lines.enumerate() {
            if fi == file && li < after {
                continue;
            }
            let Ok(text) = text else { break };
            if let Ok((seq, _, _)) = check_line(&text)
                && missing.contains(&seq)
            {
                return true;
            }
        }
    }
    false
}

fn verify(files: &[PathBuf], from_genesis: bool, head: Option<Head>) -> Result<Report> {
    let mut report =
        Report { files: files.to_vec(), lines: 0, first_seq: None, last_seq: None, finding: None };
    let mut last: Option<Line> = None;
    let finding = |file: usize, line: usize, kind, message: String| Finding {
        file: files[file].clone(),
        line,
        kind,
        message,
    };
    for (fi, path) in files.iter().enumerate() {
        for (li, text) in open_lines(path)?.enumerate() {
            let number = li + 1;
            let text = text.map_err(|e| Error::io(path, e))?;
            let (seq, prev, hash) = match check_line(&text) {
                Ok(v) => v,
                Err(msg) => {
                    report.finding = Some(finding(fi, number, FindingKind::Changed, msg));
                    return Ok(report);
                }
            };
            let expected = match &last {
                Some(l) => Some(l.seq + 1),
                None if from_genesis => Some(1),
                None => None,
            };
            if let Some(e) = expected
                && seq != e
            {
                let (kind, message) = if seq < e {
                    (
                        FindingKind::Reordered,
                        format!("(seq {seq}) is out of order: it comes after seq {}", e - 1),
                    )
                } else if appears_later(files, fi, number, e..seq) {
                    (
                        FindingKind::Reordered,
                        format!("(seq {seq}) is out of order: seq {e} should come before it and comes later"),
                    )
                } else {
                    let n = seq - e;
                    let what =
                        if n == 1 { format!("seq {e} is") } else { format!("seq {e} to {} are", seq - 1) };
                    let where_ = if last.is_none() {
                        "at the start of the log".to_string()
                    } else {
                        "before it".into()
                    };
                    (
                        FindingKind::Removed,
                        format!(
                            "(seq {seq}) follows a gap: {what} missing {where_} ({n} line{} removed)",
                            if n == 1 { "" } else { "s" }
                        ),
                    )
                };
                report.finding = Some(finding(fi, number, kind, message));
                return Ok(report);
            }
            let link = match &last {
                Some(l) => Some((l.hash.as_str(), Some(l))),
                None if from_genesis => Some((GENESIS, None)),
                None => None,
            };
            if let Some((want, before)) = link
                && prev != want
            {
                let message = match before {
                    Some(b) => format!(
                        "(seq {seq}) does not chain to the line before it ({} line {}, seq {}): that line \
                         was rewritten and its hash recomputed, or this line's prev was changed",
                        files[b.file]
                            .file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                        b.number,
                        b.seq
                    ),
                    None => {
                        format!("(seq {seq}) should start the chain but its prev is not the genesis hash")
                    }
                };
                report.finding = Some(finding(fi, number, FindingKind::Changed, message));
                return Ok(report);
            }
            report.lines += 1;
            report.first_seq.get_or_insert(seq);
            report.last_seq = Some(seq);
            last = Some(Line { file: fi, number, seq, hash });
        }
    }
    if let Some(h) = head {
        let end = files.len() - 1;
        match &last {
            Some(l) if h.seq > l.seq => {
                let n = h.seq - l.seq;
                report.finding = Some(finding(
                    end,
                    0,
                    FindingKind::Removed,
                    format!(
                        "the log ends at seq {} but the service wrote up to seq {} ({ACCESS_HEAD}): \
                         {n} line{} removed from the end",
                        l.seq,
                        h.seq,
                        if n == 1 { " was" } else { "s were" }
                    ),
                ));
            }
            Some(l) if h.seq == l.seq && h.hash != l.hash => {
                report.finding = Some(finding(
                    end,
                    l.number,
                    FindingKind::Changed,
                    format!("(seq {}) was rewritten: its hash differs from the one in {ACCESS_HEAD}", l.seq),
                ));
            }
            None if h.seq > 0 => {
                report.finding = Some(finding(
                    end,
                    0,
                    FindingKind::Removed,
                    format!("the log is empty but the service wrote up to seq {} ({ACCESS_HEAD})", h.seq),
                ));
            }
            _ => {}
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::access_log::{AccessEvent, LogOptions, start};

    /// A log of `n` lines written by the real writer.
    fn log(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = start(LogOptions { max_bytes: u64::MAX, ..LogOptions::new(dir.path()) }).unwrap();
        for i in 0..n {
            let mut ev = AccessEvent::new(format!("r{i}"), "GET", Some("/v1/models"), "/v1/models");
            (ev.key, ev.bytes_out, ev.latency_us) = (Some("k".into()), 10, 5);
            log.record(ev);
        }
        drop(log);
        writer.close();
        let path = dir.path().join(ACCESS_LOG);
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (dir, path) = log(6);
        let r = verify_dir(dir.path()).unwrap();
        assert_eq!(r.finding, None);
        assert_eq!((r.lines, r.first_seq, r.last_seq), (6, Some(1), Some(6)));
        assert_eq!(verify_file(&path).unwrap().finding, None);
    }

    #[test]
    fn an_edited_line_is_reported_as_changed() {
        let (dir, path) = log(6);
        let mut l = lines(&path);
        l[3] = l[3].replace("\"status\":200", "\"status\":201");
        write(&path, &l);
        let f = verify_dir(dir.path()).unwrap().finding.unwrap();
        assert_eq!((f.line, f.kind), (4, FindingKind::Changed), "{f}");
        assert!(f.to_string().contains("line 4") && f.message.contains("was changed"), "{f}");
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let (dir, path) = log(6);
        let mut l = lines(&path);
        let (content, _) = split_hash(&l[2].replace("\"status\":200", "\"status\":404")).unwrap();
        let hash = hex::encode(Sha256::digest(content.as_bytes()));
        l[2] = format!("{},\"hash\":\"{hash}\"}}", &content[..content.len() - 1]);
        write(&path, &l);
        let f = verify_dir(dir.path()).unwrap().finding.unwrap();
        assert_eq!((f.line, f.kind), (4, FindingKind::Changed), "{f}");
        assert!(f.message.contains("line 3"), "{f}");
    }

    #[test]
    fn a_deleted_line_is_reported_as_removed() {
        let (dir, path) = log(6);
        let mut l = lines(&path);
        l.remove(2);
        write(&path, &l);
        let f = verify_dir(dir.path()).unwrap().finding.unwrap();
        assert_eq!((f.line, f.kind), (3, FindingKind::Removed), "{f}");
        assert!(f.message.contains("seq 3 is missing"), "{f}");
    }

    #[test]
    fn swapped_lines_are_reported_as_reordered() {
        let (dir, path) = log(6);
        let mut l = lines(&path);
        l.swap(1, 2);
        write(&path, &l);
        let f = verify_dir(dir.path()).unwrap().finding.unwrap();
        assert_eq!((f.line, f.kind), (2, FindingKind::Reordered), "{f}");
        // A line moved back from later on is out of order too.
        let (dir, path) = log(6);
        let mut l = lines(&path);
        let moved = l.remove(1);
        l.push(moved);
        write(&path, &l);
        let f = verify_dir(dir.path()).unwrap().finding.unwrap();
        assert_eq!((f.line, f.kind), (2, FindingKind::Reordered), "{f}");
    }

    #[test]
    fn lines_cut_from_the_end_or_the_start_are_caught() {
        let (dir, path) = log(6);
        let mut l = lines(&path);
        l.truncate(4);
        write(&path, &l);
        let f = verify_dir(dir.path()).unwrap().finding.unwrap();
        assert_eq!(f.kind, FindingKind::Removed);
        assert!(f.message.contains("2 lines were removed from the end"), "{f}");

        let (dir, path) = log(6);
        let l = lines(&path);
        write(&path, &l[1..]);
        let f = verify_dir(dir.path()).unwrap().finding.unwrap();
        assert_eq!((f.line, f.kind), (1, FindingKind::Removed), "{f}");
        // Verified alone, a file may start mid-chain (an older file holds the start).
        std::fs::remove_file(dir.path().join(ACCESS_HEAD)).unwrap();
        assert_eq!(verify_file(&path).unwrap().finding, None);
    }

    #[test]
    fn garbage_is_reported_not_a_crash() {
        let (dir, path) = log(3);
        let mut l = lines(&path);
        l[1] = "not json at all".into();
        write(&path, &l);
        let f = verify_dir(dir.path()).unwrap().finding.unwrap();
        assert_eq!(f.line, 2);
        assert!(verify_dir(&dir.path().join("nothing")).is_err());
    }
}
