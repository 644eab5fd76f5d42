//! A clip before its audio is made: where it comes from, its sound identity and its caption.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A corpus source: one pinned package of the sources file, by its short name (used in clip
/// ids, the summary and `--only`). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source(Arc<str>);

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl Source {
    pub fn new(name: &str) -> Source {
        Source(Arc::from(name))
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

/// How a source's clips are listed (the sources file's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Tux Paint's stamps: sounds with human-written one-line descriptions ([`super::tuxpaint`]).
    Tuxpaint,
    /// Sound files captioned by their names ([`super::named`]).
    Named,
    /// A General MIDI SoundFont rendered note by note ([`super::soundfont`]).
    Soundfont,
}

/// Where a clip's audio comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioInput {
    /// An audio file of the extracted package (absolute path on disk).
    File(PathBuf),
    /// A note rendered from the SoundFont.
    Render(RenderSpec),
}

/// One clip to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub source: Source,
    /// Unique, file-name safe: `<source>-<slug>`.
    pub clip_id: String,
    /// The group key: variants of one sound share it, and the split is decided on it.
    pub identity: String,
    pub caption: String,
    /// Path inside the package (of the audio file, or of the SoundFont for renders).
    pub package_path: String,
    pub input: AudioInput,
}

/// One note to render.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderSpec {
    /// SoundFont bank (0 melodic, 128 drum kits) and preset (program) number.
    pub bank: i32,
    pub program: i32,
    /// The preset's name in the SoundFont.
    pub preset_name: String,
    pub key: i32,
    pub velocity: i32,
    /// Seconds the key is held, then seconds rendered after its release.
    pub hold_s: f32,
    pub tail_s: f32,
    pub sample_rate: u32,
    /// Reverb and chorus (always off here).
    pub reverb_and_chorus: bool,
}
