//! Training the denoiser: the split, the EMA and the loop.
pub mod ema;
pub mod probe;
pub mod split;
pub mod trainer;

pub use trainer::{train, TrainConfig, TrainOutcome};
