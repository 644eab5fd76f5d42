//! What one connection's calls are doing: how many are open and since when none has been. The
//! connection reads it to close itself once idle; the layer of [`super::streams`] writes it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

/// What one connection's streams are doing, shared by the connection (which closes itself
/// once idle long enough) and the layer (which opens and closes streams).
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    open: usize,
    /// Since when no stream has been open (the connection's start before its first stream).
    idle_since: Instant,
    /// The connection's reader, woken when its last stream closes so that it starts its
    /// idle timer.
    reader: Option<Waker>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                open: 0,
                idle_since: Instant::now(),
                reader: None,
            }),
        })
    }

    /// Since when the connection has had no open stream; `None` while one is open, in which
    /// case `reader` is woken when the last one closes.
    pub fn idle_since(&self, reader: &Waker) -> Option<Instant> {
        let mut s = self.lock();
        if s.open > 0 {
            if !s.reader.as_ref().is_some_and(|w| w.will_wake(reader)) {
                s.reader = Some(reader.clone());
            }
            return None;
        }
        Some(s.idle_since)
    }

    pub fn opened(self: &Arc<Self>) -> StreamGuard {
        self.lock().open += 1;
        StreamGuard(self.clone())
    }

    fn closed(&self) {
        let mut s = self.lock();
        s.open = s.open.saturating_sub(1);
        if s.open == 0 {
            s.idle_since = Instant::now();
            if let Some(w) = s.reader.take() {
                drop(s);
                w.wake();
            }
        }
    }

    /// A poisoned lock only means a panic elsewhere while counting: the counts are still
    /// usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One open stream; closes it when dropped (with the response body, or with the call's
/// future when the call is dropped before it answers).
#[derive(Debug)]
pub struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_connection_is_idle_from_its_last_stream_and_its_reader_is_woken() {
        let activity = Activity::new();
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let started = activity.idle_since(&waker).expect("idle from the start");
        let first = activity.opened();
        let second = activity.opened();
        assert_eq!(activity.idle_since(&waker), None, "streams are open");
        drop(first);
        assert_eq!(activity.idle_since(&waker), None, "one is still open");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        drop(second);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "woken by the last close");
        let since = activity.idle_since(&waker).expect("idle again");
        assert!(since >= started);
    }
}
