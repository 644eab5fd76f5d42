//! The video encoder contract (CAVP-style): a TorchScript module taking a batch of frame clips
//! `float [B, T, 3, H, W]` (RGB in [0, 1], T frames of H x W) and returning `float [B, D]`. No
//! video weights are reachable from the package registries, so none is shipped; a user who
//! has a CAVP checkpoint exports it to this contract (see `models/README.md`).

use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::error::EncoderError;
use super::module::{load_encoder, Contract, EncoderModule};

pub struct VideoEncoder {
    module: EncoderModule,
    pub frames: i64,
    pub height: i64,
    pub width: i64,
}

impl VideoEncoder {
    pub fn load(
        module: &Path,
        frames: i64,
        height: i64,
        width: i64,
        dim: Option<i64>,
        device: Device,
    ) -> Result<Self, EncoderError> {
        let contract = Contract::Video {
            frames,
            height,
            width,
        };
        let module = load_encoder(module, device, contract, dim)?;
        Ok(Self {
            module,
            frames,
            height,
            width,
        })
    }

    pub fn dim(&self) -> i64 {
        self.module.dim
    }

    /// Values per clip: T * 3 * H * W.
    pub fn clip_len(&self) -> usize {
        (self.frames * 3 * self.height * self.width) as usize
    }

    /// Encodes clips given as flat `[T, 3, H, W]` values each.
    pub fn encode(&self, clips: &[&[f32]]) -> Result<Tensor, EncoderError> {
        if clips.is_empty() {
            return Err(EncoderError::Input("no video to encode".into()));
        }
        let want = self.clip_len();
        let mut flat = Vec::with_capacity(want * clips.len());
        for (i, c) in clips.iter().enumerate() {
            if c.len() != want {
                return Err(EncoderError::Input(format!(
                    "video {i} has {} values, expected {want} = {} frames x 3 x {} x {}",
                    c.len(),
                    self.frames,
                    self.height,
                    self.width
                )));
            }
            if let Some(j) = c.iter().position(|x| !x.is_finite()) {
                return Err(EncoderError::Input(format!(
                    "video {i} value {j} is not finite"
                )));
            }
            flat.extend_from_slice(c);
        }
        let x = Tensor::from_slice(&flat)
            .to_kind(Kind::Float)
            .view([clips.len() as i64, self.frames, 3, self.height, self.width])
            .to_device(self.module.device);
        self.module.forward(&[x])
    }
}
