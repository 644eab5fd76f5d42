//! Projection heads: one linear map per modality from its frozen encoder's output into the
//! shared space, followed by L2 normalisation (as in CLAP). Stored as one safetensors file with
//! `<modality>.weight` [D, raw] and `<modality>.bias` [D].

use std::collections::BTreeMap;
use std::path::Path;

use tch::nn::{self, Module};
use tch::{Device, Tensor};

use crate::diffusion::normalize::l2_normalize;

/// The heads of several modalities, sharing one variable store.
pub struct Heads {
    pub vs: nn::VarStore,
    heads: BTreeMap<String, nn::Linear>,
    pub dim: i64,
}

impl Heads {
    /// Fresh heads, `raw` giving each modality's encoder width.
    pub fn new(raw: &[(String, i64)], dim: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let heads = raw
            .iter()
            .map(|(m, r)| {
                let lin = nn::linear(vs.root() / m.as_str(), *r, dim, Default::default());
                (m.clone(), lin)
            })
            .collect();
        Self { vs, heads, dim }
    }

    /// Loads heads saved by [`Heads::save`]; the shapes must match `raw` and `dim`.
    pub fn load(
        path: &Path,
        raw: &[(String, i64)],
        dim: i64,
        device: Device,
    ) -> Result<Self, tch::TchError> {
        let mut heads = Self::new(raw, dim, device);
        heads.vs.load(path)?;
        heads.vs.freeze();
        Ok(heads)
    }

    pub fn save(&self, path: &Path) -> Result<(), tch::TchError> {
        self.vs.save(path)
    }

    pub fn modalities(&self) -> impl Iterator<Item = &String> {
        self.heads.keys()
    }

    /// Projects raw encoder outputs of `modality` into the space, L2-normalised; `None` when
    /// the modality has no head.
    pub fn project(&self, modality: &str, raw: &Tensor) -> Option<Tensor> {
        self.heads
            .get(modality)
            .map(|h| l2_normalize(&h.forward(raw)))
    }
}
