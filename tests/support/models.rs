//! Synthetic paired files, small models trained on them, and the repository's own folders.

use std::path::{Path, PathBuf};

use diffgap::data::pairs::write_named;
use diffgap::data::synthetic::{generate, SyntheticSpec};
use diffgap::device::DeviceChoice;
use diffgap::diffusion::prediction::Prediction;
use diffgap::diffusion::sampler::SampleOptions;
use diffgap::diffusion::schedule::ScheduleKind;
use diffgap::model::DiffgapModel;
use diffgap::train::TrainConfig;

/// The embedding dimension of [`tiny_model`].
pub const TINY_DIM: usize = 16;

/// The repository's root (where `models/`, `scripts/` and `.cache/` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default model (`models/default`, with its encoders), which scripts/test.sh builds.
pub fn default_model() -> PathBuf {
    let dir = root().join("models/default");
    assert!(
        dir.join("encoders/encoders.json").is_file(),
        "{} has no encoders: run scripts/build-default-model.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

pub fn synth_file(dir: &Path, name: &str, items: usize, dim: usize, seed: u64) -> PathBuf {
    synth_held_out(dir, name, (items, 0), dim, seed)
}

/// `items` synthetic pairs after the first `offset` of the space drawn by `seed`: with the
/// seed of a [`synth_file`] of `offset` items, items that file does not hold, from its space.
pub fn synth_held_out(
    dir: &Path,
    name: &str,
    (items, offset): (usize, usize),
    dim: usize,
    seed: u64,
) -> PathBuf {
    let path = dir.join(name);
    let spec = SyntheticSpec {
        items,
        captions: 2,
        dim,
        latent: 8,
        seed,
        offset,
    };
    write_named(&path, &generate(&spec)).expect("writing a synthetic file");
    path
}

pub fn train_config(pairs: &Path, out: &Path) -> TrainConfig {
    TrainConfig {
        pairs: pairs.into(),
        out: out.into(),
        modalities: Some(vec!["text".into(), "audio".into()]),
        space: "synthetic".into(),
        val_fraction: 0.15,
        val: None,
        epochs: 3,
        patience: 10,
        val_probe_rows: 0,
        seed: 1,
        batch_size: 128,
        lr: 2e-3,
        weight_decay: 0.01,
        cond_dropout: 0.1,
        ema_decay: 0.99,
        contrastive_weight: 0.0,
        width: 64,
        depth: 2,
        prediction: Prediction::V,
        schedule: ScheduleKind::Cosine,
        timesteps: 1000,
        steps: 5,
        samples: 2,
        device: DeviceChoice::Cpu,
        quiet: true,
        resume: None,
    }
}

/// A tiny model trained into `dir/model` on `items` synthetic pairs of dimension `dim`.
pub fn train_tiny(dir: &Path, items: usize, dim: usize) -> PathBuf {
    let pairs = synth_file(dir, "pairs.safetensors", items, dim, 3);
    let out = dir.join("model");
    diffgap::train::train(&train_config(&pairs, &out)).expect("training the tiny model");
    out
}

/// A tiny model (300 items, [`TINY_DIM`]) trained once per test binary.
pub fn tiny_model() -> PathBuf {
    static MODEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir").keep();
            train_tiny(&dir, 300, TINY_DIM)
        })
        .clone()
}

/// The sampling options of `model`'s card: what a request that sets none gets.
pub fn default_options(model: &DiffgapModel) -> SampleOptions {
    let d = model.card.defaults;
    SampleOptions {
        steps: d.steps,
        guidance: d.guidance,
        samples: d.samples,
    }
}

/// Copies the directory `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}
