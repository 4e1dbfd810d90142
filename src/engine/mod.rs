//! Background work behind the console. Each engine takes commands and emits plain-data events,
//! and none of them draws anything:
//! - [`runner`]: the run queue, training and evaluating on blocking threads;
//! - [`watch`]: follows the run store on disk (runs from this and other processes alike);
//! - [`system`]: samples CPU, memory and GPUs once a second.

pub mod runner;
pub mod system;
pub mod watch;
