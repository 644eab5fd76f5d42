//! The open streams of each connection, counted by a tower layer in front of every service, so
//! that a connection is idle only when no call is open on it. Traffic alone would not do: a
//! long Bridge or a health Watch sends nothing for minutes and must not be cut, while the
//! keepalive pings of an unused connection are traffic that says nothing about its use (the
//! meaning of gRPC's `MAX_CONNECTION_IDLE`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::connection::ConnectionInfo;

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

    fn opened(self: &Arc<Self>) -> StreamGuard {
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
struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// The activity of the connection a request came on (`None` for a request that did not come
/// through [`super::Incoming`]). With TLS, tonic puts the connection's own info beside its
/// `TlsConnectInfo`, so this finds both.
fn activity_of(extensions: &http::Extensions) -> Option<&Arc<Activity>> {
    extensions
        .get::<ConnectionInfo>()
        .map(ConnectionInfo::activity)
}

/// The tower layer that counts the open streams of each connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenStreamsLayer;

impl<S> tower::Layer<S> for OpenStreamsLayer {
    type Service = OpenStreams<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenStreams { inner }
    }
}

/// The service of [`OpenStreamsLayer`].
#[derive(Clone, Debug)]
pub struct OpenStreams<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for OpenStreams<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let guard = activity_of(req.extensions()).map(Activity::opened);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| {
                tonic::body::Body::new(Guarded {
                    inner: tonic::body::Body::new(inner),
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body that keeps its stream counted open until it is dropped (sent to its end,
/// or reset).
struct Guarded {
    inner: tonic::body::Body,
    _guard: Option<StreamGuard>,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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
