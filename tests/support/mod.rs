//! Fixtures shared by the tests: synthetic paired files, small trained models, deterministic
//! vectors and a served model with its gRPC client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diffgap::data::pairs::write_named;
use diffgap::data::synthetic::{generate, SyntheticSpec};
use diffgap::device::DeviceChoice;
use diffgap::diffusion::prediction::Prediction;
use diffgap::diffusion::schedule::ScheduleKind;
use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::{self, ServeConfig, ServiceError};
use diffgap::train::TrainConfig;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The embedding dimension of [`tiny_model`].
pub const TINY_DIM: usize = 16;

pub fn synth_file(dir: &Path, name: &str, items: usize, dim: usize, seed: u64) -> PathBuf {
    synth_held_out(dir, name, (items, 0), dim, seed)
}

/// `items` synthetic pairs after the first `offset` of the space drawn by `seed`: with the
/// seed of a [`synth_file`] of `offset` items, items that file does not hold, from its space.
pub fn synth_held_out(
    dir: &Path,
    name: &str,
    (items, offset): (usize, usize),
    dim: usize,
    seed: u64,
) -> PathBuf {
    let path = dir.join(name);
    let spec = SyntheticSpec {
        items,
        captions: 2,
        dim,
        latent: 8,
        seed,
        offset,
    };
    write_named(&path, &generate(&spec)).expect("writing a synthetic file");
    path
}

pub fn train_config(pairs: &Path, out: &Path) -> TrainConfig {
    TrainConfig {
        pairs: pairs.into(),
        out: out.into(),
        modalities: Some(vec!["text".into(), "audio".into()]),
        space: "synthetic".into(),
        val_fraction: 0.15,
        val: None,
        epochs: 3,
        patience: 10,
        seed: 1,
        batch_size: 128,
        lr: 2e-3,
        weight_decay: 0.01,
        cond_dropout: 0.1,
        ema_decay: 0.99,
        contrastive_weight: 0.0,
        width: 64,
        depth: 2,
        prediction: Prediction::V,
        schedule: ScheduleKind::Cosine,
        timesteps: 1000,
        steps: 5,
        samples: 2,
        device: DeviceChoice::Cpu,
        quiet: true,
        resume: None,
    }
}

/// A tiny model trained into `dir/model` on `items` synthetic pairs of dimension `dim`.
pub fn train_tiny(dir: &Path, items: usize, dim: usize) -> PathBuf {
    let pairs = synth_file(dir, "pairs.safetensors", items, dim, 3);
    let out = dir.join("model");
    diffgap::train::train(&train_config(&pairs, &out)).expect("training the tiny model");
    out
}

/// A tiny model (300 items, [`TINY_DIM`]) trained once per test binary.
pub fn tiny_model() -> PathBuf {
    static MODEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir").keep();
            train_tiny(&dir, 300, TINY_DIM)
        })
        .clone()
}

/// A deterministic pseudo-random vector of `dim` components in [-0.5, 0.5).
pub fn vector(seed: u64, dim: usize) -> Vec<f32> {
    let state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    diffgap::loadgen::lcg_vector(state, dim)
}

/// The service tests' configuration: `model` on an ephemeral loopback port, on the CPU, at
/// most 32 items a request.
pub fn serve_config(model: &Path) -> ServeConfig {
    let mut cfg = ServeConfig::new(
        model.into(),
        "127.0.0.1:0".parse().expect("address"),
        DeviceChoice::Cpu,
    );
    cfg.max_items_per_request = 32;
    cfg
}

/// The admin token [`with_admin_token`] configures.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// `cfg` with [`ADMIN_TOKEN`] as its one admin token (written to a file kept until the
/// process ends), so that Reload is allowed with [`admin`].
pub fn with_admin_token(mut cfg: ServeConfig) -> ServeConfig {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let file = dir.join("admin-tokens");
        std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).expect("write the admin token");
        file
    });
    cfg.admin_tokens_file = file.clone();
    cfg
}

/// `message` as a request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    r
}

/// `message` as a request carrying [`ADMIN_TOKEN`] (Reload needs it).
pub fn admin<T>(message: T) -> tonic::Request<T> {
    bearer(message, ADMIN_TOKEN)
}

/// Copies the directory `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// Serves `cfg` until the process ends, on its own runtime and thread so that it outlives
/// each test's runtime: (gRPC address, metrics address).
pub fn serve_forever(cfg: ServeConfig) -> (SocketAddr, Option<SocketAddr>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let listening = service::bind(cfg).await.expect("bind");
            tx.send((listening.local_addr(), listening.metrics_addr()))
                .expect("report the addresses");
            listening
                .serve(std::future::pending())
                .await
                .expect("serve");
        });
    });
    rx.recv().expect("the server's addresses")
}

/// Binds `cfg` and serves it on a task until `stop` fires; returns once it is SERVING:
/// (address, stop, the serve task).
pub async fn serve_until_stopped(
    cfg: ServeConfig,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ServiceError>>,
) {
    let listening = service::bind(cfg).await.expect("bind");
    let addr = listening.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listening.serve(async {
        let _ = stopped.await;
    }));
    wait_serving(addr).await;
    (addr, stop, server)
}

/// Waits (at most 30 s) for the serve task of [`serve_until_stopped`] to return `Ok`.
pub async fn stops(server: tokio::task::JoinHandle<Result<(), ServiceError>>) {
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .expect("task")
        .expect("serve returns Ok");
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

pub async fn wait_serving(addr: SocketAddr) {
    let mut health = HealthClient::new(channel(addr).await);
    for _ in 0..600 {
        let r = health
            .check(HealthCheckRequest {
                service: "diffgap.v1.Diffgap".into(),
            })
            .await
            .expect("health check");
        if r.into_inner().status == ServingStatus::Serving as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not become SERVING within 60 s");
}

/// A client of the server at `addr`, once it is SERVING.
pub async fn client(addr: SocketAddr) -> DiffgapClient<Channel> {
    wait_serving(addr).await;
    DiffgapClient::new(channel(addr).await)
}

/// GET `path` from the HTTP listener at `addr` (the metrics one): (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics listener");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The Prometheus text of the metrics listener at `addr`.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    body
}

/// The sum of the samples `name{...}` whose labels include every `label="value"` of `labels`
/// (0 when there is none).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .expect("a sample value")
        })
        .sum()
}
