//! Fixtures shared by the engine tests: synthetic paired files and small trained models.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use diffgap::data::pairs::write_named;
use diffgap::data::synthetic::{generate, SyntheticSpec};
use diffgap::device::DeviceChoice;
use diffgap::diffusion::prediction::Prediction;
use diffgap::diffusion::schedule::ScheduleKind;
use diffgap::train::TrainConfig;

pub fn synth_file(dir: &Path, name: &str, items: usize, dim: usize, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let spec = SyntheticSpec {
        items,
        captions: 2,
        dim,
        latent: 8,
        seed,
        offset: 0,
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
        epochs: 3,
        patience: 10,
        seed: 1,
        batch_size: 128,
        lr: 2e-3,
        weight_decay: 0.01,
        cond_dropout: 0.1,
        ema_decay: 0.99,
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

/// A tiny model trained once per test binary.
pub fn tiny_model() -> PathBuf {
    static MODEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir").keep();
            let pairs = synth_file(&dir, "pairs.safetensors", 300, 16, 3);
            let out = dir.join("model");
            diffgap::train::train(&train_config(&pairs, &out)).expect("training the tiny model");
            out
        })
        .clone()
}
