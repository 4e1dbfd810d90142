//! Background work behind the console. Each engine takes commands and emits plain-data events,
//! and none of them draws anything:
//! - [`runner`]: the run queue, training and evaluating on blocking threads;
//! - [`explain`]: explanations for the Explain view, on a thread of its own;
//! - [`watch`]: follows the run store on disk (runs from this and other processes alike);
//! - [`system`]: samples CPU, memory and GPUs once a second.

pub mod explain;
pub mod runner;
pub mod system;
pub mod watch;
