//! Maps L2-normalised embeddings of one modality to the diffusion variable (centred, per-coordinate
//! variance near 1) and back. Without it the data would occupy a thin cone of radius 1/sqrt(D)
//! per coordinate, far below the unit-variance noise the schedule assumes.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModalityStats {
    /// Training mean of the modality's embeddings.
    pub mean: Vec<f32>,
    /// Standard deviation of the centred coordinates, pooled over all coordinates.
    pub scale: f32,
}

impl ModalityStats {
    /// Measures the statistics of `x` [N, D].
    pub fn fit(x: &Tensor) -> Self {
        let x = x.to_kind(Kind::Float);
        let mean = x.mean_dim(0, false, Kind::Float);
        let centred = &x - mean.unsqueeze(0);
        let scale = centred.square().mean(Kind::Float).sqrt().double_value(&[]) as f32;
        Self {
            mean: Vec::<f32>::try_from(&mean).unwrap_or_default(),
            scale: scale.max(1e-6),
        }
    }

    fn mean_tensor(&self, device: Device) -> Tensor {
        Tensor::from_slice(&self.mean)
            .to_device(device)
            .unsqueeze(0)
    }

    /// Embedding space -> diffusion space.
    pub fn normalize(&self, x: &Tensor) -> Tensor {
        (x - self.mean_tensor(x.device())) / self.scale as f64
    }

    /// [`normalize`](Self::normalize) of one L2-normalised row on the host: the server prepares
    /// each request's rows this way, since a handful of libtorch calls per row, on the model
    /// thread, cost more than the arithmetic.
    pub fn normalize_row(&self, x: &[f32]) -> Vec<f32> {
        x.iter()
            .zip(&self.mean)
            .map(|(&v, &m)| (v - m) / self.scale)
            .collect()
    }

    /// Diffusion space -> embedding space, L2-normalised like the encoder's outputs.
    pub fn denormalize(&self, z: &Tensor) -> Tensor {
        l2_normalize(&(z * self.scale as f64 + self.mean_tensor(z.device())))
    }
}

/// Row-wise L2 normalisation; all-zero rows stay zero instead of becoming NaN.
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let norm = x
        .norm_scalaropt_dim(2.0, [-1i64].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// [`l2_normalize`] of one row on the host (the sum of squares in f64).
pub fn l2_normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    let norm = norm.max(1e-12) as f32;
    for x in &mut v {
        *x /= norm;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rows_match_the_tensor_ops() {
        let v = vec![3.0f32, -4.0, 0.5, 1e-3];
        let t = l2_normalize(&Tensor::from_slice(&v).view([1, 4]));
        let want = Vec::<f32>::try_from(&t.view([-1])).expect("to vec");
        let got = l2_normalized(v);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        assert_eq!(l2_normalized(vec![0.0; 3]), vec![0.0; 3]);

        let stats = ModalityStats {
            mean: vec![0.1, -0.2, 0.3, 0.0],
            scale: 0.05,
        };
        let want = Vec::<f32>::try_from(&stats.normalize(&t).view([-1])).expect("to vec");
        for (a, b) in stats.normalize_row(&got).iter().zip(&want) {
            assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn round_trip_and_unit_variance() {
        tch::manual_seed(3);
        let raw = Tensor::randn([500, 16], (Kind::Float, Device::Cpu)) + 3.0;
        let x = l2_normalize(&raw);
        let stats = ModalityStats::fit(&x);
        let z = stats.normalize(&x);
        let var = z.square().mean(Kind::Float).double_value(&[]);
        assert!((var - 1.0).abs() < 1e-4, "variance {var}");
        let mean = z
            .mean_dim(0, false, Kind::Float)
            .abs()
            .max()
            .double_value(&[]);
        assert!(mean < 1e-5, "mean {mean}");
        let back = stats.denormalize(&z);
        let err = (back - &x).abs().max().double_value(&[]);
        assert!(err < 1e-5, "round trip error {err}");
    }
}
