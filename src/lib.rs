//! Vigil: a keyboard-driven terminal console to train, evaluate, serve, secure and explain
//! neural-network models. The library holds everything; `main.rs` only parses the command line.
//!
//! - [`ml`]: the headless core (specs, data, models, training, metrics); no UI or HTTP.
//! - [`store`]: the run store on disk, the source of truth for every run.
//! - [`engine`]: background work for the console (run queue, store follower, explanations,
//!   system sampler, service), each started as `spawn(deps, sink) -> Handle`.
//! - [`external`]: runs other programs train, read from their TensorBoard event files and
//!   CSV / JSON-lines metric logs (`vigil --watch`).
//! - [`llm`]: generative language models (GGUF) and the trait the service drives them through.
//! - [`tui`]: the interactive console (app state, views, keymap, themes).
//! - [`bench`]: training-throughput benchmarks.
//! - [`serve`]: the model service over HTTP: keys, limits, access log, and its client tools.
//! - [`sweep`]: hyperparameter sweeps (grid, random, TPE, ASHA), run locally or on Slurm.
//! - [`cli`]: the command line and its terminal output.
//! - [`error`]: the error enums per domain (one `ConfigError` for specs, themes and keymaps)
//!   and the exit code each variant maps to.

pub mod bench;
pub mod cli;
pub mod engine;
pub mod error;
pub mod external;
pub mod llm;
pub mod ml;
pub mod serve;
pub mod store;
pub mod sweep;
pub mod text;
pub mod tui;
