//! The step-batching loop of a model instance: take what the queue holds, drop what expired,
//! admit rows, run one denoising step, repeat (see [`Scheduler`]).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::service::worker::context::WorkerCtx;
use crate::service::worker::options::WorkerOptions;
use crate::service::worker::pace::Pace;
use crate::service::worker::queue::Msg;
use crate::service::worker::scheduler::Scheduler;
use crate::service::worker::stats::WorkerStats;

/// Step-level continuous batching: admit, sweep, one step, repeat (see [`Scheduler`]). Each
/// step's time goes to `pace` (admission reads it).
pub(super) fn run_steps(
    mut ctx: WorkerCtx<'_>,
    mut rx: mpsc::Receiver<Msg>,
    opts: WorkerOptions,
    stats: &WorkerStats,
    pace: &Pace,
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
                None => return,
            }
        }
        while open && sched.wants_more() {
            match rx.try_recv() {
                Ok(Msg::Rows(job)) => sched.accept(job, Instant::now()),
                Ok(Msg::Call(call)) => call(&mut ctx),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if sched.is_idle() {
            // E.g. every request taken was dropped: nothing waits any more.
            stats.set_queue_depth(&mut queued, rx.len());
            continue;
        }
        let now = Instant::now();
        sched.sweep(now);
        sched.admit(now);
        stats.set_queue_depth(&mut queued, rx.len() + sched.requests());
        let (rows, started) = (sched.active_rows(), Instant::now());
        sched.step();
        pace.record(rows, started.elapsed());
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
