//! Attaching encoders to a model directory: copies the exported modules (and the projection
//! heads) into `<model>/encoders/` and writes `encoders.json` with their hashes, so that the
//! model serves raw text and audio.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{AudioSpec, EncodersManifest, TextSpec, ENCODERS_DIR, MANIFEST_FORMAT};
use crate::model::artifact;

#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// The model directory (written by `diffgap train`).
    #[arg(long)]
    pub model: PathBuf,
    /// The exported encoders: `text.pt`, `tokenizer.json`, `audio.pt` and `reference.json`
    /// (models/export_encoders.py).
    #[arg(long)]
    pub encoders: PathBuf,
    /// Projection heads into the model's space (`diffgap projection train`); without them the
    /// encoders must output the space directly.
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// Longest accepted audio input, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub max_audio_seconds: f64,
}

pub fn attach(args: &AttachArgs) -> Result<PathBuf> {
    let card = artifact::read_card(&args.model)?;
    for m in ["text", "audio"] {
        if !card.space.modalities.iter().any(|x| x == m) {
            bail!(
                "{}: the model has no '{m}' modality ({:?})",
                args.model.display(),
                card.space.modalities
            );
        }
    }
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(args.encoders.join("reference.json"))
            .with_context(|| format!("reading {}/reference.json", args.encoders.display()))?,
    )
    .context("reference.json")?;
    let source = |k: &str| {
        reference[k]["package"]
            .as_str()
            .unwrap_or("unknown")
            .to_string()
    };
    let raw_dim = |k: &str, d: i64| reference[k]["dim"].as_i64().unwrap_or(d);
    let dir = args.model.join(ENCODERS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in ["text.pt", "tokenizer.json", "audio.pt"] {
        copy(&args.encoders.join(f), &dir.join(f))?;
    }
    let heads = match &args.heads {
        Some(h) => {
            copy(h, &dir.join("heads.safetensors"))?;
            Some("heads.safetensors".to_string())
        }
        None => None,
    };
    let mut manifest = EncodersManifest {
        format: MANIFEST_FORMAT,
        dim: card.space.dim,
        heads,
        text: Some(TextSpec {
            modality: "text".into(),
            module: "text.pt".into(),
            tokenizer: "tokenizer.json".into(),
            max_tokens: crate::projection::raw::TEXT_MAX_TOKENS,
            raw_dim: raw_dim("text", 384),
            source: source("text"),
        }),
        audio: Some(AudioSpec {
            modality: "audio".into(),
            module: "audio.pt".into(),
            sample_rate: crate::projection::raw::SAMPLE_RATE,
            max_seconds: args.max_audio_seconds,
            raw_dim: raw_dim("audio", 512),
            source: source("audio"),
        }),
        video: None,
        files: Default::default(),
    };
    manifest.hash_files(&dir)?;
    manifest.write(&dir)?;
    Ok(dir)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}
