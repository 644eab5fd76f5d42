//! A served model: its configuration, tokens, the server on an ephemeral port, and clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use diffgap::device::DeviceChoice;
use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::{self, ServeConfig, ServiceError};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::metrics::scrape;

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
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let file = dir.join("admin-tokens");
        std::fs::write(&file, format!("{ADMIN_TOKEN}\n")).expect("write the admin token");
        file
    });
    cfg.admin_tokens_file = file.clone();
    cfg
}

/// `cfg` with `token` as its one bearer token (written to a file kept until the process ends).
pub fn with_token(mut cfg: ServeConfig, token: &str) -> ServeConfig {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let file = dir.join("tokens");
    std::fs::write(&file, format!("{token}\n")).expect("write the token");
    cfg.auth_tokens_file = file;
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

/// Serves `cfg` until the process ends, on its own runtime and thread so that it outlives
/// each test's runtime: (gRPC address, metrics address).
pub fn serve_forever(cfg: ServeConfig) -> (SocketAddr, Option<SocketAddr>) {
    let a = serve_forever_on(cfg);
    (a.grpc, a.metrics)
}

/// Where a server listens.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub grpc: SocketAddr,
    /// The metrics listener, when `metrics_listen` is on.
    pub metrics: Option<SocketAddr>,
    /// The HTTP/JSON listener, when `http_listen` is on.
    pub http: Option<SocketAddr>,
}

/// [`serve_forever`], with every listener's address.
pub fn serve_forever_on(cfg: ServeConfig) -> Addrs {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let listening = service::bind(cfg).await.expect("bind");
            tx.send(Addrs {
                grpc: listening.local_addr(),
                metrics: listening.metrics_addr(),
                http: listening.http_addr(),
            })
            .expect("report the addresses");
            listening
                .serve(std::future::pending())
                .await
                .expect("serve");
        });
    });
    rx.recv().expect("the server's addresses")
}

/// Serves `model`, edited by `edit`, with metrics on, until the process ends (as
/// [`serve_forever`]): (gRPC address, metrics address).
pub fn serve_with_metrics(
    model: &Path,
    edit: impl FnOnce(&mut ServeConfig),
) -> (SocketAddr, SocketAddr) {
    let mut cfg = serve_config(model);
    cfg.metrics_listen = "127.0.0.1:0".into();
    edit(&mut cfg);
    let (addr, metrics) = serve_forever(cfg);
    (addr, metrics.expect("metrics are on"))
}

/// One server for a whole test binary, started by [`serve_forever`] on first use:
/// `static SERVER: SharedServer = SharedServer::new(config);`.
pub struct SharedServer {
    config: fn() -> ServeConfig,
    addrs: OnceLock<(SocketAddr, Option<SocketAddr>)>,
}

impl SharedServer {
    pub const fn new(config: fn() -> ServeConfig) -> Self {
        Self {
            config,
            addrs: OnceLock::new(),
        }
    }

    fn addrs(&self) -> (SocketAddr, Option<SocketAddr>) {
        *self.addrs.get_or_init(|| serve_forever((self.config)()))
    }

    /// The gRPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs().0
    }

    /// The metrics listener's address (its configuration must turn metrics on).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.addrs().1.expect("metrics are on")
    }

    /// A client, once the server is SERVING.
    pub async fn client(&self) -> DiffgapClient<Channel> {
        client(self.addr()).await
    }

    /// The Prometheus text of the metrics listener.
    pub async fn scrape(&self) -> String {
        scrape(self.metrics_addr()).await
    }
}

/// A server serving on a task of the test's runtime until `stop` fires (the shutdown future of
/// `serve`, as SIGTERM would).
pub struct Running {
    pub addr: SocketAddr,
    /// The metrics listener, when `metrics_listen` is on.
    pub metrics: Option<SocketAddr>,
    /// The HTTP/JSON listener, when `http_listen` is on.
    pub http: Option<SocketAddr>,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

/// Binds `cfg` and serves it on a task until its `stop` fires; returns once it is SERVING.
pub async fn start(cfg: ServeConfig) -> Running {
    let listening = service::bind(cfg).await.expect("bind");
    let (addr, metrics) = (listening.local_addr(), listening.metrics_addr());
    let http = listening.http_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listening.serve(async {
        let _ = stopped.await;
    }));
    wait_serving(addr).await;
    Running {
        addr,
        metrics,
        http,
        stop,
        server,
    }
}

/// [`start`], as (address, stop, the serve task).
pub async fn serve_until_stopped(
    cfg: ServeConfig,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ServiceError>>,
) {
    let r = start(cfg).await;
    (r.addr, r.stop, r.server)
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

/// Waits (at most 60 s) until the plaintext server at `addr` is SERVING.
pub async fn wait_serving(addr: SocketAddr) {
    wait_serving_on(channel(addr).await).await;
}

/// Waits (at most 60 s) until health on `channel` says SERVING; health needs no token.
pub async fn wait_serving_on(channel: Channel) {
    let mut health = HealthClient::new(channel);
    for _ in 0..600 {
        let r = health
            .check(HealthCheckRequest {
                service: "diffgap.v1.Diffgap".into(),
            })
            .await
            .expect("health check (it needs no token)");
        if r.into_inner().status == ServingStatus::Serving as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not become SERVING within 60 s");
}

/// A health Watch (of the whole server) on `channel`, its first status read and checked to
/// be SERVING: a call that stays open and silent while the status holds.
pub async fn serving_watch(channel: Channel) -> tonic::Streaming<HealthCheckResponse> {
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("watch").expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    watch
}

/// A client of the server at `addr`, once it is SERVING.
pub async fn client(addr: SocketAddr) -> DiffgapClient<Channel> {
    wait_serving(addr).await;
    DiffgapClient::new(channel(addr).await)
}
