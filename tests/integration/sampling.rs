//! DDIM against closed-form denoisers, and the seeding and batching guarantees of Bridge.

use crate::support;

use diffgap::diffusion::denoiser::DenoiserNet;
use diffgap::diffusion::prediction::Prediction;
use diffgap::diffusion::sampler::SampleOptions;
use diffgap::diffusion::sampler::Sampler;
use diffgap::diffusion::schedule::{Schedule, ScheduleKind};
use diffgap::model::{artifact, row_seed};
use tch::{Device, Kind, Tensor};

/// The exact posterior mean E[x_0 | x_t] for data x_0 ~ N(mu, sigma^2 I): what a perfect
/// x_0-predicting denoiser outputs. `t` carries the timestep index.
struct GaussianOracle {
    mu: f64,
    sigma: f64,
    schedule: Schedule,
}

impl DenoiserNet for GaussianOracle {
    fn denoise(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        _c: &Tensor,
        _d: &Tensor,
        _m: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        let ts = Vec::<f32>::try_from(t)?;
        let a: Vec<f64> = ts
            .iter()
            .map(|&t| self.schedule.alpha_bar(t as usize))
            .collect();
        let a = Tensor::from_slice(&a).unsqueeze(-1).to_kind(Kind::Float);
        let s2 = self.sigma * self.sigma;
        let gain = a.sqrt() * s2 / (&a * s2 + (-&a + 1.0));
        Ok(gain * (x_t - a.sqrt() * self.mu) + self.mu)
    }
}

#[test]
fn ddim_with_an_exact_denoiser_recovers_the_data_distribution() {
    let schedule = Schedule::new(ScheduleKind::Cosine, 1000);
    let oracle = GaussianOracle {
        mu: 0.7,
        sigma: 0.3,
        schedule: schedule.clone(),
    };
    let sampler = Sampler {
        net: &oracle,
        schedule: &schedule,
        prediction: Prediction::X0,
        device: Device::Cpu,
    };
    let n = 4000;
    let cond = Tensor::zeros([n, 4], (Kind::Float, Device::Cpu));
    let dir = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
    let keys: Vec<(u64, u64)> = (0..n as u64).map(|i| (i, 0)).collect();
    let x = sampler
        .sample(&cond, &dir, &keys, 100, 1.0)
        .expect("sampling");
    let mean = x.mean(Kind::Float).double_value(&[]);
    let std = x.std(true).double_value(&[]);
    assert!((mean - 0.7).abs() < 0.02, "mean {mean}");
    assert!((std - 0.3).abs() < 0.015, "std {std}");
}

#[test]
fn ddim_inverts_the_forward_process_for_a_point_mass() {
    // For data concentrated at x*, the exact denoiser returns x* and eta = 0 DDIM must land on
    // x* from any noised version of it, in any number of steps: the deterministic reverse of
    // the forward process.
    struct PointOracle(Tensor);
    impl DenoiserNet for PointOracle {
        fn denoise(
            &self,
            x_t: &Tensor,
            _t: &Tensor,
            _c: &Tensor,
            _d: &Tensor,
            _m: &Tensor,
        ) -> Result<Tensor, tch::TchError> {
            Ok(self.0.expand_as(x_t))
        }
    }
    let schedule = Schedule::new(ScheduleKind::Linear, 1000);
    let target = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0]).unsqueeze(0);
    let oracle = PointOracle(target.shallow_clone());
    let sampler = Sampler {
        net: &oracle,
        schedule: &schedule,
        prediction: Prediction::X0,
        device: Device::Cpu,
    };
    let cond = Tensor::zeros([3, 4], (Kind::Float, Device::Cpu));
    let dir = Tensor::zeros([3], (Kind::Int64, Device::Cpu));
    let x0 = target.expand([3, 4], false);
    for steps in [1, 7, 50] {
        let keys = [(1, 0), (2, 0), (3, 0)];
        let out = sampler
            .refine(&x0, &cond, &dir, &keys, 0.8, steps, 1.0)
            .expect("refine");
        let err = (out - &x0).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{steps} steps: error {err}");
    }
}

#[test]
fn bridge_is_deterministic_by_seed() {
    let model = artifact::load(&support::tiny_model(), Device::Cpu).expect("load");
    let x = support::randn(8, 16);
    let opts = SampleOptions {
        steps: 5,
        guidance: 1.5,
        samples: 2,
    };
    let seeds: Vec<u64> = (0..8).map(|i| row_seed(42, i)).collect();
    let a = model
        .bridge(&x, "text", "audio", &seeds, opts)
        .expect("bridge");
    let b = model
        .bridge(&x, "text", "audio", &seeds, opts)
        .expect("bridge");
    assert_eq!(
        Vec::<f32>::try_from(a.flatten(0, -1)).unwrap(),
        Vec::<f32>::try_from(b.flatten(0, -1)).unwrap()
    );
    let other: Vec<u64> = (0..8).map(|i| row_seed(43, i)).collect();
    let c = model
        .bridge(&x, "text", "audio", &other, opts)
        .expect("bridge");
    assert!(
        (a - c).abs().max().double_value(&[]) > 1e-4,
        "another seed gave the same samples"
    );
}

#[test]
fn a_row_alone_equals_the_same_row_in_a_batch_of_64() {
    let model = artifact::load(&support::tiny_model(), Device::Cpu).expect("load");
    let x = support::randn(64, 16);
    let seeds: Vec<u64> = (0..64).map(|i| row_seed(7, i)).collect();
    // Guidance != 1 also exercises the rows that take the unconditional pass.
    let opts = SampleOptions {
        steps: 8,
        guidance: 2.0,
        samples: 3,
    };
    let batch = model
        .bridge(&x, "audio", "text", &seeds, opts)
        .expect("batch");
    for i in [0i64, 17, 63] {
        let alone = model
            .bridge(
                &x.narrow(0, i, 1),
                "audio",
                "text",
                &seeds[i as usize..i as usize + 1],
                opts,
            )
            .expect("single");
        let err = (alone - batch.narrow(0, i, 1))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-5, "row {i}: {err}");
    }
    let refined = model
        .refine(&x, "audio", &batch, "text", &seeds, 0.5, opts)
        .expect("refine batch");
    let alone = model
        .refine(
            &x.narrow(0, 5, 1),
            "audio",
            &batch.narrow(0, 5, 1),
            "text",
            &seeds[5..6],
            0.5,
            opts,
        )
        .expect("refine single");
    assert!(
        (alone - refined.narrow(0, 5, 1))
            .abs()
            .max()
            .double_value(&[])
            < 1e-5
    );
}
