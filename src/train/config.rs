//! What `diffgap train` takes: a leaf, read by the trainer, its objectives and its probe.

use std::path::PathBuf;

use serde::Serialize;

use crate::device::DeviceChoice;
use crate::diffusion::prediction::Prediction;
use crate::diffusion::schedule::ScheduleKind;

/// Everything `diffgap train` takes.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct TrainConfig {
    /// Paired embeddings: .safetensors or .npz, one [rows, dim] float tensor per modality and an
    /// optional int64 `group` tensor.
    #[arg(long)]
    pub pairs: PathBuf,
    /// Output model directory (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// The two modalities to bridge, e.g. `text,audio`. Needed only when the file has more.
    #[arg(long, value_delimiter = ',')]
    pub modalities: Option<Vec<String>>,
    /// Name of the contrastive space the embeddings come from, recorded in the card.
    #[arg(long, default_value = "custom")]
    pub space: String,
    /// Share of items (not rows) held out for validation, early stopping and fusion weights.
    /// Ignored with `--val`.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// A separate validation file (same modalities and dimension); every row of `--pairs` is
    /// then trained on. For corpora that come with their own split.
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Maximum passes over the training rows.
    #[arg(long, default_value_t = 200)]
    pub epochs: usize,
    /// Stop after this many epochs without a better validation R@1.
    #[arg(long, default_value_t = 25)]
    pub patience: usize,
    /// Validation rows early stopping watches each epoch (a seeded draw; 0 = all). Bridging a
    /// row costs `steps` x `samples` network passes, so on a large validation split the check
    /// would cost more than the epoch; the whole protocol still runs on every row at the end.
    #[arg(long, default_value_t = 512)]
    pub val_probe_rows: usize,
    /// Seeds the split, the initialisation and every training draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pairs per step; each step trains both directions, so the network sees twice as many rows.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Share of rows trained with the null condition; enables classifier-free guidance.
    #[arg(long, default_value_t = 0.1)]
    pub cond_dropout: f64,
    /// EMA decay of the served weights (warmed up over the first steps).
    #[arg(long, default_value_t = 0.995)]
    pub ema_decay: f64,
    /// Hidden width of the denoiser: wider fits more, costs width^2 per row and step.
    #[arg(long, default_value_t = 512)]
    pub width: i64,
    /// Residual blocks of the denoiser.
    #[arg(long, default_value_t = 3)]
    pub depth: i64,
    /// Weight of a contrastive term (the paper's "contrastive diffusion module"): symmetric
    /// InfoNCE between the denoiser's x_0 prediction and the batch's true targets, so that a
    /// prediction is closer to its own partner than to the others'. 0 = pure denoising.
    #[arg(long, default_value_t = 0.0)]
    pub contrastive_weight: f64,
    /// What the network predicts: v is well conditioned at every noise level.
    #[arg(long, value_enum, default_value_t = Prediction::V)]
    pub prediction: Prediction,
    /// Noise schedule of the forward process.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Cosine)]
    pub schedule: ScheduleKind,
    /// Training timesteps T.
    #[arg(long, default_value_t = 1000)]
    pub timesteps: usize,
    /// DDIM steps used for validation retrieval and stored as the serving default.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Samples averaged per item at validation and by default when serving.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    #[serde(skip)]
    pub device: DeviceChoice,
    /// No progress bar (logs only).
    #[arg(long)]
    pub quiet: bool,
    /// Continue from a model directory's training and EMA weights. Its card fixes the
    /// architecture, schedule, prediction, modalities and normalisation (their flags are
    /// ignored); the optimiser state starts afresh.
    #[arg(long)]
    pub resume: Option<PathBuf>,
}
