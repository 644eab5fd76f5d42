//! Tux Paint stamps (`tuxpaint-stamps-default`): a stamp `NAME` is a picture with `NAME.txt`
//! (its description) and, for some, `NAME.ogg` or `NAME.wav` (its sound effect).
//!
//! The `.txt` holds the English description on its one line without a locale prefix, followed
//! by translations as `LOCALE.utf8=TEXT` lines (`fr.utf8=Un hibou.`, `ca@valencia.utf8=...`,
//! `sr@latin.utf8=...`). Checked on every `.txt` of 2022.06.04-1: exactly one such English line
//! each. A file without one falls back to an `en*.utf8=` line, else the stamp is skipped.
//!
//! Not sound effects, and so left out: `NAME_desc*.ogg/.wav` (the description read aloud, in
//! many languages), `NAME_LOCALE.ogg` (localised sounds: they have no `.txt` of their own), and
//! the stamps under `symbols/alphabets/` and `symbols/math/` (spoken letter and digit names).

use std::path::Path;

use super::candidate::{AudioInput, Candidate, Source};
use super::names::{label_words, slug};
use super::walk::{audio_files, rel_string, WalkError};

/// Folder of the stamps inside the package.
pub const STAMPS_DIR: &str = "usr/share/tuxpaint/stamps";

/// Stamp folders whose sounds are speech (letter and digit names), not sound effects.
pub const SPEECH_DIRS: [&str; 2] = ["symbols/alphabets/", "symbols/math/"];

/// The English description of a stamp's `.txt`, trimmed; `None` when there is none.
pub fn english_description(text: &str) -> Option<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut english_locale: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match locale_line(line) {
            None => return Some(squash_spaces(line)),
            Some((locale, value)) => {
                let en = locale == "en" || locale.starts_with("en_") || locale.starts_with("en@");
                if en && english_locale.is_none() && !value.trim().is_empty() {
                    english_locale = Some(squash_spaces(value.trim()));
                }
            }
        }
    }
    english_locale
}

/// `Some((locale, text))` for a `LOCALE.utf8=TEXT` translation line.
fn locale_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once('=')?;
    let locale = key.strip_suffix(".utf8")?;
    let valid = !locale.is_empty()
        && locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@' || c == '-');
    valid.then_some((locale, value))
}

fn squash_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Counts of what the scan left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TuxpaintSkips {
    pub speech: usize,
    pub no_description: usize,
}

/// The stamps with a sound effect and an English description, sorted by path.
pub fn scan(
    source: &Source,
    package_root: &Path,
) -> Result<(Vec<Candidate>, TuxpaintSkips), WalkError> {
    let stamps = package_root.join(STAMPS_DIR);
    let mut out = Vec::new();
    let mut skips = TuxpaintSkips::default();
    for file in audio_files(&stamps)? {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if stem.contains("_desc") {
            continue;
        }
        let txt = file.with_extension("txt");
        if !txt.is_file() {
            continue; // a localised sound, not a stamp's own
        }
        let rel = rel_string(&stamps, &file)?;
        if SPEECH_DIRS.iter().any(|d| rel.starts_with(d)) {
            skips.speech += 1;
            continue;
        }
        let text = std::fs::read_to_string(&txt).map_err(|e| WalkError::io(&txt, e))?;
        let Some(caption) = english_description(&text) else {
            skips.no_description += 1;
            continue;
        };
        let rel_dir = Path::new(&rel)
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or_default();
        let label = label_words(stem).join("-");
        let identity = if rel_dir.is_empty() {
            format!("tuxpaint:{label}")
        } else {
            format!("tuxpaint:{rel_dir}/{label}")
        };
        out.push(Candidate {
            source: source.clone(),
            clip_id: format!("{}-{}", source.name(), slug(&rel)),
            identity,
            caption,
            package_path: format!("{STAMPS_DIR}/{rel}"),
            input: AudioInput::File(file),
        });
    }
    Ok((out, skips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_line_is_the_one_without_locale() {
        let owl =
            "An owl.\nach.utf8=Winyo tula.\nca@valencia.utf8=Una òliba\nsr@latin.utf8=Sova.\n";
        assert_eq!(english_description(owl).as_deref(), Some("An owl."));
        // Order does not matter; CRLF, BOM and extra spaces are tolerated.
        let later =
            "\u{feff}fr.utf8=Un hibou.\r\n\r\n  A   great  blue heron. \r\nde.utf8=Ein Reiher\r\n";
        assert_eq!(
            english_description(later).as_deref(),
            Some("A great blue heron.")
        );
        // Descriptions may contain '=' or quotes and still be English text.
        assert_eq!(
            english_description("“No U-Turn”.\nfr.utf8=x\n").as_deref(),
            Some("“No U-Turn”.")
        );
        assert_eq!(english_description("a = b\n").as_deref(), Some("a = b"));
    }

    #[test]
    fn falls_back_to_en_locale_or_none() {
        let only_locales = "fr.utf8=Un chat.\nen_GB.utf8=A cat.\nen_AU.utf8=A moggy.\n";
        assert_eq!(english_description(only_locales).as_deref(), Some("A cat."));
        assert_eq!(english_description("fr.utf8=Un chat.\n"), None);
        assert_eq!(english_description("\n# comment\n"), None);
        assert_eq!(english_description(""), None);
    }
}
