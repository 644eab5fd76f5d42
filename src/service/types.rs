//! The plain data that crosses the service's stages: request rows and their answers, what a
//! loaded model and its encoders are, raw inputs and catalogs. A leaf: it imports no other part
//! of the service, so that every stage can use it without an import circle.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::device::describe;
use crate::diffusion::sampler::SampleOptions;
use crate::diffusion::schedule::Strength;
use crate::eval::card_ladder::{self, DirectionLadder};
use crate::model::card::{FusionWeights, HubFusion, SamplingDefaults};
use crate::model::{artifact, DiffgapModel};

/// One embedding to bridge (or refine), as plain data: `embedding` (modality `from`) is the
/// condition, `to` the modality sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeRow {
    pub from: String,
    pub to: String,
    pub embedding: Vec<f32>,
    pub opts: SampleOptions,
    pub seed: u64,
    /// Where each sample's trajectory starts.
    pub start: RowStart,
}

impl BridgeRow {
    /// A Bridge row: every sample starts from pure noise.
    pub fn bridge(
        from: &str,
        to: &str,
        embedding: Vec<f32>,
        opts: SampleOptions,
        seed: u64,
    ) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            embedding,
            opts,
            seed,
            start: RowStart::Noise,
        }
    }
}

/// Where a row's trajectory starts.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RowStart {
    /// Pure noise (Bridge), as [`crate::diffusion::sampler::Sampler::sample`].
    #[default]
    Noise,
    /// `embedding` (modality `to`) noised to `strength` of the trajectory (Refine), as
    /// [`crate::diffusion::sampler::Sampler::refine`].
    Refine {
        embedding: Vec<f32>,
        strength: Strength,
    },
}

/// Rows checked against the model that runs them: every row's direction is one the model
/// has, its embeddings have the model's dimension (finite, not zero), its options are in range
/// and its Refine strength is a [`Strength`]. The worker runs them without checking again, so
/// a failure there is a bug (INTERNAL). Made by request validation
/// (`service::request::validate`) and, for in-process callers of the worker, by the model's
/// own checks on its thread.
#[derive(Debug, Clone, Default)]
pub struct CheckedRows(Vec<BridgeRow>);

impl CheckedRows {
    /// Rows that were checked as above (see the callers).
    pub(in crate::service) fn checked(rows: Vec<BridgeRow>) -> Self {
        Self(rows)
    }

    pub fn rows(&self) -> &[BridgeRow] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The bridged rows of one request, in its order, and where the time went.
#[derive(Debug, Clone)]
pub struct Bridged {
    pub embeddings: Vec<Vec<f32>>,
    /// From enqueueing to the start of the batch that carried the request.
    pub queue: Duration,
    /// The whole batch's model time.
    pub compute: Duration,
}

/// What the service needs to know about the loaded model, as plain data.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub space: String,
    pub modalities: Vec<String>,
    pub dim: usize,
    /// (condition, target) pairs the denoiser was trained for.
    pub directions: Vec<(String, String)>,
    pub defaults: SamplingDefaults,
    /// Largest accepted DDIM step count (the training timesteps).
    pub max_steps: usize,
    pub parameters: i64,
    /// Keyed "query->candidate".
    pub fusion: BTreeMap<String, FusionWeights>,
    /// Keyed "query->candidate": the hubness-corrected fusion (needs the baselines).
    pub hub_fusion: BTreeMap<String, HubFusion>,
    /// Keyed "query->candidate": the name of the mode that won on validation.
    pub validated_best: BTreeMap<String, String>,
    /// Whether the model has its fitted baselines (`baselines.safetensors`).
    pub has_baselines: bool,
    /// Every ranking mode on the validation split, per direction.
    pub ladders: Vec<DirectionLadder>,
    pub device: String,
    /// `sha256:<hex>` of the TorchScript file: what catalogs are built for.
    pub fingerprint: String,
    /// The model's encoders (raw inputs), when its directory has them.
    pub encoders: Option<EmbedderInfo>,
    /// Model instances serving it, each on its own thread.
    pub instances: usize,
    /// libtorch intra-op threads of each instance.
    pub threads_per_instance: usize,
    /// Number format of the denoiser network ("float32", "bfloat16").
    pub dtype: String,
}

impl ModelInfo {
    pub(crate) fn of(model: &DiffgapModel) -> Self {
        let c = &model.card;
        Self {
            name: c.name.clone(),
            space: c.space.name.clone(),
            modalities: c.space.modalities.clone(),
            dim: c.space.dim.max(0) as usize,
            directions: c
                .directions
                .iter()
                .map(|d| (d.condition.clone(), d.target.clone()))
                .collect(),
            defaults: c.defaults,
            max_steps: model.schedule().steps(),
            parameters: c.parameters,
            fusion: c.fusion.clone(),
            hub_fusion: c.hub_fusion.clone(),
            validated_best: c
                .validated_best
                .iter()
                .map(|(k, v)| (k.clone(), v.mode.clone()))
                .collect(),
            has_baselines: c.baselines.is_some(),
            ladders: card_ladder::of_card(c),
            device: describe(model.device()),
            fingerprint: fingerprint(c),
            encoders: None,
            instances: 1,
            threads_per_instance: 1,
            dtype: model.dtype().name().into(),
        }
    }
}

/// The fingerprint of a model: `sha256:<hex>` of its TorchScript file, from its card.
pub fn fingerprint(card: &crate::model::card::ModelCard) -> String {
    card.files
        .get(artifact::SCRIPT_FILE)
        .map_or_else(|| "unknown".to_owned(), |h| format!("sha256:{h}"))
}

/// How the worker batches: per denoising step (continuous) or per whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Batching {
    /// Rows join and leave the running batch at every denoising step.
    #[default]
    Step,
    /// Waiting requests are grouped by options and each group runs its whole sampling loop.
    Request,
}

/// One raw input, ready for its encoder (audio already decoded and resampled).
#[derive(Debug, Clone, PartialEq)]
pub enum RawInput {
    Text(String),
    /// Mono samples at the audio encoder's rate.
    Audio(Vec<f32>),
    /// Flat `[T, 3, H, W]` values.
    Video(Vec<f32>),
}

/// Embeddings of one request's inputs, in order, with their modalities.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub rows: Vec<Vec<f32>>,
    pub modalities: Vec<String>,
    pub queue: Duration,
    pub compute: Duration,
}

/// What the handlers need to validate raw input before it is queued.
#[derive(Debug, Clone)]
pub struct EmbedderInfo {
    /// Space modality per input kind, when that encoder is configured.
    pub text: Option<String>,
    pub audio: Option<String>,
    pub video: Option<String>,
    pub sample_rate: u32,
    pub max_audio_seconds: f64,
    /// (frames, height, width) of the video contract.
    pub video_shape: Option<(i64, i64, i64)>,
    pub dim: i64,
    /// A copy of the text encoder's tokenizer (plain Rust, no tensors), for the token counts
    /// of the OpenAI-compatible route's `usage`.
    pub tokenizer: Option<std::sync::Arc<tokenizers::Tokenizer>>,
}

/// How the reverse-bridged embeddings were sampled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReverseOptions {
    pub steps: usize,
    pub guidance: f32,
    pub samples: usize,
}

/// `catalog.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogMeta {
    pub format: u32,
    /// The name Rank requests use: the directory's name when loaded.
    pub name: String,
    /// The model it was built with (its directory name) ...
    pub model: String,
    /// ... and that model's fingerprint (`sha256:` of its TorchScript file).
    pub model_fingerprint: String,
    /// Modality of the entries.
    pub modality: String,
    pub dim: usize,
    /// The entries' ids, in row order.
    pub ids: Vec<String>,
    /// Seed of the reverse bridge: entry i used `row_seed(seed, i + 1)`.
    pub seed: u64,
    /// Query modality -> the options its reverse-bridged embeddings were made with.
    pub reverse: BTreeMap<String, ReverseOptions>,
    /// The file the entries came from, and its fingerprint.
    pub source: String,
    pub source_fingerprint: String,
    /// sha256 hex of the tensor file.
    pub tensors_sha256: String,
}

/// A catalog read from disk, as plain data (the worker makes the device tensors).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogData {
    pub meta: CatalogMeta,
    /// [entries x dim], row-major, L2-normalised.
    pub embeddings: Vec<f32>,
    /// Query modality -> [entries x dim] reverse-bridged embeddings.
    pub reverse: BTreeMap<String, Vec<f32>>,
}

impl CatalogData {
    pub fn entries(&self) -> usize {
        self.meta.ids.len()
    }
}
