//! The drain on SIGTERM/SIGINT (the `shutdown` future of [`super::serve`]), in order:
//! 1. health turns NOT_SERVING, for "" and for the service;
//! 2. the drain signal: health Watch streams end once they have sent that NOT_SERVING
//!    (`api/health.rs`), and a connection without a call closes a second later at most
//!    (`api/listener`): neither a watcher, nor an idle or silent peer, holds the process;
//! 3. tonic sends every connection a GOAWAY (new calls go elsewhere, those on their way when
//!    it left are still taken), drops the listener, and returns once every connection has
//!    closed, that is once every call in flight has been answered; the HTTP listener
//!    (`api/http`) likewise stops accepting, closes idle connections and finishes the
//!    requests in flight;
//! 4. the model threads end with their last request.
//!
//! `drain_timeout_secs` bounds steps 3 and 4: at the deadline the server stops with
//! whatever is still in flight abandoned.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::error::ServiceError;

/// The drain of one server.
pub(super) struct Drain {
    timeout: Duration,
    deadline: Arc<OnceLock<Instant>>,
    signal: Arc<watch::Sender<bool>>,
    begun: Arc<Notify>,
}

impl Drain {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            deadline: Arc::new(OnceLock::new()),
            signal: Arc::new(watch::channel(false).0),
            begun: Arc::new(Notify::new()),
        }
    }

    /// Turns true when the drain begins (step 2).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// The future tonic stops on (step 3): `shutdown`, then steps 1 and 2.
    pub fn begins_after(
        &self,
        shutdown: impl Future<Output = ()> + Send,
        reporter: HealthReporter,
        service: &'static str,
    ) -> impl Future<Output = ()> + Send {
        let (timeout, deadline) = (self.timeout, self.deadline.clone());
        let (signal, begun) = (self.signal.clone(), self.begun.clone());
        async move {
            shutdown.await;
            let _ = deadline.set(Instant::now() + timeout);
            set_status(&reporter, service, ServingStatus::NotServing).await;
            signal.send_replace(true);
            tracing::info!(
                drain_timeout_secs = timeout.as_secs(),
                "shutting down: NOT_SERVING, GOAWAY, no new connections; finishing the calls in flight"
            );
            begun.notify_one();
        }
    }

    /// `serving` (tonic's and the HTTP listener's), cut short at the drain's deadline.
    pub async fn bounded(
        &self,
        serving: impl Future<Output = Result<(), ServiceError>>,
    ) -> Result<(), ServiceError> {
        tokio::select! {
            served = serving => served,
            () = async {
                self.begun.notified().await;
                tokio::time::sleep(self.timeout).await;
            } => {
                tracing::warn!(
                    drain_timeout_secs = self.timeout.as_secs(),
                    "drain timeout: stopping with calls still in flight"
                );
                Ok(())
            }
        }
    }

    /// Step 4: waits for the model threads, until the drain's deadline (at least a second)
    /// when draining, for ever otherwise (the server failed, nothing bounds it).
    pub async fn join(&self, threads: Vec<std::thread::JoinHandle<()>>) {
        let (joined_tx, joined) = tokio::sync::oneshot::channel();
        let _ = std::thread::Builder::new()
            .name("diffgap-join".into())
            .spawn(move || {
                for thread in threads {
                    let _ = thread.join();
                }
                let _ = joined_tx.send(());
            });
        let left = self.deadline.get().map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1))
        });
        if tokio::time::timeout(left, joined).await.is_err() {
            tracing::warn!("the model thread is still busy; leaving it");
        }
    }
}

/// Sets the status of the server as a whole ("") and of `service`.
pub(super) async fn set_status(
    reporter: &HealthReporter,
    service: &'static str,
    status: ServingStatus,
) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(service, status).await;
}
