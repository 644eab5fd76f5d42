//! What an audio stream may declare before any of it is decoded.
//!
//! The bounds keep decoding and resampling work proportional to `max_seconds` of ordinary
//! audio, whatever a header claims:
//! - sample rate 1,000..=384,000 Hz: below 1 kHz nothing is audible to the encoders and the
//!   resampler's FFT grows with the up-sampling ratio (1 Hz -> 44.1 kHz took seconds); 384 kHz
//!   is the highest rate studio converters produce;
//! - 1..=32 channels: every channel is decoded before the mix to mono, so the count multiplies
//!   the work (32 covers 22.2 surround with room to spare);
//! - bits per sample, where the container states it, 1..=64 (no sample format is wider).

use super::error::DecodeError;

/// Lowest accepted source sample rate, Hz.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest accepted source sample rate, Hz.
pub const MAX_SAMPLE_RATE: u32 = 384_000;
/// Most channels accepted.
pub const MAX_CHANNELS: u32 = 32;
/// Widest accepted sample, bits.
pub const MAX_BITS_PER_SAMPLE: u32 = 64;

/// What a header says about a stream; `None` where it says nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    pub sample_rate: Option<u32>,
    pub channels: Option<u32>,
    pub bits_per_sample: Option<u32>,
    pub frames: Option<u64>,
}

/// Refuses a declared value outside the limits above; `max_seconds` bounds the declared length
/// when given (when over-long input is to be rejected rather than cut).
pub fn check(d: &Declared, max_seconds: Option<f64>) -> Result<(), DecodeError> {
    if let Some(rate) = d.sample_rate {
        check_rate(rate)?;
    }
    if let Some(ch) = d.channels {
        check_channels(ch)?;
    }
    if let Some(bits) = d.bits_per_sample {
        in_range("bits per sample", bits, 1, MAX_BITS_PER_SAMPLE, "")?;
    }
    if let (Some(frames), Some(rate), Some(max_seconds)) = (d.frames, d.sample_rate, max_seconds) {
        if frames > max_frames(max_seconds, rate) {
            return Err(DecodeError::TooLong {
                seconds: frames as f64 / f64::from(rate),
                max_seconds,
            });
        }
    }
    Ok(())
}

pub fn check_rate(rate: u32) -> Result<(), DecodeError> {
    in_range("sample rate", rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, " Hz")
}

pub fn check_channels(channels: u32) -> Result<(), DecodeError> {
    in_range("channel count", channels, 1, MAX_CHANNELS, "")
}

/// The most frames `max_seconds` holds at `rate`.
pub fn max_frames(max_seconds: f64, rate: u32) -> u64 {
    // Saturating float -> int: `max_seconds` is validated positive and finite by the caller.
    (max_seconds * f64::from(rate)).floor() as u64
}

fn in_range(
    field: &'static str,
    value: u32,
    min: u32,
    max: u32,
    unit: &'static str,
) -> Result<(), DecodeError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(DecodeError::OutOfRange {
            field,
            value,
            min,
            max,
            unit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_like(rate: u32, channels: u32, bits: u32, frames: u64) -> Declared {
        Declared {
            sample_rate: Some(rate),
            channels: Some(channels),
            bits_per_sample: Some(bits),
            frames: Some(frames),
        }
    }

    #[test]
    fn bounds_are_inclusive() {
        for (rate, ok) in [
            (999, false),
            (1_000, true),
            (384_000, true),
            (384_001, false),
        ] {
            assert_eq!(check(&wav_like(rate, 1, 16, 1), None).is_ok(), ok, "{rate}");
        }
        for (ch, ok) in [(0, false), (1, true), (32, true), (33, false)] {
            assert_eq!(check(&wav_like(8_000, ch, 16, 1), None).is_ok(), ok, "{ch}");
        }
        for (bits, ok) in [(0, false), (1, true), (64, true), (65, false)] {
            assert_eq!(
                check(&wav_like(8_000, 1, bits, 1), None).is_ok(),
                ok,
                "{bits}"
            );
        }
        assert_eq!(check(&Declared::default(), Some(1.0)).ok(), Some(()));
    }

    #[test]
    fn declared_length_is_checked_only_against_a_given_limit() {
        assert!(check(&wav_like(8_000, 1, 16, 80_000), Some(10.0)).is_ok());
        let e = check(&wav_like(8_000, 1, 16, 80_001), Some(10.0));
        assert!(matches!(e, Err(DecodeError::TooLong { .. })), "{e:?}");
        assert!(check(&wav_like(8_000, 1, 16, u64::MAX), None).is_ok());
    }

    #[test]
    fn the_message_names_the_field_and_the_limit() {
        let e = check(&wav_like(0, 1, 16, 1), None).expect_err("rate 0");
        assert_eq!(
            e.to_string(),
            "unsupported audio: sample rate 0 Hz is outside 1000..=384000 Hz"
        );
        let e = check(&wav_like(8_000, 200, 16, 1), None).expect_err("200 channels");
        assert_eq!(
            e.to_string(),
            "unsupported audio: channel count 200 is outside 1..=32"
        );
    }
}
