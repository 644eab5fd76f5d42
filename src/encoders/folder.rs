//! Embedding a folder of audio files with a model's own encoders (for `diffgap catalog build
//! --audio-dir`): every WAV, FLAC, OGG/Vorbis or MP3 file under the folder, decoded, mixed to
//! mono and resampled in Rust, then through the audio encoder and its head.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use super::{EncoderSet, ENCODERS_DIR};
use crate::audio::decode::{decode, DecodeOptions};

/// File extensions taken as audio.
pub const AUDIO_EXTENSIONS: [&str; 6] = ["wav", "flac", "ogg", "oga", "mp3", "opus"];

/// Audio files under `dir`, recursively, sorted by path (so ids and rows are deterministic).
pub fn audio_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// (ids, embeddings [n, dim]) of the audio files under `dir`: ids are the paths relative to
/// `dir`. Files that do not decode fail the whole run, naming the file.
pub fn embed_audio_folder(
    model: &Path,
    dir: &Path,
    device: Device,
) -> Result<(Vec<String>, Tensor)> {
    let set = EncoderSet::load(&model.join(ENCODERS_DIR), device)
        .with_context(|| format!("loading the encoders of {}", model.display()))?;
    let spec = set
        .manifest
        .audio
        .clone()
        .with_context(|| format!("{} has no audio encoder", model.display()))?;
    let files = audio_files(dir)?;
    if files.is_empty() {
        bail!(
            "{} holds no audio files ({:?})",
            dir.display(),
            AUDIO_EXTENSIONS
        );
    }
    let mut ids = Vec::with_capacity(files.len());
    let mut rows = Vec::with_capacity(files.len());
    for f in &files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let mut opts = DecodeOptions::new(spec.sample_rate, spec.max_seconds);
        opts.extension = f.extension().map(|e| e.to_string_lossy().into_owned());
        let wave = decode(&bytes, &opts).with_context(|| format!("decoding {}", f.display()))?;
        rows.push(
            set.embed_audio(&[&wave.samples])
                .with_context(|| format!("encoding {}", f.display()))?,
        );
        ids.push(
            f.strip_prefix(dir)
                .unwrap_or(f)
                .to_string_lossy()
                .into_owned(),
        );
    }
    Ok((ids, Tensor::cat(&rows, 0)))
}
