//! What a model instance's queue carries: Bridge requests (with the work they count against
//! their instance) and calls to run on the model thread (Embed requests have their own queue,
//! served by the instance's encoder thread).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::Span;

use crate::model::{DiffgapModel, ModelError};
use crate::service::error::ServiceError;
use crate::service::types::{BridgeRow, Bridged, CheckedRows, RowStart};
use crate::service::worker::context::WorkerCtx;

/// What runs on the model thread between two denoising steps, with the model and the worker's
/// catalogs at hand (tensors stay on that thread; the closure returns plain data).
pub type Call = Box<dyn FnOnce(&mut WorkerCtx<'_>) + Send>;

/// What the worker's queue carries.
pub(crate) enum Msg {
    Rows(Job),
    Call(Call),
}

/// A request's rows as they arrive: checked by request validation, or from an in-process
/// caller of [`crate::service::worker::WorkerHandle::bridge`], checked on the model thread
/// before they run.
pub(crate) enum JobRows {
    Checked(CheckedRows),
    InProcess(Vec<BridgeRow>),
}

/// A request as the worker receives it.
pub(crate) struct Job {
    pub(crate) rows: JobRows,
    pub(crate) reply: oneshot::Sender<Result<Bridged, ServiceError>>,
    pub(crate) span: Span,
    pub(crate) enqueued: Instant,
    /// Past it the request is dropped and answered DEADLINE_EXCEEDED.
    pub(crate) deadline: Option<Instant>,
    /// Counts the request's work against its instance until the job is dropped (answered,
    /// expired or cancelled).
    pub(crate) load: LoadTicket,
}

impl JobRows {
    pub(crate) fn as_slice(&self) -> &[BridgeRow] {
        match self {
            JobRows::Checked(rows) => rows.rows(),
            JobRows::InProcess(rows) => rows,
        }
    }
}

impl Job {
    /// The request's rows (checked or not yet).
    pub(crate) fn rows(&self) -> &[BridgeRow] {
        self.rows.as_slice()
    }

    /// The request's rows, checked: in-process rows against `model`'s own checks first (a
    /// bad row is the caller's INVALID_ARGUMENT).
    pub(crate) fn check(&mut self, model: &DiffgapModel) -> Result<&CheckedRows, ServiceError> {
        if let JobRows::InProcess(rows) = &mut self.rows {
            let rows = std::mem::take(rows);
            check_in_process(model, &rows)?;
            self.rows = JobRows::Checked(CheckedRows::checked(rows));
        }
        match &self.rows {
            JobRows::Checked(rows) => Ok(rows),
            JobRows::InProcess(_) => Err(ServiceError::Internal(
                "in-process rows left unchecked; this is a bug".into(),
            )),
        }
    }
}

/// Checks rows that did not come through request validation against the model: direction,
/// options and dimensions (a Refine strength is a checked type already).
fn check_in_process(model: &DiffgapModel, rows: &[BridgeRow]) -> Result<(), ServiceError> {
    let dim = model.dim();
    for (i, row) in rows.iter().enumerate() {
        let field = format!("rows[{i}]");
        let bad = |e: ModelError| ServiceError::invalid(&field, e.to_string());
        model.check_options(&row.opts).map_err(bad)?;
        model.direction(&row.from, &row.to).map_err(bad)?;
        let refine = match &row.start {
            RowStart::Noise => None,
            RowStart::Refine { embedding, .. } => Some(embedding),
        };
        for e in std::iter::once(&row.embedding).chain(refine) {
            if e.len() as i64 != dim {
                return Err(bad(ModelError::Dimension {
                    got: e.len() as i64,
                    expected: dim,
                }));
            }
        }
    }
    Ok(())
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

    /// The row-steps it counts.
    pub(super) fn units(&self) -> usize {
        self.units
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
