//! Deterministic DDIM (eta = 0) with classifier-free guidance, written as a single batched
//! step over rows that may each be at a different timestep, with their own guidance scale and
//! direction. Whole sampling loops, Refine and the generative score are built on that step, and
//! so is the server's step-level batching.

use tch::{Device, Kind, Tensor};

use super::denoiser::DenoiserNet;
use super::noise::{self, Purpose};
use super::prediction::{NoiseLevel, Prediction};
use super::schedule::Schedule;

/// One row's place in a DDIM step: denoise from `t` to `t_prev` (None = to clean data).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStep {
    pub t: usize,
    pub t_prev: Option<usize>,
    pub guidance: f32,
}

/// How to sample: the defaults of a model card, overridable per request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    /// DDIM steps over the whole trajectory (1..=T).
    pub steps: usize,
    /// Classifier-free guidance scale: 1 = plain conditional, 0 = unconditional, > 1 sharper.
    pub guidance: f32,
    /// Samples averaged per item.
    pub samples: usize,
}

pub struct Sampler<'a, N: DenoiserNet + ?Sized> {
    pub net: &'a N,
    pub schedule: &'a Schedule,
    pub prediction: Prediction,
    pub device: Device,
}

impl<N: DenoiserNet + ?Sized> Sampler<'_, N> {
    fn level(&self, ts: &[usize]) -> NoiseLevel {
        let a: Vec<f32> = ts
            .iter()
            .map(|&t| self.schedule.alpha_bar(t) as f32)
            .collect();
        let a = Tensor::from_slice(&a).to_device(self.device).unsqueeze(-1);
        NoiseLevel {
            signal: a.sqrt(),
            noise: (-&a + 1.0).sqrt(),
        }
    }

    fn raw(
        &self,
        x_t: &Tensor,
        ts: &[usize],
        cond: &Tensor,
        direction: &Tensor,
        mask: &[f32],
    ) -> Result<Tensor, tch::TchError> {
        let t: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let t = Tensor::from_slice(&t).to_device(self.device);
        let mask = Tensor::from_slice(mask).to_device(self.device);
        self.net.denoise(x_t, &t, cond, direction, &mask)
    }

    /// The guided network output for each row. Rows with guidance 1 need one pass; the others
    /// also need an unconditional pass, and only those rows are run twice.
    pub fn guided_output(
        &self,
        x_t: &Tensor,
        ts: &[usize],
        cond: &Tensor,
        direction: &Tensor,
        guidance: &[f32],
    ) -> Result<Tensor, tch::TchError> {
        let b = ts.len();
        let cond_out = self.raw(x_t, ts, cond, direction, &vec![1.0; b])?;
        let guided: Vec<i64> = (0..b as i64)
            .filter(|&i| guidance[i as usize] != 1.0)
            .collect();
        if guided.is_empty() {
            return Ok(cond_out);
        }
        let idx = Tensor::from_slice(&guided).to_device(self.device);
        let g_ts: Vec<usize> = guided.iter().map(|&i| ts[i as usize]).collect();
        let uncond = self.raw(
            &x_t.index_select(0, &idx),
            &g_ts,
            &cond.index_select(0, &idx),
            &direction.index_select(0, &idx),
            &vec![0.0; guided.len()],
        )?;
        let w: Vec<f32> = guided.iter().map(|&i| guidance[i as usize]).collect();
        let w = Tensor::from_slice(&w).to_device(self.device).unsqueeze(-1);
        let c = cond_out.index_select(0, &idx);
        let mixed = &uncond + w * (c - &uncond);
        Ok(cond_out.index_copy(0, &idx, &mixed))
    }

    /// Predicted (x_0, eps) for each row.
    pub fn predict(
        &self,
        x_t: &Tensor,
        ts: &[usize],
        cond: &Tensor,
        direction: &Tensor,
        guidance: &[f32],
    ) -> Result<(Tensor, Tensor), tch::TchError> {
        let out = self.guided_output(x_t, ts, cond, direction, guidance)?;
        Ok(self.prediction.split(&out, x_t, &self.level(ts)))
    }

    /// One deterministic DDIM step for heterogeneous rows.
    pub fn step(
        &self,
        x_t: &Tensor,
        rows: &[RowStep],
        cond: &Tensor,
        direction: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        let ts: Vec<usize> = rows.iter().map(|r| r.t).collect();
        let g: Vec<f32> = rows.iter().map(|r| r.guidance).collect();
        let (x0, eps) = self.predict(x_t, &ts, cond, direction, &g)?;
        let prev: Vec<f32> = rows
            .iter()
            .map(|r| r.t_prev.map_or(1.0, |p| self.schedule.alpha_bar(p)) as f32)
            .collect();
        let a_prev = Tensor::from_slice(&prev)
            .to_device(self.device)
            .unsqueeze(-1);
        Ok(a_prev.sqrt() * x0 + (-&a_prev + 1.0).clamp_min(0.0).sqrt() * eps)
    }

    /// Runs the DDIM trajectory `ts` (high to low) from `x` for all rows in lockstep.
    pub fn run_trajectory(
        &self,
        mut x: Tensor,
        ts: &[usize],
        cond: &Tensor,
        direction: &Tensor,
        guidance: f32,
    ) -> Result<Tensor, tch::TchError> {
        let b = x.size()[0] as usize;
        for (i, &t) in ts.iter().enumerate() {
            let step = RowStep {
                t,
                t_prev: ts.get(i + 1).copied(),
                guidance,
            };
            x = self.step(&x, &vec![step; b], cond, direction)?;
        }
        Ok(x)
    }

    /// Draws one sample per (seed, sample index) key from pure noise. Inputs and output are in
    /// the diffusion (normalised) space.
    pub fn sample(
        &self,
        cond: &Tensor,
        direction: &Tensor,
        keys: &[(u64, u64)],
        steps: usize,
        guidance: f32,
    ) -> Result<Tensor, tch::TchError> {
        let x = self.noise_start(keys, cond.size()[1] as usize);
        let ts = self.schedule.sample_timesteps(steps);
        self.run_trajectory(x, &ts, cond, direction, guidance)
    }

    /// SDEdit-style refinement: noise `x0` to `strength` of the trajectory, then denoise it
    /// conditioned on `cond`. `steps` is the full-trajectory step count; a partial trajectory
    /// gets its share (at least one step).
    #[allow(clippy::too_many_arguments)]
    pub fn refine(
        &self,
        x0: &Tensor,
        cond: &Tensor,
        direction: &Tensor,
        keys: &[(u64, u64)],
        strength: f64,
        steps: usize,
        guidance: f32,
    ) -> Result<Tensor, tch::TchError> {
        let path = self.schedule.refine_trajectory(strength, steps);
        let x = self.noised_start(x0, &vec![path.t_start; keys.len()], keys);
        self.run_trajectory(x, &path.timesteps, cond, direction, guidance)
    }

    /// Bridge's starting points: one row of seeded noise per (seed, sample index) key.
    pub fn noise_start(&self, keys: &[(u64, u64)], dim: usize) -> Tensor {
        noise::normal_rows(keys, Purpose::Start, dim, self.device)
    }

    /// Refine's starting points: row i of `x0` noised to `t_starts[i]`,
    /// sqrt(abar) x0 + sqrt(1 - abar) eps, with eps drawn for Refine from `keys[i]`.
    pub fn noised_start(&self, x0: &Tensor, t_starts: &[usize], keys: &[(u64, u64)]) -> Tensor {
        let dim = x0.size()[1] as usize;
        let eps = noise::normal_rows(keys, Purpose::Refine, dim, self.device);
        let level = self.level(t_starts);
        &level.signal * x0 + &level.noise * eps
    }

    /// Generative score: mean squared error of the predicted noise when `x0` is noised to each
    /// of `ts` and denoised conditioned on `cond`. Low error = `cond` explains `x0` well.
    pub fn denoising_error(
        &self,
        x0: &Tensor,
        cond: &Tensor,
        direction: &Tensor,
        seeds: &[u64],
        ts: &[usize],
    ) -> Result<Tensor, tch::TchError> {
        let b = x0.size()[0];
        let dim = x0.size()[1] as usize;
        let mut total = Tensor::zeros([b], (Kind::Float, self.device));
        for (j, &t) in ts.iter().enumerate() {
            let keys: Vec<(u64, u64)> = seeds.iter().map(|&s| (s, j as u64)).collect();
            let eps = noise::normal_rows(&keys, Purpose::Score, dim, self.device);
            let level = self.level(&vec![t; b as usize]);
            let x_t = &level.signal * x0 + &level.noise * &eps;
            let (_, eps_hat) = self.predict(
                &x_t,
                &vec![t; b as usize],
                cond,
                direction,
                &vec![1.0; b as usize],
            )?;
            total += (eps_hat - eps).square().mean_dim(-1, false, Kind::Float);
        }
        Ok(total / ts.len() as f64)
    }
}
