//! The audio encoder: one mono waveform at the encoder's sample rate in, one embedding out; the
//! module carries its own front-end (spectrogram, mel bands, blocking), so the Rust side only
//! decodes, mixes to mono and resamples (`crate::audio`).

use std::path::Path;

use tch::{Device, Tensor};

use super::error::EncoderError;
use super::module::{load_encoder, Contract, EncoderModule};

pub struct AudioEncoder {
    module: EncoderModule,
    pub sample_rate: u32,
    /// Longest accepted clip, in seconds.
    pub max_seconds: f64,
}

impl AudioEncoder {
    pub fn load(
        module: &Path,
        sample_rate: u32,
        max_seconds: f64,
        dim: Option<i64>,
        device: Device,
    ) -> Result<Self, EncoderError> {
        let module = load_encoder(module, device, Contract::Audio { sample_rate }, dim)?;
        Ok(Self {
            module,
            sample_rate,
            max_seconds,
        })
    }

    pub fn dim(&self) -> i64 {
        self.module.dim
    }

    /// Checks a waveform at `self.sample_rate` against the limits.
    pub fn check(&self, wave: &[f32]) -> Result<(), EncoderError> {
        if wave.is_empty() {
            return Err(EncoderError::Input("the audio has no samples".into()));
        }
        let max = (self.max_seconds * self.sample_rate as f64) as usize;
        if wave.len() > max {
            return Err(EncoderError::Input(format!(
                "the audio lasts {:.1} s, more than the limit of {} s",
                wave.len() as f64 / self.sample_rate as f64,
                self.max_seconds
            )));
        }
        if let Some(i) = wave.iter().position(|x| !x.is_finite()) {
            return Err(EncoderError::Input(format!(
                "audio sample {i} is not finite"
            )));
        }
        Ok(())
    }

    /// Raw embeddings of mono waveforms at `self.sample_rate`, [waves.len(), dim]. Clips differ
    /// in length and the module's blocking depends on it, so they run one by one.
    pub fn encode(&self, waves: &[&[f32]]) -> Result<Tensor, EncoderError> {
        if waves.is_empty() {
            return Err(EncoderError::Input("no audio to encode".into()));
        }
        let mut rows = Vec::with_capacity(waves.len());
        for w in waves {
            self.check(w)?;
            let x = Tensor::from_slice(w).to_device(self.module.device);
            rows.push(self.module.forward(&[x])?);
        }
        Ok(Tensor::stack(&rows, 0))
    }
}
