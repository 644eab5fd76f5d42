//! The work a model's admission has refused lately, and the retry delay it tells the refused.
//!
//! A refused client comes back after the delay it is told. If the delay were only the time the
//! work already taken needs, thousands of refused clients would come back together and be
//! refused again, over and over: each refusal is cheap, but a flood of them takes the network
//! thread and then the model's core. By Little's law the refused work waiting outside is the
//! refusal rate times the delay in force; the delay told is the time the work taken and that
//! waiting work need at the model's pace, so refusals stay at about the rate the model
//! finishes work, whatever the number of clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::pace::Pace;

/// The window refusals are counted over.
const WINDOW: Duration = Duration::from_secs(1);
/// The retry delay told stays within these bounds.
pub const MIN_PUSHBACK: Duration = Duration::from_millis(20);
pub const MAX_PUSHBACK: Duration = Duration::from_secs(30);

/// The last delay any model's admission told, in microseconds (0: none yet): the delay the
/// server-wide call limit tells (`api::admission`), which sees no model.
static LATEST_US: AtomicU64 = AtomicU64::new(0);

/// The last delay any model's admission told (None before the first refusal).
pub fn latest_delay() -> Option<Duration> {
    match LATEST_US.load(Ordering::Relaxed) {
        0 => None,
        us => Some(Duration::from_micros(us)),
    }
}

/// Refused row-steps in the current and the previous window, and the delay in force.
#[derive(Debug)]
pub struct Refusals {
    start: Instant,
    /// Index of the current window since `start`.
    window: AtomicU64,
    current: AtomicU64,
    previous: AtomicU64,
    /// The last delay told, in microseconds.
    delay_us: AtomicU64,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            window: AtomicU64::new(0),
            current: AtomicU64::new(0),
            previous: AtomicU64::new(0),
            delay_us: AtomicU64::new(MIN_PUSHBACK.as_micros() as u64),
        }
    }
}

impl Refusals {
    /// Moves to the window of `now` (racing callers may lose a few counts: an estimate).
    fn roll(&self, now: Instant) {
        let w = (now.duration_since(self.start).as_nanos() / WINDOW.as_nanos()) as u64;
        let seen = self.window.swap(w, Ordering::AcqRel);
        if w != seen {
            let last = self.current.swap(0, Ordering::AcqRel);
            // A gap of more than one window means nothing was refused in the last one.
            self.previous
                .store(if w == seen + 1 { last } else { 0 }, Ordering::Release);
        }
    }

    /// Refused row-steps a second, from the last full window.
    fn rate(&self) -> f64 {
        self.previous.load(Ordering::Acquire) as f64 / WINDOW.as_secs_f64()
    }

    /// Records a refusal of `units` row-steps while `taken` row-steps are outstanding, and
    /// returns the delay to tell it, spread by `jitter` in [0, 1) (0.75x to 1.25x).
    pub fn refuse(&self, units: usize, taken: usize, pace: &Pace, jitter: f64) -> Duration {
        let now = Instant::now();
        self.roll(now);
        self.current.fetch_add(units as u64, Ordering::AcqRel);
        let in_force = Duration::from_micros(self.delay_us.load(Ordering::Acquire));
        let waiting = self.rate() * in_force.as_secs_f64();
        let ahead = taken.saturating_add(waiting as usize);
        let delay = pace
            .drain(ahead)
            .unwrap_or(MIN_PUSHBACK)
            .clamp(MIN_PUSHBACK, MAX_PUSHBACK);
        self.delay_us
            .store(delay.as_micros() as u64, Ordering::Release);
        LATEST_US.store(delay.as_micros() as u64, Ordering::Relaxed);
        delay
            .mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
            .clamp(MIN_PUSHBACK, MAX_PUSHBACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace_of(row_steps_per_sec: usize) -> Pace {
        let p = Pace::default();
        p.record(row_steps_per_sec, Duration::from_secs(1));
        p
    }

    #[test]
    fn without_recent_refusals_the_delay_is_the_work_taken() {
        let r = Refusals::default();
        let pace = pace_of(1000);
        assert_eq!(r.refuse(10, 500, &pace, 0.5), Duration::from_millis(500));
        assert_eq!(r.refuse(10, 500, &pace, 0.0), Duration::from_millis(375));
        assert_eq!(r.refuse(10, 0, &pace, 0.5), MIN_PUSHBACK);
        assert_eq!(r.refuse(10, 1_000_000, &pace, 0.5), MAX_PUSHBACK, "bounded");
        assert_eq!(
            Refusals::default().refuse(10, 500, &Pace::default(), 0.5),
            MIN_PUSHBACK,
            "no pace yet"
        );
    }

    #[test]
    fn refused_work_waiting_outside_lengthens_the_delay() {
        let r = Refusals::default();
        let pace = pace_of(1000);
        // Last window: 2,000 row-steps refused; delay in force 500 ms, so about 1,000
        // row-steps wait outside, besides the 500 taken: 1.5 s of work.
        r.previous.store(2000, Ordering::Release);
        r.delay_us.store(500_000, Ordering::Release);
        let d = r.refuse(10, 500, &pace, 0.5);
        assert_eq!(d, Duration::from_millis(1500));
        // The delay in force is now 1.5 s: the same refusal rate means 3,000 waiting.
        let d = r.refuse(10, 500, &pace, 0.5);
        assert_eq!(d, Duration::from_millis(3500));
    }

    #[test]
    fn the_window_rolls_and_forgets() {
        let r = Refusals::default();
        r.current.store(700, Ordering::Release);
        r.roll(r.start + WINDOW);
        assert_eq!(r.previous.load(Ordering::Acquire), 700);
        assert_eq!(r.current.load(Ordering::Acquire), 0);
        r.current.store(300, Ordering::Release);
        r.roll(r.start + WINDOW * 3);
        assert_eq!(
            r.previous.load(Ordering::Acquire),
            0,
            "a quiet window between"
        );
    }
}
