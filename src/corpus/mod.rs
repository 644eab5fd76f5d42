//! The real corpus (`diffgap corpus build`): described sounds from four Debian packages, as
//! mono 44.1 kHz clips with captions, sound identities, licences and a split.
//!
//! | source | package | audio | caption |
//! |---|---|---|---|
//! | `tuxpaint` | `tuxpaint-stamps-default` | a stamp's sound effect ([`tuxpaint`]) | the stamp's English description ("A great blue heron.") |
//! | `wesnoth` | `wesnoth-1.16-data` | `data/core/sounds/**` ([`named`]) | file name, variant numbers removed ("horse canter") |
//! | `freedesktop` | `sound-theme-freedesktop` | the event sounds ([`named`]) | file name ("phone incoming call") |
//! | `timgm6mb` | `timgm6mb-soundfont` | GM presets and drum keys rendered at several pitches, velocities and hold times ([`soundfont`]) | "the sound of a/an <preset or GM drum name>" |
//!
//! The captions are label-like (only Tux Paint's are sentences written by people), which any
//! result built on this corpus must say.
//!
//! **Identity and split.** Every clip has a sound identity, the group key of its variants: the
//! numbered files of one Wesnoth sound, one sound in two formats, all renders of one preset or
//! drum key. The split is decided on the identity, never on the clip ([`split`]): about 80/10/10
//! train/val/test by a hash of the identity, and **Tux Paint wholly test**: its human-written
//! sentences are the one caption style the other sources lack, so it is kept unseen as an
//! out-of-distribution held-out set (111 pairs alone are too few to learn from anyway). Only
//! clip-level leakage is excluded: a concept may occur in two sources (Tux Paint's cello and the
//! SoundFont's Cello are different recordings with different identities).
//!
//! **Left out, and counted in the summary.** Spoken letters and digits of Tux Paint; stamps
//! without an English description; symbolic links (aliases of another sound file); files whose
//! exact bytes already occurred; files that debian/copyright gives no licence
//! (freedesktop's `dialog-warning.oga`, which its copyright file misspells as
//! `stereo/stereo/.oga`); undecodable files; silent clips (peak under -80 dBFS) and clips with
//! under 50 ms of sound after trimming.
//!
//! **Clips** ([`clip`]): decoded with [`crate::audio::decode`] (mixed to mono, resampled to
//! 44.1 kHz), capped at `--max-seconds` (10 s), trailing silence (under -60 dB of the peak)
//! trimmed, peak-normalised, written as mono 32-bit float WAV `clips/<clip_id>.wav`.
//!
//! **Output** (`--out`, default `.cache/corpus`): `clips/`, `manifest.jsonl` (one
//! [`manifest::Record`] per line, ordered by source then path or render), `summary.json` and
//! `summary.txt` (the table printed at the end), `fingerprint`. Same inputs give byte-identical
//! output (sorted listings, a fresh synthesiser per note, results ordered independently of the
//! worker threads); a build whose fingerprint (sources file, options, [`FORMAT_VERSION`])
//! matches the existing output does nothing.
//!
//! **Sources** ([`sources`]): `models/corpus-sources.toml` pins each package's version and the
//! sha256 of its `.deb`; `scripts/build-corpus.sh` fetches them with `apt-get download`
//! (no root), checks the hashes, extracts them with `dpkg-deb -x` under `.cache/debs/`, then runs
//! this command, which checks the hashes again.

pub mod candidate;
pub mod clip;
pub mod copyright;
pub mod manifest;
pub mod named;
pub mod names;
pub mod pipeline;
pub mod soundfont;
pub mod sources;
pub mod split;
pub mod tuxpaint;
pub mod walk;

use std::path::PathBuf;

pub use candidate::Source;
pub use pipeline::{build, BuildOptions, BuildReport, FORMAT_VERSION};

/// Why the corpus could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error(transparent)]
    Sources(#[from] sources::SourcesError),
    #[error(transparent)]
    Walk(#[from] walk::WalkError),
    #[error(transparent)]
    SoundFont(#[from] soundfont::SoundFontError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// `diffgap corpus build` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusBuildArgs {
    /// Output folder (clips/, manifest.jsonl, summary.json, summary.txt).
    #[arg(long, default_value = ".cache/corpus")]
    pub out: PathBuf,
    /// The pinned packages.
    #[arg(long, default_value = "models/corpus-sources.toml")]
    pub sources: PathBuf,
    /// Where scripts/build-corpus.sh put the .deb files and their extracted trees.
    #[arg(long, default_value = ".cache/debs")]
    pub debs: PathBuf,
    /// Only these sources (comma-separated: tuxpaint, wesnoth, freedesktop, timgm6mb).
    #[arg(long, value_delimiter = ',', value_parser = parse_source)]
    pub only: Vec<Source>,
    /// Longest clip in seconds; longer audio is cut.
    #[arg(long, default_value_t = 10.0)]
    pub max_seconds: f64,
    /// Rebuild even when the output is up to date.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (the output does not depend on it). Default: the available cores.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `diffgap corpus packages` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusPackagesArgs {
    /// The pinned packages.
    #[arg(long, default_value = "models/corpus-sources.toml")]
    pub sources: PathBuf,
    /// Only these sources (comma-separated: tuxpaint, wesnoth, freedesktop, timgm6mb).
    #[arg(long, value_delimiter = ',', value_parser = parse_source)]
    pub only: Vec<Source>,
}

impl CorpusPackagesArgs {
    /// One `source name version deb sha256` line per package, as scripts/build-corpus.sh
    /// reads them.
    pub fn listing(&self) -> Result<String, sources::SourcesError> {
        let (file, _) = sources::SourcesFile::load(&self.sources)?;
        file.fetch_list(&self.only)
    }
}

fn parse_source(s: &str) -> Result<Source, String> {
    Source::parse(s).ok_or_else(|| {
        format!("unknown source {s:?}; known: tuxpaint, wesnoth, freedesktop, timgm6mb")
    })
}

impl CorpusBuildArgs {
    pub fn options(&self) -> BuildOptions {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        BuildOptions {
            out: self.out.clone(),
            sources_file: self.sources.clone(),
            debs_dir: self.debs.clone(),
            only: self.only.clone(),
            max_seconds: self.max_seconds,
            force: self.force,
            threads: self.threads.unwrap_or(cores),
        }
    }
}
