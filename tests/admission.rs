//! Admission against the real server on an ephemeral port (docs/operations.md, "Overload"):
//! refusals are RESOURCE_EXHAUSTED with a `grpc-retry-pushback-ms` retry delay and counted in
//! /metrics; the row-step budget refuses work beyond it but still runs a larger request on an
//! idle instance; a deadline closer than the request's own steps is refused at admission
//! instead of queued; the server-wide limit on model calls refuses before the handler and
//! frees its slot when a call ends. What overload does to throughput and latency is measured
//! by scripts/bench-overload.sh, not here.

mod support;

use std::time::{Duration, Instant};

use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use support::{sample, scrape, serve_with_metrics, tiny_model, tiny_vector};
use tonic::transport::Channel;
use tonic::Code;

/// The metrics recorder is one per process: the tests that read counter deltas take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const REQUESTS: &str = "diffgap_requests_total";
const DROPPED: &str = "diffgap_requests_dropped_total";

/// A Bridge of one item with `steps` denoising steps and `samples` samples.
fn bridge(steps: u32, samples: u32, seed: u64) -> BridgeRequest {
    let mut item = BridgeItem::new("text", "audio", tiny_vector(seed), Some(seed));
    item.steps = Some(steps);
    item.samples = Some(samples);
    BridgeRequest::new(vec![item])
}

async fn max_steps(c: &mut DiffgapClient<Channel>) -> u32 {
    c.info(InfoRequest {})
        .await
        .expect("info")
        .into_inner()
        .models[0]
        .max_steps
}

/// `n` copies of `req` sent at once.
async fn all_at_once(
    c: &DiffgapClient<Channel>,
    req: &BridgeRequest,
    n: usize,
) -> Vec<Result<(), tonic::Status>> {
    let calls = (0..n).map(|_| {
        let (mut c, req) = (c.clone(), req.clone());
        tokio::spawn(async move { c.bridge(req).await.map(|_| ()) })
    });
    let mut out = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        out.push(call.await.expect("task"));
    }
    out
}

/// The retry delay a refusal carries, in milliseconds.
fn pushback_ms(status: &tonic::Status) -> u64 {
    status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no grpc-retry-pushback-ms in {status:?}"))
}

fn refusals(answers: &[Result<(), tonic::Status>]) -> Vec<&tonic::Status> {
    answers
        .iter()
        .filter_map(|a| a.as_ref().err())
        .filter(|s| s.code() == Code::ResourceExhausted)
        .collect()
}

#[tokio::test]
async fn refusals_carry_a_retry_delay_and_are_counted() {
    let _turn = TURN.lock().await;
    let (addr, metrics) = serve_with_metrics(&tiny_model(), |cfg| {
        cfg.queue_capacity = 1;
        cfg.max_batch_rows = 1;
    });
    let mut c = support::client(addr).await;
    let steps = max_steps(&mut c).await;
    let label = [("rpc", "Bridge"), ("status", "resource_exhausted")];
    let before = sample(&scrape(metrics).await, REQUESTS, &label);
    let answers = all_at_once(&c, &bridge(steps, 4, 1), 12).await;
    let refused = refusals(&answers);
    assert!(!refused.is_empty(), "{answers:?}");
    assert!(answers.iter().any(Result::is_ok), "the first one runs");
    for s in &refused {
        let ms = pushback_ms(s);
        assert!((15..=30_000).contains(&ms), "{ms} ms: {s:?}");
        assert!(s.message().contains("retry in"), "{s:?}");
    }
    let after = sample(&scrape(metrics).await, REQUESTS, &label);
    assert_eq!(after - before, refused.len() as f64);
}

#[tokio::test]
async fn the_row_step_budget_refuses_work_beyond_it_but_runs_a_large_request_alone() {
    let _turn = TURN.lock().await;
    let (addr, _) = serve_with_metrics(&tiny_model(), |cfg| {
        cfg.max_queue_row_steps = 1500;
        cfg.max_batch_rows = 64;
    });
    let mut c = support::client(addr).await;
    let steps = max_steps(&mut c).await;
    assert!(steps >= 1000, "the tiny model allows {steps} steps");
    // 4 samples x 1000 steps is over the budget: alone, it runs.
    c.bridge(bridge(1000, 4, 2))
        .await
        .expect("a large request alone");
    // Four of 1000 row-steps at once: the first is taken, the second would pass the budget.
    let answers = all_at_once(&c, &bridge(1000, 1, 3), 4).await;
    let refused = refusals(&answers);
    assert!(answers.iter().any(Result::is_ok), "{answers:?}");
    assert!(!refused.is_empty(), "{answers:?}");
    for s in refused {
        assert!(s.message().contains("as much work waiting"), "{s:?}");
        pushback_ms(s);
    }
}

#[tokio::test]
async fn a_deadline_closer_than_the_steps_is_refused_at_admission() {
    let _turn = TURN.lock().await;
    let (addr, metrics) = serve_with_metrics(&tiny_model(), |_| {});
    let mut c = support::client(addr).await;
    let steps = max_steps(&mut c).await.min(1000);
    // The worker learns its pace from this one; its time bounds the steps' time from above.
    let started = Instant::now();
    c.bridge(bridge(steps, 1, 4)).await.expect("untimed");
    let whole = started.elapsed();
    let text = scrape(metrics).await;
    let label = [("rpc", "Bridge"), ("status", "deadline_exceeded")];
    let (refused_before, dropped_before) = (
        sample(&text, REQUESTS, &label),
        sample(&text, DROPPED, &[("reason", "deadline")]),
    );
    let mut req = tonic::Request::new(bridge(steps, 1, 5));
    req.set_timeout((whole / 10).max(Duration::from_millis(1)));
    let err = c.bridge(req).await.expect_err("cannot finish in time");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    // Answered by admission: counted as deadline_exceeded, never queued, so never dropped.
    let text = support::wait_metrics(metrics, "the refusal counted", |t| {
        sample(t, REQUESTS, &label) > refused_before
    })
    .await;
    assert_eq!(
        sample(&text, DROPPED, &[("reason", "deadline")]),
        dropped_before
    );
}

#[tokio::test]
async fn the_call_limit_refuses_before_the_handler_and_frees_its_slot() {
    let _turn = TURN.lock().await;
    let (addr, metrics) = serve_with_metrics(&tiny_model(), |cfg| {
        cfg.max_concurrent_requests = 1;
    });
    let mut c = support::client(addr).await;
    let steps = max_steps(&mut c).await;
    let mut slow = c.clone();
    let running = tokio::spawn(async move { slow.bridge(bridge(steps, 8, 6)).await });
    // Its rows running, the slow call holds the one slot.
    support::wait_metrics(metrics, "the slow call running", |t| {
        sample(t, "diffgap_active_rows", &[]) > 0.0
    })
    .await;
    let refusal = c
        .bridge(bridge(1, 1, 7))
        .await
        .expect_err("the slot is held");
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert!(
        refusal.message().contains("model calls in flight"),
        "{refusal:?}"
    );
    pushback_ms(&refusal);
    // Info is not model work: it is not counted against the limit.
    c.info(InfoRequest {})
        .await
        .expect("info while the slot is held");
    running.await.expect("task").expect("the slow call");
    c.bridge(bridge(1, 1, 8))
        .await
        .expect("the slot is free again");
    let text = scrape(metrics).await;
    let label = [("rpc", "Bridge"), ("status", "resource_exhausted")];
    assert!(sample(&text, REQUESTS, &label) >= 1.0, "counted");
}
