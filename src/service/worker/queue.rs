//! What a model instance's queue carries: Bridge requests (with the work they count against
//! their instance) and calls to run on the model thread (Embed requests have their own queue,
//! served by the instance's encoder thread).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::Span;

use crate::service::error::ServiceError;
use crate::service::types::{BridgeRow, Bridged};
use crate::service::worker::context::WorkerCtx;

/// What runs on the model thread between two denoising steps, with the model and the worker's
/// catalogs at hand (tensors stay on that thread; the closure returns plain data).
pub type Call = Box<dyn FnOnce(&mut WorkerCtx<'_>) + Send>;

/// What the worker's queue carries.
pub(crate) enum Msg {
    Rows(Job),
    Call(Call),
}

/// A request as the worker receives it.
pub(crate) struct Job {
    pub(crate) rows: Vec<BridgeRow>,
    pub(crate) reply: oneshot::Sender<Result<Bridged, ServiceError>>,
    pub(crate) span: Span,
    pub(crate) enqueued: Instant,
    /// Past it the request is dropped and answered DEADLINE_EXCEEDED.
    pub(crate) deadline: Option<Instant>,
    /// Counts the request's work against its instance until the job is dropped (answered,
    /// expired or cancelled).
    pub(crate) load: LoadTicket,
}

/// Work (row-steps) counted against the instance a job is sent to, while the job lives.
pub(crate) struct LoadTicket {
    load: Option<Arc<AtomicUsize>>,
    units: usize,
}

impl LoadTicket {
    pub(super) fn new(units: usize) -> Self {
        Self { load: None, units }
    }

    /// Counts the work against `load` instead (the instance the job is offered to).
    pub(super) fn assign(&mut self, load: &Arc<AtomicUsize>) {
        self.release();
        load.fetch_add(self.units, Ordering::Relaxed);
        self.load = Some(load.clone());
    }

    fn release(&mut self) {
        if let Some(l) = self.load.take() {
            l.fetch_sub(self.units, Ordering::Relaxed);
        }
    }
}

impl Drop for LoadTicket {
    fn drop(&mut self) {
        self.release();
    }
}
