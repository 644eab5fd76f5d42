//! The async side of a model worker: the [`WorkerHandle`] that RPC handlers clone, and its
//! load balancing: each request goes to the instance with the least work outstanding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

use crate::service::error::ServiceError;
use crate::service::types::{BridgeRow, Bridged, CheckedRows, Embedded, RawInput};
use crate::service::worker::context::WorkerCtx;
use crate::service::worker::embedder::EmbedJob;
use crate::service::worker::queue::{Call, Job, JobRows, LoadTicket, Msg};

/// One instance's queue and the work sent to it and not yet answered.
pub(super) struct Lane {
    tx: mpsc::Sender<Msg>,
    load: Arc<AtomicUsize>,
}

/// The async side of the worker: cheap to clone, one per RPC handler.
#[derive(Clone)]
pub struct WorkerHandle {
    lanes: Arc<[Lane]>,
    /// Rotates the first choice among equally loaded instances.
    turn: Arc<AtomicUsize>,
    /// Requests that may wait, over all instances.
    capacity: usize,
}

impl Lane {
    pub(super) fn new(tx: mpsc::Sender<Msg>) -> Self {
        Self {
            tx,
            load: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl WorkerHandle {
    /// A handle over `lanes`, of `capacity` waiting requests in all.
    pub(super) fn new(lanes: Vec<Lane>, capacity: usize) -> Self {
        Self {
            lanes: lanes.into(),
            turn: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Bridges `rows` for an in-process caller: the model checks them on its thread (a bad
    /// row is INVALID_ARGUMENT). Fails at once with `Overloaded`
    /// when the queue is full, and with `Unavailable` when the worker has stopped.
    pub async fn bridge(&self, rows: Vec<BridgeRow>) -> Result<Bridged, ServiceError> {
        self.bridge_until(rows, None).await
    }

    /// [`WorkerHandle::bridge`] with a deadline (e.g. from the request's `grpc-timeout`): if
    /// it passes before the rows are done,
    /// they are dropped from the batch and the answer is `DeadlineExceeded`.
    pub async fn bridge_until(
        &self,
        rows: Vec<BridgeRow>,
        deadline: Option<Instant>,
    ) -> Result<Bridged, ServiceError> {
        self.send_rows(JobRows::InProcess(rows), deadline).await
    }

    /// Bridges rows checked by request validation, which the worker runs as they are, until
    /// `deadline` (see [`WorkerHandle::bridge_until`]).
    pub async fn bridge_checked(
        &self,
        rows: CheckedRows,
        deadline: Option<Instant>,
    ) -> Result<Bridged, ServiceError> {
        self.send_rows(JobRows::Checked(rows), deadline).await
    }

    async fn send_rows(
        &self,
        rows: JobRows,
        deadline: Option<Instant>,
    ) -> Result<Bridged, ServiceError> {
        let units = rows
            .as_slice()
            .iter()
            .map(|r| r.opts.steps.max(1) * r.opts.samples.max(1))
            .sum::<usize>()
            .max(1);
        let (reply, answer) = oneshot::channel();
        self.send(Msg::Rows(Job {
            rows,
            reply,
            span: Span::current(),
            enqueued: Instant::now(),
            deadline,
            load: LoadTicket::new(units),
        }))?;
        answered(answer).await
    }

    fn stopped() -> ServiceError {
        ServiceError::Unavailable("the model worker has stopped".into())
    }

    fn overloaded(&self) -> ServiceError {
        ServiceError::Overloaded {
            capacity: self.capacity,
        }
    }

    fn send_error(&self, e: TrySendError<Msg>) -> ServiceError {
        match e {
            TrySendError::Full(_) => self.overloaded(),
            TrySendError::Closed(_) => Self::stopped(),
        }
    }

    /// Instance indices (of several), least outstanding work first; equal ones in a rotating
    /// order so that idle instances take turns.
    fn by_load(&self) -> Vec<usize> {
        let n = self.lanes.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        order.sort_by_key(|&i| self.lanes[i].load.load(Ordering::Relaxed));
        order
    }

    /// Sends to the least loaded instance whose queue has room (a request's work is counted
    /// against the instance it is offered to).
    fn send(&self, mut msg: Msg) -> Result<(), ServiceError> {
        // One instance (the default) needs no ordering, so no allocation per request.
        let (single, several);
        let order: &[usize] = if self.lanes.len() == 1 {
            single = [0];
            &single
        } else {
            several = self.by_load();
            &several
        };
        for &i in order {
            let lane = &self.lanes[i];
            if let Msg::Rows(job) = &mut msg {
                job.load.assign(&lane.load);
            }
            match lane.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => msg = back,
                Err(e) => return Err(self.send_error(e)),
            }
        }
        Err(self.overloaded())
    }

    /// Encodes raw inputs with the model's encoders, batched with the other Embed requests
    /// waiting, between two denoising steps. RESOURCE_EXHAUSTED when the queue is full.
    pub async fn embed(
        &self,
        inputs: Vec<RawInput>,
        deadline: Option<Instant>,
    ) -> Result<Embedded, ServiceError> {
        let (job, answer) = EmbedJob::new(inputs, deadline);
        self.send(Msg::Embed(job))?;
        answered(answer).await
    }

    /// Runs `f` on the model thread (between two denoising steps) and returns its result.
    /// Takes a queue slot like a request: RESOURCE_EXHAUSTED when the queue is full.
    pub async fn call<R, F>(&self, f: F) -> Result<R, ServiceError>
    where
        R: Send + 'static,
        F: FnOnce(&mut WorkerCtx<'_>) -> Result<R, ServiceError> + Send + 'static,
    {
        let (call, answer) = replying(f);
        self.send(Msg::Call(call))?;
        answered(answer).await
    }

    /// Runs `f` on every instance's thread (e.g. to install catalogs, which each instance
    /// keeps as its own tensors) and returns their results in instance order. Fails if any
    /// instance's queue is full or any `f` fails.
    pub async fn call_all<R, F>(&self, f: F) -> Result<Vec<R>, ServiceError>
    where
        R: Send + 'static,
        F: Fn(&mut WorkerCtx<'_>) -> Result<R, ServiceError> + Clone + Send + 'static,
    {
        let mut answers = Vec::with_capacity(self.lanes.len());
        for lane in self.lanes.iter() {
            let (call, answer) = replying(f.clone());
            lane.tx
                .try_send(Msg::Call(call))
                .map_err(|e| self.send_error(e))?;
            answers.push(answer);
        }
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answered(answer).await?);
        }
        Ok(out)
    }

    /// Messages waiting in the queues (requests, embeds and calls no instance has taken).
    pub fn queued(&self) -> usize {
        let room: usize = self.lanes.iter().map(|l| l.tx.capacity()).sum();
        let size: usize = self.lanes.iter().map(|l| l.tx.max_capacity()).sum();
        size.saturating_sub(room)
    }

    /// Whether an instance's thread has ended (its queue is closed): the model then no longer
    /// answers as configured.
    pub fn is_closed(&self) -> bool {
        self.lanes.iter().any(|l| l.tx.is_closed())
    }

    /// Model instances behind this handle.
    pub fn instances(&self) -> usize {
        self.lanes.len()
    }

    /// Each instance's outstanding bridge work, in row-steps (diagnostics and tests).
    pub fn loads(&self) -> Vec<usize> {
        self.lanes
            .iter()
            .map(|l| l.load.load(Ordering::Relaxed))
            .collect()
    }
}

/// `f` as a [`Call`] that runs in the caller's span and sends its result to the receiver.
fn replying<R, F>(f: F) -> (Call, oneshot::Receiver<Result<R, ServiceError>>)
where
    R: Send + 'static,
    F: FnOnce(&mut WorkerCtx<'_>) -> Result<R, ServiceError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let span = Span::current();
    let call: Call = Box::new(move |ctx: &mut WorkerCtx<'_>| {
        let _entered = span.enter();
        let _ = reply.send(f(ctx));
    });
    (call, answer)
}

/// The worker's answer; UNAVAILABLE if its thread ended before sending one.
async fn answered<T>(
    answer: oneshot::Receiver<Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    answer.await.map_err(|_| {
        ServiceError::Unavailable("the model worker stopped before answering".into())
    })?
}
