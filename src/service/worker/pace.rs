//! How fast an instance denoises, measured by its model thread at every step and read by the
//! handle at admission: the time of one batched step and the row-steps it gets through a
//! second (both exponentially weighted over the recent steps). The handle turns them into the
//! least time a new request needs (a deadline closer than that is refused at once) and into
//! the retry delay it tells refused clients (see [`super::refusals`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of the newest step in the running averages.
const NEWEST: f64 = 0.2;

/// One instance's pace; zero until its first step.
#[derive(Debug, Default)]
pub struct Pace {
    /// Seconds of one step (f64 bits).
    step_secs: AtomicU64,
    /// Row-steps per second (f64 bits).
    row_steps_per_sec: AtomicU64,
}

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

/// Blends `new` into the average in `a` (only the model thread writes it).
fn blend(a: &AtomicU64, new: f64) {
    let old = load(a);
    let v = if old > 0.0 {
        old + NEWEST * (new - old)
    } else {
        new
    };
    a.store(v.to_bits(), Ordering::Relaxed);
}

impl Pace {
    /// A step of `rows` rows took `took`.
    pub fn record(&self, rows: usize, took: Duration) {
        let secs = took.as_secs_f64();
        if rows == 0 || secs <= 0.0 || secs.is_nan() {
            return;
        }
        blend(&self.step_secs, secs);
        blend(&self.row_steps_per_sec, rows as f64 / secs);
    }

    /// The least time `steps` more denoising steps take (None before the first step).
    pub fn at_least(&self, steps: usize) -> Option<Duration> {
        let s = load(&self.step_secs);
        (s > 0.0).then(|| Duration::from_secs_f64(s * steps as f64))
    }

    /// How long `row_steps` of outstanding work take at the recent pace (None before the
    /// first step).
    pub fn drain(&self, row_steps: usize) -> Option<Duration> {
        let r = load(&self.row_steps_per_sec);
        (r > 0.0).then(|| Duration::from_secs_f64(row_steps as f64 / r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_follows_recent_steps() {
        let p = Pace::default();
        assert_eq!(p.at_least(10), None);
        assert_eq!(p.drain(100), None);
        p.record(100, Duration::from_millis(10));
        assert_eq!(p.at_least(10), Some(Duration::from_millis(100)));
        // 100 rows in 10 ms: 10,000 row-steps a second.
        assert_eq!(p.drain(5_000), Some(Duration::from_millis(500)));
        p.record(100, Duration::from_millis(20));
        let step = p.at_least(1).expect("measured");
        assert!((step.as_secs_f64() - 0.012).abs() < 1e-9, "{step:?}");
        // Empty or timeless steps change nothing.
        p.record(0, Duration::from_millis(50));
        p.record(10, Duration::ZERO);
        assert_eq!(p.at_least(1), Some(step));
    }
}
