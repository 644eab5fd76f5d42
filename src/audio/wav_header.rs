//! The `fmt ` and `data` chunk headers of a WAV file, read before symphonia sees the bytes:
//! its WAV reader builds a time base from the sample rate while probing, and a rate of 0
//! panics there, so a WAV's declared values must be checked ahead of the probe. So must an
//! ADPCM block alignment: symphonia derives frames per block from it in 16-bit arithmetic that
//! overflows (a panic with overflow checks) when it is smaller than the block header or huge.

use super::error::DecodeError;
use super::limits::Declared;

/// WAVE format tags whose block alignment symphonia turns into frames per block.
const ADPCM_MS: u16 = 0x0002;
const ADPCM_IMA: u16 = 0x0011;
/// Largest (block_align - header) that symphonia's `* 8` keeps within 16 bits.
const MAX_ADPCM_BLOCK_BODY: u32 = (u16::MAX / 8) as u32;

/// The `data` chunk length a streaming writer (ffmpeg to a pipe) puts when it cannot know it.
const UNKNOWN_LENGTH: u32 = u32::MAX;

/// What a WAV file's `fmt ` chunk declares, and its `data` chunk's length when reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavHeader {
    pub format_tag: u16,
    pub block_align: u16,
    pub sample_rate: u32,
    pub channels: u16,
    pub bits_per_sample: u16,
    pub data_len: Option<u32>,
}

impl WavHeader {
    /// The declared length is left to symphonia, which knows each codec's frames per block.
    pub fn declared(&self) -> Declared {
        Declared {
            sample_rate: Some(self.sample_rate),
            channels: Some(u32::from(self.channels)),
            bits_per_sample: Some(u32::from(self.bits_per_sample)),
            frames: None,
        }
    }

    /// An ADPCM block must hold its per-channel headers (7 bytes for Microsoft's, 4 for
    /// IMA's) and fit symphonia's frames-per-block arithmetic.
    pub fn check_blocks(&self) -> Result<(), DecodeError> {
        let header = match self.format_tag {
            ADPCM_MS => 7,
            ADPCM_IMA => 4,
            _ => return Ok(()),
        };
        let (align, headers) = (
            u32::from(self.block_align),
            header * u32::from(self.channels),
        );
        match align.checked_sub(headers) {
            Some(body) if body <= MAX_ADPCM_BLOCK_BODY => Ok(()),
            _ => Err(DecodeError::Undecodable(format!(
                "WAV ADPCM block alignment {align} does not fit {} channels",
                self.channels
            ))),
        }
    }

    /// Whether the file says it does not know its own length (then any frame count derived
    /// from the `data` chunk length is meaningless).
    pub fn length_unknown(&self) -> bool {
        self.data_len == Some(UNKNOWN_LENGTH)
    }
}

/// The header of a RIFF/WAVE file; `None` when `bytes` are not one or hold no complete `fmt `
/// chunk (symphonia then reports what is wrong).
pub fn peek(bytes: &[u8]) -> Option<WavHeader> {
    is_wave_at(bytes, 0).then(|| walk(bytes, 0, &mut |_| {}))?
}

/// Every `fmt ` chunk of every RIFF/WAVE header in `bytes`. Symphonia's probe locks on to a
/// format marker anywhere in its search window, not only at offset 0, so each header it could
/// read must be checked, not just the one at the start.
pub fn every_format(bytes: &[u8]) -> Vec<WavHeader> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = bytes
        .get(from..)
        .and_then(|rest| rest.windows(4).position(|w| w == b"RIFF"))
        .map(|i| i + from)
    {
        if is_wave_at(bytes, at) {
            walk(bytes, at, &mut |h| found.push(h));
        }
        from = at + 1;
    }
    found
}

fn is_wave_at(bytes: &[u8], at: usize) -> bool {
    bytes.get(at..at + 4) == Some(b"RIFF") && bytes.get(at + 8..at + 12) == Some(b"WAVE")
}

/// Walks the chunks of the RIFF file starting at `start`, calling `on_fmt` for each `fmt `
/// chunk; returns the last `fmt ` before the `data` chunk, with the `data` chunk's length.
fn walk(bytes: &[u8], start: usize, on_fmt: &mut dyn FnMut(WavHeader)) -> Option<WavHeader> {
    let mut fmt: Option<WavHeader> = None;
    let mut pos = start.checked_add(12)?;
    // Each step moves forward by at least 8 bytes, so the walk ends within `bytes.len() / 8`.
    while let Some(head) = bytes.get(pos..pos.checked_add(8)?) {
        let len = u32_at(head, 4)?;
        let body = pos + 8;
        match &head[0..4] {
            b"fmt " => {
                let f = bytes.get(body..body.checked_add(16)?)?;
                let h = WavHeader {
                    format_tag: u16_at(f, 0)?,
                    block_align: u16_at(f, 12)?,
                    channels: u16_at(f, 2)?,
                    sample_rate: u32_at(f, 4)?,
                    bits_per_sample: u16_at(f, 14)?,
                    data_len: None,
                };
                on_fmt(h);
                fmt = Some(h);
            }
            b"data" => {
                return fmt.map(|h| WavHeader {
                    data_len: Some(len),
                    ..h
                });
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let padded = usize::try_from(len).ok()?.checked_add((len & 1) as usize)?;
        pos = body.checked_add(padded)?;
    }
    fmt
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PCM WAV file written byte by byte, so every field can hold what no encoder would
    /// write; `data_len` is what the `data` chunk header declares, `data` what follows it.
    pub(crate) fn wav_bytes(
        format: u16,
        rate: u32,
        channels: u16,
        bits: u16,
        data_len: u32,
        data: &[u8],
    ) -> Vec<u8> {
        let block_align = channels.wrapping_mul(bits / 8);
        let byte_rate = rate.wrapping_mul(u32::from(block_align));
        let riff_len = if data_len == UNKNOWN_LENGTH {
            UNKNOWN_LENGTH
        } else {
            36u32.saturating_add(data_len)
        };
        let mut b = Vec::with_capacity(44 + data.len());
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&riff_len.to_le_bytes());
        b.extend_from_slice(b"WAVE");
        b.extend_from_slice(b"fmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&format.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&byte_rate.to_le_bytes());
        b.extend_from_slice(&block_align.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn reads_the_fields_past_other_chunks() {
        let mut b = wav_bytes(1, 22_050, 2, 16, 8, &[0; 8]);
        // An odd-length LIST chunk before `fmt `, padded to even.
        let list = [b"LIST".as_slice(), &3u32.to_le_bytes(), b"abc\0"].concat();
        b.splice(12..12, list);
        let h = peek(&b).expect("a WAV header");
        assert_eq!(
            h,
            WavHeader {
                format_tag: 1,
                block_align: 4,
                sample_rate: 22_050,
                channels: 2,
                bits_per_sample: 16,
                data_len: Some(8)
            }
        );
        assert!(!h.length_unknown());
        assert!(peek(&wav_bytes(1, 8_000, 1, 16, u32::MAX, &[]))
            .expect("header")
            .length_unknown());
    }

    #[test]
    fn anything_else_is_left_to_the_probe() {
        let good = wav_bytes(1, 8_000, 1, 16, 2, &[0, 0]);
        assert_eq!(peek(b"OggS\0\0\0\0\0\0\0\0\0\0"), None);
        assert_eq!(peek(&good[..30]), None, "a cut fmt chunk");
        assert_eq!(peek(&good[..36]).map(|h| h.data_len), Some(None));
        // A chunk length that runs past the end stops the walk.
        let mut huge = good[..12].to_vec();
        huge.extend_from_slice(b"junk");
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&good[12..]);
        assert_eq!(peek(&huge), None);
    }

    #[test]
    fn adpcm_blocks_must_hold_their_headers() {
        // wav_bytes sets block_align = channels * (bits / 8): 2 channels of 4 bits give 0.
        let short = peek(&wav_bytes(ADPCM_MS, 8_000, 2, 4, 0, &[])).expect("a header");
        assert_eq!(short.block_align, 0);
        assert!(short.check_blocks().is_err());
        let ima = peek(&wav_bytes(ADPCM_IMA, 8_000, 2, 4, 0, &[])).expect("a header");
        assert!(ima.check_blocks().is_err());
        let fits = |align: u16, tag: u16| WavHeader {
            format_tag: tag,
            block_align: align,
            ..short
        };
        assert!(fits(256, ADPCM_MS).check_blocks().is_ok());
        assert!(fits(14, ADPCM_MS).check_blocks().is_ok());
        assert!(fits(13, ADPCM_MS).check_blocks().is_err());
        assert!(fits(8, ADPCM_IMA).check_blocks().is_ok());
        assert!(fits(u16::MAX, ADPCM_MS).check_blocks().is_err());
        assert!(fits(0, 1).check_blocks().is_ok(), "PCM is not checked here");
    }

    #[test]
    fn the_fuzzers_adpcm_crash_is_refused_before_symphonia_reads_it() {
        // Symphonia's frames-per-block arithmetic overflowed on this file (a panic where overflow
        // checks are on, as in fuzzing builds); the header check must stop it first.
        let bytes = include_bytes!(
            "../../fuzz/regressions/audio_decode/crash-fe13381f2722cd1daff728f28e6ef91a9fbcba0d"
        );
        let opts = crate::audio::decode::DecodeOptions::new(32_000, 30.0);
        let e = crate::audio::decode::decode(bytes, &opts).expect_err("refused");
        assert!(e.to_string().contains("ADPCM block alignment"), "{e}");
    }
}
