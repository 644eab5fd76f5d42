//! Data in and out: paired embedding files and the synthetic set.
pub mod pairs;
pub mod synthetic;
