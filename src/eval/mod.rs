//! The evaluation protocol: retrieval metrics, the baseline ladder, gap and generation
//! measures, fusion fitting and the report.
pub mod card_ladder;
pub mod compare;
pub mod fusion;
pub mod gap;
pub mod generation;
pub mod ladder;
pub mod plot;
pub mod render;
pub mod report;
pub mod results;
pub mod retrieval;
pub mod sweep;
pub mod views;
