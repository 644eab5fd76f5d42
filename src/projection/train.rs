//! Training the projection heads of the small CLAP: frozen encoder outputs of paired clips and
//! captions in, two linear heads into a shared space out, trained with the symmetric InfoNCE
//! loss and a learned temperature (CLIP/CLAP). Several clips share a caption (rendering
//! variants of one sound), so every row of the same sound identity counts as a positive
//! (multi-positive InfoNCE) instead of as a false negative.
//!
//! Input: a raw file (safetensors) with `text` [N, Dt], `audio` [N, Da], `group` [N] (sound
//! identity) and `split` [N] (0 train, 1 validation, 2 test), as `diffgap corpus embed` writes.
//! Output: `heads.safetensors`, the three splits projected into the space as paired files
//! (`pairs-{train,val,test}.safetensors`, for `diffgap train` and `diffgap eval`) and
//! `clap.json` with the training record.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

use crate::data::pairs::{write_named, GROUP_KEY};
use crate::device::DeviceChoice;
use crate::diffusion::normalize::l2_normalize;
use crate::encoders::head::Heads;
use crate::eval::retrieval::{evaluate, RetrievalMetrics};

#[derive(Debug, Clone, clap::Args)]
pub struct ClapConfig {
    /// Raw encoder outputs: text, audio, group and split tensors.
    #[arg(long)]
    pub raw: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Dimension of the shared space.
    #[arg(long, default_value_t = 512)]
    pub dim: i64,
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    /// Epochs without a better validation objective before stopping.
    #[arg(long, default_value_t = 30)]
    pub patience: usize,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// `clap.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClapRecord {
    pub raw_file: String,
    pub dim: i64,
    pub rows: [usize; 3],
    pub identities: [usize; 3],
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub temperature: f64,
    pub seconds: f64,
    /// Contrastive retrieval in the new space, validation and test.
    pub val_text_to_audio: RetrievalMetrics,
    pub val_audio_to_text: RetrievalMetrics,
    pub test_text_to_audio: RetrievalMetrics,
    pub test_audio_to_text: RetrievalMetrics,
}

pub const TEXT: &str = "text";
pub const AUDIO: &str = "audio";
pub const SPLIT_KEY: &str = "split";

/// One split of the raw file, L2-normalised rows on `device`.
struct Split {
    text: Tensor,
    audio: Tensor,
    groups: Vec<i64>,
    /// Caption kind per row (0 label-like, 1 human-written), when the raw file has them.
    kinds: Option<Vec<i64>>,
}

impl Split {
    fn identities(&self) -> usize {
        let mut g = self.groups.clone();
        g.sort_unstable();
        g.dedup();
        g.len()
    }
}

fn load_raw(path: &Path, device: Device) -> Result<[Split; 3]> {
    let named =
        Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?;
    let get = |k: &str| {
        named
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, t)| t.shallow_clone())
            .with_context(|| format!("{}: no tensor '{k}'", path.display()))
    };
    let (text, audio) = (get(TEXT)?, get(AUDIO)?);
    let (group, split) = (get(GROUP_KEY)?, get(SPLIT_KEY)?);
    let n = text.size()[0];
    if audio.size()[0] != n || group.size() != [n] || split.size() != [n] {
        bail!(
            "{}: text, audio, group and split disagree on the row count",
            path.display()
        );
    }
    let group = Vec::<i64>::try_from(group.to_kind(Kind::Int64))?;
    let split = Vec::<i64>::try_from(split.to_kind(Kind::Int64))?;
    let kinds = match get(super::raw::CAPTION_KIND_KEY) {
        Ok(k) => Some(Vec::<i64>::try_from(k.to_kind(Kind::Int64))?),
        Err(_) => None,
    };
    let parts = [0i64, 1, 2].map(|s| {
        let idx: Vec<i64> = (0..n).filter(|&i| split[i as usize] == s).collect();
        let sel = Tensor::from_slice(&idx);
        Split {
            text: l2_normalize(&text.to_kind(Kind::Float).index_select(0, &sel)).to_device(device),
            audio: l2_normalize(&audio.to_kind(Kind::Float).index_select(0, &sel))
                .to_device(device),
            groups: idx.iter().map(|&i| group[i as usize]).collect(),
            kinds: kinds
                .as_ref()
                .map(|k| idx.iter().map(|&i| k[i as usize]).collect()),
        }
    });
    for (name, p) in ["train", "validation", "test"].iter().zip(&parts) {
        if p.groups.is_empty() {
            bail!("{}: the {name} split is empty", path.display());
        }
    }
    Ok(parts)
}

/// Multi-positive InfoNCE of `logits` [B, B] with `positive` [B, B] (bool): for each row, the
/// log of the probability mass on its positives.
fn multi_positive_nce(logits: &Tensor, positive: &Tensor) -> Tensor {
    let all = logits.logsumexp([1], false);
    let pos = logits
        .masked_fill(&positive.logical_not(), f64::NEG_INFINITY)
        .logsumexp([1], false);
    (all - pos).mean(Kind::Float)
}

fn metrics(heads: &Heads, s: &Split) -> (RetrievalMetrics, RetrievalMetrics) {
    tch::no_grad(|| {
        let t = heads
            .project(TEXT, &s.text)
            .expect("text head. This is a bug.");
        let a = heads
            .project(AUDIO, &s.audio)
            .expect("audio head. This is a bug.");
        let scores = t.matmul(&a.tr());
        (
            evaluate(&scores, &s.groups, &s.groups),
            evaluate(&scores.tr(), &s.groups, &s.groups),
        )
    })
}

pub fn train(cfg: &ClapConfig) -> Result<ClapRecord> {
    let started = Instant::now();
    let device = cfg.device.resolve().map_err(anyhow::Error::msg)?;
    if cfg.dim <= 0 || cfg.batch_size < 2 || cfg.epochs == 0 {
        bail!("--dim must be positive, --batch-size at least 2 and --epochs at least 1");
    }
    tch::manual_seed(cfg.seed as i64);
    let [train, val, test] = load_raw(&cfg.raw, device)?;
    let raw = [
        (TEXT.to_string(), train.text.size()[1]),
        (AUDIO.to_string(), train.audio.size()[1]),
    ];
    let mut heads = Heads::new(&raw, cfg.dim, device);
    // CLIP's initial temperature 0.07, learned in log space, capped at 100 as CLIP does.
    let log_scale = heads
        .vs
        .root()
        .var("log_scale", &[], nn::Init::Const((1.0f64 / 0.07).ln()));
    let mut opt = nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(&heads.vs, cfg.lr)?;
    let n = train.groups.len() as i64;
    let groups = Tensor::from_slice(&train.groups).to_device(device);
    let mut best = (f64::NEG_INFINITY, 0usize);
    let best_path = cfg.out.join("heads.best.safetensors");
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let mut epochs_run = 0;
    for epoch in 1..=cfg.epochs {
        epochs_run = epoch;
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let mut start = 0;
        while start + 1 < n {
            let len = (cfg.batch_size as i64).min(n - start);
            let idx = perm.narrow(0, start, len);
            start += len;
            let t = heads
                .project(TEXT, &train.text.index_select(0, &idx))
                .expect("text head");
            let a = heads
                .project(AUDIO, &train.audio.index_select(0, &idx))
                .expect("audio head");
            let g = groups.index_select(0, &idx);
            let positive = g.unsqueeze(1).eq_tensor(&g.unsqueeze(0));
            let logits = t.matmul(&a.tr()) * log_scale.clamp_max(100f64.ln()).exp();
            let loss = (multi_positive_nce(&logits, &positive)
                + multi_positive_nce(&logits.tr(), &positive.tr()))
                / 2.0;
            opt.backward_step(&loss);
        }
        let (t2a, a2t) = metrics(&heads, &val);
        let objective = t2a.objective() + a2t.objective();
        if objective > best.0 {
            best = (objective, epoch);
            heads.save(&best_path)?;
        }
        tracing::info!(
            epoch,
            val_t2a_r1 = t2a.r1,
            val_a2t_r1 = a2t.r1,
            "clap epoch"
        );
        if epoch - best.1 >= cfg.patience {
            break;
        }
    }
    heads.vs.load(&best_path)?;
    std::fs::remove_file(&best_path).ok();
    let temperature = 1.0 / f64::try_from(log_scale.clamp_max(100f64.ln()).exp())?;
    // The saved heads hold only the projections; the temperature is a training detail.
    let infer = Heads::new(&raw, cfg.dim, device);
    let mut infer = infer;
    infer.vs.copy(&heads.vs)?;
    infer.save(&cfg.out.join(HEADS_FILE))?;
    for (name, s) in [("train", &train), ("val", &val), ("test", &test)] {
        let named = tch::no_grad(|| {
            vec![
                (
                    TEXT.to_string(),
                    infer.project(TEXT, &s.text).expect("text head"),
                ),
                (
                    AUDIO.to_string(),
                    infer.project(AUDIO, &s.audio).expect("audio head"),
                ),
                (GROUP_KEY.to_string(), Tensor::from_slice(&s.groups)),
            ]
        });
        write_named(&cfg.out.join(format!("pairs-{name}.safetensors")), &named)?;
    }
    // The test split by caption kind, so results can be read separately for label-like
    // captions (the kind trained on) and human-written descriptions.
    if let Some(kinds) = &test.kinds {
        for (kind, name) in [(0i64, "labels"), (1, "described")] {
            let idx: Vec<i64> = (0..kinds.len() as i64)
                .filter(|&i| kinds[i as usize] == kind)
                .collect();
            if idx.is_empty() {
                continue;
            }
            let sel = Tensor::from_slice(&idx).to_device(device);
            let groups: Vec<i64> = idx.iter().map(|&i| test.groups[i as usize]).collect();
            let named = tch::no_grad(|| {
                vec![
                    (
                        TEXT.to_string(),
                        infer
                            .project(TEXT, &test.text.index_select(0, &sel))
                            .expect("text head"),
                    ),
                    (
                        AUDIO.to_string(),
                        infer
                            .project(AUDIO, &test.audio.index_select(0, &sel))
                            .expect("audio head"),
                    ),
                    (GROUP_KEY.to_string(), Tensor::from_slice(&groups)),
                ]
            });
            write_named(
                &cfg.out.join(format!("pairs-test-{name}.safetensors")),
                &named,
            )?;
        }
    }
    let (val_t2a, val_a2t) = metrics(&infer, &val);
    let (test_t2a, test_a2t) = metrics(&infer, &test);
    let record = ClapRecord {
        raw_file: cfg.raw.display().to_string(),
        dim: cfg.dim,
        rows: [train.groups.len(), val.groups.len(), test.groups.len()],
        identities: [train.identities(), val.identities(), test.identities()],
        epochs_run,
        best_epoch: best.1,
        temperature,
        seconds: started.elapsed().as_secs_f64(),
        val_text_to_audio: val_t2a,
        val_audio_to_text: val_a2t,
        test_text_to_audio: test_t2a,
        test_audio_to_text: test_a2t,
    };
    std::fs::write(
        cfg.out.join(RECORD_FILE),
        serde_json::to_string_pretty(&record)? + "\n",
    )?;
    Ok(record)
}

pub const HEADS_FILE: &str = "heads.safetensors";
pub const RECORD_FILE: &str = "clap.json";
