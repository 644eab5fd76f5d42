//! Step-level continuous batching for the model worker.
//!
//! The scheduler keeps a set of *active rows*: one per (item, sample) of the requests it has
//! admitted, each with its own place on its own DDIM trajectory, guidance, condition and
//! direction. Each call to [`Scheduler::step`] runs one [`Sampler::step`] over every active row
//! at once (rows at different timesteps, with different guidance, directions and step counts
//! share the pass), retires the rows whose trajectory ended and answers the requests whose rows
//! are all done. New requests are admitted between steps, so a request joins the running batch
//! at the next denoising step instead of waiting for a whole sampling loop.
//!
//! The math is the in-process model's, called from here: a row starts where [`Sampler::sample`]
//! or [`Sampler::refine`] start (the same seeded noise, the same trajectory, from
//! [`crate::diffusion::schedule::Schedule`]), and an item's denormalised samples are combined
//! by [`SampleSum`] as [`DiffgapModel::bridge`] combines them, so the answer equals the
//! in-process bridge up to float rounding of the batched matrix products.
//!
//! Deadlines and cancellation are checked when a request arrives and before every step
//! ([`Scheduler::sweep`]): an expired request is answered DEADLINE_EXCEEDED, a request whose
//! client went away is dropped, and in both cases its rows leave the active set at once.
//!
//! [`Sampler::step`]: crate::diffusion::sampler::Sampler::step
//! [`Sampler::sample`]: crate::diffusion::sampler::Sampler::sample
//! [`Sampler::refine`]: crate::diffusion::sampler::Sampler::refine

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

use crate::diffusion::combine::SampleSum;
use crate::diffusion::normalize::l2_normalized;
use crate::diffusion::sampler::RowStep;
use crate::model::DiffgapModel;
use crate::service::error::ServiceError;
use crate::service::types::{Bridged, CheckedRows, RowStart};
use crate::service::worker::queue::Job;
use crate::service::worker::stats::{drop_reason, DropReason, WorkerStats};

/// One item of an admitted request.
struct Item {
    /// The normalised condition row (dim values, on the host until admitted).
    cond: Rc<[f32]>,
    direction: i64,
    target: String,
    timesteps: Rc<[usize]>,
    guidance: f32,
    seed: u64,
    /// Refine: the normalised embedding (dim values) and the timestep it is noised to.
    refine: Option<(Rc<[f32]>, usize)>,
    /// Denormalised finished samples (on the host), by sample index.
    samples: Vec<Option<Vec<f32>>>,
    finished: usize,
    out: Option<Vec<f32>>,
}

struct RequestState {
    job: Job,
    items: Vec<Item>,
    /// The next (item, sample) to admit into the running batch.
    cursor: (usize, usize),
    /// Rows not yet admitted.
    rows_left: usize,
    items_done: usize,
    /// When its first row entered the running batch.
    started: Option<Instant>,
}

impl RequestState {
    fn fully_admitted(&self) -> bool {
        self.cursor.0 >= self.items.len()
    }
}

/// One active row: sample `sample` of item `item` of request `request`, at `timesteps[pos]`.
#[derive(Debug, Clone)]
struct Row {
    request: u64,
    item: usize,
    sample: usize,
    timesteps: Rc<[usize]>,
    pos: usize,
    guidance: f32,
}

impl Row {
    fn step(&self) -> RowStep {
        RowStep {
            t: self.timesteps[self.pos],
            t_prev: self.timesteps.get(self.pos + 1).copied(),
            guidance: self.guidance,
        }
    }
}

/// The running batch: row states plus their tensors (x, condition, direction), aligned.
pub(crate) struct Scheduler<'m> {
    model: &'m DiffgapModel,
    max_rows: usize,
    next_id: u64,
    requests: BTreeMap<u64, RequestState>,
    /// Requests with rows not yet admitted, oldest first.
    admitting: VecDeque<u64>,
    /// Their rows not yet admitted.
    waiting_rows: usize,
    rows: Vec<Row>,
    /// x [rows, dim] in the diffusion space, condition [rows, dim], direction [rows].
    tensors: Option<(Tensor, Tensor, Tensor)>,
    stats: &'m WorkerStats,
    /// This instance's share of the active-rows gauge.
    active_share: u64,
}

impl<'m> Scheduler<'m> {
    pub fn new(model: &'m DiffgapModel, max_rows: usize, stats: &'m WorkerStats) -> Self {
        Self {
            model,
            max_rows: max_rows.max(1),
            next_id: 0,
            requests: BTreeMap::new(),
            admitting: VecDeque::new(),
            waiting_rows: 0,
            rows: Vec::new(),
            tensors: None,
            stats,
            active_share: 0,
        }
    }

    /// No request is in progress.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty()
    }

    /// Rows in the running batch.
    pub fn active_rows(&self) -> usize {
        self.rows.len()
    }

    /// Requests in progress (admitted or being admitted).
    pub fn requests(&self) -> usize {
        self.requests.len()
    }

    /// Whether the worker should take another request from its queue: while the rows running
    /// plus the rows taken but not yet admitted leave room in the batch. Every request that
    /// fits is taken before the next step (not one per step, which capped the batch at about
    /// the mean trajectory length), and none beyond, so that the bounded queue (and its
    /// RESOURCE_EXHAUSTED) still measures the backlog.
    pub fn wants_more(&self) -> bool {
        self.rows.len() + self.waiting_rows < self.max_rows
    }

    /// Takes a request: drops it if it is already expired or cancelled, answers it at once if
    /// the model cannot serve it, else queues its rows for admission.
    pub fn accept(&mut self, mut job: Job, now: Instant) {
        if let Some(why) = drop_reason(job.deadline, job.reply.is_closed(), now) {
            self.drop_job(job, why);
            return;
        }
        let model = self.model;
        let items = match job.check(model).and_then(|rows| self.prepare(rows)) {
            Ok(items) => items,
            Err(e) => {
                let _entered = job.span.enter();
                tracing::error!("preparing a request failed: {e}");
                let _ = job.reply.send(Err(e));
                return;
            }
        };
        if items.is_empty() {
            let _ = job.reply.send(Ok(Bridged {
                embeddings: Vec::new(),
                queue: now.saturating_duration_since(job.enqueued),
                compute: Duration::ZERO,
            }));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let rows_left = items.iter().map(|i| i.samples.len()).sum();
        self.waiting_rows += rows_left;
        self.requests.insert(
            id,
            RequestState {
                job,
                items,
                cursor: (0, 0),
                rows_left,
                items_done: 0,
                started: None,
            },
        );
        self.admitting.push_back(id);
    }

    /// The items of checked rows: nothing is checked again, so a model lookup that fails
    /// here is a bug.
    fn prepare(&self, rows: &CheckedRows) -> Result<Vec<Item>, ServiceError> {
        let m = self.model;
        let internal = |e: crate::model::ModelError| {
            ServiceError::Internal(format!("a checked row: {e}; this is a bug"))
        };
        let mut items = Vec::with_capacity(rows.len());
        for row in rows.rows() {
            let direction = m.direction(&row.from, &row.to).map_err(internal)?;
            // As DiffgapModel::bridge prepares its input: L2-normalised, then normalised with
            // the condition's statistics (on the host: see ModalityStats::normalize_row).
            let cond = m
                .stats(&row.from)
                .map_err(internal)?
                .normalize_row(&l2_normalized(row.embedding.clone()))
                .into();
            let to_stats = m.stats(&row.to).map_err(internal)?;
            // As Sampler::refine: the start is the embedding noised to t_start, and the
            // trajectory takes round(steps x strength) steps (at least one) from there.
            let (timesteps, refine) = match &row.start {
                RowStart::Noise => (m.schedule().sample_timesteps(row.opts.steps), None),
                RowStart::Refine {
                    embedding,
                    strength,
                } => {
                    let x0 = to_stats
                        .normalize_row(&l2_normalized(embedding.clone()))
                        .into();
                    let path = m
                        .schedule()
                        .refine_trajectory(strength.get(), row.opts.steps);
                    (path.timesteps, Some((x0, path.t_start)))
                }
            };
            items.push(Item {
                cond,
                direction,
                target: row.to.clone(),
                timesteps: timesteps.into(),
                refine,
                guidance: row.opts.guidance,
                seed: row.seed,
                samples: (0..row.opts.samples).map(|_| None).collect(),
                finished: 0,
                out: None,
            });
        }
        Ok(items)
    }

    /// Moves waiting rows into the running batch, oldest request first, up to the row budget.
    /// Their starting points are the seeded noise [`Sampler::sample`] starts from.
    ///
    /// [`Sampler::sample`]: crate::diffusion::sampler::Sampler::sample
    pub fn admit(&mut self, now: Instant) {
        let dim = self.model.dim() as usize;
        let mut keys = Vec::new();
        let mut conds: Vec<f32> = Vec::new();
        let mut dirs = Vec::new();
        // Refine rows: (row index in `keys`, normalised embedding, timestep it is noised to).
        let mut refines: Vec<(i64, Rc<[f32]>, usize)> = Vec::new();
        while self.rows.len() < self.max_rows {
            let Some(&id) = self.admitting.front() else {
                break;
            };
            let Some(req) = self.requests.get_mut(&id) else {
                self.admitting.pop_front();
                continue;
            };
            req.started.get_or_insert(now);
            while self.rows.len() < self.max_rows && !req.fully_admitted() {
                let (i, k) = req.cursor;
                let item = &req.items[i];
                if let Some((x0, t_start)) = &item.refine {
                    refines.push((keys.len() as i64, x0.clone(), *t_start));
                }
                keys.push((item.seed, k as u64));
                conds.extend_from_slice(&item.cond);
                dirs.push(item.direction);
                self.rows.push(Row {
                    request: id,
                    item: i,
                    sample: k,
                    timesteps: item.timesteps.clone(),
                    pos: 0,
                    guidance: item.guidance,
                });
                req.rows_left -= 1;
                self.waiting_rows -= 1;
                req.cursor = if k + 1 < item.samples.len() {
                    (i, k + 1)
                } else {
                    (i + 1, 0)
                };
            }
            if req.fully_admitted() {
                self.admitting.pop_front();
            }
        }
        if keys.is_empty() {
            return;
        }
        let device = self.model.device();
        let mut x = self.model.sampler().noise_start(&keys, dim);
        if !refines.is_empty() {
            // As Sampler::refine: each start noised to its t_start.
            let rkeys: Vec<(u64, u64)> =
                refines.iter().map(|(i, _, _)| keys[*i as usize]).collect();
            let t_starts: Vec<usize> = refines.iter().map(|r| r.2).collect();
            let x0: Vec<f32> = refines.iter().flat_map(|r| r.1.iter().copied()).collect();
            let x0 = Tensor::from_slice(&x0)
                .view([refines.len() as i64, dim as i64])
                .to_device(device);
            let xr = self.model.sampler().noised_start(&x0, &t_starts, &rkeys);
            let idx: Vec<i64> = refines.iter().map(|r| r.0).collect();
            let idx = Tensor::from_slice(&idx).to_device(device);
            x = x.index_copy(0, &idx, &xr);
        }
        let cond = Tensor::from_slice(&conds)
            .view([keys.len() as i64, dim as i64])
            .to_device(device);
        let dir = Tensor::from_slice(&dirs).to_device(device);
        self.tensors = Some(match self.tensors.take() {
            None => (x, cond, dir),
            Some((x0, c0, d0)) => (
                Tensor::cat(&[x0, x], 0),
                Tensor::cat(&[c0, cond], 0),
                Tensor::cat(&[d0, dir], 0),
            ),
        });
        self.stats
            .set_active_rows(&mut self.active_share, self.rows.len());
    }

    /// Drops every request whose deadline has passed or whose client went away, with its rows.
    pub fn sweep(&mut self, now: Instant) {
        let gone: Vec<(u64, DropReason)> = self
            .requests
            .iter()
            .filter_map(|(&id, r)| {
                drop_reason(r.job.deadline, r.job.reply.is_closed(), now).map(|why| (id, why))
            })
            .collect();
        if gone.is_empty() {
            return;
        }
        for &(id, why) in &gone {
            if let Some(req) = self.requests.remove(&id) {
                self.waiting_rows -= req.rows_left;
                self.drop_job(req.job, why);
            }
        }
        self.admitting
            .retain(|id| !gone.iter().any(|(g, _)| g == id));
        let leaving: Vec<usize> = (0..self.rows.len())
            .filter(|&i| !self.requests.contains_key(&self.rows[i].request))
            .collect();
        self.remove_rows(&leaving);
    }

    fn drop_job(&self, job: Job, why: DropReason) {
        let _entered = job.span.enter();
        tracing::debug!(?why, "dropping a request");
        self.stats.record_drop(why);
        if why == DropReason::Deadline {
            let _ = job.reply.send(Err(ServiceError::DeadlineExceeded));
        }
    }

    /// Removes the rows at `leaving` (ascending) from the row list and the tensors. The rows
    /// after the last survivor's place fill the holes (swap-remove), so a step copies only as
    /// many rows as leave, not the whole batch (about 0.5 ms of a 20 ms CPU step at 256 rows).
    /// Rows are independent, so their order in the batch does not matter.
    fn remove_rows(&mut self, leaving: &[usize]) {
        if leaving.is_empty() {
            return;
        }
        let n = self.rows.len();
        let left = n - leaving.len();
        if left == 0 {
            self.rows.clear();
            self.tensors = None;
            self.stats.set_active_rows(&mut self.active_share, 0);
            return;
        }
        let holes: Vec<usize> = leaving.iter().copied().filter(|&i| i < left).collect();
        let movers: Vec<usize> = (left..n)
            .filter(|i| leaving.binary_search(i).is_err())
            .collect();
        debug_assert_eq!(holes.len(), movers.len());
        for (&h, &m) in holes.iter().zip(&movers) {
            self.rows.swap(h, m);
        }
        self.rows.truncate(left);
        self.tensors = self.tensors.take().map(|(mut x, mut c, mut d)| {
            if !holes.is_empty() {
                let index = |v: &[usize]| {
                    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
                    Tensor::from_slice(&v).to_device(x.device())
                };
                let (h, m) = (index(&holes), index(&movers));
                for t in [&mut x, &mut c, &mut d] {
                    let moved = t.index_select(0, &m);
                    let _ = t.index_copy_(0, &h, &moved);
                }
            }
            (
                x.narrow(0, 0, left as i64),
                c.narrow(0, 0, left as i64),
                d.narrow(0, 0, left as i64),
            )
        });
        self.stats
            .set_active_rows(&mut self.active_share, self.rows.len());
    }

    /// One denoising step over every active row; retires finished rows and answers the
    /// requests that are complete. On a model error every request in progress fails.
    pub fn step(&mut self) {
        if let Err(e) = self.try_step() {
            tracing::error!("a denoising step failed: {e}");
            self.fail_all(&e.to_string());
        }
    }

    fn try_step(&mut self) -> Result<(), ServiceError> {
        let Some((x, cond, dir)) = self.tensors.take() else {
            return Ok(());
        };
        let steps: Vec<RowStep> = self.rows.iter().map(Row::step).collect();
        let x = self
            .model
            .sampler()
            .step(&x, &steps, &cond, &dir)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.stats.record_step(steps.len());
        let mut finished = Vec::new();
        for (i, row) in self.rows.iter_mut().enumerate() {
            row.pos += 1;
            if row.pos >= row.timesteps.len() {
                finished.push(i);
            }
        }
        if !finished.is_empty() {
            self.finish_rows(&finished, &x)?;
        }
        self.tensors = Some((x, cond, dir));
        self.remove_rows(&finished);
        Ok(())
    }

    /// Denormalises the finished rows `finished` of `x`, one batched pass and one copy to the
    /// host per target modality (row by row, a dozen small libtorch calls per row cost about 8 %
    /// of a full CPU step), and hands each row to its item.
    fn finish_rows(&mut self, finished: &[usize], x: &Tensor) -> Result<(), ServiceError> {
        let internal = |e: String| ServiceError::Internal(e);
        let mut by_target: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in finished {
            let row = &self.rows[i];
            if let Some(req) = self.requests.get(&row.request) {
                by_target
                    .entry(req.items[row.item].target.as_str())
                    .or_default()
                    .push(i);
            }
        }
        let dim = self.model.dim() as usize;
        let mut done: Vec<(Row, Vec<f32>)> = Vec::with_capacity(finished.len());
        for (target, rows) in by_target {
            let stats = self
                .model
                .stats(target)
                .map_err(|e| internal(e.to_string()))?;
            let idx: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
            let idx = Tensor::from_slice(&idx).to_device(x.device());
            let z = stats
                .denormalize(&x.index_select(0, &idx))
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
                .view([-1]);
            let flat = Vec::<f32>::try_from(&z).map_err(|e| internal(e.to_string()))?;
            for (k, &i) in rows.iter().enumerate() {
                done.push((self.rows[i].clone(), flat[k * dim..(k + 1) * dim].to_vec()));
            }
        }
        for (row, sample) in done {
            self.finish_sample(&row, sample);
        }
        Ok(())
    }

    fn finish_sample(&mut self, row: &Row, sample: Vec<f32>) {
        let Some(req) = self.requests.get_mut(&row.request) else {
            return;
        };
        let item = &mut req.items[row.item];
        item.samples[row.sample] = Some(sample);
        item.finished += 1;
        if item.finished < item.samples.len() {
            return;
        }
        // As DiffgapModel::bridge: the denormalised samples combined in sample order.
        let len = item
            .samples
            .first()
            .and_then(|s| s.as_ref())
            .map_or(0, Vec::len);
        let mut sum = SampleSum::new(vec![0f32; len]);
        for s in item.samples.drain(..).flatten() {
            sum.add(&s);
        }
        item.out = Some(sum.finish());
        req.items_done += 1;
        if req.items_done == req.items.len() {
            if let Some(req) = self.requests.remove(&row.request) {
                self.complete(req);
            }
        }
    }

    fn complete(&self, req: RequestState) {
        let now = Instant::now();
        let RequestState {
            job,
            items,
            started,
            ..
        } = req;
        let started = started.unwrap_or(now);
        let queue = started.saturating_duration_since(job.enqueued);
        let compute = now.saturating_duration_since(started);
        let _entered = job.span.enter();
        let embeddings: Option<Vec<Vec<f32>>> = items.into_iter().map(|i| i.out).collect();
        let result = embeddings
            .map(|embeddings| Bridged {
                embeddings,
                queue,
                compute,
            })
            .ok_or_else(|| ServiceError::Internal("an item was not bridged".into()));
        tracing::debug!(
            queue_us = queue.as_micros() as u64,
            compute_us = compute.as_micros() as u64,
            "request done"
        );
        self.stats.record_done(queue, compute);
        let _ = job.reply.send(result);
    }

    /// Answers every request in progress with an internal error and empties the batch.
    pub fn fail_all(&mut self, msg: &str) {
        for (_, req) in std::mem::take(&mut self.requests) {
            let _ = req.job.reply.send(Err(ServiceError::Internal(msg.into())));
        }
        self.admitting.clear();
        self.waiting_rows = 0;
        self.rows.clear();
        self.tensors = None;
        self.stats.set_active_rows(&mut self.active_share, 0);
    }
}
