//! Sources captioned by their file names: Wesnoth's `data/core/sounds/**` and the freedesktop
//! sound theme. `horse-canter.wav` -> "horse canter"; numbered files (`bat-hit-1.ogg` ...) and
//! one sound in two formats (`mace.ogg`, `mace.wav`) are variants of one identity
//! ([`super::names`]).

use std::path::Path;

use super::candidate::{AudioInput, Candidate, Source};
use super::names::{caption_from_stem, identity_from_path, slug};
use super::walk::{audio_files, audio_symlinks, rel_string, WalkError};

/// Wesnoth's core sound effects inside `wesnoth-1.16-data`.
pub const WESNOTH_DIR: &str = "usr/share/games/wesnoth/1.16/data/core/sounds";
/// The freedesktop theme's sounds inside `sound-theme-freedesktop`.
pub const FREEDESKTOP_DIR: &str = "usr/share/sounds/freedesktop/stereo";

/// The folder of a file-named source inside its package.
pub fn sounds_dir(source: Source) -> Option<&'static str> {
    match source {
        Source::Wesnoth => Some(WESNOTH_DIR),
        Source::Freedesktop => Some(FREEDESKTOP_DIR),
        _ => None,
    }
}

/// The audio files of a file-named source, sorted by path; and the number of symbolic links
/// (aliases) left out.
pub fn scan(
    source: Source,
    package_root: &Path,
    dir_in_package: &str,
) -> Result<(Vec<Candidate>, usize), WalkError> {
    let root = package_root.join(dir_in_package);
    let mut out = Vec::new();
    for file in audio_files(&root)? {
        let rel = rel_string(&root, &file)?;
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let rel_dir = Path::new(&rel)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or_default();
        out.push(Candidate {
            source,
            clip_id: format!("{}-{}", source.name(), slug(&rel)),
            identity: identity_from_path(source.name(), rel_dir, stem),
            caption: caption_from_stem(stem),
            package_path: format!("{dir_in_package}/{rel}"),
            input: AudioInput::File(file),
        });
    }
    let aliases = audio_symlinks(&root)?;
    Ok((out, aliases))
}
