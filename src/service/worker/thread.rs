//! A model instance's thread: it loads and warms up its own copy of the model, waits for its
//! encoder thread's load, reports ready (or the first load error), then serves its queue with
//! the configured batching until the queue closes; a panic there (or on the encoder thread) is
//! reported as the instance's death.

use std::collections::BTreeMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};
use tokio::sync::{mpsc, oneshot};

use crate::diffusion::sampler::{RowStep, SampleOptions};
use crate::model::{artifact, DiffgapModel, ModelError};
use crate::service::error::ServiceError;
use crate::service::ops::threads::{self, IoThreadPolicy};
use crate::service::types::{Batching, ModelInfo};
use crate::service::worker::context::WorkerCtx;
use crate::service::worker::encoder_thread::Loaded;
use crate::service::worker::options::WorkerOptions;
use crate::service::worker::pace::Pace;
use crate::service::worker::queue::Msg;
use crate::service::worker::ranking;
use crate::service::worker::request_batching::run_request_batches;
use crate::service::worker::stats::WorkerStats;
use crate::service::worker::step_loop::run_steps;

/// Gathers the instances' load results into one: the first error at once, else the info
/// once the last instance is ready.
pub(super) struct ReadyJoin {
    left: usize,
    tx: Option<oneshot::Sender<Result<ModelInfo, ServiceError>>>,
}

impl ReadyJoin {
    pub(super) fn new(
        instances: usize,
        tx: oneshot::Sender<Result<ModelInfo, ServiceError>>,
    ) -> Self {
        Self {
            left: instances,
            tx: Some(tx),
        }
    }

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

/// What an instance serves: its queue, and where it records its pace.
pub(super) struct Queue<'a> {
    pub rx: mpsc::Receiver<Msg>,
    pub pace: &'a Pace,
}

/// One instance's thread: load, warm up, report, then serve its queue until it closes.
/// `encoders` answers once the instance's encoder thread has loaded (or failed to).
pub(super) fn run_instance(
    dir: &std::path::Path,
    device: Device,
    opts: WorkerOptions,
    Queue { rx, pace }: Queue<'_>,
    encoders: std_mpsc::Receiver<Loaded>,
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
    let loaded = artifact::load_as(dir, device, opts.dtype)
        .and_then(|m| warm_up(&m, opts.max_batch_rows).map(|()| m))
        .and_then(|m| ranking::load(dir, &m).map(|r| (m, r)))
        .and_then(|(m, ranking)| {
            let detail = match encoders.recv() {
                Ok(Ok(info)) => return Ok((m, ranking, info)),
                Ok(Err(e)) => format!("encoders: {e}"),
                Err(_) => "encoders: the encoder thread stopped while loading".to_string(),
            };
            Err(ModelError::Artifact {
                dir: dir.to_owned(),
                detail,
            })
        });
    match loaded {
        Ok((model, ranking, encoders)) => {
            let mut info = ModelInfo::of(&model);
            info.encoders = encoders;
            info.instances = opts.instances.max(1);
            info.threads_per_instance = tch::get_num_threads().max(1) as usize;
            ReadyJoin::report(join, Ok(info));
            let ctx = WorkerCtx {
                model: &model,
                catalogs: BTreeMap::new(),
                ranking: ranking.as_ref(),
            };
            // If loading failed elsewhere the handle is dropped, the queue closes and the
            // loop ends at once.
            match opts.batching {
                Batching::Step => run_steps(ctx, rx, opts, stats, pace),
                Batching::Request => run_request_batches(ctx, rx, opts.max_batch_rows, stats),
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
