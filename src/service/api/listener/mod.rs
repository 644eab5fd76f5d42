//! The gRPC listener's accept loop and what keeps connections within the process's means:
//! - an `accept` out of file descriptors (or buffers, or memory) pauses, 10 ms doubling to
//!   1 s, instead of retrying at once ([`backoff`]); tonic's own `TcpIncoming` retries in a
//!   tight loop, a whole core for as long as the limit is hit. Counted by kind, logged at
//!   most once a minute;
//! - at most `max_connections` connections are open: one more is accepted and closed at once.
//!   The client fails fast and can go elsewhere (left in the kernel's backlog it would hang
//!   until its deadline), and the process never holds more than `max_connections` + 1
//!   accepted sockets, so that below the file limit a flood cannot exhaust descriptors;
//! - a connection without an open call for `idle_connection_timeout_secs`, or for
//!   [`DRAIN_IDLE`] once the drain has begun, is closed ([`connection`], [`activity`], [`streams`]).
//!
//! Keep `max_connections` well below the process's file limit (`ulimit -n`): the model, the
//! metrics listener and the log need descriptors too; the server warns at start when it is not.

mod activity;
pub mod backoff;
mod connection;
mod streams;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tokio_stream::Stream;

pub use connection::{Connection, ConnectionInfo, DRAIN_IDLE};
pub use streams::OpenStreamsLayer;

use crate::service::config::ServeConfig;
use crate::service::ops::metrics::{ACCEPT_ERRORS, CONNECTIONS_REFUSED};
use backoff::{AcceptError, Backoff, Reports};
use connection::Place;

/// HTTP/2 PINGs on an otherwise quiet connection, so that a peer that vanished (no FIN, no
/// RST) is dropped after [`KEEPALIVE_TIMEOUT`] without an answer rather than held forever.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive probes, for a peer that vanished before speaking HTTP/2.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Descriptors the process needs besides its connections (libraries, model files, the
/// metrics listener, the log), for the start-up warning.
const FD_RESERVE: u64 = 64;

/// The connection limits of `diffgap serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most open connections; `None`: no limit but the process's file limit.
    pub max_connections: Option<usize>,
    /// How long a connection may stay open without a call; `None`: for ever.
    pub idle_timeout: Option<Duration>,
}

impl ConnectionLimits {
    /// The limits `cfg` sets (0 in a key: none).
    pub fn of(cfg: &ServeConfig) -> Self {
        Self {
            max_connections: (cfg.max_connections > 0).then_some(cfg.max_connections),
            idle_timeout: (cfg.idle_connection_timeout_secs > 0)
                .then(|| Duration::from_secs(cfg.idle_connection_timeout_secs)),
        }
    }
}

/// The accepted connections of a listener, within [`ConnectionLimits`]; never yields an
/// error (failed accepts are counted, logged at most once a minute, and waited out).
pub struct Incoming {
    listener: TcpListener,
    limits: ConnectionLimits,
    places: Option<Arc<Semaphore>>,
    drain: watch::Receiver<bool>,
    backoff: Backoff,
    pause: Option<Pin<Box<Sleep>>>,
    /// Refusals at the limit, logged at most once a minute.
    refusals: Reports,
}

impl Incoming {
    /// `drain` turns true when the drain begins.
    pub fn new(
        listener: TcpListener,
        limits: ConnectionLimits,
        drain: watch::Receiver<bool>,
    ) -> Self {
        warn_if_over_fd_limit(limits.max_connections);
        Self {
            listener,
            limits,
            places: limits.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            drain,
            backoff: Backoff::default(),
            pause: None,
            refusals: Reports::default(),
        }
    }

    /// The accepted socket as a [`Connection`], or `None` (the socket closed) at the limit.
    fn admit(&mut self, stream: TcpStream, remote: SocketAddr) -> Option<Connection> {
        let permit = match &self.places {
            None => None,
            Some(places) => match places.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    counter!(CONNECTIONS_REFUSED).increment(1);
                    if let Some(refused) = self.refusals.note(std::time::Instant::now()) {
                        tracing::warn!(
                            max_connections = self.limits.max_connections.unwrap_or(0),
                            refused,
                            "connection limit reached: closing new connections until some end (reported at most once a minute)"
                        );
                    }
                    return None;
                }
            },
        };
        // Nagle's algorithm would hold a small response for the client's delayed ACK (40 ms
        // on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%remote, "TCP_NODELAY: {e}");
        }
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%remote, "TCP keepalive: {e}");
        }
        Some(Connection::new(
            stream,
            remote,
            Place::new(permit),
            self.limits.idle_timeout,
            self.drain.clone(),
        ))
    }

    /// Counts a failed accept, and pauses the loop when the process is out of a resource.
    fn failed(&mut self, e: &io::Error) {
        let error = backoff::classify(e);
        counter!(ACCEPT_ERRORS, "kind" => error.kind()).increment(1);
        match error {
            AcceptError::Skipped(_) => {
                tracing::debug!("a connection failed before it was accepted: {e}")
            }
            AcceptError::Exhausted(kind) => {
                let (delay, report) = self.backoff.failed(std::time::Instant::now());
                if let Some(failures) = report {
                    tracing::warn!(
                        kind,
                        failures,
                        "accepting connections failed: {e}; pausing up to {} s between tries (reported at most once a minute)",
                        backoff::MAX_DELAY.as_secs()
                    );
                }
                self.pause = Some(Box::pin(tokio::time::sleep(delay)));
            }
        }
    }
}

impl Stream for Incoming {
    type Item = Result<Connection, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(pause) = this.pause.as_mut() {
                std::task::ready!(pause.as_mut().poll(cx));
                this.pause = None;
            }
            match std::task::ready!(this.listener.poll_accept(cx)) {
                Ok((stream, remote)) => {
                    this.backoff.succeeded();
                    if let Some(connection) = this.admit(stream, remote) {
                        return Poll::Ready(Some(Ok(connection)));
                    }
                }
                Err(e) => this.failed(&e),
            }
        }
    }
}

/// Warns when `max_connections` (or no limit) leaves the process too few descriptors.
fn warn_if_over_fd_limit(max_connections: Option<usize>) {
    let Some(limit) = soft_fd_limit() else { return };
    if let Some(why) = fd_budget_shortfall(max_connections, limit) {
        tracing::warn!("{why}; raise `ulimit -n` or lower max_connections");
    }
}

/// Why `max_connections` does not fit under a file limit of `limit`, if it does not.
fn fd_budget_shortfall(max_connections: Option<usize>, limit: u64) -> Option<String> {
    let needed = max_connections.map(|m| m as u64 + FD_RESERVE);
    match needed {
        Some(n) if n <= limit => None,
        Some(n) => Some(format!(
            "max_connections ({}) and {FD_RESERVE} descriptors for the rest need {n}, over the file limit of {limit}",
            n - FD_RESERVE
        )),
        None => Some(format!(
            "max_connections is 0 (no limit): connections may use up the file limit of {limit}"
        )),
    }
}

#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix.
fn soft_fd_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    (rc == 0 && rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur as u64)
}

#[cfg(not(unix))]
fn soft_fd_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests;
