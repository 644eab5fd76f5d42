//! Why audio bytes could not be turned into samples: shared by the decoder and the header
//! limits it checks first.

use super::resample::ResampleError;

/// Why bytes could not be turned into samples.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty input: no bytes")]
    EmptyInput,
    #[error("undecodable audio: {0}")]
    Undecodable(String),
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// A declared or decoded stream parameter outside [`super::limits`].
    #[error("unsupported audio: {field} {value}{unit} is outside {min}..={max}{unit}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
        unit: &'static str,
    },
    #[error("no audio: the stream decodes to zero samples")]
    NoSamples,
    /// NaN, infinite or absurdly large samples (a float stream's bits are arbitrary), which the
    /// resampler's FFT cannot take.
    #[error("invalid audio: sample {index} is {value}, outside -{max}..={max} (full scale is 1)")]
    BadSample { index: usize, value: f32, max: f32 },
    #[error("audio too long: more than {max_seconds} s (at least {seconds:.2} s)")]
    TooLong { seconds: f64, max_seconds: f64 },
    #[error("invalid decode options: {0}")]
    InvalidOptions(String),
    #[error(transparent)]
    Resample(#[from] ResampleError),
}
