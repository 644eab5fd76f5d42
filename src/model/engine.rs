//! A loaded DiffGAP model and its operations on embeddings: Bridge, Refine and the generative
//! score. Inputs are embeddings in the space (L2-normalised here); outputs are L2-normalised
//! embeddings. Everything here runs on the thread that owns the model.

use tch::{Device, Kind, Tensor};

use super::card::ModelCard;
use super::error::ModelError;
use crate::device::Dtype;
use crate::diffusion::combine::SampleSum;
use crate::diffusion::denoiser::DenoiserNet;
use crate::diffusion::normalize::{l2_normalize, ModalityStats};
use crate::diffusion::sampler::{SampleOptions, Sampler};
use crate::diffusion::schedule::{Schedule, Strength};

/// Rows denoised per network call when a caller hands over a large matrix at once.
const CHUNK_ROWS: i64 = 4096;

/// Timesteps of the generative score: spread over the trajectory, away from the ends where the
/// error says little about the condition.
pub const SCORE_TIMESTEPS: [f64; 4] = [0.2, 0.4, 0.6, 0.8];

pub struct DiffgapModel {
    pub card: ModelCard,
    net: Box<dyn DenoiserNet>,
    schedule: Schedule,
    device: Device,
    dtype: Dtype,
}

/// The seed of row `row` of a job seeded with `base`: rows get distinct, reproducible streams.
pub fn row_seed(base: u64, row: usize) -> u64 {
    base.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(row as u64)
}

impl DiffgapModel {
    pub fn new(card: ModelCard, net: Box<dyn DenoiserNet>, device: Device) -> Self {
        let schedule = Schedule::new(card.schedule, card.train_timesteps);
        Self {
            card,
            net,
            schedule,
            device,
            dtype: Dtype::Float32,
        }
    }

    /// The same model, recorded as computing its denoiser in `dtype` (the loader's choice).
    pub fn with_dtype(self, dtype: Dtype) -> Self {
        Self { dtype, ..self }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Number format of the denoiser network.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    pub fn dim(&self) -> i64 {
        self.card.space.dim
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn sampler(&self) -> Sampler<'_, dyn DenoiserNet> {
        Sampler {
            net: self.net.as_ref(),
            schedule: &self.schedule,
            prediction: self.card.prediction,
            device: self.device,
        }
    }

    pub fn stats(&self, modality: &str) -> Result<&ModalityStats, ModelError> {
        self.card
            .normalization
            .get(modality)
            .ok_or_else(|| ModelError::UnknownModality {
                name: modality.into(),
                known: self.card.space.modalities.clone(),
            })
    }

    /// The direction id that denoises `to` conditioned on `from`.
    pub fn direction(&self, from: &str, to: &str) -> Result<i64, ModelError> {
        self.stats(from)?;
        self.stats(to)?;
        self.card
            .direction_index(from, to)
            .map(|i| i as i64)
            .ok_or_else(|| ModelError::UnknownDirection {
                from: from.into(),
                to: to.into(),
                known: self
                    .card
                    .directions
                    .iter()
                    .map(|d| format!("{} -> {}", d.condition, d.target))
                    .collect(),
            })
    }

    /// Validates options against the model (the client-facing limits live in the service).
    pub fn check_options(&self, o: &SampleOptions) -> Result<(), ModelError> {
        let t = self.schedule.steps();
        if o.steps == 0 || o.steps > t {
            return Err(ModelError::Invalid(format!(
                "steps must be in 1..={t}, got {}",
                o.steps
            )));
        }
        if o.samples == 0 {
            return Err(ModelError::Invalid("samples must be at least 1".into()));
        }
        if !o.guidance.is_finite() {
            return Err(ModelError::Invalid("guidance must be finite".into()));
        }
        Ok(())
    }

    fn prepare(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        if x.dim() != 2 || x.size()[1] != self.dim() {
            return Err(ModelError::Dimension {
                got: *x.size().last().unwrap_or(&0),
                expected: self.dim(),
            });
        }
        Ok(l2_normalize(&x.to_kind(Kind::Float).to_device(self.device)))
    }

    fn direction_rows(&self, id: i64, rows: i64) -> Tensor {
        Tensor::full([rows], id, (Kind::Int64, self.device))
    }

    /// Bridge: samples embeddings of modality `to` conditioned on `x` (modality `from`), one
    /// row per input row, `opts.samples` samples averaged. `seeds[i]` seeds row i alone.
    pub fn bridge(
        &self,
        x: &Tensor,
        from: &str,
        to: &str,
        seeds: &[u64],
        opts: SampleOptions,
    ) -> Result<Tensor, ModelError> {
        self.check_options(&opts)?;
        let dir = self.direction(from, to)?;
        let x = self.prepare(x)?;
        let cond = self.stats(from)?.normalize(&x);
        let out_stats = self.stats(to)?;
        let n = x.size()[0];
        check_seeds(seeds, n)?;
        let _guard = tch::no_grad_guard();
        let mut chunks = Vec::new();
        for start in (0..n).step_by(CHUNK_ROWS as usize) {
            let len = CHUNK_ROWS.min(n - start);
            let c = cond.narrow(0, start, len);
            let d = self.direction_rows(dir, len);
            let mut sum =
                SampleSum::new(Tensor::zeros([len, self.dim()], (Kind::Float, self.device)));
            for k in 0..opts.samples {
                let keys: Vec<(u64, u64)> = seeds[start as usize..(start + len) as usize]
                    .iter()
                    .map(|&s| (s, k as u64))
                    .collect();
                let z = self
                    .sampler()
                    .sample(&c, &d, &keys, opts.steps, opts.guidance)?;
                sum.add(&out_stats.denormalize(&z));
            }
            chunks.push(sum.finish());
        }
        Ok(Tensor::cat(&chunks, 0))
    }

    /// Refine: partially noises `x` (modality `modality`) to `strength` and denoises it
    /// conditioned on `partner` (modality `partner_modality`), row by row.
    #[allow(clippy::too_many_arguments)]
    pub fn refine(
        &self,
        x: &Tensor,
        modality: &str,
        partner: &Tensor,
        partner_modality: &str,
        seeds: &[u64],
        strength: f64,
        opts: SampleOptions,
    ) -> Result<Tensor, ModelError> {
        self.check_options(&opts)?;
        Strength::new(strength).map_err(|e| ModelError::Invalid(format!("strength {e}")))?;
        let dir = self.direction(partner_modality, modality)?;
        let stats = self.stats(modality)?;
        let x0 = stats.normalize(&self.prepare(x)?);
        let cond = self
            .stats(partner_modality)?
            .normalize(&self.prepare(partner)?);
        let n = x0.size()[0];
        if cond.size()[0] != n {
            return Err(ModelError::Invalid(format!(
                "{n} embeddings but {} partners",
                cond.size()[0]
            )));
        }
        check_seeds(seeds, n)?;
        let _guard = tch::no_grad_guard();
        let d = self.direction_rows(dir, n);
        let mut sum = SampleSum::new(Tensor::zeros([n, self.dim()], (Kind::Float, self.device)));
        for k in 0..opts.samples {
            let keys: Vec<(u64, u64)> = seeds.iter().map(|&s| (s, k as u64)).collect();
            let z = self.sampler().refine(
                &x0,
                &cond,
                &d,
                &keys,
                strength,
                opts.steps,
                opts.guidance,
            )?;
            sum.add(&stats.denormalize(&z));
        }
        Ok(sum.finish())
    }

    /// Generative score of pairs (row i of `x` with row i of `cond`): minus the denoising error of
    /// `x` (modality `modality`) conditioned on `cond` (modality `cond_modality`). Higher = more
    /// likely partners.
    pub fn generative_score(
        &self,
        x: &Tensor,
        modality: &str,
        cond: &Tensor,
        cond_modality: &str,
        seeds: &[u64],
    ) -> Result<Tensor, ModelError> {
        let dir = self.direction(cond_modality, modality)?;
        let x0 = self.stats(modality)?.normalize(&self.prepare(x)?);
        let c = self.stats(cond_modality)?.normalize(&self.prepare(cond)?);
        let n = x0.size()[0];
        check_seeds(seeds, n)?;
        let t_max = (self.schedule.steps() - 1) as f64;
        let ts: Vec<usize> = SCORE_TIMESTEPS
            .iter()
            .map(|f| (f * t_max).round() as usize)
            .collect();
        let _guard = tch::no_grad_guard();
        let mut out = Vec::new();
        for start in (0..n).step_by(CHUNK_ROWS as usize) {
            let len = CHUNK_ROWS.min(n - start);
            let err = self.sampler().denoising_error(
                &x0.narrow(0, start, len),
                &c.narrow(0, start, len),
                &self.direction_rows(dir, len),
                &seeds[start as usize..(start + len) as usize],
                &ts,
            )?;
            out.push(-err);
        }
        Ok(Tensor::cat(&out, 0))
    }
}

fn check_seeds(seeds: &[u64], n: i64) -> Result<(), ModelError> {
    if seeds.len() as i64 != n {
        return Err(ModelError::Invalid(format!(
            "{n} rows but {} seeds",
            seeds.len()
        )));
    }
    Ok(())
}
