//! Prometheus metrics: one process-wide recorder (installed once, with a periodic upkeep so
//! that histogram samples never pile up between scrapes), every metric described and
//! registered at zero before the first request, and a small `/metrics` listener per server.
//!
//! Who records what:
//! - the RPC layer ([`RpcObservation`], used by every handler of either listener through
//!   `api/observe.rs`, and [`record_rpc`] for the calls refused before a handler, in
//!   `api/faults.rs` and `api/http`; an HTTP route's `rpc` label is in [`HTTP_ROUTES`]):
//!   `diffgap_requests_total`, `diffgap_request_duration_seconds`,
//!   `diffgap_inflight_requests`;
//! - the model worker: `diffgap_queue_depth`, `diffgap_active_rows`, `diffgap_batch_rows`,
//!   `diffgap_queue_duration_seconds`, `diffgap_compute_duration_seconds`,
//!   `diffgap_denoising_steps_total`, `diffgap_denoised_rows_total`,
//!   `diffgap_requests_dropped_total`;
//! - the server at load time: `diffgap_model_info`;
//! - the listener (`api/listener`): `diffgap_open_connections`,
//!   `diffgap_connections_refused_total`, `diffgap_idle_connections_closed_total`,
//!   `diffgap_accept_errors_total`.
//!
//! Names carry their unit (`_seconds`, `_rows`), counters end in `_total`, and every label has a
//! bounded set of values (no request ids, no user text).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::Unit;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const QUEUE_DEPTH: &str = "diffgap_queue_depth";
pub const ACTIVE_ROWS: &str = "diffgap_active_rows";
pub const INFLIGHT_REQUESTS: &str = "diffgap_inflight_requests";
pub const BATCH_ROWS: &str = "diffgap_batch_rows";
pub const EMBED_BATCH_INPUTS: &str = "diffgap_embed_batch_inputs";
pub const QUEUE_DURATION: &str = "diffgap_queue_duration_seconds";
pub const COMPUTE_DURATION: &str = "diffgap_compute_duration_seconds";
pub const REQUEST_DURATION: &str = "diffgap_request_duration_seconds";
pub const REQUESTS: &str = "diffgap_requests_total";
pub const DENOISING_STEPS: &str = "diffgap_denoising_steps_total";
pub const DENOISED_ROWS: &str = "diffgap_denoised_rows_total";
pub const REQUESTS_DROPPED: &str = "diffgap_requests_dropped_total";
pub const MODEL_INFO: &str = "diffgap_model_info";
pub const OPEN_CONNECTIONS: &str = "diffgap_open_connections";
pub const CONNECTIONS_REFUSED: &str = "diffgap_connections_refused_total";
pub const IDLE_CONNECTIONS_CLOSED: &str = "diffgap_idle_connections_closed_total";
pub const ACCEPT_ERRORS: &str = "diffgap_accept_errors_total";

/// The RPC names, the values of the `rpc` label.
pub const RPCS: [&str; 7] = [
    "Bridge",
    "BridgeStream",
    "Refine",
    "Rank",
    "Embed",
    "Info",
    "Reload",
];
/// The `rpc` label of the HTTP listener's API routes: "http:" and the route's path.
pub const HTTP_ROUTES: [&str; 8] = [
    "http:/v1/embed",
    "http:/v1/bridge",
    "http:/v1/refine",
    "http:/v1/rank",
    "http:/v1/info",
    "http:/v1/embeddings",
    "http:/v1/catalogs/{catalog}/gap",
    "http:/v1/catalogs/{catalog}/entries/{id}/audio",
];
/// The values of the `reason` label of `diffgap_requests_dropped_total`.
pub const DROP_REASONS: [&str; 2] = ["deadline", "cancelled"];
/// The values of the `kind` label of `diffgap_accept_errors_total`: the errno of a resource
/// the process ran out of, `aborted` for a connection that died before it was accepted,
/// `other` for the rest.
pub const ACCEPT_ERROR_KINDS: [&str; 6] =
    ["emfile", "enfile", "enobufs", "enomem", "aborted", "other"];

/// How often the recorder's upkeep drains histogram samples when nothing scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Geometric buckets from 100 µs, doubling, up to about 105 s.
fn seconds_buckets() -> Vec<f64> {
    (0..21).map(|k| 100e-6 * f64::from(1u32 << k)).collect()
}

/// Powers of two from 1 to 65536.
fn rows_buckets() -> Vec<f64> {
    (0..17).map(|k| f64::from(1u32 << k)).collect()
}

/// The process-wide recorder: installed on the first call, shared after. `None` when another
/// recorder was installed first (metrics then go there, and this process serves none).
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds_buckets())
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_ROWS.into()), &rows_buckets())
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(EMBED_BATCH_INPUTS.into()),
                        &rows_buckets(),
                    )
                });
            let builder = match builder {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("metrics disabled: {e}");
                    return None;
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!("metrics disabled: another recorder is installed ({e})");
                return None;
            }
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("diffgap-metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!("no metrics upkeep thread ({e}); histograms drain on scrape only");
            }
            register();
            Some(handle)
        })
        .clone()
}

/// Describes every metric and registers it at zero, so that a scrape lists all of them before
/// the first request.
fn register() {
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Requests waiting for the model worker."
    );
    describe_gauge!(
        ACTIVE_ROWS,
        Unit::Count,
        "Embedding rows the model worker is denoising now."
    );
    describe_gauge!(
        INFLIGHT_REQUESTS,
        Unit::Count,
        "RPCs being handled (validating, queued or computing)."
    );
    describe_histogram!(
        BATCH_ROWS,
        Unit::Count,
        "Rows in each batch the model worker runs."
    );
    describe_histogram!(
        EMBED_BATCH_INPUTS,
        Unit::Count,
        "Raw inputs in each batch an encoder thread runs (Embed)."
    );
    describe_histogram!(
        QUEUE_DURATION,
        Unit::Seconds,
        "Time a request waited for the model worker."
    );
    describe_histogram!(COMPUTE_DURATION, Unit::Seconds, "Model time of each batch.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from receiving an RPC to answering it, by rpc."
    );
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "RPCs answered, by rpc, model and status (the gRPC code, e.g. ok, invalid_argument)."
    );
    describe_counter!(
        DENOISING_STEPS,
        Unit::Count,
        "Denoising steps run (one step of a batch counts once)."
    );
    describe_counter!(DENOISED_ROWS, Unit::Count, "Embedding rows bridged.");
    describe_counter!(
        REQUESTS_DROPPED,
        Unit::Count,
        "Queued requests dropped before computing, by reason (deadline, cancelled)."
    );
    describe_gauge!(
        MODEL_INFO,
        Unit::Count,
        "1, labelled with the served model's name, space, dim, device and the server version."
    );
    describe_gauge!(
        OPEN_CONNECTIONS,
        Unit::Count,
        "Open connections of the gRPC listener."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections closed on arrival because max_connections were open."
    );
    describe_counter!(
        IDLE_CONNECTIONS_CLOSED,
        Unit::Count,
        "Connections closed after idle_connection_timeout_secs without a call (or, during a drain, a second)."
    );
    describe_counter!(
        ACCEPT_ERRORS,
        Unit::Count,
        "Failed accepts of the gRPC listener, by kind (emfile, enfile, enobufs, enomem: paused; aborted: skipped; other)."
    );

    gauge!(QUEUE_DEPTH).set(0.0);
    gauge!(ACTIVE_ROWS).set(0.0);
    gauge!(INFLIGHT_REQUESTS).set(0.0);
    let _ = histogram!(BATCH_ROWS);
    let _ = histogram!(EMBED_BATCH_INPUTS);
    let _ = histogram!(QUEUE_DURATION);
    let _ = histogram!(COMPUTE_DURATION);
    for rpc in RPCS.into_iter().chain(HTTP_ROUTES) {
        let _ = histogram!(REQUEST_DURATION, "rpc" => rpc);
    }
    counter!(DENOISING_STEPS).increment(0);
    counter!(DENOISED_ROWS).increment(0);
    for reason in DROP_REASONS {
        counter!(REQUESTS_DROPPED, "reason" => reason).increment(0);
    }
    gauge!(OPEN_CONNECTIONS).increment(0.0);
    counter!(CONNECTIONS_REFUSED).increment(0);
    counter!(IDLE_CONNECTIONS_CLOSED).increment(0);
    for kind in ACCEPT_ERROR_KINDS {
        counter!(ACCEPT_ERRORS, "kind" => kind).increment(0);
    }
}

/// Called once the model is loaded: `diffgap_model_info` and the zero `ok` counters of every
/// RPC for this model.
pub fn model_loaded(name: &str, space: &str, dim: usize, device: &str) {
    gauge!(
        MODEL_INFO,
        "model" => name.to_owned(),
        "space" => space.to_owned(),
        "dim" => dim.to_string(),
        "device" => device.to_owned(),
        "version" => env!("CARGO_PKG_VERSION"),
    )
    .set(1.0);
    for rpc in RPCS.into_iter().chain(HTTP_ROUTES) {
        counter!(REQUESTS, "rpc" => rpc, "model" => name.to_owned(), "status" => "ok").increment(0);
    }
}

/// The gRPC code's name as a label value: `ok`, `invalid_argument`, `resource_exhausted`...
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The model label of calls that never named a served model: their body did not decode, or
/// the model they named is not served.
pub const UNKNOWN_MODEL: &str = "unknown";

/// How long before its deadline a call dropped by the server's own timer still counts as
/// expired: tonic's timer starts a little before the handler reads the same `grpc-timeout`.
const DEADLINE_SLACK: Duration = Duration::from_millis(5);

/// Counts one answered RPC: `diffgap_requests_total` and `diffgap_request_duration_seconds`.
pub fn record_rpc(rpc: &'static str, model: String, status: &'static str, took: Duration) {
    counter!(REQUESTS, "rpc" => rpc, "model" => model, "status" => status).increment(1);
    histogram!(REQUEST_DURATION, "rpc" => rpc).record(took.as_secs_f64());
}

/// The status of a call whose handler was dropped unanswered at `now`: `deadline_exceeded`
/// when its deadline had passed (the server's timer or the client ended it), else
/// `cancelled` (the client went away).
pub fn abandoned_status(deadline: Option<Instant>, now: Instant) -> &'static str {
    match deadline {
        Some(d) if now + DEADLINE_SLACK >= d => "deadline_exceeded",
        _ => "cancelled",
    }
}

/// The RPC-level metrics of one call: counts it in flight from creation, and records
/// `diffgap_requests_total` and `diffgap_request_duration_seconds` exactly once, in
/// [`RpcObservation::finish`] or, when the handler is dropped first, on drop: as
/// `deadline_exceeded` if the call's deadline had passed, else `cancelled`.
pub struct RpcObservation {
    rpc: &'static str,
    start: Instant,
    model: String,
    deadline: Option<Instant>,
    done: bool,
}

impl RpcObservation {
    pub fn start(rpc: &'static str, model: impl Into<String>) -> Self {
        gauge!(INFLIGHT_REQUESTS).increment(1.0);
        Self {
            rpc,
            start: Instant::now(),
            model: model.into(),
            deadline: None,
            done: false,
        }
    }

    /// The call's deadline (its `grpc-timeout`), which tells an expiry from a cancellation.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records the outcome; `model` replaces the label given at the start when known better.
    pub fn finish(mut self, status: &'static str, model: Option<String>) {
        if let Some(m) = model {
            self.model = m;
        }
        self.record(status);
    }

    fn record(&mut self, status: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        gauge!(INFLIGHT_REQUESTS).decrement(1.0);
        record_rpc(
            self.rpc,
            std::mem::take(&mut self.model),
            status,
            self.start.elapsed(),
        );
    }
}

impl Drop for RpcObservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let status = abandoned_status(self.deadline, Instant::now());
        // Counted, not logged one by one: an expiry or a cancellation is the client's.
        tracing::debug!(rpc = self.rpc, status, "abandoned before it was answered");
        self.record(status);
    }
}

/// Serves `GET /metrics` (the Prometheus text format) on `listener` until `shutdown`
/// resolves: a deliberately small HTTP/1.1 responder, one request per connection.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        let answered =
                            tokio::time::timeout(Duration::from_secs(10), answer(stream, &handle));
                        if let Ok(Err(e)) = answered.await {
                            tracing::debug!("metrics connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 16 * 1024 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body, kind) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            handle.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        ("GET", _) => (
            "404 Not Found",
            "not found; metrics are at /metrics\n".into(),
            "text/plain; charset=utf-8",
        ),
        _ => (
            "405 Method Not Allowed",
            "use GET /metrics\n".into(),
            "text/plain; charset=utf-8",
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Where the metrics of a server are served, once bound.
pub(crate) struct MetricsListener {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_increasing() {
        let s = seconds_buckets();
        assert!((s[0] - 1e-4).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(*s.last().unwrap() > 100.0);
        let r = rows_buckets();
        assert_eq!(r[0], 1.0);
        assert_eq!(*r.last().unwrap(), 65536.0);
    }

    #[test]
    fn abandoned_calls_past_their_deadline_are_expiries() {
        let now = Instant::now();
        let past = now.checked_sub(Duration::from_millis(1));
        assert_eq!(abandoned_status(past, now), "deadline_exceeded");
        // tonic's own timer fires a hair before the handler's reading of the same deadline.
        assert_eq!(
            abandoned_status(Some(now + Duration::from_millis(1)), now),
            "deadline_exceeded"
        );
        assert_eq!(
            abandoned_status(Some(now + Duration::from_secs(1)), now),
            "cancelled"
        );
        assert_eq!(abandoned_status(None, now), "cancelled");
    }

    #[test]
    fn a_dropped_call_is_counted_once_by_why() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let expired = RpcObservation::start("Bridge", "m")
                .with_deadline(Instant::now().checked_sub(Duration::from_millis(1)));
            drop(expired);
            let gone = RpcObservation::start("Bridge", "m")
                .with_deadline(Some(Instant::now() + Duration::from_secs(60)));
            drop(gone);
            RpcObservation::start("Bridge", "m").finish("ok", None);
        });
        let text = handle.render();
        for status in ["deadline_exceeded", "cancelled", "ok"] {
            let line = format!(
                "diffgap_requests_total{{rpc=\"Bridge\",model=\"m\",status=\"{status}\"}} 1"
            );
            assert!(text.contains(&line), "{line} not in\n{text}");
        }
        assert!(text.contains("diffgap_inflight_requests 0"), "{text}");
    }

    #[test]
    fn code_names_are_snake_case() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_name(tonic::Code::Ok), "ok");
    }
}
