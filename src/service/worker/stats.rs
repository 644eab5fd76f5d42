//! A worker's counters (summed over its instances), readable from any thread, and the same
//! quantities recorded to the `metrics` recorder under the names of [`metrics`](crate::service::ops::metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::service::ops::metrics as names;

/// Counters of a worker (summed over its instances), readable from any thread (for tests and
/// diagnostics; the same quantities also go to the `metrics` recorder).
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Batched denoising steps (network passes) run.
    pub steps: AtomicU64,
    /// Rows x steps denoised.
    pub rows_denoised: AtomicU64,
    /// Rows in the running batches now.
    pub active_rows: AtomicU64,
    /// Requests queued or in progress now.
    pub queued: AtomicU64,
    /// Requests answered successfully.
    pub completed: AtomicU64,
    /// Requests dropped because their deadline passed.
    pub dropped_deadline: AtomicU64,
    /// Requests dropped because their client went away.
    pub dropped_cancelled: AtomicU64,
}

/// A plain copy of [`WorkerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    pub steps: u64,
    pub rows_denoised: u64,
    pub active_rows: u64,
    pub queued: u64,
    pub completed: u64,
    pub dropped_deadline: u64,
    pub dropped_cancelled: u64,
}

impl WorkerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            steps: g(&self.steps),
            rows_denoised: g(&self.rows_denoised),
            active_rows: g(&self.active_rows),
            queued: g(&self.queued),
            completed: g(&self.completed),
            dropped_deadline: g(&self.dropped_deadline),
            dropped_cancelled: g(&self.dropped_cancelled),
        }
    }

    pub(crate) fn record_step(&self, rows: usize) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.rows_denoised.fetch_add(rows as u64, Ordering::Relaxed);
        metrics::counter!(names::DENOISING_STEPS).increment(1);
        metrics::counter!(names::DENOISED_ROWS).increment(rows as u64);
        metrics::histogram!(names::BATCH_ROWS).record(rows as f64);
    }

    pub(crate) fn record_drop(&self, why: DropReason) {
        let (counter, reason) = match why {
            DropReason::Deadline => (&self.dropped_deadline, "deadline"),
            DropReason::Cancelled => (&self.dropped_cancelled, "cancelled"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::REQUESTS_DROPPED, "reason" => reason).increment(1);
    }

    pub(crate) fn record_done(&self, queue: Duration, compute: Duration) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!(names::QUEUE_DURATION).record(queue.as_secs_f64());
        metrics::histogram!(names::COMPUTE_DURATION).record(compute.as_secs_f64());
    }

    /// An instance's rows in its running batch are now `rows` (`mine` holds its last value):
    /// the gauge is the sum over the instances.
    pub(crate) fn set_active_rows(&self, mine: &mut u64, rows: usize) {
        let total = replace_share(&self.active_rows, mine, rows as u64);
        metrics::gauge!(names::ACTIVE_ROWS).set(total as f64);
    }

    /// An instance's queued and in-progress requests are now `n` (`mine` holds its last
    /// value): the gauge is the sum over the instances.
    pub(crate) fn set_queue_depth(&self, mine: &mut u64, n: usize) {
        let total = replace_share(&self.queued, mine, n as u64);
        metrics::gauge!(names::QUEUE_DEPTH).set(total as f64);
    }
}

/// Replaces one instance's share `mine` of `total` by `new`; returns the new total.
fn replace_share(total: &AtomicU64, mine: &mut u64, new: u64) -> u64 {
    let old = std::mem::replace(mine, new);
    if new >= old {
        total.fetch_add(new - old, Ordering::Relaxed) + (new - old)
    } else {
        total.fetch_sub(old - new, Ordering::Relaxed) - (old - new)
    }
}

/// Why a request is dropped before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its deadline passed (it is answered DEADLINE_EXCEEDED if its client still listens).
    Deadline,
    /// Its client went away (the reply channel is closed).
    Cancelled,
}

/// Whether a request must be dropped at `now`: a passed deadline wins over a closed channel,
/// since tonic itself drops the handler (closing the channel) when a `grpc-timeout` elapses.
pub fn drop_reason(
    deadline: Option<Instant>,
    reply_closed: bool,
    now: Instant,
) -> Option<DropReason> {
    if deadline.is_some_and(|d| d <= now) {
        Some(DropReason::Deadline)
    } else if reply_closed {
        Some(DropReason::Cancelled)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_wins_over_a_closed_channel() {
        let now = Instant::now();
        let past = now.checked_sub(Duration::from_millis(1));
        let future = now + Duration::from_secs(1);
        assert_eq!(drop_reason(None, false, now), None);
        assert_eq!(drop_reason(Some(future), false, now), None);
        assert_eq!(drop_reason(past, false, now), Some(DropReason::Deadline));
        assert_eq!(drop_reason(past, true, now), Some(DropReason::Deadline));
        assert_eq!(
            drop_reason(Some(future), true, now),
            Some(DropReason::Cancelled)
        );
        assert_eq!(drop_reason(None, true, now), Some(DropReason::Cancelled));
    }
}
