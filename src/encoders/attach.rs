//! Attaching encoders to a model directory: copies the exported modules (and the projection
//! heads) into `<model>/encoders/` and writes `encoders.json` with their hashes, so that the
//! model serves raw text and audio.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{AudioSpec, EncodersManifest, TextSpec, VideoSpec, ENCODERS_DIR, MANIFEST_FORMAT};
use crate::model::artifact;

#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// The model directory (written by `diffgap train`).
    #[arg(long)]
    pub model: PathBuf,
    /// The exported encoders: `reference.json` (which encoders, their contracts and sources)
    /// and the files it implies: `text.pt` + `tokenizer.json`, `audio.pt`, `video.pt`
    /// (models/export_encoders.py, models/export_laion_clap.py, models/export_cavp.py).
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
    let int = |k: &str, field: &str, d: i64| reference[k][field].as_i64().unwrap_or(d);
    let has = |k: &str| reference[k].is_object();
    for m in ["text", "audio", "video"] {
        if has(m) && !card.space.modalities.iter().any(|x| x == m) {
            bail!(
                "{}: the encoders include {m} but the model's modalities are {:?}",
                args.model.display(),
                card.space.modalities
            );
        }
    }
    let dir = args.model.join(ENCODERS_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    if has("text") {
        files.extend(["text.pt", "tokenizer.json"]);
    }
    if has("audio") {
        files.push("audio.pt");
    }
    if has("video") {
        files.push("video.pt");
    }
    if files.is_empty() {
        bail!(
            "{}/reference.json describes no encoder",
            args.encoders.display()
        );
    }
    for f in files {
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
        text: has("text").then(|| TextSpec {
            modality: "text".into(),
            module: "text.pt".into(),
            tokenizer: "tokenizer.json".into(),
            max_tokens: int("text", "max_tokens", 256) as usize,
            raw_dim: int("text", "dim", 384),
            source: source("text"),
        }),
        audio: has("audio").then(|| AudioSpec {
            modality: "audio".into(),
            module: "audio.pt".into(),
            sample_rate: int("audio", "sample_rate", 44_100) as u32,
            max_seconds: args.max_audio_seconds,
            raw_dim: int("audio", "dim", 512),
            source: source("audio"),
        }),
        video: has("video").then(|| VideoSpec {
            modality: "video".into(),
            module: "video.pt".into(),
            frames: int("video", "frames", 0),
            height: int("video", "height", 0),
            width: int("video", "width", 0),
            raw_dim: int("video", "dim", 0),
            source: source("video"),
        }),
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
