//! Background work behind the console. Each engine takes commands and emits plain-data events,
//! and none of them draws anything:
//! - [`runner`]: the run queue, training and evaluating on blocking threads;
//! - [`explain`]: explanations for the Explain view, on a thread of its own;
//! - [`watch`]: follows the run store on disk (runs from this and other processes alike);
//! - [`system`]: samples CPU, memory and GPUs once a second;
//! - [`service`]: follows the model service's access log, and starts and stops the service.

pub mod explain;
pub mod runner;
pub mod service;
pub mod system;
pub mod watch;
