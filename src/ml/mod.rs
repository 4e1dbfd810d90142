//! The headless core: experiment specs, data loading and preprocessing, networks, optimisers,
//! the training loop and metrics. Nothing here imports a terminal-UI or HTTP crate; it reports
//! progress through [`train::TrainObserver`] and writes runs through [`crate::store`].
//!
//! Two names that look alike: [`optim`] holds the optimisers the training loop steps with;
//! [`variants`] makes smaller copies of a trained model (quantised, pruned) for serving.

pub mod attack;
pub mod data;
pub mod explain;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod privacy;
pub mod spec;
pub mod train;
pub mod variants;
