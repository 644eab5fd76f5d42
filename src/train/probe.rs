//! The validation loss: fixed noise and timesteps over the validation rows, so that epochs are
//! compared on the same draws.

use std::collections::BTreeMap;

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::config::TrainConfig;
use crate::data::pairs::PairedSet;
use crate::diffusion::denoiser::Denoiser;
use crate::diffusion::noise::{normal_rows, Purpose};
use crate::diffusion::normalize::ModalityStats;
use crate::diffusion::prediction::NoiseLevel;
use crate::diffusion::schedule::Schedule;

/// Fixed noise and timesteps for the validation loss, so epochs are compared on the same draws.
pub struct ValProbe {
    x_t: Tensor,
    t: Tensor,
    cond: Tensor,
    direction: Tensor,
    target: Tensor,
}

impl ValProbe {
    pub fn new(
        val: &PairedSet,
        ma: &str,
        mb: &str,
        stats: &BTreeMap<String, ModalityStats>,
        schedule: &Schedule,
        cfg: &TrainConfig,
        device: Device,
    ) -> Result<Self> {
        let a = stats[ma].normalize(&val.modality(ma)?.to_device(device));
        let b = stats[mb].normalize(&val.modality(mb)?.to_device(device));
        let rows = a.size()[0] as usize;
        let x0 = Tensor::cat(&[&b, &a], 0);
        let cond = Tensor::cat(&[&a, &b], 0);
        let direction = Tensor::cat(
            &[
                Tensor::zeros([rows as i64], (Kind::Int64, device)),
                Tensor::ones([rows as i64], (Kind::Int64, device)),
            ],
            0,
        );
        let keys: Vec<(u64, u64)> = (0..2 * rows as u64).map(|i| (cfg.seed, i)).collect();
        let eps = normal_rows(&keys, Purpose::Train, a.size()[1] as usize, device);
        // Evenly spread timesteps cover the whole trajectory with every row.
        let ts: Vec<usize> = (0..2 * rows).map(|i| (i * 7919) % cfg.timesteps).collect();
        let ab: Vec<f32> = ts.iter().map(|&t| schedule.alpha_bar(t) as f32).collect();
        let ab = Tensor::from_slice(&ab).to_device(device).unsqueeze(-1);
        let level = NoiseLevel {
            signal: ab.sqrt(),
            noise: (-&ab + 1.0).sqrt(),
        };
        let x_t = &level.signal * &x0 + &level.noise * &eps;
        let target = cfg.prediction.target(&x0, &eps, &level);
        let t =
            Tensor::from_slice(&ts.iter().map(|&t| t as f32).collect::<Vec<_>>()).to_device(device);
        Ok(Self {
            x_t,
            t,
            cond,
            direction,
            target,
        })
    }

    pub fn loss(&self, net: &Denoiser) -> Result<f64> {
        let _g = tch::no_grad_guard();
        let mask = Tensor::ones([self.t.size()[0]], (Kind::Float, self.t.device()));
        let out = net.forward(&self.x_t, &self.t, &self.cond, &self.direction, &mask);
        Ok(out
            .mse_loss(&self.target, tch::Reduction::Mean)
            .double_value(&[]))
    }
}
