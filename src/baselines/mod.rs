//! The cheap baselines every DiffGAP number stands next to, as fitted objects: mean-centring,
//! hubness correction by the inverted softmax over a bank of training queries, ridge and
//! orthogonal-Procrustes maps, and a small contrastive adapter. They are fitted at training time
//! on training rows only (`crate::train::baselines`), stored in the model directory
//! (`baselines.safetensors`, described by the card's `baselines` section), and applied by the
//! evaluation and the service alike, so both use the same fitted object.

pub mod adapter;
pub mod hubness;
pub mod linear;
pub mod modes;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::diffusion::normalize::l2_normalize;
use adapter::Adapter;
use linear::LinearMap;

/// What was fitted, recorded in the model card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselinesCard {
    pub data_fingerprint: String,
    pub train_rows: usize,
    /// Rows of each modality's query bank (distinct training items, at most [`MAX_BANK`]).
    pub bank_rows: BTreeMap<String, usize>,
    /// Keyed "query->candidate".
    pub directions: BTreeMap<String, DirectionFit>,
    pub seconds: f64,
}

/// The choices made for one query direction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirectionFit {
    /// Ridge penalty, by 5-fold cross-validation over training items.
    pub ridge_lambda: f64,
    pub ridge_cv_mse: f64,
    /// Inverted-softmax inverse temperature, chosen on validation.
    pub inverted_softmax_beta: f64,
    pub adapter_hidden: i64,
    /// Optimiser steps run, and the step whose weights were kept (validation).
    pub adapter_steps: usize,
    pub adapter_best_step: usize,
}

/// Query banks are capped: the inverted softmax costs one bank row per candidate and query.
pub const MAX_BANK: usize = 4096;

/// The maps of one query direction, each into the candidate modality's space.
pub struct DirectionMaps {
    pub ridge: LinearMap,
    pub procrustes: LinearMap,
    pub adapter: Adapter,
}

pub struct Baselines {
    pub card: BaselinesCard,
    /// Training mean of each modality, [1, d].
    pub means: BTreeMap<String, Tensor>,
    /// Query bank of each modality, [N, d] L2-normalised.
    pub banks: BTreeMap<String, Tensor>,
    pub maps: BTreeMap<String, DirectionMaps>,
}

impl Baselines {
    /// Mean-centred and re-normalised embeddings of `modality`.
    pub fn centred(&self, x: &Tensor, modality: &str) -> Result<Tensor, String> {
        let mean = self
            .means
            .get(modality)
            .ok_or_else(|| missing("mean", modality))?;
        Ok(l2_normalize(&(x.to_kind(Kind::Float) - mean)))
    }

    pub fn bank(&self, modality: &str) -> Result<&Tensor, String> {
        self.banks
            .get(modality)
            .ok_or_else(|| missing("query bank", modality))
    }

    pub fn maps(&self, key: &str) -> Result<&DirectionMaps, String> {
        self.maps.get(key).ok_or_else(|| missing("maps", key))
    }

    pub fn fit(&self, key: &str) -> Result<&DirectionFit, String> {
        self.card
            .directions
            .get(key)
            .ok_or_else(|| missing("fit", key))
    }

    /// Every tensor, named for the safetensors file.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (m, t) in &self.means {
            out.push((format!("mean.{m}"), t.shallow_clone()));
        }
        for (m, t) in &self.banks {
            out.push((format!("bank.{m}"), t.shallow_clone()));
        }
        for (key, maps) in &self.maps {
            out.extend(maps.ridge.named(&format!("ridge.{key}")));
            out.extend(maps.procrustes.named(&format!("procrustes.{key}")));
            out.extend(maps.adapter.named(&format!("adapter.{key}")));
        }
        out
    }

    /// Rebuilds the fitted object from its stored tensors, checking that every tensor the card
    /// implies is there with a shape that fits the space's dimension.
    pub fn from_named(
        card: BaselinesCard,
        named: Vec<(String, Tensor)>,
        modalities: &[String],
        dim: i64,
        device: Device,
    ) -> Result<Self, String> {
        let mut store = Store {
            all: named
                .into_iter()
                .map(|(k, t)| (k, t.to_kind(Kind::Float).to_device(device)))
                .collect(),
        };
        let mut means = BTreeMap::new();
        let mut banks = BTreeMap::new();
        for m in modalities {
            means.insert(
                m.clone(),
                store.take(&format!("mean.{m}"), &[Some(1), Some(dim)])?,
            );
            banks.insert(
                m.clone(),
                store.take(&format!("bank.{m}"), &[None, Some(dim)])?,
            );
        }
        let mut maps = BTreeMap::new();
        for key in card.directions.keys() {
            let ridge = store.linear(&format!("ridge.{key}"), dim)?;
            let procrustes = store.linear(&format!("procrustes.{key}"), dim)?;
            let p = format!("adapter.{key}");
            let w1 = store.take(&format!("{p}.w1"), &[None, Some(dim)])?;
            let hidden = w1.size()[0];
            let adapter = Adapter {
                w1,
                b1: store.take(&format!("{p}.b1"), &[Some(hidden)])?,
                w2: store.take(&format!("{p}.w2"), &[Some(dim), Some(hidden)])?,
                b2: store.take(&format!("{p}.b2"), &[Some(dim)])?,
            };
            maps.insert(
                key.clone(),
                DirectionMaps {
                    ridge,
                    procrustes,
                    adapter,
                },
            );
        }
        Ok(Self {
            card,
            means,
            banks,
            maps,
        })
    }
}

/// The stored tensors, taken one by one with their shapes checked.
struct Store {
    all: BTreeMap<String, Tensor>,
}

impl Store {
    fn take(&mut self, name: &str, shape: &[Option<i64>]) -> Result<Tensor, String> {
        let t = self
            .all
            .remove(name)
            .ok_or_else(|| format!("no tensor '{name}'"))?;
        let size = t.size();
        let fits = size.len() == shape.len()
            && size
                .iter()
                .zip(shape)
                .all(|(s, want)| want.is_none_or(|w| w == *s));
        if !fits || size.contains(&0) {
            return Err(format!(
                "tensor '{name}' has shape {size:?}, expected {shape:?}"
            ));
        }
        Ok(t)
    }

    fn linear(&mut self, prefix: &str, dim: i64) -> Result<LinearMap, String> {
        Ok(LinearMap {
            w: self.take(&format!("{prefix}.w"), &[Some(dim), Some(dim)])?,
            mean_in: self.take(&format!("{prefix}.mean_in"), &[Some(1), Some(dim)])?,
            mean_out: self.take(&format!("{prefix}.mean_out"), &[Some(1), Some(dim)])?,
        })
    }
}

fn missing(what: &str, name: &str) -> String {
    format!("the baselines hold no {what} for '{name}'")
}
