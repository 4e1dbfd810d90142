//! Privacy: the Rényi-DP accountant for DP-SGD (the same analysis as Opacus' `RDPAccountant`).

pub mod accountant;
