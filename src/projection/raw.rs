//! Raw encoder outputs of a corpus: every clip of `diffgap corpus build`'s manifest through the
//! frozen audio encoder and its caption through the frozen text encoder, written as one
//! safetensors file (`text`, `audio`, `group`, `split`) that [`super::train`] reads, plus a
//! JSON sidecar naming every row (clip id, identity, caption, split).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::cache::AudioCache;
use super::train::{AUDIO, SPLIT_KEY, TEXT};
use crate::data::pairs::{write_named, GROUP_KEY};
use crate::device::DeviceChoice;
use crate::encoders::{AudioEncoder, TextEncoder};

#[derive(Debug, Clone, clap::Args)]
pub struct EmbedCorpusConfig {
    /// The corpus folder (with `manifest.jsonl` and `clips/`).
    #[arg(long)]
    pub corpus: PathBuf,
    /// The exported encoders (`text.pt`, `tokenizer.json`, `audio.pt`).
    #[arg(long)]
    pub encoders: PathBuf,
    /// Output safetensors file; `<out>.json` names the rows.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// A folder caching the audio encoder's outputs by clip content: only clips not in it are
    /// encoded, and it is rewritten with this corpus's clips ([`super::cache`]).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// One row of the raw file, as the sidecar lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RawRow {
    pub clip_id: String,
    pub identity: String,
    pub caption: String,
    pub split: String,
    pub source: String,
    /// How the caption was written: "description" (a human-written sentence) or "label".
    pub caption_kind: String,
}

/// The fields of a manifest line this step needs (the manifest has more).
#[derive(Debug, Deserialize)]
struct ManifestLine {
    clip_id: String,
    file: String,
    identity: String,
    caption: String,
    split: String,
    source: String,
    /// sha256 of the clip's WAV file (the audio cache's key).
    sha256: String,
}

/// The corpus source whose captions are human-written one-line descriptions (Tux Paint); the
/// others' are labels (file names, preset names).
pub const DESCRIBED_SOURCE: &str = "tuxpaint";
/// The raw file's tensor of caption kinds: 0 label-like, 1 human-written description.
pub const CAPTION_KIND_KEY: &str = "caption_kind";

pub const SPLITS: [&str; 3] = ["train", "val", "test"];
/// The text encoder's truncation (all-MiniLM-L6-v2's sentence-transformers setting).
pub const TEXT_MAX_TOKENS: usize = 256;
pub const SAMPLE_RATE: u32 = 44_100;

fn read_manifest(corpus: &Path) -> Result<Vec<ManifestLine>> {
    let path = corpus.join("manifest.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}

fn read_wav(path: &Path) -> Result<Vec<f32>> {
    let mut r =
        hound::WavReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let spec = r.spec();
    if spec.channels != 1 || spec.sample_rate != SAMPLE_RATE {
        bail!(
            "{}: expected mono {SAMPLE_RATE} Hz, got {} channels at {} Hz",
            path.display(),
            spec.channels,
            spec.sample_rate
        );
    }
    match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading {}", path.display())),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1i64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("reading {}", path.display()))
        }
    }
}

pub fn embed_corpus(cfg: &EmbedCorpusConfig) -> Result<usize> {
    let started = Instant::now();
    let device: Device = cfg.device.resolve().map_err(anyhow::Error::msg)?;
    let lines = read_manifest(&cfg.corpus)?;
    if lines.is_empty() {
        bail!("{}: the manifest lists no clips", cfg.corpus.display());
    }
    let text = TextEncoder::load(
        &cfg.encoders.join("text.pt"),
        &cfg.encoders.join("tokenizer.json"),
        TEXT_MAX_TOKENS,
        None,
        device,
    )?;
    let audio = AudioEncoder::load(
        &cfg.encoders.join("audio.pt"),
        SAMPLE_RATE,
        60.0,
        None,
        device,
    )?;

    // Captions repeat across rendering variants: encode each once.
    let mut captions: BTreeMap<&str, i64> = BTreeMap::new();
    for l in &lines {
        let n = captions.len() as i64;
        captions.entry(l.caption.as_str()).or_insert(n);
    }
    let mut unique: Vec<(&str, i64)> = captions.iter().map(|(c, i)| (*c, *i)).collect();
    unique.sort_by_key(|(_, i)| *i);
    let mut caption_rows = Vec::new();
    for chunk in unique.chunks(64) {
        let texts: Vec<&str> = chunk.iter().map(|(c, _)| *c).collect();
        caption_rows.push(text.encode(&texts)?);
    }
    let caption_emb = Tensor::cat(&caption_rows, 0);

    let identities: BTreeMap<&str, i64> = {
        let mut ids: Vec<&str> = lines.iter().map(|l| l.identity.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as i64))
            .collect()
    };
    // Without --cache, an empty cache: nothing is read from or written to disk.
    let (cache, cache_dir) = match &cfg.cache {
        Some(dir) => {
            let encoder = crate::corpus::sources::sha256_file(&cfg.encoders.join("audio.pt"))
                .context("hashing audio.pt")?;
            (AudioCache::load(dir, &encoder), Some(dir))
        }
        None => (AudioCache::empty(""), None),
    };
    let mut encoded = 0usize;
    let bar = indicatif::ProgressBar::new(lines.len() as u64).with_message("audio encoder");
    let (mut audio_rows, mut text_idx, mut groups, mut splits, mut rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut kinds = Vec::new();
    for l in &lines {
        let emb = match cache.get(&l.sha256) {
            Some(row) => row,
            None => {
                encoded += 1;
                let wave = read_wav(&cfg.corpus.join(&l.file))?;
                audio
                    .encode(&[&wave])
                    .with_context(|| format!("encoding {}", l.file))?
                    .to_device(Device::Cpu)
            }
        };
        audio_rows.push(emb);
        text_idx.push(captions[l.caption.as_str()]);
        groups.push(identities[l.identity.as_str()]);
        let split = SPLITS
            .iter()
            .position(|s| *s == l.split)
            .with_context(|| format!("clip {}: unknown split '{}'", l.clip_id, l.split))?;
        splits.push(split as i64);
        let described = l.source == DESCRIBED_SOURCE;
        kinds.push(described as i64);
        rows.push(RawRow {
            clip_id: l.clip_id.clone(),
            identity: l.identity.clone(),
            caption: l.caption.clone(),
            split: l.split.clone(),
            source: l.source.clone(),
            caption_kind: if described { "description" } else { "label" }.into(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let audio_emb = Tensor::cat(&audio_rows, 0);
    if let Some(dir) = cache_dir {
        let clips: Vec<String> = lines.iter().map(|l| l.sha256.clone()).collect();
        cache
            .save(dir, &clips, &audio_emb)
            .with_context(|| format!("writing the audio cache in {}", dir.display()))?;
    }
    let text_emb = caption_emb
        .to_device(Device::Cpu)
        .index_select(0, &Tensor::from_slice(&text_idx));
    let named = vec![
        (TEXT.to_string(), text_emb),
        (AUDIO.to_string(), audio_emb),
        (GROUP_KEY.to_string(), Tensor::from_slice(&groups)),
        (SPLIT_KEY.to_string(), Tensor::from_slice(&splits)),
        (CAPTION_KIND_KEY.to_string(), Tensor::from_slice(&kinds)),
    ];
    if let Some(parent) = cfg.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_named(&cfg.out, &named)?;
    std::fs::write(sidecar(&cfg.out), serde_json::to_string(&rows)? + "\n")?;
    tracing::info!(
        clips = lines.len(),
        encoded,
        cached = lines.len() - encoded,
        captions = unique.len(),
        seconds = started.elapsed().as_secs_f64(),
        "embedded the corpus"
    );
    Ok(lines.len())
}

/// `<raw>.json`: the rows of a raw file, in order.
pub fn sidecar(raw: &Path) -> PathBuf {
    let mut s = raw.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}
