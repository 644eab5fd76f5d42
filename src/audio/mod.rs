//! Audio input: compressed or PCM bytes to mono `f32` samples at the rate an audio encoder wants.
//!
//! - [`decode`]: WAV, FLAC, OGG/Vorbis and MP3 bytes (symphonia) -> mono at a target rate, with
//!   typed errors for undecodable, empty and over-long input (never a panic on client bytes);
//! - [`error`]: why bytes could not be decoded;
//! - [`limits`]: the sample rates, channel counts, sample widths and lengths a stream may
//!   declare, checked before any decoding;
//! - [`wav_header`]: a WAV file's declared values, read ahead of symphonia's probe;
//! - [`id3`]: ID3v2.4 tags symphonia would panic on, refused ahead of its probe;
//! - [`resample`]: band-limited resampling of a mono signal (rubato, FFT based).
//!
//! Used by the real corpus (`diffgap corpus build`) and meant for the service's audio input.

pub mod decode;
pub mod error;
pub mod id3;
pub mod limits;
pub mod resample;
pub mod wav_header;

/// The rate of the audio encoder (aisfx): 44.1 kHz.
pub const ENCODER_SAMPLE_RATE: u32 = 44_100;
