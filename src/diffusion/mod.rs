//! The DiffGAP math: schedules, the denoiser network, normalisation and DDIM sampling.
pub mod combine;
pub mod denoiser;
pub mod noise;
pub mod normalize;
pub mod prediction;
pub mod sampler;
pub mod schedule;
