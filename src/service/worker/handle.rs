//! The async side of a model worker: the [`WorkerHandle`] that RPC handlers clone, its load
//! balancing (each request goes to the instance with the least work outstanding) and its
//! admission: a request is refused at once, before it costs the model anything, when every
//! instance's outstanding work (in row-steps) is over its budget or its queue is full
//! (RESOURCE_EXHAUSTED, with a retry delay from the instance's pace), or when its deadline
//! is closer than its own denoising steps take at that pace (DEADLINE_EXCEEDED).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

use crate::service::error::ServiceError;
use crate::service::types::{BridgeRow, Bridged, CheckedRows, Embedded, RawInput};
use crate::service::worker::context::WorkerCtx;
use crate::service::worker::embedder::EmbedJob;
use crate::service::worker::pace::Pace;
use crate::service::worker::queue::{Call, Job, JobRows, LoadTicket, Msg};
use crate::service::worker::refusals::{Refusals, MIN_PUSHBACK};

/// One instance's queues (model thread, encoder thread), the bridge work sent to it and not
/// yet answered, and its pace.
pub(super) struct Lane {
    tx: mpsc::Sender<Msg>,
    embeds: mpsc::Sender<EmbedJob>,
    load: Arc<AtomicUsize>,
    pace: Arc<Pace>,
}

/// Why a request was refused: every queue full, or every instance's work over its budget.
const QUEUE_FULL: &str = "the model queue is full";
const OVER_BUDGET: &str = "the model has as much work waiting as it takes";

/// The async side of the worker: cheap to clone, one per RPC handler.
#[derive(Clone)]
pub struct WorkerHandle {
    lanes: Arc<[Lane]>,
    /// Rotates the first choice among equally loaded instances.
    turn: Arc<AtomicUsize>,
    /// Most row-steps outstanding on one instance (a larger request still runs alone).
    row_step_budget: usize,
    refusals: Arc<Refusals>,
}

impl Lane {
    pub(super) fn new(
        tx: mpsc::Sender<Msg>,
        embeds: mpsc::Sender<EmbedJob>,
        pace: Arc<Pace>,
    ) -> Self {
        Self {
            tx,
            embeds,
            load: Arc::new(AtomicUsize::new(0)),
            pace,
        }
    }

    fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// Whether `units` more row-steps fit its budget (always on an idle instance, so that a
    /// request larger than the budget still runs).
    fn has_room(&self, units: usize, budget: usize) -> bool {
        let load = self.load();
        load == 0 || load.saturating_add(units) <= budget
    }
}

impl WorkerHandle {
    /// A handle over `lanes`, each taking at most `row_step_budget` row-steps of work.
    pub(super) fn new(lanes: Vec<Lane>, row_step_budget: usize) -> Self {
        Self {
            lanes: lanes.into(),
            turn: Arc::new(AtomicUsize::new(0)),
            row_step_budget: row_step_budget.max(1),
            refusals: Arc::new(Refusals::default()),
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
        let longest = rows.as_slice().iter().map(|r| r.opts.steps).max();
        self.check_deadline(deadline, longest.unwrap_or(0))?;
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

    /// The refusal of `units` row-steps no instance can take, with a retry delay (see
    /// [`Refusals`]) from the least loaded instance.
    fn overloaded(&self, what: &str, units: usize) -> ServiceError {
        let least = self.lanes.iter().min_by_key(|l| l.load());
        let retry_after = least.map_or(MIN_PUSHBACK, |l| {
            self.refusals
                .refuse(units, l.load(), &l.pace, rand::random::<f64>())
        });
        ServiceError::Overloaded {
            what: what.to_owned(),
            retry_after,
        }
    }

    /// DEADLINE_EXCEEDED at once for a request whose deadline comes before its `steps`
    /// denoising steps can be done at the pace of the fastest instance.
    fn check_deadline(&self, deadline: Option<Instant>, steps: usize) -> Result<(), ServiceError> {
        let Some(deadline) = deadline else {
            return Ok(());
        };
        let least: Option<Duration> = self
            .lanes
            .iter()
            .filter_map(|l| l.pace.at_least(steps))
            .min();
        let now = Instant::now();
        match least {
            Some(d) if now + d > deadline => Err(ServiceError::DeadlineExceeded),
            _ if now >= deadline => Err(ServiceError::DeadlineExceeded),
            _ => Ok(()),
        }
    }

    fn send_error<T>(&self, e: TrySendError<T>) -> ServiceError {
        match e {
            TrySendError::Full(_) => self.overloaded(QUEUE_FULL, 1),
            TrySendError::Closed(_) => Self::stopped(),
        }
    }

    /// Instance indices (of several), least outstanding work first; equal ones in a rotating
    /// order so that idle instances take turns.
    fn by_load(&self) -> Vec<usize> {
        let n = self.lanes.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        order.sort_by_key(|&i| self.lanes[i].load());
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
        let mut over_budget = false;
        for &i in order {
            let lane = &self.lanes[i];
            if let Msg::Rows(job) = &mut msg {
                if !lane.has_room(job.load.units(), self.row_step_budget) {
                    over_budget = true;
                    continue;
                }
                job.load.assign(&lane.load);
            }
            match lane.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => msg = back,
                Err(e) => return Err(self.send_error(e)),
            }
        }
        let units = match &msg {
            Msg::Rows(job) => job.load.units(),
            Msg::Call(_) => 1,
        };
        Err(self.overloaded(
            match over_budget {
                true => OVER_BUDGET,
                false => QUEUE_FULL,
            },
            units,
        ))
    }

    /// Encodes raw inputs with the model's encoders, on an instance's encoder thread, batched
    /// with the other Embed requests waiting there. RESOURCE_EXHAUSTED when the queues are full.
    pub async fn embed(
        &self,
        inputs: Vec<RawInput>,
        deadline: Option<Instant>,
    ) -> Result<Embedded, ServiceError> {
        let (mut job, answer) = EmbedJob::new(inputs, deadline);
        let n = self.lanes.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        // The encoder queue with the fewest requests waiting, in a rotating order among equals.
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        order.sort_by_key(|&i| {
            self.lanes[i].embeds.max_capacity() - self.lanes[i].embeds.capacity()
        });
        for i in order {
            match self.lanes[i].embeds.try_send(job) {
                Ok(()) => return answered(answer).await,
                Err(TrySendError::Full(back)) => job = back,
                Err(e) => return Err(self.send_error(e)),
            }
        }
        Err(self.overloaded(QUEUE_FULL, 1))
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
        let waiting = |room: usize, size: usize| size.saturating_sub(room);
        self.lanes
            .iter()
            .map(|l| {
                waiting(l.tx.capacity(), l.tx.max_capacity())
                    + waiting(l.embeds.capacity(), l.embeds.max_capacity())
            })
            .sum()
    }

    /// Whether an instance's thread (model or encoder) has ended (its queue is closed): the
    /// model then no longer answers as configured.
    pub fn is_closed(&self) -> bool {
        self.lanes
            .iter()
            .any(|l| l.tx.is_closed() || l.embeds.is_closed())
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
