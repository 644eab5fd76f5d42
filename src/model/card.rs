//! The model card: everything needed to use a denoiser correctly, stored as JSON next to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::diffusion::denoiser::DenoiserShape;
use crate::diffusion::normalize::ModalityStats;
use crate::diffusion::prediction::Prediction;
use crate::diffusion::schedule::ScheduleKind;

/// Bumped whenever a field changes meaning; loading refuses other formats.
pub const CARD_FORMAT: u32 = 1;
/// The libtorch this build links (tch 0.26); TorchScript written by a newer one may not load.
pub const TORCH_VERSION: &str = "2.13.0";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Space {
    /// Which contrastive model the embeddings come from (e.g. "clap", "synthetic").
    pub name: String,
    pub dim: i64,
    pub modalities: Vec<String>,
}

/// One direction of the bidirectional denoiser: denoise `target` conditioned on `condition`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Direction {
    pub condition: String,
    pub target: String,
}

/// Defaults for requests that set none. Retrieval and generation want different trajectories:
/// a ranking score is best served by the conditional mean (few steps, averaged samples), a
/// conditioning vector by a sample that follows the target distribution (more steps).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SamplingDefaults {
    /// DDIM steps of Bridge and Refine (generation side).
    pub steps: usize,
    pub guidance: f32,
    pub samples: usize,
    pub refine_strength: f64,
    /// DDIM steps of the bridged scores of Rank and `diffgap eval`, chosen on validation.
    pub rank_steps: usize,
    /// Samples averaged for the bridged scores of Rank.
    pub rank_samples: usize,
}

/// Weights of the fused rank score: w_c cos(q, a) + w_b cos(B(q), a) + w_r cos(q, B(a)).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct FusionWeights {
    pub contrastive: f64,
    pub bridged: f64,
    pub reverse: f64,
}

/// The fused score with hubness correction: the inverted softmax (over the card's query bank,
/// bridged like the queries) of the weighted fused score. Chosen on validation with a guard:
/// DiffGAP's terms get weight only when choosing among all weights beats choosing among
/// contrastive-only weights in k-fold cross-validation over validation queries.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HubFusion {
    pub weights: FusionWeights,
    pub beta: f64,
    /// Mean held-out objective (R@1 + mAP@10) of choosing among every weight.
    pub cv_objective: f64,
    /// The same, choosing among contrastive-only weights (the inverted-softmax baseline).
    pub cv_objective_contrastive: f64,
}

/// Which mode won on the training run's validation split, by R@1 + mAP@10, and the best
/// cheap baseline it is measured against: the evidence for the default, by how much.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValidatedBest {
    pub mode: String,
    pub objective: f64,
    pub best_baseline: String,
    pub best_baseline_objective: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainingRecord {
    pub data_fingerprint: String,
    pub data_file: String,
    pub rows: usize,
    pub train_items: usize,
    pub val_items: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub condition_dropout: f64,
    pub ema_decay: f64,
    /// Weight of the contrastive term (0: pure denoising; absent in older cards).
    #[serde(default)]
    pub contrastive_weight: f64,
    /// Validation rows early stopping watched (0: all; absent in older cards).
    #[serde(default)]
    pub val_probe_rows: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCard {
    pub format: u32,
    /// The directory name at training time; a loaded model takes its directory's name.
    pub name: String,
    pub diffgap_version: String,
    pub torch_version: String,
    pub space: Space,
    /// Index i of this list is the direction id the denoiser was trained with.
    pub directions: Vec<Direction>,
    pub normalization: BTreeMap<String, ModalityStats>,
    pub schedule: ScheduleKind,
    pub train_timesteps: usize,
    pub prediction: Prediction,
    pub denoiser: DenoiserShape,
    pub parameters: i64,
    pub defaults: SamplingDefaults,
    /// Keyed "query->candidate", fitted on validation rows only.
    pub fusion: BTreeMap<String, FusionWeights>,
    /// Keyed "query->candidate"; absent in cards trained before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hub_fusion: BTreeMap<String, HubFusion>,
    /// Keyed "query->candidate": the mode that won on validation (absent in older cards).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub validated_best: BTreeMap<String, ValidatedBest>,
    /// The cheap baselines fitted on the training rows (`baselines.safetensors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baselines: Option<crate::baselines::BaselinesCard>,
    pub training: Option<TrainingRecord>,
    /// The evaluation measured at training time (validation split), as `diffgap eval --json`.
    pub evaluation: Option<serde_json::Value>,
    /// File name -> sha256 hex of every file of the artifact.
    pub files: BTreeMap<String, String>,
}

impl ModelCard {
    pub fn direction_index(&self, condition: &str, target: &str) -> Option<usize> {
        self.directions
            .iter()
            .position(|d| d.condition == condition && d.target == target)
    }
}

pub fn direction_key(query: &str, candidate: &str) -> String {
    format!("{query}->{candidate}")
}
