//! Request-level batching ([`crate::service::types::Batching::Request`]): the instance drains
//! the requests waiting, up to a row budget, and runs their rows grouped by (direction, steps,
//! guidance, samples, refine strength) as one whole sampling loop per group.

use std::collections::BTreeMap;
use std::time::Instant;

use tch::{Kind, Tensor};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::model::{DiffgapModel, ModelError};
use crate::service::error::ServiceError;
use crate::service::types::{BridgeRow, Bridged, RowStart};
use crate::service::worker::context::WorkerCtx;
use crate::service::worker::queue::{Job, Msg};
use crate::service::worker::stats::{drop_reason, DropReason, WorkerStats};

/// Request-level batching: whole sampling loops per group of waiting requests.
pub(super) fn run_request_batches(
    mut ctx: WorkerCtx<'_>,
    mut rx: mpsc::Receiver<Msg>,
    max_rows: usize,
    stats: &WorkerStats,
) {
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
        let mut rows = first.rows().len();
        let mut jobs = vec![first];
        while rows < max_rows {
            match rx.try_recv() {
                Ok(Msg::Rows(job)) if rows + job.rows().len() > max_rows => {
                    carried = Some(job);
                    break;
                }
                Ok(Msg::Rows(job)) => {
                    rows += job.rows().len();
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
            RowStart::Refine { strength, .. } => Some(strength.get().to_bits()),
        },
    )
}

fn run_batch(model: &DiffgapModel, jobs: Vec<Job>, stats: &WorkerStats) {
    let start = Instant::now();
    // An expired request is answered at once; a client that went away needs no answer; an
    // in-process request with a bad row is answered with why.
    let jobs: Vec<Job> = jobs
        .into_iter()
        .filter_map(
            |mut j| match drop_reason(j.deadline, j.reply.is_closed(), start) {
                None => match j.check(model) {
                    Ok(_) => Some(j),
                    Err(e) => {
                        let _ = j.reply.send(Err(e));
                        None
                    }
                },
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
        .flat_map(Job::rows)
        .map(|r| r.opts.samples)
        .sum();
    let mut active = 0;
    stats.set_active_rows(&mut active, rows);
    let mut groups: BTreeMap<GroupKey, Vec<(usize, usize)>> = BTreeMap::new();
    for (j, job) in jobs.iter().enumerate() {
        for (r, row) in job.rows().iter().enumerate() {
            groups.entry(group_key(row)).or_default().push((j, r));
        }
    }
    let mut out: Vec<Vec<Option<Vec<f32>>>> =
        jobs.iter().map(|j| vec![None; j.rows().len()]).collect();
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

/// Bridges the rows `members` (job, row) of one group in one call (the jobs' rows are checked:
/// a shape that does not fit is a bug, reported, not a panic).
fn bridge_group(
    model: &DiffgapModel,
    jobs: &[Job],
    members: &[(usize, usize)],
) -> Result<Vec<Vec<f32>>, ModelError> {
    let dim = model.dim().max(1) as usize;
    let Some(&(j0, r0)) = members.first() else {
        return Ok(Vec::new());
    };
    let first = &jobs[j0].rows()[r0];
    let mut flat = Vec::with_capacity(members.len() * dim);
    let mut starts = Vec::new();
    let mut seeds = Vec::with_capacity(members.len());
    let mut refine = None;
    for &(j, r) in members {
        let row = &jobs[j].rows()[r];
        flat.extend_from_slice(&row.embedding);
        if let RowStart::Refine {
            embedding,
            strength,
        } = &row.start
        {
            starts.extend_from_slice(embedding);
            refine = Some(strength.get());
        }
        seeds.push(row.seed);
    }
    let n = members.len() as i64;
    let x = Tensor::from_slice(&flat).f_view([n, dim as i64])?;
    let y = match refine {
        None => model.bridge(&x, &first.from, &first.to, &seeds, first.opts)?,
        Some(strength) => {
            let start = Tensor::from_slice(&starts).f_view([n, dim as i64])?;
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
