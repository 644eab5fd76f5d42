//! The model worker's batching: step-level (continuous) batching against the in-process
//! bridge, joining a running batch, deadlines and cancellation. Talks to the worker directly
//! (no gRPC) and reads its own counters.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use diffgap::diffusion::sampler::SampleOptions;
use diffgap::model::{artifact, row_seed};
use diffgap::service::error::ServiceError;
use diffgap::service::types::{Batching, BridgeRow};
use diffgap::service::worker::{ModelWorker, WorkerHandle, WorkerOptions, WorkerStats};
use support::assert_close_for;
use tch::{Device, Kind, Tensor};

const DIM: usize = support::TINY_DIM;

struct Worker {
    handle: WorkerHandle,
    stats: Arc<WorkerStats>,
}

async fn worker(max_batch_rows: usize, batching: Batching) -> Worker {
    let mut opts = WorkerOptions::new(max_batch_rows, 64);
    opts.batching = batching;
    worker_with(opts).await
}

async fn worker_with(opts: WorkerOptions) -> Worker {
    let w = ModelWorker::spawn_with(support::tiny_model(), Device::Cpu, opts).expect("spawn");
    w.ready.await.expect("ready").expect("the model loads");
    Worker {
        handle: w.handle,
        stats: w.stats,
    }
}

fn row(from: &str, to: &str, v: u64, steps: usize, guidance: f32, samples: usize) -> BridgeRow {
    BridgeRow {
        from: from.into(),
        to: to.into(),
        embedding: support::vector_in_stream(v, 1, DIM),
        opts: SampleOptions {
            steps,
            guidance,
            samples,
        },
        seed: row_seed(v, 3),
        start: Default::default(),
    }
}

/// What the in-process model answers for `r` alone.
fn in_process(r: &BridgeRow) -> Vec<f32> {
    thread_local! {
        static MODEL: diffgap::model::DiffgapModel =
            artifact::load(&support::tiny_model(), Device::Cpu).expect("load");
    }
    let x = Tensor::from_slice(&r.embedding).view([1, DIM as i64]);
    MODEL.with(|model| {
        let y = model
            .bridge(&x, &r.from, &r.to, &[r.seed], r.opts)
            .expect("bridge")
            .to_kind(Kind::Float)
            .view([-1]);
        Vec::<f32>::try_from(&y).expect("values")
    })
}

/// Requests with mixed directions, steps, guidance and samples, several items each.
fn mixed_requests() -> Vec<Vec<BridgeRow>> {
    vec![
        vec![row("text", "audio", 1, 200, 1.0, 1)],
        vec![
            row("audio", "text", 2, 8, 1.5, 3),
            row("text", "audio", 3, 5, 1.0, 1),
        ],
        vec![row("text", "audio", 4, 20, 0.0, 2)],
        vec![
            row("text", "audio", 5, 1, 2.0, 1),
            row("audio", "text", 6, 50, 1.0, 2),
            row("audio", "text", 7, 3, 0.5, 4),
        ],
        vec![row("audio", "text", 8, 13, 3.0, 1)],
    ]
}

async fn check_against_in_process(w: &Worker) {
    let requests = mixed_requests();
    let mut tasks = Vec::new();
    for (i, rows) in requests.iter().cloned().enumerate() {
        let handle = w.handle.clone();
        tasks.push(tokio::spawn(async move {
            // Staggered arrivals, so that requests join a batch already under way.
            tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
            handle.bridge(rows).await
        }));
    }
    for (rows, task) in requests.iter().zip(tasks) {
        let out = task.await.expect("task").expect("bridged");
        assert_eq!(out.embeddings.len(), rows.len());
        for (r, got) in rows.iter().zip(&out.embeddings) {
            let what = format!("{}->{} {:?}", r.from, r.to, r.opts);
            assert_close_for(got, &in_process(r), 1e-5, &what);
        }
    }
}

#[tokio::test]
async fn step_batching_equals_the_in_process_bridge() {
    let w = worker(256, Batching::Step).await;
    check_against_in_process(&w).await;
    let s = w.stats.snapshot();
    let rows_x_steps: u64 = mixed_requests()
        .iter()
        .flatten()
        .map(|r| (r.opts.steps * r.opts.samples) as u64)
        .sum();
    assert_eq!(s.rows_denoised, rows_x_steps, "{s:?}");
    assert!(s.steps < rows_x_steps, "rows were batched together: {s:?}");
    assert_eq!(s.completed, 5);
    assert_eq!(s.active_rows, 0);
}

#[tokio::test]
async fn a_small_row_budget_admits_requests_in_parts() {
    // 3 rows at most per pass: requests with more rows are admitted a few rows at a time.
    let w = worker(3, Batching::Step).await;
    check_against_in_process(&w).await;
}

#[tokio::test]
async fn request_batching_equals_the_in_process_bridge() {
    let w = worker(256, Batching::Request).await;
    check_against_in_process(&w).await;
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_new_request_joins_at_the_next_step() {
    let w = worker(256, Batching::Step).await;
    let long = {
        let handle = w.handle.clone();
        tokio::spawn(async move {
            handle
                .bridge(vec![row("text", "audio", 1, 1000, 1.5, 8)])
                .await
        })
    };
    let stats = w.stats.clone();
    wait_for("the long request to start", || stats.snapshot().steps > 0).await;
    let short = row("audio", "text", 2, 1, 1.0, 1);
    let out = w.handle.bridge(vec![short.clone()]).await.expect("short");
    assert!(
        !long.is_finished(),
        "the short request waited for the long one ({:?})",
        w.stats.snapshot()
    );
    assert_close_for(&out.embeddings[0], &in_process(&short), 1e-5, "short");
    let long_out = long.await.expect("task").expect("long");
    assert_eq!(long_out.embeddings.len(), 1);
}

#[tokio::test]
async fn an_expired_deadline_never_reaches_the_model() {
    for batching in [Batching::Step, Batching::Request] {
        let w = worker(256, batching).await;
        let before = w.stats.snapshot();
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .expect("an instant in the past");
        let err = w
            .handle
            .bridge_until(vec![row("text", "audio", 1, 5, 1.0, 2)], Some(past))
            .await
            .expect_err("expired");
        assert!(matches!(err, ServiceError::DeadlineExceeded), "{err:?}");
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::DeadlineExceeded
        );
        let after = w.stats.snapshot();
        assert_eq!(after.steps, before.steps, "{batching:?}: {after:?}");
        assert_eq!(after.rows_denoised, before.rows_denoised);
        // Refused at admission: it never entered the queue, so nothing was dropped from it.
        assert_eq!(after.dropped_deadline, before.dropped_deadline);
        // A deadline far ahead changes nothing.
        let r = row("text", "audio", 1, 5, 1.0, 2);
        let out = w
            .handle
            .bridge_until(
                vec![r.clone()],
                Some(Instant::now() + Duration::from_secs(60)),
            )
            .await
            .expect("in time");
        assert_close_for(&out.embeddings[0], &in_process(&r), 1e-5, "in time");
    }
}

#[tokio::test]
async fn a_deadline_passing_mid_trajectory_stops_the_rows() {
    let w = worker(256, Batching::Step).await;
    let deadline = Instant::now() + Duration::from_millis(30);
    let err = w
        .handle
        .bridge_until(vec![row("text", "audio", 1, 1000, 1.5, 16)], Some(deadline))
        .await
        .expect_err("too slow for its deadline");
    assert!(matches!(err, ServiceError::DeadlineExceeded), "{err:?}");
    let s = w.stats.snapshot();
    assert_eq!(s.dropped_deadline, 1);
    assert!(s.steps < 1000, "the trajectory was cut short: {s:?}");
    let stats = w.stats.clone();
    wait_for("the rows to leave", || stats.snapshot().active_rows == 0).await;
    let settled = w.stats.snapshot().steps;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(w.stats.snapshot().steps, settled, "no more steps run");
}

#[tokio::test]
async fn a_dropped_clients_rows_are_removed() {
    let w = worker(256, Batching::Step).await;
    let task = {
        let handle = w.handle.clone();
        tokio::spawn(async move {
            handle
                .bridge(vec![row("text", "audio", 1, 1000, 1.5, 4)])
                .await
        })
    };
    let stats = w.stats.clone();
    wait_for("the rows to run", || stats.snapshot().active_rows == 4).await;
    task.abort();
    let stats = w.stats.clone();
    wait_for("the rows to leave", || {
        let s = stats.snapshot();
        s.active_rows == 0 && s.dropped_cancelled == 1
    })
    .await;
    let s = w.stats.snapshot();
    assert!(s.steps < 1000, "the trajectory was cut short: {s:?}");
    assert_eq!(s.completed, 0);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(w.stats.snapshot().steps, s.steps, "no more steps run");
    // The worker still serves.
    let r = row("audio", "text", 9, 4, 1.0, 1);
    let out = w.handle.bridge(vec![r.clone()]).await.expect("served");
    assert_close_for(&out.embeddings[0], &in_process(&r), 1e-5, "after a drop");
}

#[tokio::test]
async fn every_waiting_request_that_fits_joins_the_same_step() {
    let w = worker(256, Batching::Step).await;
    let before = w.stats.snapshot();
    // Hold the worker in a call while 8 one-row requests queue up behind it.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let held = {
        let h = w.handle.clone();
        tokio::spawn(async move {
            h.call(move |_| {
                let _ = gate.recv();
                Ok(())
            })
            .await
        })
    };
    let steps = 10;
    let rows: Vec<BridgeRow> = (0..8)
        .map(|i| row("text", "audio", 40 + i, steps, 1.0, 1))
        .collect();
    let tasks: Vec<_> = rows
        .iter()
        .map(|r| {
            let (h, r) = (w.handle.clone(), r.clone());
            tokio::spawn(async move { h.bridge(vec![r]).await })
        })
        .collect();
    let handle = w.handle.clone();
    wait_for("8 requests in the queue", || handle.queued() >= 8).await;
    release.send(()).expect("the call waits");
    held.await.expect("task").expect("the call");
    for (r, t) in rows.iter().zip(tasks) {
        let out = t.await.expect("task").expect("bridge");
        assert_close_for(&out.embeddings[0], &in_process(r), 1e-5, "joined");
    }
    let after = w.stats.snapshot();
    // All 8 ran in lockstep: 10 steps of 8 rows, not one request joining per step.
    assert_eq!(after.steps - before.steps, steps as u64, "{after:?}");
    assert_eq!(after.rows_denoised - before.rows_denoised, 8 * steps as u64);
}

fn two_instances() -> WorkerOptions {
    WorkerOptions {
        instances: 2,
        ..WorkerOptions::new(256, 64)
    }
}

#[tokio::test]
async fn two_instances_answer_like_the_in_process_bridge() {
    let w = worker_with(two_instances()).await;
    assert_eq!(w.handle.instances(), 2);
    check_against_in_process(&w).await;
    // The model thread drops a job (and its load) just after sending its answer.
    let h = w.handle.clone();
    wait_for("every answered request to leave its load", || {
        h.loads() == [0, 0]
    })
    .await;
}

#[tokio::test]
async fn requests_go_to_the_least_loaded_instance() {
    let w = worker_with(two_instances()).await;
    let send = |v: u64| {
        let handle = w.handle.clone();
        tokio::spawn(async move {
            handle
                .bridge(vec![row("text", "audio", v, 200, 1.0, 4)])
                .await
        })
    };
    let first = send(1);
    let h = w.handle.clone();
    wait_for("the first request to be sent", || {
        h.loads().iter().sum::<usize>() > 0
    })
    .await;
    let second = send(2);
    // 200 steps x 4 samples each: the second goes to the idle instance while the first runs.
    wait_for("both instances to hold work", || {
        h.loads().iter().all(|&l| l == 800)
    })
    .await;
    for t in [first, second] {
        t.await.expect("task").expect("bridged");
    }
    wait_for("the loads to go", || h.loads() == [0, 0]).await;
}

#[tokio::test]
async fn call_all_runs_on_every_instance_thread() {
    let w = worker_with(two_instances()).await;
    let names = w
        .handle
        .call_all(|ctx| {
            assert!(ctx.model.dim() > 0);
            Ok(std::thread::current().name().map(String::from))
        })
        .await
        .expect("called");
    assert_eq!(
        names,
        vec![
            Some("diffgap-model-0".to_owned()),
            Some("diffgap-model-1".to_owned())
        ]
    );
}

#[tokio::test]
async fn an_instance_that_fails_to_load_fails_the_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = ModelWorker::spawn_with(dir.path().to_owned(), Device::Cpu, two_instances())
        .expect("spawn");
    let err = w
        .ready
        .await
        .expect("an answer")
        .expect_err("no model there");
    assert!(matches!(err, ServiceError::Load(_)), "{err:?}");
}
