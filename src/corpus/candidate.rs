//! A clip before its audio is made: where it comes from, its sound identity and its caption.

use std::path::PathBuf;

use serde::Serialize;

/// The four Debian sources of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Tuxpaint,
    Wesnoth,
    Freedesktop,
    Timgm6mb,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Tuxpaint,
        Source::Wesnoth,
        Source::Freedesktop,
        Source::Timgm6mb,
    ];

    /// The short name used in clip ids, identities, the sources file and `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Tuxpaint => "tuxpaint",
            Source::Wesnoth => "wesnoth",
            Source::Freedesktop => "freedesktop",
            Source::Timgm6mb => "timgm6mb",
        }
    }

    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.name() == name)
    }
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
