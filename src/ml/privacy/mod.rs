//! Privacy: the Rényi-DP accountant for DP-SGD (the same analysis as Opacus' `RDPAccountant`)
//! and the membership-inference report every run gets.

pub mod accountant;
pub mod dpsgd;
pub mod membership;
