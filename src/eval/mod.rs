//! The evaluation protocol: retrieval metrics, gap measures, fusion fitting and the report.
pub mod fusion;
pub mod gap;
pub mod plot;
pub mod report;
pub mod retrieval;
pub mod views;
