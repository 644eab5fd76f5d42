//! Data in and out: paired embedding files and the synthetic set.
pub mod npz;
pub mod pairs;
pub mod synthetic;
