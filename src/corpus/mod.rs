//! The real corpus (`diffgap corpus build`): described sounds from pinned Debian packages
//! (`models/corpus-sources.toml`, one package per source), as mono 44.1 kHz clips with
//! captions, sound identities, licences and a split. Each source has a kind:
//!
//! | kind | sources | audio | caption |
//! |---|---|---|---|
//! | `tuxpaint` | `tuxpaint-stamps-default` | a stamp's sound effect ([`tuxpaint`]) | the stamp's English description ("A great blue heron.") |
//! | `named` | game data (Wesnoth, Widelands, SuperTux, Hedgewars, ...), sound themes, LMMS samples, Hydrogen drum kits | the audio files under the package's `dirs`, less its `exclude`d folders and file patterns (speech, music) ([`named`]) | file name, variant numbers removed ("horse canter") |
//! | `soundfont` | `timgm6mb-soundfont`, `fluid-soundfont-gm` | GM presets and drum keys rendered at several pitches, velocities and hold times ([`soundfont`]) | "the sound of a/an <preset or GM drum name>" |
//!
//! The captions are label-like (only Tux Paint's are sentences written by people), which any
//! result built on this corpus must say.
//!
//! **Identity and split.** Every clip has a sound identity, the group key of its variants: the
//! numbered files of one sound, one sound in two formats, all renders of one GM program or drum
//! key in every SoundFont. A file-named sound's identity is its label, whatever the package
//! (two games' "explosion" are one identity), so a caption never straddles two splits. The
//! split is decided on the identity, never on the clip ([`split`]): about 80/10/10
//! train/val/test by a hash of the identity, and **Tux Paint wholly test**: its human-written
//! sentences are the one caption style the other sources lack, so it is kept unseen as an
//! out-of-distribution held-out set. Only clip-level leakage is excluded: a concept may occur
//! in two captions (Tux Paint's "A cello." and the SoundFonts' Cello are different identities).
//!
//! **Left out, and counted in the summary.** Spoken letters and digits of Tux Paint; stamps
//! without an English description; excluded folders and files of named sources (voices,
//! spoken replies, music); symbolic links (aliases of another sound file); files whose
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
//! sha256 of its `.deb`; `scripts/build-corpus.sh` fetches the packages whose trees are stale
//! with `apt-get download` (no root), then `diffgap corpus extract` checks the hashes, unpacks
//! only the files the corpus reads under `.cache/debs/` and deletes the `.deb`s ([`extract`]);
//! then this command checks the trees' stamps.

pub mod candidate;
pub mod clip;
pub mod copyright;
pub mod extract;
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

pub use candidate::{Source, SourceKind};
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

/// Which pinned packages a corpus command works on, and where their trees are.
#[derive(Debug, Clone, clap::Args)]
pub struct PackageArgs {
    /// The pinned packages.
    #[arg(long, default_value = "models/corpus-sources.toml")]
    pub sources: PathBuf,
    /// Where scripts/build-corpus.sh puts the fetched .deb files and the extracted trees.
    #[arg(long, default_value = ".cache/debs")]
    pub debs: PathBuf,
    /// Only these sources (comma-separated: tuxpaint, wesnoth, freedesktop, timgm6mb, ...).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// `diffgap corpus build` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusBuildArgs {
    /// Output folder (clips/, manifest.jsonl, summary.json, summary.txt).
    #[arg(long, default_value = ".cache/corpus")]
    pub out: PathBuf,
    #[command(flatten)]
    pub packages: PackageArgs,
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
    #[command(flatten)]
    pub packages: PackageArgs,
    /// Only the packages whose extracted tree under --debs is missing or stale.
    #[arg(long)]
    pub stale: bool,
}

impl CorpusPackagesArgs {
    /// One `source name version deb sha256` line per package, as scripts/build-corpus.sh
    /// reads them.
    pub fn listing(&self) -> Result<String, sources::SourcesError> {
        let (file, _) = sources::SourcesFile::load(&self.packages.sources)?;
        let mut wanted = file.selected(&self.packages.only)?;
        if self.stale {
            wanted.retain(|p| !extract::is_extracted(&self.packages.debs, p));
        }
        sources::fetch_lines(&wanted)
    }
}

/// `diffgap corpus extract` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusExtractArgs {
    #[command(flatten)]
    pub packages: PackageArgs,
}

impl CorpusExtractArgs {
    /// Extracts every selected package whose tree is stale (its `.deb` must have been
    /// fetched); one line per package.
    pub fn run(&self) -> Result<String, sources::SourcesError> {
        let (file, _) = sources::SourcesFile::load(&self.packages.sources)?;
        let mut out = String::new();
        for p in file.selected(&self.packages.only)? {
            if extract::is_extracted(&self.packages.debs, p) {
                continue;
            }
            let kept = extract::extract(&self.packages.debs, p)?;
            out.push_str(&format!(
                "extracted {}: kept {} files, {:.1} MB; {} removed\n",
                p.name,
                kept.files,
                kept.bytes as f64 / 1e6,
                p.deb
            ));
        }
        Ok(out)
    }
}

impl CorpusBuildArgs {
    pub fn options(&self) -> BuildOptions {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        BuildOptions {
            out: self.out.clone(),
            sources_file: self.packages.sources.clone(),
            debs_dir: self.packages.debs.clone(),
            only: self.packages.only.clone(),
            max_seconds: self.max_seconds,
            force: self.force,
            threads: self.threads.unwrap_or(cores),
        }
    }
}
