//! Training the denoiser: the split, the EMA and the loop; and fitting the cheap baselines.
pub mod baselines;
pub mod config;
pub mod ema;
pub mod objectives;
pub mod probe;
pub mod split;
pub mod trainer;

pub use trainer::{train, TrainConfig, TrainOutcome};
