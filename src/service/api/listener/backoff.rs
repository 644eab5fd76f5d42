//! What the accept loop does with a failed `accept`: skip a connection that died before it was
//! accepted, or back off when the process is out of a resource. Retrying at once after EMFILE
//! fails again at once (the pending connection stays in the backlog), which is the tight loop
//! that took a whole core in the abuse run.

use std::io;
use std::time::{Duration, Instant};

/// The first pause after a resource error.
pub const FIRST_DELAY: Duration = Duration::from_millis(10);
/// The longest pause: once resources free up, connections wait at most this long.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// What a failed `accept` means for the loop, with its `kind` label (one of
/// `metrics::ACCEPT_ERROR_KINDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// Out of file descriptors, buffers or memory: the next try fails too until something is
    /// released, so pause.
    Exhausted(&'static str),
    /// One pending connection failed (reset or aborted before it was accepted, refused by a
    /// firewall, its network gone): the next one may be fine, so go on.
    Skipped(&'static str),
}

impl AcceptError {
    pub fn kind(self) -> &'static str {
        match self {
            Self::Exhausted(k) | Self::Skipped(k) => k,
        }
    }
}

/// Sorts an `accept` error. Errors this does not know are treated as exhaustion: a pause
/// costs little, a loop that never sleeps costs a core.
pub fn classify(e: &io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::EMFILE) => AcceptError::Exhausted("emfile"),
        Some(libc::ENFILE) => AcceptError::Exhausted("enfile"),
        Some(libc::ENOBUFS) => AcceptError::Exhausted("enobufs"),
        Some(libc::ENOMEM) => AcceptError::Exhausted("enomem"),
        // accept(2): errors of the pending connection itself, to be retried like EAGAIN.
        Some(
            libc::ECONNABORTED
            | libc::ECONNRESET
            | libc::EINTR
            | libc::EPROTO
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::ENOPROTOOPT
            | libc::EOPNOTSUPP,
        ) => AcceptError::Skipped("aborted"),
        _ => AcceptError::Exhausted("other"),
    }
}

/// How often a run of resource errors (or of refusals) is logged: at a limit, every connection
/// that closes lets one more in before the next error, and a line for each would flood the log.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// Events logged at most once every [`REPORT_INTERVAL`], with the count since the last line.
#[derive(Debug, Default)]
pub struct Reports {
    last: Option<Instant>,
    unreported: u64,
}

impl Reports {
    /// One event at `now`: the events to log now (this one and those held back), when due.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= REPORT_INTERVAL);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// The pauses after resource errors: [`FIRST_DELAY`], doubling up to [`MAX_DELAY`], short
/// again after an accepted connection (as Go's HTTP server does); and when to log them.
#[derive(Debug)]
pub struct Backoff {
    next_delay: Duration,
    reports: Reports,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next_delay: FIRST_DELAY,
            reports: Reports::default(),
        }
    }
}

impl Backoff {
    /// A resource error at `now`: how long to pause, and the failures to log now (this one
    /// and those not logged since the last report), once every [`REPORT_INTERVAL`].
    pub fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let delay = self.next_delay;
        self.next_delay = (delay * 2).min(MAX_DELAY);
        (delay, self.reports.note(now))
    }

    /// A connection was accepted: the next pause starts short again.
    pub fn succeeded(&mut self) {
        self.next_delay = FIRST_DELAY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ops::metrics::ACCEPT_ERROR_KINDS;

    #[test]
    fn pauses_double_up_to_a_second_and_restart_after_a_success() {
        let mut b = Backoff::default();
        let now = Instant::now();
        let delays: Vec<u64> = (0..9).map(|_| b.failed(now).0.as_millis() as u64).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(now).0, FIRST_DELAY, "short again");
    }

    #[test]
    fn failures_are_reported_at_most_once_an_interval_with_their_count() {
        let mut b = Backoff::default();
        let t = Instant::now();
        assert_eq!(b.failed(t).1, Some(1), "the first is reported at once");
        for _ in 0..5 {
            assert_eq!(b.failed(t + Duration::from_secs(1)).1, None);
            b.succeeded();
        }
        assert_eq!(
            b.failed(t + REPORT_INTERVAL).1,
            Some(6),
            "with those held back"
        );
        assert_eq!(b.failed(t + REPORT_INTERVAL).1, None);
    }

    #[test]
    fn resource_errors_back_off_and_dead_connections_are_skipped() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(
            classify(&os(libc::EMFILE)),
            AcceptError::Exhausted("emfile")
        );
        assert_eq!(
            classify(&os(libc::ENFILE)),
            AcceptError::Exhausted("enfile")
        );
        assert_eq!(
            classify(&os(libc::ENOBUFS)),
            AcceptError::Exhausted("enobufs")
        );
        assert_eq!(
            classify(&os(libc::ENOMEM)),
            AcceptError::Exhausted("enomem")
        );
        assert_eq!(
            classify(&os(libc::ECONNABORTED)),
            AcceptError::Skipped("aborted")
        );
        assert_eq!(classify(&os(libc::EPROTO)), AcceptError::Skipped("aborted"));
        assert_eq!(
            classify(&io::Error::other("unknown")),
            AcceptError::Exhausted("other"),
            "unknown errors pause rather than spin"
        );
        for e in [libc::EMFILE, libc::ENFILE, libc::ECONNRESET, libc::EINVAL] {
            let kind = classify(&os(e)).kind();
            assert!(ACCEPT_ERROR_KINDS.contains(&kind), "{kind}");
        }
    }
}
