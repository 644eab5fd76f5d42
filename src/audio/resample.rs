//! Resampling of a mono signal with rubato's synchronous FFT resampler (band-limited, exact
//! rational ratio, deterministic for given input). The resampler's delay is removed, so sample
//! 0 of the output lines up with sample 0 of the input, and the output has
//! `ceil(len * to / from)` samples.

use rubato::{FftFixedIn, Resampler};

/// Input frames per FFT chunk; rubato rounds to a multiple of the ratio's denominator.
const CHUNK: usize = 1024;

/// Why a signal could not be resampled.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    #[error("sample rate must be positive (from {from} Hz to {to} Hz)")]
    ZeroRate { from: u32, to: u32 },
    #[error("resampler: {0}")]
    Rubato(String),
}

/// Number of output samples for `len` input samples from `from` Hz to `to` Hz.
pub fn output_len(len: usize, from: u32, to: u32) -> usize {
    let num = len as u128 * u128::from(to);
    let den = u128::from(from.max(1));
    num.div_ceil(den) as usize
}

/// Resamples `signal` from `from` Hz to `to` Hz. Equal rates return a copy.
pub fn resample(signal: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    if from == 0 || to == 0 {
        return Err(ResampleError::ZeroRate { from, to });
    }
    if from == to || signal.is_empty() {
        return Ok(signal.to_vec());
    }
    let want = output_len(signal.len(), from, to);
    let mut rs = FftFixedIn::<f32>::new(from as usize, to as usize, CHUNK, 2, 1)
        .map_err(|e| ResampleError::Rubato(e.to_string()))?;
    let delay = rs.output_delay();
    let mut out: Vec<f32> = Vec::with_capacity(want + delay + CHUNK);
    let mut pos = 0;
    let rubato_err = |e: rubato::ResampleError| ResampleError::Rubato(e.to_string());
    while signal.len() - pos >= rs.input_frames_next() {
        let n = rs.input_frames_next();
        let chunk = rs
            .process(&[&signal[pos..pos + n]], None)
            .map_err(rubato_err)?;
        out.extend_from_slice(&chunk[0]);
        pos += n;
    }
    if pos < signal.len() {
        let chunk = rs
            .process_partial(Some(&[&signal[pos..]]), None)
            .map_err(rubato_err)?;
        out.extend_from_slice(&chunk[0]);
    }
    // Flush the delayed tail with zeros until the aligned output is complete.
    while out.len() < want + delay {
        let chunk = rs
            .process_partial::<&[f32]>(None, None)
            .map_err(rubato_err)?;
        if chunk[0].is_empty() {
            break;
        }
        out.extend_from_slice(&chunk[0]);
    }
    let end = (delay + want).min(out.len());
    let mut aligned = out[delay.min(end)..end].to_vec();
    aligned.resize(want, 0.0);
    Ok(aligned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn lengths_and_identity() {
        assert_eq!(output_len(22_050, 22_050, 44_100), 44_100);
        assert_eq!(output_len(3, 48_000, 44_100), 3);
        let x = sine(440.0, 44_100, 1000);
        assert_eq!(resample(&x, 44_100, 44_100).unwrap(), x);
        assert!(resample(&x, 0, 44_100).is_err());
    }

    #[test]
    fn sine_keeps_its_frequency_and_phase() {
        for from in [8_000u32, 22_050, 48_000] {
            let len = from as usize / 2 + 17;
            let x = sine(440.0, from, len);
            let y = resample(&x, from, 44_100).unwrap();
            assert_eq!(y.len(), output_len(len, from, 44_100));
            let reference = sine(440.0, 44_100, y.len());
            // Away from the edges the resampled sine matches the ideal one (delay removed).
            let (a, b) = (y.len() / 4, 3 * y.len() / 4);
            let err = y[a..b]
                .iter()
                .zip(&reference[a..b])
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            // Within half a sample of the 44.1 kHz grid: 440 Hz at 0.5 sample is about 0.03.
            assert!(err < 0.05, "from {from}: max error {err}");
        }
    }

    #[test]
    fn deterministic() {
        let x = sine(1234.0, 22_050, 5000);
        assert_eq!(
            resample(&x, 22_050, 44_100).unwrap(),
            resample(&x, 22_050, 44_100).unwrap()
        );
    }
}
