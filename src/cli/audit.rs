//! `vigil audit verify [FILE]`: checks the access log's hash chain. Without FILE it checks every
//! file of the run store's log, oldest first, as one chain from its first line; with FILE it
//! checks that file alone. Exit 0 when intact; exit 1 and the first changed, removed or
//! reordered line otherwise.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::serve::audit::{Report, verify_dir, verify_file};

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Check the access log's hash chain and report the first line changed, removed or reordered.
    Verify {
        /// One log file to check on its own (default: the whole log in the run store).
        file: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(runs_dir: &Path, action: Action) -> Result<()> {
    let Action::Verify { file, json } = action;
    let report = match &file {
        Some(f) => verify_file(f)?,
        None => verify_dir(runs_dir)?,
    };
    if json {
        let v = serde_json::json!({
            "files": report.files,
            "lines": report.lines,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "intact": report.finding.is_none(),
            "finding": report.finding.as_ref().map(|f| serde_json::json!({
                "file": f.file, "line": f.line, "kind": format!("{:?}", f.kind).to_lowercase(),
                "message": f.message,
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    }
    outcome(report, json)
}

fn outcome(report: Report, quiet: bool) -> Result<()> {
    match report.finding {
        None => {
            if !quiet {
                let files = report.files.len();
                println!(
                    "intact: {} lines in {files} file{} (seq {} to {}), every line hashes to itself and chains to the one before",
                    report.lines,
                    if files == 1 { "" } else { "s" },
                    report.first_seq.unwrap_or(0),
                    report.last_seq.unwrap_or(0)
                );
            }
            Ok(())
        }
        Some(f) => {
            let msg = if f.line > 0 { format!("line {} {}", f.line, f.message) } else { f.message.clone() };
            let checked = match report.lines {
                1 => " (1 line before it verified)".to_string(),
                n => format!(" ({n} lines before it verified)"),
            };
            Err(Error::Corrupt { path: f.file, msg: format!("{msg}{checked}") })
        }
    }
}
