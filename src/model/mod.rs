//! A trained DiffGAP model: its card, its on-disk artifact and the operations it offers.
pub mod artifact;
pub mod card;
pub mod engine;
pub mod error;

pub use engine::{row_seed, DiffgapModel};
pub use error::ModelError;
