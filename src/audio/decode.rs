//! Bytes of an audio file -> mono `f32` samples at a target rate.
//!
//! Containers and codecs: WAV (PCM integer and float), FLAC, OGG/Vorbis (`.ogg`, `.oga`) and MP3,
//! through symphonia; the format is probed from the bytes (an optional file extension is only a
//! hint). Channels are averaged to mono, then the signal is resampled to the target rate
//! ([`super::resample`]).
//!
//! Work is bounded before it starts: the declared sample rate, channel count, sample width and
//! length are held to [`super::limits`] from the header (a WAV's ahead of the probe, see
//! [`super::wav_header`]) and again from the first decoded buffer, and decoding stops as soon
//! as `max_seconds` of audio has come out, whatever the header said. Every failure is a
//! [`DecodeError`]; a panic inside a decoder is still caught, as a last resort, and reported
//! as undecodable input without saying more.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

pub use super::error::DecodeError;
use super::limits::{self, Declared};
use super::resample::resample;
use super::wav_header;

/// What to do with input longer than [`DecodeOptions::max_seconds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLong {
    /// Refuse it with [`DecodeError::TooLong`] (the service).
    Reject,
    /// Keep the first `max_seconds` (the corpus caps its clips).
    Truncate,
}

/// Options of [`decode`].
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Output sample rate in Hz.
    pub target_rate: u32,
    /// Longest accepted input in seconds (measured at the source rate, before resampling).
    pub max_seconds: f64,
    pub over_long: OverLong,
    /// File extension without the dot (`"wav"`, `"oga"`...), a hint for the probe only.
    pub extension: Option<String>,
}

impl DecodeOptions {
    /// Target rate and length limit; over-long input is rejected; no extension hint.
    pub fn new(target_rate: u32, max_seconds: f64) -> Self {
        Self {
            target_rate,
            max_seconds,
            over_long: OverLong::Reject,
            extension: None,
        }
    }
}

/// A decoded clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Mono samples at [`DecodeOptions::target_rate`].
    pub samples: Vec<f32>,
    /// The stream's own sample rate and channel count.
    pub source_rate: u32,
    pub source_channels: usize,
    /// Whether the input was cut at `max_seconds` ([`OverLong::Truncate`]).
    pub truncated: bool,
}

/// Decodes `bytes` to mono samples at `opts.target_rate`.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    if opts.target_rate == 0 || !(opts.max_seconds > 0.0 && opts.max_seconds.is_finite()) {
        return Err(DecodeError::InvalidOptions(format!(
            "target_rate {} Hz, max_seconds {}",
            opts.target_rate, opts.max_seconds
        )));
    }
    if bytes.is_empty() {
        return Err(DecodeError::EmptyInput);
    }
    let (mono, source_rate, source_channels, truncated) =
        match catch_unwind(AssertUnwindSafe(|| decode_mono(bytes, opts))) {
            Ok(result) => result?,
            // The panic's own text is symphonia's internals, not the client's business.
            Err(_) => {
                return Err(DecodeError::Undecodable(
                    "the audio could not be decoded".into(),
                ))
            }
        };
    let samples = resample(&mono, source_rate, opts.target_rate)?;
    Ok(Decoded {
        samples,
        source_rate,
        source_channels,
        truncated,
    })
}

/// Full scale is 1; a sample past this is a corrupt stream, not loud audio (and would overflow
/// the resampler's sums).
const MAX_SAMPLE_MAGNITUDE: f32 = 1_000.0;

fn check_samples(mono: &[f32]) -> Result<(), DecodeError> {
    match mono
        .iter()
        .position(|x| !x.is_finite() || x.abs() > MAX_SAMPLE_MAGNITUDE)
    {
        Some(index) => Err(DecodeError::BadSample {
            index,
            value: mono[index],
            max: MAX_SAMPLE_MAGNITUDE,
        }),
        None => Ok(()),
    }
}

/// Demuxes and decodes the first audio track, averaging channels; returns (mono, rate,
/// channels, truncated).
fn decode_mono(
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<(Vec<f32>, u32, usize, bool), DecodeError> {
    for h in wav_header::every_format(bytes) {
        limits::check(&h.declared(), None)?;
        h.check_blocks()?;
    }
    super::id3::check(bytes)?;
    let wav = wav_header::peek(bytes);
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = &opts.extension {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| classify(e, "probe"))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| DecodeError::Unsupported("no audio track".into()))?;
    let track_id = track.id;
    let params = &track.codec_params;
    let declared = Declared {
        sample_rate: params.sample_rate,
        channels: params.channels.map(|c| c.count() as u32),
        bits_per_sample: params.bits_per_sample,
        frames: params
            .n_frames
            .filter(|_| !wav.is_some_and(|h| h.length_unknown())),
    };
    // A truncating caller wants the start of a long stream, so its length is no reason to refuse.
    let length_limit = (opts.over_long == OverLong::Reject).then_some(opts.max_seconds);
    limits::check(&declared, length_limit)?;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| classify(e, "codec"))?;

    let mut mono: Vec<f32> = Vec::new();
    let mut rate: Option<u32> = None;
    let mut channels = 0usize;
    let mut max_frames = usize::MAX;
    let mut truncated = false;
    let mut bad_packets = 0usize;
    let mut good_packets = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(SymError::DecodeError(_)) if good_packets > 0 => break,
            Err(e) => return Err(classify(e, "demux")),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(SymError::DecodeError(_)) => {
                bad_packets += 1;
                continue;
            }
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(classify(e, "decode")),
        };
        good_packets += 1;
        let spec = *buf.spec();
        let ch = spec.channels.count();
        match rate {
            None => {
                // The header may have said nothing, or not what the codec found.
                limits::check_rate(spec.rate)?;
                limits::check_channels(u32::try_from(ch).unwrap_or(u32::MAX))?;
                rate = Some(spec.rate);
                channels = ch;
                max_frames = usize::try_from(limits::max_frames(opts.max_seconds, spec.rate))
                    .unwrap_or(usize::MAX);
            }
            Some(r) if r != spec.rate || channels != ch => {
                return Err(DecodeError::Unsupported(
                    "sample rate or channel count changes within the stream".into(),
                ));
            }
            Some(_) => {}
        }
        if buf.frames() == 0 {
            continue;
        }
        let mut interleaved = SampleBuffer::<f32>::new(buf.capacity() as u64, spec);
        interleaved.copy_interleaved_ref(buf);
        let scale = 1.0 / ch as f32;
        for frame in interleaved.samples().chunks_exact(ch) {
            if mono.len() >= max_frames {
                truncated = true;
                break;
            }
            mono.push(frame.iter().sum::<f32>() * scale);
        }
        if truncated {
            if opts.over_long == OverLong::Reject {
                let r = f64::from(rate.unwrap_or(1));
                return Err(DecodeError::TooLong {
                    seconds: (mono.len() + 1) as f64 / r,
                    max_seconds: opts.max_seconds,
                });
            }
            break;
        }
    }
    let Some(rate) = rate else {
        return Err(if bad_packets > 0 {
            DecodeError::Undecodable(format!("all {bad_packets} packets are malformed"))
        } else {
            DecodeError::NoSamples
        });
    };
    if mono.is_empty() {
        return Err(DecodeError::NoSamples);
    }
    check_samples(&mono)?;
    Ok((mono, rate, channels, truncated))
}

fn classify(e: SymError, stage: &str) -> DecodeError {
    match e {
        SymError::Unsupported(what) => DecodeError::Unsupported(format!("{stage}: {what}")),
        other => DecodeError::Undecodable(format!("{stage}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::wav_header::tests::wav_bytes;

    /// A WAV file made with hound.
    fn wav(rate: u32, channels: u16, frames: &[Vec<f32>], float: bool) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: if float { 32 } else { 16 },
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut cursor = Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
            for frame in frames {
                for &s in frame {
                    if float {
                        w.write_sample(s).unwrap();
                    } else {
                        w.write_sample((s * 32767.0) as i16).unwrap();
                    }
                }
            }
            w.finalize().unwrap();
        }
        cursor.into_inner()
    }

    fn opts(rate: u32) -> DecodeOptions {
        DecodeOptions::new(rate, 10.0)
    }

    #[test]
    fn float_wav_round_trips_exactly() {
        let frames: Vec<Vec<f32>> = (0..1000).map(|i| vec![(i as f32 / 1000.0) - 0.5]).collect();
        let d = decode(&wav(44_100, 1, &frames, true), &opts(44_100)).unwrap();
        assert_eq!(d.samples.len(), 1000);
        assert_eq!(d.source_rate, 44_100);
        assert_eq!(d.source_channels, 1);
        assert!(!d.truncated);
        for (a, f) in d.samples.iter().zip(&frames) {
            assert_eq!(*a, f[0]);
        }
    }

    #[test]
    fn stereo_is_averaged_and_resampled() {
        let frames: Vec<Vec<f32>> = (0..22_050).map(|_| vec![0.5, -0.25]).collect();
        let d = decode(&wav(22_050, 2, &frames, false), &opts(44_100)).unwrap();
        assert_eq!(d.source_rate, 22_050);
        assert_eq!(d.source_channels, 2);
        assert_eq!(d.samples.len(), 44_100);
        let mid = d.samples[22_050];
        assert!((mid - 0.125).abs() < 1e-3, "{mid}");
    }

    #[test]
    fn empty_and_corrupt_bytes_are_errors() {
        assert!(matches!(
            decode(&[], &opts(44_100)),
            Err(DecodeError::EmptyInput)
        ));
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(matches!(
            decode(&garbage, &opts(44_100)),
            Err(DecodeError::Unsupported(_) | DecodeError::Undecodable(_))
        ));
        // A valid header cut short, and a header whose data is garbage.
        let good = wav(44_100, 1, &vec![vec![0.1f32]; 500], false);
        for cut in [4usize, 12, 30, 44, 45] {
            let r = decode(&good[..cut], &opts(44_100));
            assert!(r.is_err(), "cut at {cut}: {r:?}");
        }
        let mut bad = good.clone();
        for b in bad.iter_mut().skip(8).take(30) {
            *b ^= 0x5a;
        }
        assert!(decode(&bad, &opts(44_100)).is_err());
        // OGG magic followed by garbage.
        let mut ogg = b"OggS".to_vec();
        ogg.extend_from_slice(&garbage[..512]);
        assert!(decode(&ogg, &opts(44_100)).is_err());
    }

    #[test]
    fn non_finite_and_huge_float_samples_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, -3.0e38] {
            let mut data = Vec::new();
            for i in 0..800 {
                let x = if i == 7 { bad } else { 0.25 };
                data.extend_from_slice(&x.to_le_bytes());
            }
            let bytes = wav_bytes(3, 16_000, 1, 32, data.len() as u32, &data);
            match decode(&bytes, &opts(44_100)) {
                Err(DecodeError::BadSample { index: 7, .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn zero_frames_is_no_samples() {
        let r = decode(&wav(44_100, 1, &[], true), &opts(44_100));
        assert!(matches!(r, Err(DecodeError::NoSamples)), "{r:?}");
    }

    #[test]
    fn over_long_is_rejected_or_truncated() {
        let frames: Vec<Vec<f32>> = (0..8000).map(|_| vec![0.25]).collect();
        let bytes = wav(8000, 1, &frames, true);
        let mut o = DecodeOptions::new(8000, 0.5);
        assert!(matches!(
            decode(&bytes, &o),
            Err(DecodeError::TooLong { .. })
        ));
        o.over_long = OverLong::Truncate;
        let d = decode(&bytes, &o).unwrap();
        assert!(d.truncated);
        assert_eq!(d.samples.len(), 4000);
    }

    /// 16-bit mono PCM samples, `frames` of them, a quiet ramp.
    fn pcm16(frames: usize) -> Vec<u8> {
        (0..frames)
            .flat_map(|i| ((i % 200) as i16 * 10).to_le_bytes())
            .collect()
    }

    #[test]
    fn hostile_headers_are_refused_before_decoding() {
        let data = pcm16(4 * 1_152);
        let len = data.len() as u32;
        let cases: [(&str, Vec<u8>, &str); 7] = [
            ("rate 0", wav_bytes(1, 0, 1, 16, len, &data), "sample rate"),
            (
                "rate 4e9",
                wav_bytes(1, 4_000_000_000, 1, 16, len, &data),
                "sample rate",
            ),
            (
                "rate 1 Hz",
                wav_bytes(1, 1, 1, 16, len, &data),
                "sample rate",
            ),
            (
                "0 channels",
                wav_bytes(1, 8_000, 0, 16, len, &data),
                "channel count",
            ),
            (
                "200 channels",
                wav_bytes(1, 8_000, 200, 16, len, &data),
                "channel count",
            ),
            (
                "0 bits",
                wav_bytes(1, 8_000, 1, 0, len, &data),
                "bits per sample",
            ),
            (
                "128 bits",
                wav_bytes(1, 8_000, 1, 128, len, &data),
                "bits per sample",
            ),
        ];
        for (what, bytes, field) in cases {
            let start = std::time::Instant::now();
            let e = decode(&bytes, &opts(44_100)).expect_err(what);
            assert!(
                start.elapsed().as_secs_f64() < 0.5,
                "{what}: {:?}",
                start.elapsed()
            );
            assert!(
                matches!(&e, DecodeError::OutOfRange { field: f, .. } if *f == field),
                "{what}: {e:?}"
            );
            assert!(!e.to_string().contains("panic"), "{what}: {e}");
        }
        // Symphonia's probe finds a header past leading bytes, so that header is checked too.
        let mut shifted = b"\xda\xda\xda".to_vec();
        shifted.extend(wav_bytes(1, 0, 1, 16, len, &data));
        assert!(
            matches!(
                decode(&shifted, &opts(44_100)),
                Err(DecodeError::OutOfRange {
                    field: "sample rate",
                    ..
                })
            ),
            "a rate-0 header after leading bytes"
        );
        // Ten hours declared by the data chunk, a tenth of a second present.
        let ten_hours = 10 * 3_600 * 44_100 * 2;
        let bytes = wav_bytes(1, 44_100, 1, 16, ten_hours, &data);
        let start = std::time::Instant::now();
        match decode(&bytes, &opts(44_100)) {
            Err(DecodeError::TooLong {
                seconds,
                max_seconds,
            }) => {
                assert_eq!((seconds, max_seconds), (36_000.0, 10.0));
            }
            other => panic!("ten hours declared: {other:?}"),
        }
        assert!(start.elapsed().as_secs_f64() < 0.5, "{:?}", start.elapsed());
        // A truncating caller gets what is there.
        let mut cut = opts(44_100);
        cut.over_long = OverLong::Truncate;
        assert_eq!(
            decode(&bytes, &cut).expect("truncating").samples.len(),
            4 * 1_152
        );
    }

    #[test]
    fn the_rate_bounds_themselves_decode() {
        for rate in [limits::MIN_SAMPLE_RATE, limits::MAX_SAMPLE_RATE] {
            let data = pcm16(rate as usize / 10);
            let bytes = wav_bytes(1, rate, 1, 16, data.len() as u32, &data);
            let d = decode(&bytes, &opts(44_100)).expect("a rate at the bound");
            assert_eq!((d.source_rate, d.samples.len()), (rate, 4_410));
        }
    }

    #[test]
    fn a_stream_of_unknown_length_stops_at_the_limit() {
        // As ffmpeg writes to a pipe: RIFF and data lengths 0xFFFFFFFF. Sixty seconds present.
        let bytes = wav_bytes(1, 8_000, 1, 16, u32::MAX, &pcm16(8_000 * 60));
        let one_second = DecodeOptions::new(8_000, 1.0);
        match decode(&bytes, &one_second) {
            // Stopped at the first frame past the limit, not at the end of the stream.
            Err(DecodeError::TooLong { seconds, .. }) => assert_eq!(seconds, 8_001.0 / 8_000.0),
            other => panic!("{other:?}"),
        }
        let mut cut = one_second.clone();
        cut.over_long = OverLong::Truncate;
        let d = decode(&bytes, &cut).expect("truncating");
        assert!(d.truncated);
        assert_eq!(d.samples.len(), 8_000);
        // Within the limit it decodes: the unknown length is not taken for a huge one. (Whole
        // packets of 1152 frames: symphonia drops a partial last packet of such a stream.)
        let short = wav_bytes(1, 8_000, 1, 16, u32::MAX, &pcm16(4 * 1_152));
        let d = decode(&short, &one_second).expect("a short stream");
        assert_eq!(d.samples.len(), 4 * 1_152);
    }

    #[test]
    fn invalid_options() {
        let bytes = wav(8000, 1, &[vec![0.1]], true);
        assert!(matches!(
            decode(&bytes, &DecodeOptions::new(0, 1.0)),
            Err(DecodeError::InvalidOptions(_))
        ));
        assert!(matches!(
            decode(&bytes, &DecodeOptions::new(8000, f64::NAN)),
            Err(DecodeError::InvalidOptions(_))
        ));
    }
}
