//! From raw mono samples to a corpus clip: capped in length, trailing silence trimmed, silent
//! clips refused, peak-normalised (the audio encoder's input convention).

/// Peak below this (about -80 dBFS) is silence: the clip is dropped.
pub const SILENCE_PEAK: f32 = 1e-4;
/// Trailing samples below this fraction of the peak (-60 dB) are trimmed.
pub const TAIL_FLOOR: f32 = 1e-3;
/// Clips shorter than this after trimming (seconds) are dropped as empty.
pub const MIN_SECONDS: f64 = 0.05;

/// A finished clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Peak-normalised samples (max |x| = 1).
    pub samples: Vec<f32>,
    /// The peak before normalisation.
    pub peak: f32,
    /// Whether the clip was cut at the length cap.
    pub capped: bool,
}

/// Why a clip was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Silent,
    TooShort,
}

/// Caps to `max_samples`, trims trailing silence, drops silent or too short clips, normalises.
pub fn finish(mut samples: Vec<f32>, rate: u32, max_samples: usize) -> Result<Finished, Dropped> {
    let capped = samples.len() > max_samples;
    samples.truncate(max_samples);
    let peak = samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if peak.is_nan() || peak < SILENCE_PEAK {
        return Err(Dropped::Silent);
    }
    let floor = peak * TAIL_FLOOR;
    let end = samples
        .iter()
        .rposition(|x| x.abs() > floor)
        .map_or(0, |i| i + 1);
    samples.truncate(end);
    if (samples.len() as f64) < MIN_SECONDS * f64::from(rate) {
        return Err(Dropped::TooShort);
    }
    let scale = 1.0 / peak;
    for x in &mut samples {
        *x *= scale;
    }
    Ok(Finished {
        samples,
        peak,
        capped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_and_short_clips_are_dropped() {
        assert_eq!(
            finish(vec![0.0; 44_100], 44_100, 441_000),
            Err(Dropped::Silent)
        );
        assert_eq!(
            finish(vec![1e-6; 44_100], 44_100, 441_000),
            Err(Dropped::Silent)
        );
        assert_eq!(
            finish(vec![f32::NAN; 10], 44_100, 441_000),
            Err(Dropped::Silent)
        );
        let mut blip = vec![0.0; 44_100];
        blip[10] = 0.5;
        assert_eq!(finish(blip, 44_100, 441_000), Err(Dropped::TooShort));
    }

    #[test]
    fn trims_tail_caps_and_normalises() {
        let mut x: Vec<f32> = (0..10_000)
            .map(|i| 0.5 * ((i as f32) * 0.1).sin())
            .collect();
        x.extend(std::iter::repeat_n(0.0, 5000));
        let f = finish(x.clone(), 44_100, 441_000).unwrap();
        assert!(f.samples.len() <= 10_000 && f.samples.len() > 9_900);
        assert!((f.samples.iter().fold(0.0f32, |m, v| m.max(v.abs())) - 1.0).abs() < 1e-6);
        assert!((f.peak - 0.5).abs() < 1e-3);
        assert!(!f.capped);
        let c = finish(x, 44_100, 4_410).unwrap();
        assert!(c.capped);
        assert_eq!(c.samples.len(), 4_410);
    }
}
