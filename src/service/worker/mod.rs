//! The model worker: one OS thread per model instance, each loading and owning its own copy of
//! the model (its tensors never leave that thread), fed by its own bounded channel, and beside
//! it one encoder thread per instance that owns its encoders and serves its Embed queue at a
//! lower CPU priority ([`encoder_thread`]: long audio never holds up denoising steps). The
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
//! Modules, in the order a request meets them: [`handle`] (the async side and load
//! balancing), [`queue`] (what the channels carry), [`thread`] (an instance's life),
//! [`step_loop`] and [`scheduler`] (step batching), [`request_batching`], [`context`] (what
//! runs on the model thread sees: the model and device catalogs), [`encoder_thread`] and
//! [`embedder`] (Embed requests),
//! [`stats`] and [`options`].
//!
//! Each row carries its own seed, so a result does not depend on what it was batched with.
//! Requests carry an optional deadline; expired requests and those whose client went away are
//! dropped before they reach the model.

pub mod context;
pub mod death_watch;
pub mod embedder;
pub mod encoder_thread;
pub mod handle;
pub mod options;
pub mod pace;
pub mod queue;
pub mod ranking;
pub mod refusals;
pub mod request_batching;
pub mod scheduler;
pub mod stats;
pub mod step_loop;
pub mod thread;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tch::Device;
use tokio::sync::{mpsc, oneshot};

pub use context::{DeviceCatalog, WorkerCtx};
pub use handle::WorkerHandle;
pub use options::WorkerOptions;
pub use stats::{StatsSnapshot, WorkerStats};

use crate::service::error::ServiceError;
use crate::service::ops::memory;
use crate::service::types::ModelInfo;
use death_watch::DeathWatch;
use handle::Lane;
use thread::ReadyJoin;

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

impl ModelWorker {
    /// Starts `opts.instances` model threads on `device`, each loading the model in `dir`, and
    /// beside each an encoder thread loading its encoders.
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
        let join = Arc::new(Mutex::new(ReadyJoin::new(n, ready_tx)));
        let (died_tx, died) = oneshot::channel();
        let died_tx = Arc::new(Mutex::new(Some(died_tx)));
        let stats = Arc::new(WorkerStats::default());
        let mut lanes = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(2 * n);
        for instance in 0..n {
            let (tx, rx) = mpsc::channel(per_lane);
            let pace = Arc::new(pace::Pace::default());
            let (embed_tx, embed_rx) = mpsc::channel(per_lane);
            let (encoder, encoders) = encoder_thread::spawn(
                instance,
                dir.clone(),
                device,
                opts,
                embed_rx,
                DeathWatch::new(instance, died_tx.clone()),
            )?;
            threads.push(encoder);
            let watch = DeathWatch::new(instance, died_tx.clone());
            let (dir, join, stats) = (dir.clone(), join.clone(), stats.clone());
            let measured = pace.clone();
            let thread = std::thread::Builder::new()
                .name(format!("diffgap-model-{instance}"))
                .spawn(move || {
                    let _watch = watch;
                    let queue = thread::Queue {
                        rx,
                        pace: &measured,
                    };
                    thread::run_instance(&dir, device, opts, queue, encoders, &join, &stats);
                    // The instance's model is dropped: its memory goes back to the system.
                    memory::release_freed();
                })
                .map_err(|e| ServiceError::Internal(format!("cannot start a model thread: {e}")))?;
            lanes.push(Lane::new(tx, embed_tx, pace));
            threads.push(thread);
        }
        Ok(Self {
            handle: WorkerHandle::new(lanes, opts.row_step_budget()),
            ready,
            stats,
            threads,
            died,
        })
    }
}
