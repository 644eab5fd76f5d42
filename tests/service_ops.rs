//! The service's operations side, end to end: Prometheus metrics, request ids and timing
//! headers, the layered configuration and the drain on shutdown. A tiny model is trained here
//! and served on ephemeral ports; the client is the generated tonic one.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use diffgap::service::{LogFormat, ServeArgs, ServeConfig};
use support::{channel, http_get, sample, serve_until_stopped, SharedServer};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// Every metric the server registers before its first request.
const METRICS: &[&str] = &[
    "diffgap_queue_depth",
    "diffgap_active_rows",
    "diffgap_inflight_requests",
    "diffgap_batch_rows",
    "diffgap_embed_batch_inputs",
    "diffgap_queue_duration_seconds",
    "diffgap_compute_duration_seconds",
    "diffgap_request_duration_seconds",
    "diffgap_requests_total",
    "diffgap_denoising_steps_total",
    "diffgap_denoised_rows_total",
    "diffgap_requests_dropped_total",
    "diffgap_model_info",
    "diffgap_open_connections",
    "diffgap_connections_refused_total",
    "diffgap_idle_connections_closed_total",
    "diffgap_accept_errors_total",
];

/// The metrics recorder is one per process: the tests that send requests (and so move the
/// counters) take turns.
static REQUESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(metrics: bool) -> ServeConfig {
    let mut cfg = support::serve_config(&support::tiny_model());
    if metrics {
        cfg.metrics_listen = "127.0.0.1:0".into();
    }
    cfg
}

/// One server with metrics for the whole binary, on its own runtime and thread so that it
/// outlives each test's runtime.
static SERVER: SharedServer = SharedServer::new(|| config(true));

fn item(seed: u64) -> BridgeItem {
    BridgeItem::new("text", "audio", support::tiny_vector(seed), Some(seed))
}

#[tokio::test]
async fn metrics_are_preregistered_and_count_each_call_once() {
    let _turn = REQUESTS.lock().await;
    let mut c = SERVER.client().await;
    let before = SERVER.scrape().await;
    for name in METRICS {
        assert!(
            before.contains(&format!("# TYPE {name} ")),
            "{name} is not listed:\n{before}"
        );
    }
    assert!(
        before.contains("diffgap_request_duration_seconds_bucket{rpc=\"Bridge\",le=\"0.0001\"}")
    );
    assert!(before.contains("diffgap_batch_rows_bucket{le=\"65536\"}"));
    let info = sample(
        &before,
        "diffgap_model_info",
        &[
            ("model", "model"),
            ("space", "synthetic"),
            ("dim", "16"),
            ("device", "cpu"),
        ],
    );
    assert_eq!(info, 1.0, "{before}");

    let ok = [("rpc", "Bridge"), ("status", "ok"), ("model", "model")];
    let invalid = [("rpc", "Bridge"), ("status", "invalid_argument")];
    let count = [("rpc", "Bridge")];
    let (ok0, invalid0, count0) = (
        sample(&before, "diffgap_requests_total", &ok),
        sample(&before, "diffgap_requests_total", &invalid),
        sample(&before, "diffgap_request_duration_seconds_count", &count),
    );
    let (n, m) = (3, 2);
    for i in 0..n {
        c.bridge(BridgeRequest::new(vec![item(i)]))
            .await
            .expect("bridge");
    }
    for _ in 0..m {
        let e = c
            .bridge(BridgeRequest::new(vec![]))
            .await
            .expect_err("no items");
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let after = SERVER.scrape().await;
    assert_eq!(
        sample(&after, "diffgap_requests_total", &ok) - ok0,
        n as f64
    );
    assert_eq!(
        sample(&after, "diffgap_requests_total", &invalid) - invalid0,
        m as f64
    );
    assert_eq!(
        sample(&after, "diffgap_request_duration_seconds_count", &count) - count0,
        (n + m) as f64
    );
    assert_eq!(sample(&after, "diffgap_inflight_requests", &[]), 0.0);

    let (status, _) = http_get(SERVER.metrics_addr(), "/other").await;
    assert!(status.contains("404"), "{status}");
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_with_timings() {
    let _turn = REQUESTS.lock().await;
    let mut c = SERVER.client().await;
    let mut req = tonic::Request::new(BridgeRequest::new(vec![item(1)]));
    req.metadata_mut()
        .insert("x-request-id", "client-id-42".parse().expect("ascii"));
    let r = c.bridge(req).await.expect("bridge");
    let md = r.metadata();
    assert_eq!(md.get("x-request-id").expect("echoed"), "client-id-42");
    for key in ["x-queue-time-ms", "x-compute-time-ms", "x-total-time-ms"] {
        let v: f64 = md
            .get(key)
            .unwrap_or_else(|| panic!("{key} is missing"))
            .to_str()
            .expect("ascii")
            .parse()
            .expect("milliseconds");
        assert!(v >= 0.0 && v.is_finite(), "{key} = {v}");
    }

    let r = c
        .bridge(BridgeRequest::new(vec![item(2)]))
        .await
        .expect("bridge");
    let id = r.metadata().get("x-request-id").expect("generated");
    let id = id.to_str().expect("ascii");
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");

    // Errors carry the id too; Info has only the total time.
    let mut req = tonic::Request::new(BridgeRequest::new(vec![]));
    req.metadata_mut()
        .insert("x-request-id", "bad-one".parse().expect("ascii"));
    let e = c.bridge(req).await.expect_err("no items");
    assert_eq!(e.metadata().get("x-request-id").expect("echoed"), "bad-one");
    let r = c.info(InfoRequest {}).await.expect("info");
    assert!(r.metadata().get("x-total-time-ms").is_some());
    assert!(r.metadata().get("x-queue-time-ms").is_none());
}

fn args() -> ServeArgs {
    ServeArgs::default()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn config_layers_file_then_env_then_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "serve.toml",
        "max_batch_rows = 100\nqueue_capacity = 7\nmax_items_per_request = 5\nlog_format = \"json\"\n",
    );
    let mut a = args();
    a.config = Some(file.clone());
    // The file alone.
    let cfg = ServeConfig::load_from(&a, env(&[]), dir.path()).expect("file");
    assert_eq!(
        (
            cfg.max_batch_rows,
            cfg.queue_capacity,
            cfg.max_items_per_request
        ),
        (100, 7, 5)
    );
    assert_eq!(cfg.log_format, LogFormat::Json);
    assert_eq!(
        cfg.drain_timeout_secs, 30,
        "untouched keys keep their defaults"
    );
    // The environment over the file; other DIFFGAP_ variables are not keys.
    let e = env(&[
        ("DIFFGAP_MAX_BATCH_ROWS", "200"),
        ("DIFFGAP_QUEUE_CAPACITY", "8"),
        ("DIFFGAP_ROOT", "/somewhere"),
        ("PATH", "/bin"),
    ]);
    let cfg = ServeConfig::load_from(&a, e.clone(), dir.path()).expect("env");
    assert_eq!(
        (
            cfg.max_batch_rows,
            cfg.queue_capacity,
            cfg.max_items_per_request
        ),
        (200, 8, 5)
    );
    // A flag over both.
    a.max_batch_rows = Some(300);
    let cfg = ServeConfig::load_from(&a, e, dir.path()).expect("flags");
    assert_eq!(
        (
            cfg.max_batch_rows,
            cfg.queue_capacity,
            cfg.max_items_per_request
        ),
        (300, 8, 5)
    );

    // DIFFGAP_CONFIG names the file; without either, ./diffgap.toml is read when present.
    let cfg = ServeConfig::load_from(
        &args(),
        env(&[("DIFFGAP_CONFIG", file.to_str().expect("utf-8"))]),
        dir.path(),
    )
    .expect("DIFFGAP_CONFIG");
    assert_eq!(cfg.max_batch_rows, 100);
    let cfg = ServeConfig::load_from(&args(), env(&[]), dir.path()).expect("no file");
    assert_eq!(cfg, ServeConfig::default());
    write(dir.path(), "diffgap.toml", "drain_timeout_secs = 5\n");
    let cfg = ServeConfig::load_from(&args(), env(&[]), dir.path()).expect("default file");
    assert_eq!(cfg.drain_timeout_secs, 5);
    // A named file must exist.
    let mut a = args();
    a.config = Some(dir.path().join("missing.toml"));
    let e = ServeConfig::load_from(&a, env(&[]), dir.path()).expect_err("missing file");
    assert!(e.contains("missing.toml"), "{e}");
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = |text: &str, e: &[(&str, &str)]| {
        let mut a = args();
        a.config = Some(write(dir.path(), "c.toml", text));
        ServeConfig::load_from(&a, env(e), dir.path())
    };
    let e = load("max_batch_row = 10\n", &[]).expect_err("a typo");
    assert!(e.contains("max_batch_row"), "{e}");
    let e = load("max_batch_rows = 0\n", &[]).expect_err("zero rows");
    assert_eq!(e, "max_batch_rows: must be in 1..=65536, got 0");
    let e = load("", &[("DIFFGAP_QUEUE_CAPACITY", "lots")]).expect_err("not a number");
    assert!(e.contains("queue_capacity"), "{e}");
    let e = load("log_format = \"xml\"\n", &[]).expect_err("unknown format");
    assert!(e.contains("log_format") && e.contains("json"), "{e}");
    let e = load("metrics_listen = \"nowhere\"\n", &[]).expect_err("not an address");
    assert!(e.starts_with("metrics_listen:"), "{e}");
    let e = load("listen = \"1.2.3.4\"\n", &[]).expect_err("no port");
    assert!(e.contains("listen"), "{e}");
    let e = load("max_message_bytes = 10\n", &[]).expect_err("too small");
    assert!(e.starts_with("max_message_bytes:"), "{e}");
    // Off is off.
    let cfg = load("metrics_listen = \"off\"\n", &[]).expect("off");
    assert_eq!(cfg.metrics_addr(), Ok(None));
    let cfg = load("", &[("DIFFGAP_METRICS_LISTEN", "")]).expect("empty");
    assert_eq!(cfg.metrics_addr(), Ok(None));
}

#[test]
fn the_example_file_documents_the_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("diffgap.example.toml");
    let text = std::fs::read_to_string(&example).expect("diffgap.example.toml");
    for key in diffgap::service::config::KEYS {
        assert!(
            text.contains(&format!("{key} = ")),
            "{key} is not in the example"
        );
    }
    let mut a = args();
    a.config = Some(example);
    let cfg = ServeConfig::load_from(&a, env(&[]), Path::new(".")).expect("the example loads");
    assert_eq!(cfg, ServeConfig::default());
}

#[test]
fn config_print_shows_the_layered_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "serve.toml",
        "max_batch_rows = 100\nqueue_capacity = 7\n",
    );
    let out = support::diffgap_command()
        .current_dir(dir.path())
        .args(["config", "print", "--config"])
        .arg(&file)
        .args(["--queue-capacity", "9", "--metrics-listen", "off"])
        .env("DIFFGAP_MAX_BATCH_ROWS", "120")
        .env("DIFFGAP_LISTEN", "0.0.0.0:7000")
        .output()
        .expect("run diffgap");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: ServeConfig = toml::from_str(&text).expect("TOML");
    assert_eq!(shown.max_batch_rows, 120);
    assert_eq!(shown.queue_capacity, 9);
    assert_eq!(shown.listen, "0.0.0.0:7000".parse().expect("address"));
    assert_eq!(shown.metrics_listen, "off");
    assert_eq!(shown.max_message_bytes, Some(shown.message_limit()));

    let out = support::diffgap_command()
        .current_dir(dir.path())
        .args(["config", "print", "--max-items-per-request", "0"])
        .output()
        .expect("run diffgap");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("max_items_per_request: must be in"), "{err}");
}

/// A request slow enough to still be running when the shutdown starts.
fn slow_request() -> BridgeRequest {
    let items = (0..8)
        .map(|i| {
            let mut it = item(i);
            it.steps = Some(1000);
            it.samples = Some(16);
            it
        })
        .collect();
    BridgeRequest::new(items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_requests_in_flight() {
    let _turn = REQUESTS.lock().await;
    let mut cfg = config(false);
    cfg.max_batch_rows = 4096;
    let (addr, stop, server) = serve_until_stopped(cfg).await;
    let mut c = DiffgapClient::new(channel(addr).await);
    let t0 = Instant::now();
    let call = tokio::spawn(async move { c.bridge(slow_request()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A health watch opened before the signal sees NOT_SERVING at once.
    let mut watch = support::serving_watch(channel(addr).await).await;
    stop.send(()).expect("stop");
    let stop_at = t0.elapsed();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a status change")
        .expect("watch")
        .expect("a status");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    let answer = call
        .await
        .expect("task")
        .expect("the call in flight succeeds");
    let took = t0.elapsed();
    assert_eq!(answer.get_ref().embeddings.len(), 8);
    assert!(
        took > stop_at,
        "the call ({took:?}) should still run when the shutdown starts ({stop_at:?})"
    );
    // An open watch stream is itself a call in flight: close it, so the drain ends when the
    // connections do rather than at drain_timeout_secs.
    drop(watch);
    support::stops(server).await;
    eprintln!("slow call {took:?}, shutdown at {stop_at:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded_by_its_timeout() {
    let _turn = REQUESTS.lock().await;
    let mut cfg = config(false);
    cfg.max_batch_rows = 4096;
    cfg.drain_timeout_secs = 0;
    let (addr, stop, server) = serve_until_stopped(cfg).await;
    let mut c = DiffgapClient::new(channel(addr).await);
    let mut req = slow_request();
    for it in &mut req.items {
        it.samples = Some(64);
    }
    let call = tokio::spawn(async move { c.bridge(req).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    stop.send(()).expect("stop");
    support::stops(server).await;
    // `serve` returns at the deadline (plus at most a second for the model thread); what was
    // in flight may still finish or fail, the process exits either way.
    let stopped_in = t.elapsed();
    let r = call.await.expect("task");
    eprintln!(
        "stopped in {stopped_in:?}; the call: {:?}",
        r.as_ref().map(|_| ())
    );
    assert!(stopped_in < Duration::from_secs(5), "{stopped_in:?}");
}
