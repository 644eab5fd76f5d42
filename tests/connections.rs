//! The listener's bounds against the real server on an ephemeral port: connections over
//! `max_connections` are closed on arrival while the calls on established ones go on, and a
//! connection without a call is closed after `idle_connection_timeout_secs`, one with a call
//! (however quiet) is not. The file-descriptor limit has its own binary (`fd_limit.rs`): the
//! limit is the process's.

mod support;

use std::time::Duration;

use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use diffgap::service::ServeConfig;
use support::net::{closed_within, metric, raw, wait_metric};

/// The metrics are the process's: the tests take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const OPEN: &str = "diffgap_open_connections";
const REFUSED: &str = "diffgap_connections_refused_total";
const IDLE_CLOSED: &str = "diffgap_idle_connections_closed_total";

fn config() -> ServeConfig {
    let mut cfg = support::serve_config(&support::tiny_model());
    cfg.metrics_listen = "127.0.0.1:0".into();
    cfg
}

fn request(seed: u64) -> BridgeRequest {
    BridgeRequest::new(vec![BridgeItem::new(
        "text",
        "audio",
        support::vector(seed, support::TINY_DIM),
        Some(seed),
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_calls_on_open_ones_go_on() {
    let _turn = TURN.lock().await;
    let mut cfg = config();
    cfg.max_connections = 4;
    let server = support::start(cfg).await;
    let metrics = server.metrics.expect("metrics are on");
    let mut client = DiffgapClient::new(support::channel(server.addr).await);
    client.info(InfoRequest::default()).await.expect("info");
    // Only the client's connection is left once `start`'s health client has gone.
    wait_metric(metrics, OPEN, 1.0).await;
    let refused_before = metric(metrics, REFUSED, &[]).await;

    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = raw(server.addr).await;
        assert_eq!(
            closed_within(&mut c, Duration::from_millis(300)).await,
            None,
            "within the limit: kept"
        );
        held.push(c);
    }
    for extra in 0..3 {
        let mut c = raw(server.addr).await;
        let closed = closed_within(&mut c, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "connection {extra} over the limit was kept"
        );
    }
    assert_eq!(metric(metrics, OPEN, &[]).await, 4.0);
    assert_eq!(metric(metrics, REFUSED, &[]).await - refused_before, 3.0);

    // The established channel still works, calls in parallel included.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move { c.bridge(request(i)).await })
        })
        .collect();
    for call in calls {
        call.await
            .expect("task")
            .expect("a call on an open connection");
    }

    // A closed connection gives its place back.
    drop(held.pop());
    wait_metric(metrics, OPEN, 3.0).await;
    let mut again = raw(server.addr).await;
    assert_eq!(
        closed_within(&mut again, Duration::from_millis(300)).await,
        None,
        "a place was free"
    );
    server.stop.send(()).expect("stop");
    support::stops(server.server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_quiet_calls_keep_theirs() {
    let _turn = TURN.lock().await;
    let mut cfg = config();
    cfg.idle_connection_timeout_secs = 1;
    let server = support::start(cfg).await;
    let metrics = server.metrics.expect("metrics are on");
    let closed_before = metric(metrics, IDLE_CLOSED, &[]).await;

    // A Watch sends nothing while the status holds: a call in progress all the same.
    let mut watch = support::serving_watch(support::channel(server.addr).await).await;

    let mut silent = raw(server.addr).await;
    let took = closed_within(&mut silent, Duration::from_secs(10))
        .await
        .expect("a connection without calls is closed");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert!(metric(metrics, IDLE_CLOSED, &[]).await > closed_before);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still_open = tokio::time::timeout(Duration::from_millis(200), watch.message()).await;
    assert!(
        still_open.is_err(),
        "the watch's connection was closed: {still_open:?}"
    );
    server.stop.send(()).expect("stop");
    support::stops(server.server).await;
}
