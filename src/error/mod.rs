//! The library's error type: one enum per domain (a config file, the user's other input, the run
//! store, training, the model service), and the top-level [`Error`] built from them. Every error
//! says what is wrong and where. [`Error::exit_code`] picks the command line's exit status from
//! the variant alone. The exit codes, all of them, are here:
//!
//! | code | when |
//! |------|------|
//! | 0 | the command did what it was asked |
//! | 1 | the machine, the network, a damaged store, a bug ([`EXIT_FAILURE`]) |
//! | 2 | the user's input: a spec, theme or keymap file, a data file, a run id, an argument, a file that is not there, a loss that diverges ([`EXIT_BAD_INPUT`]; clap's usage errors too) |
//! | 130 | interrupted: Ctrl-C, or a stop asked from elsewhere, before training ended ([`EXIT_INTERRUPTED`]) |
//! | 141 | stdout closed early (`vigil runs \| head`), as a Unix tool ([`EXIT_BROKEN_PIPE`]) |
//!
//! Library modules return these typed errors; the binary (`main.rs`) prints them with the
//! chain of their sources, so `anyhow` is not needed at its edge (there is only one: `run`).

mod config;

use std::path::{Path, PathBuf};

pub use config::{ConfigError, field_before, locate, locate_after};

/// Exit status for the machine's doing or a bug.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status for bad input.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status when the user interrupted the command (the shell's code for SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;
/// Exit status when stdout was closed under us (the shell's code for SIGPIPE).
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Everything that can go wrong in Vigil.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A spec, theme or keymap file that does not parse or does not make sense (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A data file that is missing or malformed; `msg` names the first bad row (exit 2).
    #[error("{}: {msg}", path.display())]
    Data { path: PathBuf, msg: String },
    /// Other input from the user that cannot be used: an argument, a name, a value (exit 2).
    #[error(transparent)]
    Input(#[from] InputError),
    /// The run store refused or could not do what was asked (exit code by variant).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Training stopped (exit code by variant).
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The model service, or a client of it, failed (exit 1: not the user's input).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A file in the run store or elsewhere could not be read or written (exit 1).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tensor operation failed: a bug or a resource limit, never the user's input (exit 1).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A file in the run store is not what Vigil wrote there (exit 1).
    #[error("{}: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    /// A part of Vigil could not start (a thread, the async runtime, the terminal, a signal
    /// handler): the machine's doing, not the user's input, so it exits 1.
    #[error("cannot start {what}: {reason}")]
    Startup { what: String, reason: String },
    /// Something Vigil did itself failed: a worker that panicked, an encoder that refused its
    /// own output. A bug or the machine, never the user's input (exit 1).
    #[error("{0}")]
    Internal(String),
}

/// Input from the user, other than a config or data file, that cannot be used. Always exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// No run in the store matches the id, prefix or suffix the user gave.
    #[error("no run {query:?} in {} (`vigil runs` lists them)", store.display())]
    UnknownRun { query: String, store: PathBuf },
    /// More than one run matches the prefix or suffix the user gave.
    #[error("{query:?} matches {} runs: {}", matches.len(), matches.join(", "))]
    AmbiguousRun { query: String, matches: Vec<String> },
    /// A command-line argument or a parameter value that is out of range or malformed.
    #[error("{0}")]
    Argument(String),
    /// The input names something that does not exist: a run, a spec, a theme, a key, a
    /// variant, a saved attack, a method.
    #[error("{0}")]
    NotFound(String),
    /// The input exists but does not fit what it is used with: a shape, a class, text given
    /// to a numeric model, a split too small.
    #[error("{0}")]
    Unsuitable(String),
    /// The request is understood and refused: it would be unsafe, overwrite something or
    /// conflict with the state of a run.
    #[error("{0}")]
    Refused(String),
}

/// The run store's own failures (a damaged file is [`Error::Corrupt`], a failed read or write
/// [`Error::Io`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A sealed file or store needs the sealing key, or was given the wrong one (exit 2).
    #[error("{0}")]
    Sealed(String),
    /// A signing or sealing key the user gave is missing or is not a key (exit 2).
    #[error("{0}")]
    Key(String),
    /// The key could not be derived from a passphrase (exit 1: the machine's doing).
    #[error("{0}")]
    Derive(String),
}

/// Why training, or loading what it saved, failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    /// The loss stopped being a finite number, or grew far past where it started (exit 2: the
    /// spec's rates or the data's scale; the README lists it among bad input). `epoch` and
    /// `step` are 1-based.
    #[error(
        "the training loss {} at epoch {epoch} step {step} (learning rate {lr:.3e}); the last \
         good checkpoint is kept. Lower the learning rate or check the data's scale",
        if loss.is_nan() {
            "became NaN".to_string()
        } else if loss.is_infinite() {
            "became infinite".to_string()
        } else {
            format!("diverged to {loss:.3e}")
        }
    )]
    Diverged { epoch: usize, step: u64, loss: f64, lr: f64 },
    /// Training was stopped before its end, by Ctrl-C or a stop asked from elsewhere (the
    /// console's `x`): the run is `cancelled` with its last checkpoint (exit 130).
    #[error(
        "{run} was stopped before the end; its last checkpoint is kept and `vigil train --resume {run}` continues it"
    )]
    Interrupted { run: String },
    /// The device the spec asks for is not available on this machine (exit 1).
    #[error("{0}")]
    Device(String),
    /// Saved optimiser state does not fit the network it is resumed into (exit 1).
    #[error("{0}")]
    State(String),
}

/// The model service and its clients (`vigil traffic`, the thief): all exit 1, since a port
/// that cannot be bound or a server that does not answer is not bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The listening socket could not be bound (a port in use, an address not on this host).
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    /// The server could not be reached or did not answer.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered, but not what a client can use (an error status, not JSON).
    #[error("{0}")]
    Answer(String),
    /// The HTTP client or the server could not be set up or stopped with an error.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    /// Exit code for the command line (the table is in the module's documentation).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Data { .. } | Error::Input(_) => EXIT_BAD_INPUT,
            Error::Store(StoreError::Sealed(_) | StoreError::Key(_)) => EXIT_BAD_INPUT,
            Error::Train(TrainError::Diverged { .. }) => EXIT_BAD_INPUT,
            Error::Train(TrainError::Interrupted { .. }) => EXIT_INTERRUPTED,
            Error::Store(StoreError::Derive(_))
            | Error::Train(TrainError::Device(_) | TrainError::State(_))
            | Error::Service(_)
            | Error::Io { .. }
            | Error::Tensor(_)
            | Error::Corrupt { .. }
            | Error::Startup { .. }
            | Error::Internal(_) => EXIT_FAILURE,
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

    /// A bad argument or parameter value ([`InputError::Argument`]).
    pub fn argument(msg: impl Into<String>) -> Self {
        InputError::Argument(msg.into()).into()
    }

    /// The input names something that does not exist ([`InputError::NotFound`]).
    pub fn not_found(msg: impl Into<String>) -> Self {
        InputError::NotFound(msg.into()).into()
    }

    /// The input does not fit what it is used with ([`InputError::Unsuitable`]).
    pub fn unsuitable(msg: impl Into<String>) -> Self {
        InputError::Unsuitable(msg.into()).into()
    }

    /// The request is refused ([`InputError::Refused`]).
    pub fn refused(msg: impl Into<String>) -> Self {
        InputError::Refused(msg.into()).into()
    }

    /// A file in the run store that is not what Vigil wrote there ([`Error::Corrupt`]).
    pub fn corrupt(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Corrupt { path: path.as_ref().to_path_buf(), msg: msg.into() }
    }

    /// A sealed file or store that needs the (right) sealing key ([`StoreError::Sealed`]).
    pub fn sealed(msg: impl Into<String>) -> Self {
        StoreError::Sealed(msg.into()).into()
    }

    /// A key file the user gave that is missing or not a key ([`StoreError::Key`]).
    pub fn bad_key(msg: impl Into<String>) -> Self {
        StoreError::Key(msg.into()).into()
    }

    /// The sealing key could not be derived ([`StoreError::Derive`]).
    pub fn derive(msg: impl Into<String>) -> Self {
        StoreError::Derive(msg.into()).into()
    }

    /// The device asked for is not available ([`TrainError::Device`]).
    pub fn device(msg: impl Into<String>) -> Self {
        TrainError::Device(msg.into()).into()
    }

    /// Saved training state does not fit ([`TrainError::State`]).
    pub fn train_state(msg: impl Into<String>) -> Self {
        TrainError::State(msg.into()).into()
    }

    /// `addr` could not be bound ([`ServiceError::Bind`]).
    pub fn bind(addr: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        ServiceError::Bind { addr: addr.to_string(), reason: reason.to_string() }.into()
    }

    /// A server that cannot be reached ([`ServiceError::Unreachable`]).
    pub fn unreachable(msg: impl Into<String>) -> Self {
        ServiceError::Unreachable(msg.into()).into()
    }

    /// A server's answer a client cannot use ([`ServiceError::Answer`]).
    pub fn bad_answer(msg: impl Into<String>) -> Self {
        ServiceError::Answer(msg.into()).into()
    }

    /// The service or its client failed ([`ServiceError::Failed`]).
    pub fn service_failed(msg: impl Into<String>) -> Self {
        ServiceError::Failed(msg.into()).into()
    }

    /// A failure of Vigil's own ([`Error::Internal`]).
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }
}

/// Shorthand used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_input_exits_2() {
        let two = [
            Error::argument("x"),
            Error::not_found("x"),
            Error::data("d.csv", "x"),
            StoreError::Sealed("x".into()).into(),
            TrainError::Diverged { epoch: 3, step: 40, loss: f64::NAN, lr: 0.1 }.into(),
            ConfigError::at(Path::new("a.ron"), 1, 1, None, "x").into(),
        ];
        for e in two {
            assert_eq!(e.exit_code(), 2, "{e:?}");
        }
        let one = [
            Error::startup("the terminal", "not a tty"),
            Error::internal("x"),
            ServiceError::Bind { addr: "127.0.0.1:1".into(), reason: "in use".into() }.into(),
            ServiceError::Unreachable("x".into()).into(),
            TrainError::Device("x".into()).into(),
            Error::io("f", std::io::Error::other("x")),
        ];
        for e in one {
            assert_eq!(e.exit_code(), 1, "{e:?}");
        }
        let stopped: Error = TrainError::Interrupted { run: "r".into() }.into();
        assert_eq!(stopped.exit_code(), 130);
        assert!(stopped.to_string().contains("vigil train --resume r"), "{stopped}");
        let grew: Error = TrainError::Diverged { epoch: 2, step: 9, loss: 5e8, lr: 10.0 }.into();
        assert!(grew.to_string().contains("diverged to 5.000e8"), "{grew}");
    }
}
