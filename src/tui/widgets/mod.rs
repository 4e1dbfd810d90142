//! Widgets the views share.

pub mod chart;
pub mod ids;
