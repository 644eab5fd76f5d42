//! Deadlines and the batch wait, against the real server on an ephemeral port, seen through
//! /metrics: an expired request never reaches the model, and the batch wait lets a later
//! request share the first denoising step.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use diffgap::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use support::{sample, scrape, serve_with_metrics, settled, tiny_model, tiny_vector, wait_metrics};
use tonic::Code;

/// The metrics recorder is one per process: the tests that read counter deltas take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DROPPED: &str = "diffgap_requests_dropped_total";
const DENOISED: &str = "diffgap_denoised_rows_total";
const BATCH_COUNT: &str = "diffgap_batch_rows_count";
const BATCH_SUM: &str = "diffgap_batch_rows_sum";

#[tokio::test]
async fn an_expired_request_never_reaches_the_model() {
    let _turn = TURN.lock().await;
    // The blocker fills the whole batch (32 items x 4 samples = 128 rows), so that the timed
    // request waits in the queue until the blocker leaves. The row-step budget is set out of
    // the way: admission would refuse the timed request behind so much work
    // (tests/admission.rs covers that).
    let (addr, metrics) = serve_with_metrics(&tiny_model(), |cfg| {
        cfg.max_batch_rows = 128;
        cfg.max_queue_row_steps = 1 << 30;
    });
    let mut c = support::client(addr).await;
    let max_steps = c
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner()
        .models[0]
        .max_steps;
    let items = |n: u64, samples: u32| -> Vec<BridgeItem> {
        (0..n)
            .map(|i| {
                let mut it = BridgeItem::new("text", "audio", tiny_vector(900 + i), Some(i));
                it.steps = Some(max_steps);
                it.samples = Some(samples);
                it
            })
            .collect()
    };
    let before = settled(metrics).await;
    let blocker = {
        let mut c = support::client(addr).await;
        let req = BridgeRequest::new(items(32, 4));
        tokio::spawn(async move { c.bridge(req).await })
    };
    wait_metrics(metrics, "the blocker's rows", |t| {
        sample(t, "diffgap_active_rows", &[]) == 128.0
    })
    .await;

    // One step each: within its 10 ms at the worker's pace, so admission takes it (a
    // deadline closer than a request's own steps is refused at once, never queued), and it
    // expires in the queue behind the blocker.
    let mut quick = items(32, 1);
    quick.iter_mut().for_each(|it| it.steps = Some(1));
    let mut timed = tonic::Request::new(BridgeRequest::new(quick));
    timed.set_timeout(Duration::from_millis(10));
    let e = c.bridge(timed).await.expect_err("past its deadline");
    assert!(
        matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{e:?}"
    );
    // Let the blocker go (cancelled, or done if it was quick): the worker then takes the
    // expired request from its queue and drops it.
    blocker.abort();
    wait_metrics(metrics, "the drop", |t| {
        sample(t, DROPPED, &[("reason", "deadline")])
            > sample(&before, DROPPED, &[("reason", "deadline")])
    })
    .await;
    let after = wait_metrics(metrics, "an idle worker", |t| {
        sample(t, "diffgap_active_rows", &[]) == 0.0 && sample(t, "diffgap_queue_depth", &[]) == 0.0
    })
    .await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(delta(DROPPED, &[("reason", "deadline")]), 1.0);
    // Every denoising step since `before` ran the blocker's 128 rows alone: none of the
    // expired request's 32 rows was computed.
    let steps = delta(BATCH_COUNT, &[]);
    assert!(steps >= 1.0);
    assert_eq!(delta(BATCH_SUM, &[]), 128.0 * steps);
    assert_eq!(delta(DENOISED, &[]), 128.0 * steps);
    assert_eq!(
        delta("diffgap_batch_rows_bucket", &[("le", "64")]),
        0.0,
        "a batch of fewer than 128 rows ran"
    );
}

/// Two requests of 1 and 2 rows, the second sent 20 ms after the first; the change of
/// (batch count, batch rows sum, batches of one row) they caused.
async fn two_requests(addr: SocketAddr, metrics: SocketAddr, steps: u32) -> (f64, f64, f64) {
    let before = settled(metrics).await;
    let req = move |seeds: &[u64]| {
        BridgeRequest::new(
            seeds
                .iter()
                .map(|&s| {
                    let mut it = BridgeItem::new("text", "audio", tiny_vector(s), Some(s));
                    it.steps = Some(steps);
                    it.samples = Some(1);
                    it
                })
                .collect(),
        )
    };
    let mut c1 = support::client(addr).await;
    let mut c2 = support::client(addr).await;
    let first = tokio::spawn(async move { c1.bridge(req(&[1])).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = c2.bridge(req(&[2, 3])).await.expect("second");
    let first = first.await.expect("task").expect("first");
    assert_eq!(first.into_inner().embeddings.len(), 1);
    assert_eq!(second.into_inner().embeddings.len(), 2);
    let after = scrape(metrics).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    (
        delta(BATCH_COUNT, &[]),
        delta(BATCH_SUM, &[]),
        delta("diffgap_batch_rows_bucket", &[("le", "1")]),
    )
}

#[tokio::test]
async fn the_batch_wait_lets_a_later_request_share_the_first_step() {
    let _turn = TURN.lock().await;
    // A budget of 3 rows ends the wait as soon as both requests are in, so the long wait
    // costs nothing when the second request comes.
    let (addr, metrics) = serve_with_metrics(&tiny_model(), |cfg| {
        cfg.max_batch_wait_ms = 5000;
        cfg.max_batch_rows = 3;
    });
    let steps = 20;
    let (count, sum, ones) = two_requests(addr, metrics, steps).await;
    // Both requests started together: every step ran their 3 rows.
    assert_eq!(count, f64::from(steps), "batches");
    assert_eq!(sum, 3.0 * f64::from(steps), "rows");
    assert_eq!(ones, 0.0, "a step ran one request alone");

    // Without a wait, the first request starts alone at once.
    let (addr, metrics) = serve_with_metrics(&tiny_model(), |cfg| {
        cfg.max_batch_wait_ms = 0;
        cfg.max_batch_rows = 3;
    });
    let (count, sum, ones) = two_requests(addr, metrics, 1000).await;
    assert!(ones >= 1.0, "the first step ran the first request alone");
    assert_eq!(sum, 3.0 * 1000.0, "rows");
    assert!(count > 1000.0);
}
