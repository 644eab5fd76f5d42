//! What the denoiser's output means, and the conversions between eps, x_0 and v.

use serde::{Deserialize, Serialize};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// The added noise (DDPM). Weak at high noise, where x_0 must be recovered by division.
    Eps,
    /// The clean embedding directly (the DALL-E 2 prior's choice).
    X0,
    /// v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho): well conditioned at every t.
    V,
}

/// Per-row sqrt(abar) and sqrt(1 - abar), shaped [B, 1] to broadcast over D.
pub struct NoiseLevel {
    pub signal: Tensor,
    pub noise: Tensor,
}

impl Prediction {
    /// The regression target for a training row.
    pub fn target(self, x0: &Tensor, eps: &Tensor, level: &NoiseLevel) -> Tensor {
        match self {
            Prediction::Eps => eps.shallow_clone(),
            Prediction::X0 => x0.shallow_clone(),
            Prediction::V => &level.signal * eps - &level.noise * x0,
        }
    }

    /// (x_0, eps) implied by the network output `out` at noisy input `x_t`.
    pub fn split(self, out: &Tensor, x_t: &Tensor, level: &NoiseLevel) -> (Tensor, Tensor) {
        match self {
            Prediction::Eps => {
                let x0 = (x_t - &level.noise * out) / &level.signal;
                (x0, out.shallow_clone())
            }
            Prediction::X0 => {
                // The floor keeps eps finite at t = 0, where it is multiplied by ~0 anyway.
                let eps = (x_t - &level.signal * out) / level.noise.clamp_min(1e-4);
                (out.shallow_clone(), eps)
            }
            Prediction::V => {
                let x0 = &level.signal * x_t - &level.noise * out;
                let eps = &level.noise * x_t + &level.signal * out;
                (x0, eps)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn split_inverts_target_for_every_parameterisation() {
        tch::manual_seed(0);
        let x0 = Tensor::randn([16, 8], (Kind::Double, tch::Device::Cpu));
        let eps = Tensor::randn([16, 8], (Kind::Double, tch::Device::Cpu));
        let a = Tensor::linspace(0.05, 0.95, 16, (Kind::Double, tch::Device::Cpu)).unsqueeze(-1);
        let level = NoiseLevel {
            signal: a.sqrt(),
            noise: (-&a + 1.0).sqrt(),
        };
        let x_t = &level.signal * &x0 + &level.noise * &eps;
        for p in [Prediction::Eps, Prediction::X0, Prediction::V] {
            let out = p.target(&x0, &eps, &level);
            let (x0_hat, eps_hat) = p.split(&out, &x_t, &level);
            let e0 = (x0_hat - &x0).abs().max().double_value(&[]);
            let e1 = (eps_hat - &eps).abs().max().double_value(&[]);
            assert!(e0 < 1e-9 && e1 < 1e-9, "{p:?}: {e0} {e1}");
        }
    }
}
