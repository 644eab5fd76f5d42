//! General MIDI SoundFonts (`timgm6mb-soundfont`, `fluid-soundfont-gm`) rendered note by note
//! with rustysynth.
//!
//! Melodic: every bank-0 preset the SoundFont defines (the 128 GM programs), each at
//! [`MELODIC_KEYS`] x [`MELODIC_VELOCITIES`] x [`MELODIC_HOLDS_S`], the key held for the hold time
//! then released, with [`MELODIC_TAIL_S`] of release rendered. Caption: "the sound of a/an
//! <preset name as the SoundFont spells it>"; identity: the GM program (`gm:melodic/<program>`),
//! the same in every SoundFont, so all renders of a program, in any SoundFont, are variants of
//! one sound and share a split (a Violin learnt from one SoundFont is never tested on another's).
//!
//! Drums: the standard kit (bank 128, preset 0) on the percussion channel, each key of the GM
//! percussion map (35..=81) at [`DRUM_VELOCITIES`]; caption from the GM drum name ("the sound of
//! an Acoustic Bass Drum"); identity: the key (`gm:drum/<key>`), again shared by the SoundFonts. Keys the kit leaves silent are dropped later as
//! silent clips.
//!
//! Reverb and chorus are off (dry notes); a fresh synthesiser renders every note, so a render
//! depends only on its [`RenderSpec`]: deterministic.

use std::sync::Arc;

use rustysynth::{SoundFont, Synthesizer, SynthesizerSettings};

use super::candidate::{AudioInput, Candidate, RenderSpec, Source};
use super::names::{article, slug};

/// C2 to C6: a preset sounds different across its range (other samples, other filters).
pub const MELODIC_KEYS: [i32; 5] = [36, 48, 60, 72, 84];
pub const MELODIC_VELOCITIES: [i32; 4] = [40, 70, 100, 127];
pub const MELODIC_HOLDS_S: [f32; 2] = [0.5, 1.5];
pub const MELODIC_TAIL_S: f32 = 0.5;
pub const DRUM_VELOCITIES: [i32; 4] = [40, 70, 100, 127];
pub const DRUM_HOLD_S: f32 = 0.25;
pub const DRUM_TAIL_S: f32 = 1.25;
/// The MIDI percussion channel (channel 10, zero-based 9).
const DRUM_CHANNEL: i32 = 9;

/// General MIDI percussion key map, keys 35..=81.
pub const GM_DRUMS: [(i32, &str); 47] = [
    (35, "Acoustic Bass Drum"),
    (36, "Bass Drum"),
    (37, "Side Stick"),
    (38, "Acoustic Snare"),
    (39, "Hand Clap"),
    (40, "Electric Snare"),
    (41, "Low Floor Tom"),
    (42, "Closed Hi-Hat"),
    (43, "High Floor Tom"),
    (44, "Pedal Hi-Hat"),
    (45, "Low Tom"),
    (46, "Open Hi-Hat"),
    (47, "Low-Mid Tom"),
    (48, "Hi-Mid Tom"),
    (49, "Crash Cymbal"),
    (50, "High Tom"),
    (51, "Ride Cymbal"),
    (52, "Chinese Cymbal"),
    (53, "Ride Bell"),
    (54, "Tambourine"),
    (55, "Splash Cymbal"),
    (56, "Cowbell"),
    (57, "Crash Cymbal 2"),
    (58, "Vibraslap"),
    (59, "Ride Cymbal 2"),
    (60, "High Bongo"),
    (61, "Low Bongo"),
    (62, "Mute High Conga"),
    (63, "Open High Conga"),
    (64, "Low Conga"),
    (65, "High Timbale"),
    (66, "Low Timbale"),
    (67, "High Agogo"),
    (68, "Low Agogo"),
    (69, "Cabasa"),
    (70, "Maracas"),
    (71, "Short Whistle"),
    (72, "Long Whistle"),
    (73, "Short Guiro"),
    (74, "Long Guiro"),
    (75, "Claves"),
    (76, "High Wood Block"),
    (77, "Low Wood Block"),
    (78, "Mute Cuica"),
    (79, "Open Cuica"),
    (80, "Mute Triangle"),
    (81, "Open Triangle"),
];

#[derive(Debug, thiserror::Error)]
pub enum SoundFontError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("the SoundFont has no preset at bank {bank}, program {program}")]
    MissingPreset { bank: i32, program: i32 },
    #[error("synthesiser: {0}")]
    Synth(String),
}

/// Reads a SoundFont file.
pub fn load(path: &std::path::Path) -> Result<Arc<SoundFont>, SoundFontError> {
    let err = |message: String| SoundFontError::Load {
        path: path.display().to_string(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let sf = SoundFont::new(&mut std::io::Cursor::new(bytes)).map_err(|e| err(e.to_string()))?;
    Ok(Arc::new(sf))
}

/// The renders of every melodic preset and of the GM drum keys, sorted (melodic by program,
/// then drums by key), each as a [`Candidate`].
pub fn plan(
    sf: &SoundFont,
    source: &Source,
    sf2_path: &str,
    sample_rate: u32,
) -> Result<Vec<Candidate>, SoundFontError> {
    let mut melodic: Vec<(i32, String)> = sf
        .get_presets()
        .iter()
        .filter(|p| p.get_bank_number() == 0)
        .map(|p| (p.get_patch_number(), p.get_name().trim().to_string()))
        .collect();
    melodic.sort();
    melodic.dedup_by_key(|p| p.0);
    let kit = sf
        .get_presets()
        .iter()
        .find(|p| p.get_bank_number() == 128 && p.get_patch_number() == 0)
        .map(|p| p.get_name().trim().to_string())
        .ok_or(SoundFontError::MissingPreset {
            bank: 128,
            program: 0,
        })?;

    let mut out = Vec::new();
    for (program, name) in &melodic {
        for &key in &MELODIC_KEYS {
            for &velocity in &MELODIC_VELOCITIES {
                for &hold_s in &MELODIC_HOLDS_S {
                    let spec = RenderSpec {
                        bank: 0,
                        program: *program,
                        preset_name: name.clone(),
                        key,
                        velocity,
                        hold_s,
                        tail_s: MELODIC_TAIL_S,
                        sample_rate,
                        reverb_and_chorus: false,
                    };
                    out.push(Candidate {
                        source: source.clone(),
                        clip_id: format!(
                            "{}-p{program:03}-{}-k{key}-v{velocity}-h{}",
                            source.name(),
                            slug(name),
                            (hold_s * 1000.0).round() as i32
                        ),
                        identity: format!("gm:melodic/{program:03}"),
                        caption: caption_for(name),
                        package_path: sf2_path.to_string(),
                        input: AudioInput::Render(spec),
                    });
                }
            }
        }
    }
    for &(key, drum) in &GM_DRUMS {
        for &velocity in &DRUM_VELOCITIES {
            let spec = RenderSpec {
                bank: 128,
                program: 0,
                preset_name: kit.clone(),
                key,
                velocity,
                hold_s: DRUM_HOLD_S,
                tail_s: DRUM_TAIL_S,
                sample_rate,
                reverb_and_chorus: false,
            };
            out.push(Candidate {
                source: source.clone(),
                clip_id: format!("{}-drum-k{key}-{}-v{velocity}", source.name(), slug(drum)),
                identity: format!("gm:drum/{key}"),
                caption: caption_for(drum),
                package_path: sf2_path.to_string(),
                input: AudioInput::Render(spec),
            });
        }
    }
    Ok(out)
}

/// The caption of a preset: "the sound of a/an <name>", the name cleaned of the SoundFont's
/// author and version tags (`Flute TB`, `BariSax (TB) v2.3`, `Strings CLP`, `Harp LP`) and with
/// joined words split (`SoloTrumpet` -> `Solo Trumpet`). The raw name stays in the render spec.
pub fn caption_for(preset_name: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for token in preset_name.split_whitespace() {
        let tag = matches!(token, "(TB)" | "TB" | "LP" | "CLP")
            || (token.starts_with('v')
                && token.len() > 1
                && token[1..].chars().all(|c| c.is_ascii_digit() || c == '.'));
        if tag {
            continue;
        }
        let mut cur = String::new();
        let mut prev_lower = false;
        for c in token.chars() {
            if c.is_uppercase() && prev_lower {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = c.is_lowercase();
            cur.push(c);
        }
        words.push(cur);
    }
    let name = if words.is_empty() {
        preset_name.to_string()
    } else {
        words.join(" ")
    };
    format!("the sound of {} {name}", article(&name))
}

/// Renders one note to mono samples (the mean of the two channels).
pub fn render(sf: &Arc<SoundFont>, spec: &RenderSpec) -> Result<Vec<f32>, SoundFontError> {
    let known = sf
        .get_presets()
        .iter()
        .any(|p| p.get_bank_number() == spec.bank && p.get_patch_number() == spec.program);
    if !known {
        // rustysynth would silently fall back to another preset.
        return Err(SoundFontError::MissingPreset {
            bank: spec.bank,
            program: spec.program,
        });
    }
    let rate = i32::try_from(spec.sample_rate).map_err(|e| SoundFontError::Synth(e.to_string()))?;
    let mut settings = SynthesizerSettings::new(rate);
    settings.enable_reverb_and_chorus = spec.reverb_and_chorus;
    let mut synth =
        Synthesizer::new(sf, &settings).map_err(|e| SoundFontError::Synth(e.to_string()))?;
    let channel = if spec.bank == 128 { DRUM_CHANNEL } else { 0 };
    if spec.bank != 128 {
        synth.process_midi_message(channel, 0xB0, 0x00, spec.bank);
    }
    synth.process_midi_message(channel, 0xC0, spec.program, 0);
    let hold = (spec.hold_s * spec.sample_rate as f32).round() as usize;
    let tail = (spec.tail_s * spec.sample_rate as f32).round() as usize;
    let mut left = vec![0.0f32; hold + tail];
    let mut right = vec![0.0f32; hold + tail];
    synth.note_on(channel, spec.key, spec.velocity);
    synth.render(&mut left[..hold], &mut right[..hold]);
    synth.note_off(channel, spec.key);
    synth.render(&mut left[hold..], &mut right[hold..]);
    Ok(left
        .iter()
        .zip(&right)
        .map(|(l, r)| 0.5 * (l + r))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_captions_drop_tags_and_split_words() {
        assert_eq!(caption_for("Cello"), "the sound of a Cello");
        assert_eq!(caption_for("BariSax (TB) v2.3"), "the sound of a Bari Sax");
        assert_eq!(caption_for("Flute TB"), "the sound of a Flute");
        assert_eq!(caption_for("Strings CLP"), "the sound of a Strings");
        assert_eq!(caption_for("SoloTrumpet"), "the sound of a Solo Trumpet");
        assert_eq!(caption_for("E.Piano 1"), "the sound of an E.Piano 1");
        assert_eq!(caption_for("Oboe (Orch)"), "the sound of an Oboe (Orch)");
        assert_eq!(caption_for("Open Hi-Hat"), "the sound of an Open Hi-Hat");
    }
}
