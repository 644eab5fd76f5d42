//! The model worker: one OS thread per model instance, each loading and owning its own copy of
//! the model (its tensors never leave that thread), fed by its own bounded channel. The
//! [`WorkerHandle`] sends each request to the instance with the least work outstanding. Several
//! instances matter on CPU: one OpenMP team spread over every core stalls as a whole whenever
//! one of its threads is preempted (by the network threads, say) while its partners spin at
//! the next barrier; one single-threaded instance per core only loses the preempted core's
//! time. Two batching modes, per instance:
//!
//! - [`Batching::Step`] (the default): continuous batching per denoising step, by the
//!   [`Scheduler`]: requests join the running batch at the next step and leave it as soon as
//!   their rows are done;
//! - [`Batching::Request`]: it drains whatever requests are waiting, up to a row budget, and
//!   runs their rows grouped by (direction, steps, guidance, samples) as one whole sampling
//!   loop per group.
//!
//! Each row carries its own seed, so a result does not depend on what it was batched with.
//! Requests carry an optional deadline; expired requests and those whose client went away are
//! dropped before they reach the model.

pub mod embedder;
pub mod scheduler;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

use crate::device::describe;
use crate::diffusion::sampler::{RowStep, SampleOptions};
use crate::encoders::EncoderSet;
use crate::model::card::{FusionWeights, SamplingDefaults};
use crate::model::{artifact, DiffgapModel, ModelError};
use crate::service::config::ServeConfig;
use crate::service::error::ServiceError;
use crate::service::ops::threads::{self, IoThreadPolicy};
use crate::service::request::catalog::CatalogData;
use crate::service::worker::embedder::{EmbedJob, Embedded, EmbedderInfo, RawInput};
use crate::service::worker::scheduler::{drop_reason, DropReason, Scheduler};
pub use crate::service::worker::scheduler::{Batching, StatsSnapshot, WorkerStats};

/// One embedding to bridge (or refine), as plain data: `embedding` (modality `from`) is the
/// condition, `to` the modality sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeRow {
    pub from: String,
    pub to: String,
    pub embedding: Vec<f32>,
    pub opts: SampleOptions,
    pub seed: u64,
    /// Where each sample's trajectory starts.
    pub start: RowStart,
}

impl BridgeRow {
    /// A Bridge row: every sample starts from pure noise.
    pub fn bridge(
        from: &str,
        to: &str,
        embedding: Vec<f32>,
        opts: SampleOptions,
        seed: u64,
    ) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            embedding,
            opts,
            seed,
            start: RowStart::Noise,
        }
    }
}

/// Where a row's trajectory starts.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RowStart {
    /// Pure noise (Bridge), as [`crate::diffusion::sampler::Sampler::sample`].
    #[default]
    Noise,
    /// `embedding` (modality `to`) noised to `strength` of the trajectory (Refine), as
    /// [`crate::diffusion::sampler::Sampler::refine`].
    Refine { embedding: Vec<f32>, strength: f64 },
}

/// The bridged rows of one request, in its order, and where the time went.
#[derive(Debug, Clone)]
pub struct Bridged {
    pub embeddings: Vec<Vec<f32>>,
    /// From enqueueing to the start of the batch that carried the request.
    pub queue: Duration,
    /// The whole batch's model time.
    pub compute: Duration,
}

/// What the service needs to know about the loaded model, as plain data.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub space: String,
    pub modalities: Vec<String>,
    pub dim: usize,
    /// (condition, target) pairs the denoiser was trained for.
    pub directions: Vec<(String, String)>,
    pub defaults: SamplingDefaults,
    /// Largest accepted DDIM step count (the training timesteps).
    pub max_steps: usize,
    pub parameters: i64,
    /// Keyed "query->candidate".
    pub fusion: BTreeMap<String, FusionWeights>,
    pub device: String,
    /// `sha256:<hex>` of the TorchScript file: what catalogs are built for.
    pub fingerprint: String,
    /// The model's encoders (raw inputs), when its directory has them.
    pub encoders: Option<EmbedderInfo>,
    /// Model instances serving it, each on its own thread.
    pub instances: usize,
    /// libtorch intra-op threads of each instance.
    pub threads_per_instance: usize,
}

impl ModelInfo {
    fn of(model: &DiffgapModel) -> Self {
        let c = &model.card;
        Self {
            name: c.name.clone(),
            space: c.space.name.clone(),
            modalities: c.space.modalities.clone(),
            dim: c.space.dim.max(0) as usize,
            directions: c
                .directions
                .iter()
                .map(|d| (d.condition.clone(), d.target.clone()))
                .collect(),
            defaults: c.defaults,
            max_steps: model.schedule().steps(),
            parameters: c.parameters,
            fusion: c.fusion.clone(),
            device: describe(model.device()),
            fingerprint: fingerprint(c),
            encoders: None,
            instances: 1,
            threads_per_instance: 1,
        }
    }
}

/// What runs on the model thread between two denoising steps, with the model and the worker's
/// catalogs at hand (tensors stay on that thread; the closure returns plain data).
pub type Call = Box<dyn FnOnce(&mut WorkerCtx<'_>) + Send>;

/// What the worker's queue carries.
pub(crate) enum Msg {
    Rows(Job),
    Call(Call),
    Embed(EmbedJob),
}

/// What a [`Call`] sees: the model and the catalogs installed on this worker.
pub struct WorkerCtx<'m> {
    pub model: &'m DiffgapModel,
    pub catalogs: BTreeMap<String, DeviceCatalog>,
    pub encoders: Option<EncoderSet>,
    /// Embed requests taken from the queue, run together before the next step.
    pub(crate) embeds: Vec<EmbedJob>,
}

impl WorkerCtx<'_> {
    /// Runs the waiting Embed requests as one batch.
    fn flush_embeds(&mut self) {
        if !self.embeds.is_empty() {
            embedder::process(self.encoders.as_ref(), std::mem::take(&mut self.embeds));
        }
    }
}

/// A catalog's tensors on the model's device, and the plain data they come from.
pub struct DeviceCatalog {
    pub data: Arc<CatalogData>,
    /// [entries, dim], L2-normalised.
    pub embeddings: Tensor,
    /// Query modality -> the entries bridged into it, [entries, dim], L2-normalised.
    pub reverse: BTreeMap<String, Tensor>,
}

impl WorkerCtx<'_> {
    /// Replaces the catalogs with `set` (tensors made on the model's device).
    pub fn install_catalogs(&mut self, set: &[Arc<CatalogData>]) -> Result<(), ServiceError> {
        let device = self.model.device();
        let dim = self.model.dim();
        let mut out = BTreeMap::new();
        for c in set {
            let rows = c.meta.ids.len() as i64;
            let t = |v: &[f32]| -> Result<Tensor, ServiceError> {
                if v.len() as i64 != rows * dim {
                    return Err(ServiceError::Internal(format!(
                        "catalog '{}': {} values for {rows} entries of dimension {dim}",
                        c.meta.name,
                        v.len()
                    )));
                }
                Ok(Tensor::from_slice(v).view([rows, dim]).to_device(device))
            };
            let embeddings = t(&c.embeddings)?;
            let mut reverse = BTreeMap::new();
            for (m, v) in &c.reverse {
                reverse.insert(m.clone(), t(v)?);
            }
            out.insert(
                c.meta.name.clone(),
                DeviceCatalog {
                    data: c.clone(),
                    embeddings,
                    reverse,
                },
            );
        }
        self.catalogs = out;
        Ok(())
    }
}

/// The fingerprint of a model: `sha256:<hex>` of its TorchScript file, from its card.
pub fn fingerprint(card: &crate::model::card::ModelCard) -> String {
    card.files
        .get(artifact::SCRIPT_FILE)
        .map_or_else(|| "unknown".to_owned(), |h| format!("sha256:{h}"))
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
    fn new(units: usize) -> Self {
        Self { load: None, units }
    }

    /// Counts the work against `load` instead (the instance the job is offered to).
    fn assign(&mut self, load: &Arc<AtomicUsize>) {
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

/// One instance's queue and the work sent to it and not yet answered.
struct Lane {
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

impl WorkerHandle {
    /// Bridges `rows` (already validated against the model). Fails at once with `Overloaded`
    /// when the queue is full, and with `Unavailable` when the worker has stopped.
    pub async fn bridge(&self, rows: Vec<BridgeRow>) -> Result<Bridged, ServiceError> {
        self.bridge_until(rows, None).await
    }

    /// [`WorkerHandle::bridge`] with a deadline (e.g. from the request's `grpc-timeout`, see
    /// [`crate::service::worker::scheduler::deadline_from_metadata`]): if it passes before the rows are done,
    /// they are dropped from the batch and the answer is `DeadlineExceeded`.
    pub async fn bridge_until(
        &self,
        rows: Vec<BridgeRow>,
        deadline: Option<Instant>,
    ) -> Result<Bridged, ServiceError> {
        let units = rows
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

/// How the worker batches and queues.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Most rows in one network pass (per instance).
    pub max_batch_rows: usize,
    /// Requests that may wait in the queue (shared out over the instances).
    pub queue_capacity: usize,
    pub batching: Batching,
    /// When idle, how long the first arriving request may wait for others before the first
    /// step (zero: start at once).
    pub max_batch_wait: Duration,
    /// Model instances, each on its own thread with its own copy of the model (0: see
    /// [`WorkerOptions::resolved`]).
    pub instances: usize,
    /// libtorch intra-op threads of each instance (0: the cores shared out over the
    /// instances, or libtorch's default with one instance).
    pub intra_op_threads: usize,
}

impl WorkerOptions {
    pub fn new(max_batch_rows: usize, queue_capacity: usize) -> Self {
        Self {
            max_batch_rows,
            queue_capacity,
            batching: Batching::Step,
            max_batch_wait: Duration::ZERO,
            instances: 1,
            intra_op_threads: 0,
        }
    }

    /// With `instances` 0 ("auto"): one instance per core on the CPU, one on a GPU (where
    /// instances would only share one device queue).
    pub fn resolved(self, device: Device) -> Self {
        let instances = match (self.instances, device) {
            (0, Device::Cpu) => cores(),
            (0, _) => 1,
            (n, _) => n,
        };
        Self { instances, ..self }
    }

    /// The intra-op threads each instance sets, or `None` to leave libtorch's default.
    pub fn threads_per_instance(&self) -> Option<usize> {
        self.threads_per_instance_on(cores())
    }

    /// [`Self::threads_per_instance`] on a machine (or CPU set) of `cores` cores.
    pub fn threads_per_instance_on(&self, cores: usize) -> Option<usize> {
        if self.intra_op_threads > 0 {
            return Some(self.intra_op_threads);
        }
        (self.instances > 1).then(|| (cores / self.instances).max(1))
    }
}

/// The cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl From<&ServeConfig> for WorkerOptions {
    fn from(cfg: &ServeConfig) -> Self {
        Self {
            max_batch_rows: cfg.max_batch_rows,
            queue_capacity: cfg.queue_capacity,
            batching: cfg.batching,
            max_batch_wait: Duration::from_millis(cfg.max_batch_wait_ms),
            instances: cfg.instances,
            intra_op_threads: cfg.intra_op_threads,
        }
    }
}

/// A started worker: its handle, the load result (sent once every instance is loaded and
/// warmed up), its counters and its threads, which end once every handle is dropped.
pub struct ModelWorker {
    pub handle: WorkerHandle,
    pub ready: oneshot::Receiver<Result<ModelInfo, ServiceError>>,
    pub stats: Arc<WorkerStats>,
    pub threads: Vec<JoinHandle<()>>,
    /// Answers `Ok(message)` if an instance's thread dies of a panic; closed (`Err`) when
    /// they all end normally (every handle dropped) or fail to load.
    pub died: oneshot::Receiver<String>,
}

/// Sends on `died` when a model thread unwinds from a panic (the first one only).
struct DeathWatch {
    instance: usize,
    tx: Arc<Mutex<Option<oneshot::Sender<String>>>>,
}

impl Drop for DeathWatch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(tx) = self.tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(format!("model instance {} panicked", self.instance));
            }
        }
    }
}

/// Gathers the instances' load results into one: the first error at once, else the info
/// once the last instance is ready.
struct ReadyJoin {
    left: usize,
    tx: Option<oneshot::Sender<Result<ModelInfo, ServiceError>>>,
}

impl ReadyJoin {
    fn report(join: &Mutex<Self>, result: Result<ModelInfo, ServiceError>) {
        let Ok(mut j) = join.lock() else { return };
        j.left = j.left.saturating_sub(1);
        if result.is_err() || j.left == 0 {
            if let Some(tx) = j.tx.take() {
                let _ = tx.send(result);
            }
        }
    }
}

impl ModelWorker {
    /// A step-batching worker with no batch wait and one instance.
    pub fn spawn(
        dir: PathBuf,
        device: Device,
        max_batch_rows: usize,
        queue_capacity: usize,
    ) -> Result<Self, ServiceError> {
        Self::spawn_with(
            dir,
            device,
            WorkerOptions::new(max_batch_rows, queue_capacity),
        )
    }

    pub fn spawn_with(
        dir: PathBuf,
        device: Device,
        opts: WorkerOptions,
    ) -> Result<Self, ServiceError> {
        let opts = opts.resolved(device);
        let n = opts.instances.max(1);
        // The queue bound is the service's: shared out so that the total stays as configured.
        let per_lane = opts.queue_capacity.div_ceil(n).max(1);
        let (ready_tx, ready) = oneshot::channel();
        let join = Arc::new(Mutex::new(ReadyJoin {
            left: n,
            tx: Some(ready_tx),
        }));
        let (died_tx, died) = oneshot::channel();
        let died_tx = Arc::new(Mutex::new(Some(died_tx)));
        let stats = Arc::new(WorkerStats::default());
        let mut lanes = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for instance in 0..n {
            let (tx, rx) = mpsc::channel(per_lane);
            let watch = DeathWatch {
                instance,
                tx: died_tx.clone(),
            };
            let (dir, join, stats) = (dir.clone(), join.clone(), stats.clone());
            let thread = std::thread::Builder::new()
                .name(format!("diffgap-model-{instance}"))
                .spawn(move || {
                    let _watch = watch;
                    run_instance(&dir, device, opts, rx, &join, &stats);
                })
                .map_err(|e| ServiceError::Internal(format!("cannot start a model thread: {e}")))?;
            lanes.push(Lane {
                tx,
                load: Arc::new(AtomicUsize::new(0)),
            });
            threads.push(thread);
        }
        Ok(Self {
            handle: WorkerHandle {
                lanes: lanes.into(),
                turn: Arc::new(AtomicUsize::new(0)),
                capacity: per_lane * n,
            },
            ready,
            stats,
            threads,
            died,
        })
    }
}

/// One instance's thread: load, warm up, report, then serve its queue until it closes.
fn run_instance(
    dir: &std::path::Path,
    device: Device,
    opts: WorkerOptions,
    rx: mpsc::Receiver<Msg>,
    join: &Mutex<ReadyJoin>,
    stats: &WorkerStats,
) {
    // Started from a runtime thread (a reload), it would inherit that thread's policy; the
    // model thread and its OpenMP team are the ones not to preempt.
    if let Err(e) = threads::set_current(IoThreadPolicy::Normal) {
        tracing::warn!("cannot reset the model thread's scheduling policy: {e}");
    }
    if let Some(n) = opts.threads_per_instance() {
        // Per thread in effect: OpenMP's team size and MKL's local thread count are this
        // thread's settings (libtorch keeps the last value as its default for new threads).
        tch::set_num_threads(n as i32);
    }
    let loaded = artifact::load(dir, device)
        .and_then(|m| warm_up(&m, opts.max_batch_rows).map(|()| m))
        .and_then(|m| {
            embedder::load(dir, device)
                .map(|e| (m, e))
                .map_err(|e| ModelError::Artifact {
                    dir: dir.to_owned(),
                    detail: format!("encoders: {e}"),
                })
        });
    match loaded {
        Ok((model, encoders)) => {
            let mut info = ModelInfo::of(&model);
            info.encoders = encoders.as_ref().map(embedder::info_of);
            info.instances = opts.instances.max(1);
            info.threads_per_instance = tch::get_num_threads().max(1) as usize;
            ReadyJoin::report(join, Ok(info));
            let ctx = WorkerCtx {
                model: &model,
                catalogs: BTreeMap::new(),
                encoders,
                embeds: Vec::new(),
            };
            // If loading failed elsewhere the handle is dropped, the queue closes and the
            // loop ends at once.
            match opts.batching {
                Batching::Step => run_steps(ctx, rx, opts, stats),
                Batching::Request => run(ctx, rx, opts.max_batch_rows, stats),
            }
        }
        Err(e) => ReadyJoin::report(join, Err(ServiceError::Load(e))),
    }
}

/// The batch sizes warmed up before the worker reports ready: powers of two up to
/// `max_rows`, and `max_rows` itself.
pub fn warm_up_buckets(max_rows: usize) -> Vec<usize> {
    let max_rows = max_rows.max(1);
    let mut b: Vec<usize> = std::iter::successors(Some(1usize), |&n| n.checked_mul(2))
        .take_while(|&n| n < max_rows)
        .collect();
    b.push(max_rows);
    b
}

/// One bridge per direction with the default options, then one guided denoising step (both the
/// conditional and the unconditional pass) at every batch-size bucket, so that no request pays
/// for libtorch's first-call setup or a first allocation of its batch size.
fn warm_up(model: &DiffgapModel, max_rows: usize) -> Result<(), ModelError> {
    let _no_grad = tch::no_grad_guard();
    let d = model.card.defaults;
    let opts = SampleOptions {
        steps: d.steps,
        guidance: d.guidance,
        samples: 1,
    };
    let x = Tensor::ones([1, model.dim()], (Kind::Float, tch::Device::Cpu));
    for dir in &model.card.directions {
        let _warm = model.bridge(&x, &dir.condition, &dir.target, &[0], opts)?;
    }
    let n_dirs = model.card.directions.len().max(1) as i64;
    let t_max = model.schedule().steps() - 1;
    for rows in warm_up_buckets(max_rows) {
        let device = model.device();
        let x = Tensor::zeros([rows as i64, model.dim()], (Kind::Float, device));
        let dir = Tensor::arange(rows as i64, (Kind::Int64, device)).remainder(n_dirs);
        let steps: Vec<RowStep> = (0..rows)
            .map(|i| RowStep {
                t: t_max,
                t_prev: Some(t_max / 2),
                guidance: if i % 2 == 0 { 1.0 } else { 2.0 },
            })
            .collect();
        let _warm = model.sampler().step(&x, &steps, &x, &dir)?;
    }
    tracing::debug!(buckets = ?warm_up_buckets(max_rows), "warmed up");
    Ok(())
}

/// Step-level continuous batching: admit, sweep, one step, repeat (see [`Scheduler`]).
fn run_steps(
    mut ctx: WorkerCtx<'_>,
    mut rx: mpsc::Receiver<Msg>,
    opts: WorkerOptions,
    stats: &WorkerStats,
) {
    let _no_grad = tch::no_grad_guard();
    let model = ctx.model;
    let mut sched = Scheduler::new(model, opts.max_batch_rows, stats);
    let mut open = true;
    let mut queued = 0;
    loop {
        if sched.is_idle() {
            if !open {
                return;
            }
            match rx.blocking_recv() {
                Some(Msg::Rows(job)) => {
                    sched.accept(job, Instant::now());
                    fill_for(&mut sched, &mut ctx, &mut rx, opts.max_batch_wait);
                }
                Some(Msg::Call(call)) => {
                    call(&mut ctx);
                    continue;
                }
                Some(Msg::Embed(job)) => ctx.embeds.push(job),
                None => return,
            }
        }
        while open && sched.wants_more() {
            match rx.try_recv() {
                Ok(Msg::Rows(job)) => sched.accept(job, Instant::now()),
                Ok(Msg::Call(call)) => call(&mut ctx),
                Ok(Msg::Embed(job)) => ctx.embeds.push(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        ctx.flush_embeds();
        if sched.is_idle() {
            // E.g. every request taken was dropped: nothing waits any more.
            stats.set_queue_depth(&mut queued, rx.len());
            continue;
        }
        let now = Instant::now();
        sched.sweep(now);
        sched.admit(now);
        stats.set_queue_depth(&mut queued, rx.len() + sched.requests());
        sched.step();
    }
}

/// The optional wait of an idle worker: takes requests for up to `wait` (or until the batch is
/// full) before the first step.
fn fill_for(
    sched: &mut Scheduler<'_>,
    ctx: &mut WorkerCtx<'_>,
    rx: &mut mpsc::Receiver<Msg>,
    wait: Duration,
) {
    if wait.is_zero() {
        return;
    }
    let until = Instant::now() + wait;
    while sched.wants_more() {
        match rx.try_recv() {
            Ok(Msg::Rows(job)) => sched.accept(job, Instant::now()),
            Ok(Msg::Call(call)) => call(ctx),
            Ok(Msg::Embed(job)) => ctx.embeds.push(job),
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= until {
                    return;
                }
                std::thread::sleep((until - now).min(Duration::from_micros(200)));
            }
        }
    }
}

/// Request-level batching: whole sampling loops per group of waiting requests.
fn run(mut ctx: WorkerCtx<'_>, mut rx: mpsc::Receiver<Msg>, max_rows: usize, stats: &WorkerStats) {
    let _no_grad = tch::no_grad_guard();
    let model = ctx.model;
    let mut carried: Option<Job> = None;
    let mut queued = 0;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.blocking_recv() {
                Some(Msg::Rows(job)) => job,
                Some(Msg::Call(call)) => {
                    call(&mut ctx);
                    continue;
                }
                Some(Msg::Embed(job)) => {
                    ctx.embeds.push(job);
                    while let Ok(msg) = rx.try_recv() {
                        match msg {
                            Msg::Embed(job) => ctx.embeds.push(job),
                            Msg::Call(call) => call(&mut ctx),
                            Msg::Rows(job) => {
                                carried = Some(job);
                                break;
                            }
                        }
                    }
                    ctx.flush_embeds();
                    continue;
                }
                None => return,
            },
        };
        let mut rows = first.rows.len();
        let mut jobs = vec![first];
        while rows < max_rows {
            match rx.try_recv() {
                Ok(Msg::Rows(job)) if rows + job.rows.len() > max_rows => {
                    carried = Some(job);
                    break;
                }
                Ok(Msg::Rows(job)) => {
                    rows += job.rows.len();
                    jobs.push(job);
                }
                Ok(Msg::Call(call)) => call(&mut ctx),
                Ok(Msg::Embed(job)) => ctx.embeds.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        ctx.flush_embeds();
        stats.set_queue_depth(
            &mut queued,
            rx.len() + jobs.len() + usize::from(carried.is_some()),
        );
        run_batch(model, jobs, stats);
    }
}

/// (from, to, steps, guidance bits, samples, refine strength bits or none).
type GroupKey = (String, String, usize, u32, usize, Option<u64>);

fn group_key(row: &BridgeRow) -> GroupKey {
    (
        row.from.clone(),
        row.to.clone(),
        row.opts.steps,
        row.opts.guidance.to_bits(),
        row.opts.samples,
        match &row.start {
            RowStart::Noise => None,
            RowStart::Refine { strength, .. } => Some(strength.to_bits()),
        },
    )
}

fn run_batch(model: &DiffgapModel, jobs: Vec<Job>, stats: &WorkerStats) {
    let start = Instant::now();
    // An expired request is answered at once; a client that went away needs no answer.
    let jobs: Vec<Job> = jobs
        .into_iter()
        .filter_map(
            |j| match drop_reason(j.deadline, j.reply.is_closed(), start) {
                None => Some(j),
                Some(why) => {
                    stats.record_drop(why);
                    if why == DropReason::Deadline {
                        let _ = j.reply.send(Err(ServiceError::DeadlineExceeded));
                    }
                    None
                }
            },
        )
        .collect();
    let rows: usize = jobs
        .iter()
        .flat_map(|j| &j.rows)
        .map(|r| r.opts.samples)
        .sum();
    let mut active = 0;
    stats.set_active_rows(&mut active, rows);
    let mut groups: BTreeMap<GroupKey, Vec<(usize, usize)>> = BTreeMap::new();
    for (j, job) in jobs.iter().enumerate() {
        for (r, row) in job.rows.iter().enumerate() {
            groups.entry(group_key(row)).or_default().push((j, r));
        }
    }
    let mut out: Vec<Vec<Option<Vec<f32>>>> =
        jobs.iter().map(|j| vec![None; j.rows.len()]).collect();
    let mut failed: Vec<Option<String>> = vec![None; jobs.len()];
    for (key, members) in &groups {
        // One sampling loop per sample of the group: `steps` passes over its rows each.
        for _ in 0..key.2 * key.4 {
            stats.record_step(members.len());
        }
        match bridge_group(model, &jobs, members) {
            Ok(vectors) => {
                for (&(j, r), v) in members.iter().zip(vectors) {
                    out[j][r] = Some(v);
                }
            }
            Err(e) => {
                tracing::error!("bridging a batch group failed: {e}");
                for &(j, _) in members {
                    failed[j] = Some(e.to_string());
                }
            }
        }
    }
    let compute = start.elapsed();
    tracing::debug!(
        requests = jobs.len(),
        groups = groups.len(),
        compute_us = compute.as_micros() as u64,
        "batch done"
    );
    stats.set_active_rows(&mut active, 0);
    for ((job, rows), fail) in jobs.into_iter().zip(out).zip(failed) {
        let Job {
            reply,
            span,
            enqueued,
            ..
        } = job;
        let _entered = span.enter();
        let result = match (fail, rows.into_iter().collect::<Option<Vec<_>>>()) {
            (Some(msg), _) => Err(ServiceError::Internal(msg)),
            (None, None) => Err(ServiceError::Internal("a row was not bridged".into())),
            (None, Some(embeddings)) => {
                let queue = start.saturating_duration_since(enqueued);
                stats.record_done(queue, compute);
                Ok(Bridged {
                    embeddings,
                    queue,
                    compute,
                })
            }
        };
        // The client may have gone meanwhile; nothing to do then.
        let _ = reply.send(result);
    }
}

/// Bridges the rows `members` (job, row) of one group in one call.
fn bridge_group(
    model: &DiffgapModel,
    jobs: &[Job],
    members: &[(usize, usize)],
) -> Result<Vec<Vec<f32>>, ModelError> {
    let dim = model.dim().max(1) as usize;
    let Some(&(j0, r0)) = members.first() else {
        return Ok(Vec::new());
    };
    let first = &jobs[j0].rows[r0];
    let mut flat = Vec::with_capacity(members.len() * dim);
    let mut starts = Vec::new();
    let mut seeds = Vec::with_capacity(members.len());
    let mut refine = None;
    for &(j, r) in members {
        let row = &jobs[j].rows[r];
        if row.embedding.len() != dim {
            return Err(ModelError::Dimension {
                got: row.embedding.len() as i64,
                expected: dim as i64,
            });
        }
        flat.extend_from_slice(&row.embedding);
        if let RowStart::Refine {
            embedding,
            strength,
        } = &row.start
        {
            starts.extend_from_slice(embedding);
            refine = Some(*strength);
        }
        seeds.push(row.seed);
    }
    let n = members.len() as i64;
    let x = Tensor::from_slice(&flat).view([n, dim as i64]);
    let y = match refine {
        None => model.bridge(&x, &first.from, &first.to, &seeds, first.opts)?,
        Some(strength) => {
            let start = Tensor::from_slice(&starts).view([n, dim as i64]);
            model.refine(
                &start,
                &first.to,
                &x,
                &first.from,
                &seeds,
                strength,
                first.opts,
            )?
        }
    };
    let y = y
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    let values = Vec::<f32>::try_from(&y)?;
    Ok(values.chunks(dim).map(<[f32]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_instances_are_one_per_core_on_the_cpu_and_one_on_a_gpu() {
        let auto = WorkerOptions {
            instances: 0,
            ..WorkerOptions::new(8, 8)
        };
        assert_eq!(auto.resolved(Device::Cpu).instances, cores());
        assert_eq!(auto.resolved(Device::Cuda(0)).instances, 1);
        let three = WorkerOptions {
            instances: 3,
            ..auto
        };
        assert_eq!(three.resolved(Device::Cpu).instances, 3);
        assert_eq!(three.resolved(Device::Cuda(0)).instances, 3);
    }

    #[test]
    fn instances_share_out_the_cores_unless_told_otherwise() {
        let one = WorkerOptions::new(8, 8);
        assert_eq!(one.threads_per_instance(), None, "libtorch's default");
        let many = WorkerOptions {
            instances: cores() * 2,
            ..one
        };
        assert_eq!(many.threads_per_instance(), Some(1), "at least one thread");
        let told = WorkerOptions {
            intra_op_threads: 3,
            ..many
        };
        assert_eq!(told.threads_per_instance(), Some(3));
        if cores() >= 2 {
            let two = WorkerOptions {
                instances: 2,
                ..one
            };
            assert_eq!(two.threads_per_instance(), Some(cores() / 2));
        }
    }
}
