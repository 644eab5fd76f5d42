//! The drain on shutdown against the real server, with each kind of client it meets: a
//! watcher (a health Watch on the same channel as the calls), a poller (health Checks in a
//! loop on its own channel) and idle connections (an HTTP/2 channel without calls, a TCP
//! connection that never speaks). In each case every one of the calls in flight when the
//! shutdown begins succeeds, and `serve` returns within seconds of the last answer, where an
//! open Watch or a silent connection used to hold it to the drain timeout. The timeout is
//! long here (120 s) so that the bound stays a bound on a hang: however slow the machine
//! makes the calls, a held drain ends only at the timeout, far past it. (`serve`'s shutdown future stands in for SIGTERM; `fd_limit.rs` sends a real one.)

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{BridgeItem, BridgeRequest, BridgeResponse, InfoRequest};
use diffgap::service::ServeConfig;
use support::net::{closed_within, eventually, metric, raw};
use support::Running;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The metrics (the in-flight gauge) and the cores are the process's: the tests take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Calls in flight when the shutdown begins.
const CALLS: usize = 32;
const DRAIN_TIMEOUT_SECS: u64 = 120;
/// The most `serve` may take to return after the last call's answer: the drain's second for
/// connections without calls, and room for a loaded machine. A bound on a hang, far below the
/// drain timeout that an unended Watch or a silent connection would take.
const EXIT_AFTER_CALLS: Duration = Duration::from_secs(10);

type Call = JoinHandle<Result<tonic::Response<BridgeResponse>, tonic::Status>>;

fn config() -> ServeConfig {
    let mut cfg = support::serve_config(&support::tiny_model());
    cfg.metrics_listen = "127.0.0.1:0".into();
    cfg.drain_timeout_secs = DRAIN_TIMEOUT_SECS;
    // Every call in the running batch at once.
    cfg.max_batch_rows = 4096;
    cfg
}

/// Two items, slow enough that 32 such calls are still running when the shutdown begins (they
/// share one batch, so none ends before the last has arrived).
fn slow_request(seed: u64) -> BridgeRequest {
    let items = (0..2)
        .map(|i| {
            let mut it = BridgeItem::new(
                "text",
                "audio",
                support::vector(seed * 2 + i, support::TINY_DIM),
                Some(seed),
            );
            it.steps = Some(400);
            it.samples = Some(8);
            it
        })
        .collect();
    BridgeRequest::new(items)
}

/// Starts [`CALLS`] calls on `channel` and waits until the server is handling all of them.
async fn calls_in_flight(server: &Running, channel: Channel) -> Vec<Call> {
    let client = DiffgapClient::new(channel);
    let calls = (0..CALLS as u64)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move { c.bridge(slow_request(i)).await })
        })
        .collect();
    let metrics = server.metrics.expect("metrics are on");
    let all = eventually(Duration::from_secs(10), || async {
        metric(metrics, "diffgap_inflight_requests", &[]).await >= CALLS as f64
    })
    .await;
    assert!(all, "the {CALLS} calls did not all reach the server");
    calls
}

/// Starts the drain and checks it: every call succeeds, and `serve` returns within
/// [`EXIT_AFTER_CALLS`] of the last answer.
async fn drain_and_check(server: Running, calls: Vec<Call>) {
    let t = Instant::now();
    server.stop.send(()).expect("stop");
    let mut failed = Vec::new();
    for call in calls {
        match call.await.expect("task") {
            Ok(r) => assert_eq!(r.get_ref().embeddings.len(), 2),
            Err(status) => failed.push(status),
        }
    }
    let answered = t.elapsed();
    assert!(
        failed.is_empty(),
        "{} of {CALLS} calls in flight failed: {failed:?}",
        failed.len()
    );
    tokio::time::timeout(EXIT_AFTER_CALLS, server.server)
        .await
        .unwrap_or_else(|_| panic!("serve still running {EXIT_AFTER_CALLS:?} after the calls"))
        .expect("task")
        .expect("serve returns Ok");
    let exited = t.elapsed();
    eprintln!("calls answered {answered:?} and serve returned {exited:?} after the signal");
    assert!(
        exited < Duration::from_secs(DRAIN_TIMEOUT_SECS) / 3,
        "{exited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_the_calls_channel_gets_not_serving_then_ends() {
    let _turn = TURN.lock().await;
    let server = support::start(config()).await;
    let channel = support::channel(server.addr).await;
    let mut watch = support::serving_watch(channel.clone()).await;
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            match watch.message().await {
                Ok(Some(s)) => seen.push(s.status),
                Ok(None) => return (seen, Ok(())),
                Err(e) => return (seen, Err(e)),
            }
        }
    });
    let calls = calls_in_flight(&server, channel).await;
    drain_and_check(server, calls).await;
    let (seen, end) = watcher.await.expect("task");
    assert_eq!(seen, [ServingStatus::NotServing as i32]);
    end.expect("the server ended the watch cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_does_not_hold_the_drain() {
    let _turn = TURN.lock().await;
    let server = support::start(config()).await;
    let polling = Arc::new(AtomicBool::new(true));
    let mut health = HealthClient::new(support::channel(server.addr).await);
    let still_polling = polling.clone();
    let poller = tokio::spawn(async move {
        let mut checks = 0u32;
        while still_polling.load(Ordering::SeqCst) {
            let check = health.check(HealthCheckRequest {
                service: "diffgap.v1.Diffgap".into(),
            });
            let _answer_or_refusal = check.await;
            checks += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        checks
    });
    let calls = calls_in_flight(&server, support::channel(server.addr).await).await;
    drain_and_check(server, calls).await;
    polling.store(false, Ordering::SeqCst);
    assert!(poller.await.expect("task") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_silent_connections_do_not_hold_the_drain() {
    let _turn = TURN.lock().await;
    let server = support::start(config()).await;
    let idle = support::channel(server.addr).await;
    DiffgapClient::new(idle.clone())
        .info(InfoRequest::default())
        .await
        .expect("info");
    let mut silent = raw(server.addr).await;
    let calls = calls_in_flight(&server, support::channel(server.addr).await).await;
    drain_and_check(server, calls).await;
    assert!(
        closed_within(&mut silent, Duration::from_millis(100))
            .await
            .is_some(),
        "the silent connection is closed"
    );
    drop(idle);
}
