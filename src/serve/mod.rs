//! The model service: trained models served over HTTP (axum on tokio) with keys, limits, output
//! policies, metrics and a hash-chained access log.
//!
//! - [`server`]: start and stop the service ([`Server`], [`ServerThread`]); the CLI and the
//!   console both go through it.
//! - [`routes`]: the route table and what each route needs; [`router`]: the gate and handlers.
//! - [`keys`]: the key file and key checks; [`auth`]: the keys in force; [`limits`]: rates and
//!   budgets; [`policy`]: what a caller learns from a prediction.
//! - [`model`]: a run's model with its preprocessing and input checks; [`llm`]: a language
//!   model served on the OpenAI-compatible routes (scheduler, screen, distillation watch).
//! - [`access_log`]: the log writer; [`audit`]: checking its chain; [`monitor`]: following it
//!   and the last minute's numbers, for the console (no UI code).
//! - [`edge`]: accepting connections (caps per client and in total) and counting what is
//!   turned away before routing.
//! - [`soak`]: minutes of mixed, hostile traffic against a service, and the report.
//! - [`metrics`]: the Prometheus metrics; [`traffic`]: a client that sends test-split inputs.
//!
//! Nothing in here draws on a terminal; the core ML code does not depend on this module.

pub mod access_log;
pub mod audit;
pub mod auth;
pub mod edge;
pub mod keys;
pub mod limits;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod policy;
pub mod router;
pub mod routes;
pub mod server;
pub mod soak;
pub mod traffic;

pub use server::{ServeConfig, Server, ServerThread, TlsFiles};
