//! Widgets the views share.

pub mod chart;
