//! One accepted connection: its socket, its place under `max_connections` (given back when it
//! closes) and its idle timer. A connection without an open stream for the idle timeout is
//! closed by ending its reads, which hyper takes as the peer's close. tonic gives no way to
//! send one connection a GOAWAY, so a request written by the client at that very moment is
//! lost with the connection; after minutes without a call that window is the round trip.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::Stream;

use super::activity::Activity;
use crate::service::ops::metrics::{IDLE_CONNECTIONS_CLOSED, OPEN_CONNECTIONS};

/// How long a connection without an open call stays open once the drain has begun: more than
/// a round trip, for a request already on its way when the GOAWAY left.
pub const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// What tonic puts in the extensions of every request of a connection (under
/// `TlsConnectInfo` with TLS).
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    remote: SocketAddr,
    activity: Arc<Activity>,
}

impl ConnectionInfo {
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

/// A connection's place: counted in `diffgap_open_connections` and holding its permit under
/// `max_connections` until it is dropped, however it ends.
#[derive(Debug)]
pub(super) struct Place {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Place {
    pub fn new(permit: Option<OwnedSemaphorePermit>) -> Self {
        gauge!(OPEN_CONNECTIONS).increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        gauge!(OPEN_CONNECTIONS).decrement(1.0);
    }
}

/// An accepted connection, as tonic serves it.
pub struct Connection {
    stream: TcpStream,
    info: ConnectionInfo,
    idle: IdleTimer,
    _place: Place,
}

impl Connection {
    pub(super) fn new(
        stream: TcpStream,
        remote: SocketAddr,
        place: Place,
        idle_timeout: Option<Duration>,
        drain: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            stream,
            info: ConnectionInfo {
                remote,
                activity: Activity::new(),
            },
            idle: IdleTimer {
                timeout: idle_timeout,
                drain: Some(WatchStream::new(drain)),
                drain_started: None,
                sleep: None,
                expired: false,
            },
            _place: place,
        }
    }

    /// The socket (for its options).
    pub fn tcp(&self) -> &TcpStream {
        &self.stream
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.info.remote)
            .finish_non_exhaustive()
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// When a connection has been without an open stream for too long: the idle timeout, or
/// [`DRAIN_IDLE`] after the drain began (time for a request already on its way when the
/// GOAWAY left, not for an unresponsive peer or a socket that never spoke HTTP/2 to hold
/// the process).
struct IdleTimer {
    timeout: Option<Duration>,
    drain: Option<WatchStream<bool>>,
    drain_started: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    expired: bool,
}

impl IdleTimer {
    /// Whether the connection is to close now; otherwise `cx` is woken when that may change
    /// (the last stream closing, the timer, the drain).
    fn expired(&mut self, activity: &Activity, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        self.poll_drain(cx);
        let Some(since) = activity.idle_since(cx.waker()) else {
            return false;
        };
        let deadline = match (self.timeout, self.drain_started) {
            (None, None) => return false,
            (Some(t), None) => since + t,
            (t, Some(drain)) => {
                let during_drain = since.max(drain) + DRAIN_IDLE;
                t.map_or(during_drain, |t| during_drain.min(since + t))
            }
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        if sleep.as_mut().poll(cx).is_ready() {
            self.expired = true;
            counter!(IDLE_CONNECTIONS_CLOSED).increment(1);
        }
        self.expired
    }

    /// Notes the start of the drain (or the end of the server, which counts as one).
    fn poll_drain(&mut self, cx: &mut Context<'_>) {
        while let Some(drain) = self.drain.as_mut() {
            match Pin::new(&mut *drain).poll_next(cx) {
                Poll::Ready(Some(false)) => {}
                Poll::Ready(Some(true)) | Poll::Ready(None) => {
                    self.drain_started = Some(Instant::now());
                    self.drain = None;
                }
                Poll::Pending => break,
            }
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle.expired {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending if this.idle.expired(&this.info.activity, cx) => {
                tracing::debug!(remote = %this.info.remote, "closing an idle connection");
                // Nothing read: end of stream.
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
