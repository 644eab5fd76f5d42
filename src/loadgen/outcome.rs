//! How a level's failed calls failed: refusals (RESOURCE_EXHAUSTED, the server shedding load,
//! with how fast they came back) apart from every other failure by its gRPC code, so that an
//! overload run can tell load shed cleanly from calls broken by the transport or the server.
//! And the server's resident memory, read from `/proc` when its process id is given.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tonic::Code;

/// The failures of a level.
#[derive(Debug)]
pub struct Failures {
    /// Calls answered RESOURCE_EXHAUSTED.
    pub refused: u64,
    /// Their latency, in microseconds, of the calls sent after the level's warm-up (as for
    /// the successful calls: the level's first burst is not its steady state).
    pub refusal: Histogram<u64>,
    /// Every other failure, by its code's name.
    pub other: BTreeMap<String, u64>,
}

impl Default for Failures {
    fn default() -> Self {
        Self {
            refused: 0,
            refusal: super::loops::histogram(),
            other: BTreeMap::new(),
        }
    }
}

impl Failures {
    /// Counts a failure; the latency of a refusal sent after the warm-up (`steady`) is kept.
    pub(super) fn record(&mut self, code: Code, latency: Duration, steady: bool) {
        if code == Code::ResourceExhausted {
            self.refused += 1;
            if steady {
                self.refusal
                    .saturating_record(latency.as_micros().min(u64::MAX as u128) as u64);
            }
        } else {
            *self.other.entry(format!("{code:?}")).or_default() += 1;
        }
    }

    pub(super) fn merge(&mut self, other: Failures) {
        self.refused += other.refused;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.refusal.add(&other.refusal);
        for (code, n) in other.other {
            *self.other.entry(code).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.refused + self.other.values().sum::<u64>()
    }

    /// The steady refusals' latency at quantile `q` in milliseconds; None without any.
    pub fn refusal_ms(&self, q: f64) -> Option<f64> {
        (!self.refusal.is_empty()).then(|| self.refusal.value_at_quantile(q) as f64 / 1e3)
    }
}

/// The resident memory of process `pid` in MiB (Linux `/proc/PID/status`, `VmRSS`); None
/// where it cannot be read.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_rss_mib(&status)
}

fn vm_rss_mib(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_kept_apart_from_other_failures() {
        let mut a = Failures::default();
        a.record(Code::ResourceExhausted, Duration::from_millis(2), true);
        a.record(Code::Unavailable, Duration::from_millis(1), true);
        let mut b = Failures::default();
        b.record(Code::ResourceExhausted, Duration::from_millis(8), true);
        b.record(Code::ResourceExhausted, Duration::from_secs(1), false);
        b.record(Code::Unavailable, Duration::from_millis(1), true);
        b.record(Code::Internal, Duration::from_millis(1), true);
        a.merge(b);
        assert_eq!(
            a.refused, 3,
            "a warm-up refusal is counted, its latency left out"
        );
        assert_eq!(a.other.get("Unavailable"), Some(&2));
        assert_eq!(a.other.get("Internal"), Some(&1));
        assert_eq!(a.total(), 6);
        let p99 = a.refusal_ms(0.99).expect("refusals");
        assert!((p99 - 8.0).abs() < 0.01, "{p99}");
        let p50 = a.refusal_ms(0.5).expect("refusals");
        assert!((p50 - 2.0).abs() < 0.01, "{p50}");
        assert_eq!(Failures::default().refusal_ms(0.99), None);
    }

    #[test]
    fn resident_memory_from_a_status_file() {
        let status = "Name:\tdiffgap\nVmPeak:\t 900000 kB\nVmRSS:\t  524288 kB\nThreads:\t9\n";
        assert_eq!(vm_rss_mib(status), Some(512.0));
        assert_eq!(vm_rss_mib("Name:\tx\n"), None);
        assert!(rss_mib(std::process::id()).is_some_and(|m| m > 1.0));
    }
}
