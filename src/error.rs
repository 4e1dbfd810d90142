//! The library's error type. Every error says what is wrong and where; the binary maps the
//! variants that are the user's input (a spec, a data file, a run id, an argument) to exit code 2
//! and everything else to exit code 1.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in Vigil's core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An experiment spec (or other RON file) that does not parse or does not make sense.
    #[error("{}:{line}:{col}: {msg}", path.display())]
    Spec { path: PathBuf, line: usize, col: usize, msg: String },
    /// A data file that is missing or malformed; `msg` names the first bad row.
    #[error("{}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },
    /// Any other input from the user that cannot be used (an unknown run id, a bad argument).
    #[error("{0}")]
    Invalid(String),
    /// Training stopped because the loss stopped being a finite number.
    #[error("{0}")]
    Diverged(String),
    /// A file in the run store or elsewhere could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tensor operation failed: a bug or a resource limit, never the user's input.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A file in the run store is not what Vigil wrote there.
    #[error("{}: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    /// A part of Vigil could not start (a thread, the async runtime, the terminal, a port, a
    /// signal handler): the machine's doing, not the user's input, so it exits 1.
    #[error("cannot start {what}: {reason}")]
    Startup { what: String, reason: String },
}

impl Error {
    /// Exit code for the command line: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec { .. } | Error::Data { .. } | Error::Invalid(_) | Error::Diverged(_) => 2,
            _ => 1,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// `what` could not start, for `reason`.
    pub fn startup(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Startup { what: what.into(), reason: reason.to_string() }
    }

    /// A data error on `path`.
    pub fn data(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Data { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }
}

/// Shorthand used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
