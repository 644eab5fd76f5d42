//! Captions and sound identities from file names (the named sources), and file-name-safe
//! slugs for clip ids.
//!
//! A name is split into words at `-`, `_`, `.`, spaces and lower-to-upper case changes. Numeric
//! variant markers are not part of the sound: whole-number words (`bat-hit-2`,
//! `magic-missile-1-miss`) and digits glued to the end of the last word (`birds1`) are removed
//! from both the caption and the identity, so `bat-hit-1.ogg` ... `bat-hit-4.ogg` are four
//! variants of the sound `bat-hit` with the caption "bat hit". A name made only of digits keeps
//! them (nothing else would describe it).

/// Words of a file stem, lower-cased, numeric variant markers removed.
pub fn label_words(stem: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for raw in stem.split(|c: char| c == '-' || c == '_' || c == '.' || c.is_whitespace()) {
        let mut cur = String::new();
        let mut prev_lower = false;
        for c in raw.chars() {
            if c.is_uppercase() && prev_lower && !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = c.is_lowercase();
            cur.extend(c.to_lowercase());
        }
        if !cur.is_empty() {
            words.push(cur);
        }
    }
    let all = words.clone();
    words.retain(|w| !w.chars().all(|c| c.is_ascii_digit()));
    if let Some(last) = words.last_mut() {
        let trimmed = last.trim_end_matches(|c: char| c.is_ascii_digit());
        if !trimmed.is_empty() {
            *last = trimmed.to_string();
        }
    }
    if words.is_empty() {
        return all;
    }
    words
}

/// The caption of a file-named sound: its label words joined by spaces, with the few
/// abbreviations of the sources spelled out.
pub fn caption_from_stem(stem: &str) -> String {
    label_words(stem)
        .iter()
        .map(|w| match w.as_str() {
            "sml" => "small",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The sound identity of a file-named sound: `label:<label words joined by ->`, the same for
/// every package and folder, so sounds with one caption are variants of one identity.
pub fn identity_of_label(stem: &str) -> String {
    format!("label:{}", label_words(stem).join("-"))
}

/// Lower-case ASCII letters, digits and single dashes; anything else becomes a dash.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// `a` or `an` before a word (by its first letter; enough for instrument and sound names).
pub fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_drop_variant_numbers() {
        assert_eq!(caption_from_stem("horse-canter"), "horse canter");
        assert_eq!(caption_from_stem("bat-hit-3"), "bat hit");
        assert_eq!(
            caption_from_stem("magic-missile-2-miss"),
            "magic missile miss"
        );
        assert_eq!(caption_from_stem("birds1"), "birds");
        assert_eq!(caption_from_stem("wail-sml"), "wail small");
        assert_eq!(
            caption_from_stem("phone-incoming-call"),
            "phone incoming call"
        );
        assert_eq!(caption_from_stem("Washing-machine"), "washing machine");
        assert_eq!(caption_from_stem("camelCase_name"), "camel case name");
        assert_eq!(caption_from_stem("7"), "7");
    }

    #[test]
    fn variants_share_an_identity() {
        let a = identity_of_label("bat-hit-1");
        assert_eq!(a, "label:bat-hit");
        assert_eq!(a, identity_of_label("bat-hit-4"));
        assert_eq!(a, identity_of_label("Bat_Hit"));
        assert_eq!(identity_of_label("birds2"), "label:birds");
        assert_ne!(
            identity_of_label("magic-missile-1-miss"),
            identity_of_label("magic-missile-1")
        );
    }

    #[test]
    fn slugs_and_articles() {
        assert_eq!(slug("Acoustic Grand Piano"), "acoustic-grand-piano");
        assert_eq!(slug("ambient/birds1.ogg"), "ambient-birds1-ogg");
        assert_eq!(slug("  --Gun  Shot!! "), "gun-shot");
        assert_eq!(article("Oboe"), "an");
        assert_eq!(article("Cello"), "a");
    }
}
