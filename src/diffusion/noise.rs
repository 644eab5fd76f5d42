//! Per-item seeded Gaussian noise. Drawn on the host from a counter-based stream per
//! (seed, sample, purpose), so an item's noise never depends on what else shares its batch, on
//! the device, or on the order in which the batch was formed.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Tensor};

/// Why a draw is made; each purpose gets its own stream so that, e.g., the noise a Refine
/// adds does not coincide with a sampler's starting point for the same seed.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// Starting point x_T of a sample.
    Start = 1,
    /// Noise added by partial noising (Refine).
    Refine = 2,
    /// Noise for the generative (denoising-error) score at the j-th timestep.
    Score = 3,
    /// Training noise.
    Train = 4,
}

/// One standard-normal vector of length `dim`.
pub fn normal_vec(seed: u64, sample: u64, purpose: Purpose, dim: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((purpose as u64) << 56) ^ sample);
    (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// Rows of noise, one per (seed, sample) pair, as a [B, dim] float tensor on `device`.
pub fn normal_rows(keys: &[(u64, u64)], purpose: Purpose, dim: usize, device: Device) -> Tensor {
    let mut flat = Vec::with_capacity(keys.len() * dim);
    for &(seed, sample) in keys {
        flat.extend(normal_vec(seed, sample, purpose, dim));
    }
    Tensor::from_slice(&flat)
        .view([keys.len() as i64, dim as i64])
        .to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_noise_different_key_different_noise() {
        let a = normal_vec(7, 0, Purpose::Start, 64);
        assert_eq!(a, normal_vec(7, 0, Purpose::Start, 64));
        assert_ne!(a, normal_vec(7, 1, Purpose::Start, 64));
        assert_ne!(a, normal_vec(8, 0, Purpose::Start, 64));
        assert_ne!(a, normal_vec(7, 0, Purpose::Refine, 64));
    }

    #[test]
    fn draws_are_standard_normal() {
        let v = normal_vec(1, 0, Purpose::Train, 100_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }
}
