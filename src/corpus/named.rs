//! Sources captioned by their file names: the folders (`dirs`) of a package that the sources
//! file names, less the sub-folders it excludes (speech, music). `horse-canter.wav` -> "horse
//! canter"; numbered files (`bat-hit-1.ogg` ...) and one sound in two formats (`mace.ogg`,
//! `mace.wav`) are variants of one identity. The identity is the label itself, whatever the
//! package or folder ([`super::names::identity_of_label`]): two packages' "explosion" are
//! variants of one sound, so one caption never straddles two splits and a query has one right
//! answer.

use std::path::Path;

use super::candidate::{AudioInput, Candidate, Source};
use super::names::{caption_from_stem, identity_of_label, slug};
use super::walk::{audio_files, audio_symlinks, rel_string, WalkError};

/// What a scan left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NamedSkips {
    /// Symbolic links (aliases of another file).
    pub aliases: usize,
    /// Files under an excluded folder.
    pub excluded: usize,
}

/// The audio files under the source's folders, sorted by folder then path.
pub fn scan(
    source: &Source,
    package_root: &Path,
    dirs: &[String],
    exclude: &[String],
) -> Result<(Vec<Candidate>, NamedSkips), WalkError> {
    let mut out = Vec::new();
    let mut skips = NamedSkips::default();
    for dir_in_package in dirs {
        let root = package_root.join(dir_in_package);
        for file in audio_files(&root)? {
            let rel = rel_string(&root, &file)?;
            if is_excluded(&rel, exclude) {
                skips.excluded += 1;
                continue;
            }
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            out.push(Candidate {
                source: source.clone(),
                clip_id: format!(
                    "{}-{}",
                    source.name(),
                    slug(&format!("{dir_in_package}/{rel}"))
                ),
                identity: identity_of_label(stem),
                caption: caption_from_stem(stem),
                package_path: format!("{dir_in_package}/{rel}"),
                input: AudioInput::File(file),
            });
        }
        skips.aliases += audio_symlinks(&root)?;
    }
    Ok((out, skips))
}

/// Whether a path relative to a source folder is excluded: an entry with a `*` or a `.` is a
/// file-name pattern (`*` any run of characters, case-insensitive: `*_select*`,
/// `sara_airport_pa.ogg`); an entry with a `/` is a folder path at the start of `rel`; any
/// other entry is a folder name anywhere in it.
pub fn is_excluded(rel: &str, exclude: &[String]) -> bool {
    let parts: Vec<&str> = rel.split('/').collect();
    let (file, folders) = parts.split_last().unwrap_or((&"", &[]));
    exclude.iter().any(|x| {
        let x = x.trim_matches('/');
        if x.contains('*') || x.contains('.') {
            wildcard_match(&x.to_lowercase(), &file.to_lowercase())
        } else if x.contains('/') {
            rel.starts_with(&format!("{x}/"))
        } else {
            folders.contains(&x)
        }
    })
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut tail) = text.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or_default();
    for piece in pieces {
        match tail.find(piece) {
            Some(i) => tail = &tail[i + piece.len()..],
            None => return false,
        }
    }
    tail.len() >= last.len() && tail.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_folders_match_whole_names_or_leading_paths() {
        let ex = vec!["voices".to_string(), "data/music".to_string()];
        assert!(is_excluded("voices/a.ogg", &ex));
        assert!(is_excluded("x/voices/y/a.ogg", &ex));
        assert!(is_excluded("data/music/a.ogg", &ex));
        assert!(!is_excluded("voices.ogg", &ex));
        assert!(!is_excluded("choices/a.ogg", &ex));
        assert!(!is_excluded("x/data/music/a.ogg", &ex));
        assert!(!is_excluded("a.ogg", &[]));
    }

    #[test]
    fn file_patterns_match_the_file_name_only() {
        let ex = vec!["*_select*".to_string(), "Sara_Airport_PA.ogg".to_string()];
        assert!(is_excluded(
            "units/spearman/sounds/swordman_select1.wav",
            &ex
        ));
        assert!(is_excluded("sara_airport_pa.ogg", &ex));
        assert!(!is_excluded("select/attack.wav", &ex));
        assert!(!is_excluded("sara_airport_pa.ogg.bak", &ex));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("ab*ab", "abab"));
        assert!(!wildcard_match("ab*ab", "aba"));
        assert!(!wildcard_match("a*b*c", "acb"));
    }
}
