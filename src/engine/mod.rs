//! Background work behind the console. Every engine has one shape: `spawn(deps, sink)` starts
//! it and returns a [`Handle`] (a command sender and a [`Join`]); it emits plain-data events
//! into its [`Sink`] and stops when the sink says nobody listens or the command sender is
//! dropped. None of them draws anything:
//! - [`runner`]: the run queue, training and evaluating on blocking threads;
//! - [`explain`]: explanations for the Explain view, on a thread of its own;
//! - [`follow`]: follows the run store on disk (runs from this and other processes alike);
//! - [`system`]: samples CPU, memory and GPUs once a second;
//! - [`service`]: follows the model service's access log, and starts and stops the service;
//! - [`sweeps`]: follows the store's hyperparameter sweeps;
//! - [`llm`]: loads a language model, generates completions and explains their tokens.

pub mod explain;
pub mod follow;
pub mod llm;
pub mod runner;
pub mod service;
pub mod sweeps;
pub mod system;

use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Where an engine's events go: returns false once nobody listens, and the engine then stops.
pub trait Sink<E>: Fn(E) -> bool + Send + 'static {}
impl<E, F: Fn(E) -> bool + Send + 'static> Sink<E> for F {}

/// The receiving end of an engine's commands (a task awaits it; a thread uses `blocking_recv`).
pub type Commands<C> = mpsc::UnboundedReceiver<C>;

/// A started engine.
pub struct Handle<C> {
    /// Commands to the engine; dropping the sender asks it to finish what it does and stop.
    pub commands: mpsc::UnboundedSender<C>,
    pub join: Join,
}

impl<C> Handle<C> {
    /// Sends a command; a stopped engine drops it.
    pub fn send(&self, command: C) {
        let _ = self.commands.send(command);
    }

    /// Closes the command channel and waits for the engine to end.
    pub async fn finish(self) {
        drop(self.commands);
        self.join.wait().await;
    }
}

/// How an engine runs: an async task or a named thread.
pub enum Join {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

impl Join {
    /// Waits for the engine to end (a thread is joined off the async workers).
    pub async fn wait(self) {
        match self {
            Join::Task(t) => {
                let _ = t.await;
            }
            Join::Thread(t) => {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
    }
}

/// A command channel for an engine.
fn channel<C>() -> (mpsc::UnboundedSender<C>, Commands<C>) {
    mpsc::unbounded_channel()
}

/// Starts an engine on a named thread; `what` names it in the error if the thread cannot start.
fn thread(name: &str, what: &str, f: impl FnOnce() + Send + 'static) -> Result<Join> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(Join::Thread)
        .map_err(|e| Error::startup(what, e))
}
