//! The gRPC service (`diffgap serve`): `diffgap.v1.Diffgap` (Bridge, Rank, Info) plus
//! `grpc.health.v1` and server reflection, in front of one model worker thread.
//!
//! A request flows one way through the stages, each a folder; start reading at [`api::service`].
//!
//! - [`api`]: the tonic layer: one handler file per RPC family, request ids, deadlines,
//!   security (TLS, bearer tokens, admin tokens, the health client);
//! - [`request`]: the request core: validation into checked rows, Rank planning and scoring,
//!   raw inputs, the model repository (reloads) and catalogs;
//! - [`worker`]: the model worker: handle and load balancing, instance threads, the step
//!   loop and its scheduler, request-level batching, encoders, stats;
//! - [`types`]: the plain data the stages pass on (a leaf; so are [`error`], [`config`],
//!   [`ops`] and [`proto`]);
//! - [`error`]: the error type and its one mapping to gRPC status codes;
//! - [`echo`]: client strings capped and escaped for status messages and logs;
//! - [`config`]: what `diffgap serve` takes (file, environment, flags);
//! - [`ops`]: metrics, logs, and the runtime's threads;
//! - [`proto`]: the generated gRPC code.
//!
//! The DiffGAP math itself lives in [`crate::diffusion`] and [`crate::model`].

pub mod api;
pub mod config;
pub mod echo;
pub mod error;
pub mod ops;
pub mod proto;
pub mod request;
pub mod types;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use api::security;
use ops::metrics;
use request::repository;

pub use config::{LogFormat, ServeArgs, ServeConfig};
pub use error::ServiceError;

use proto::diffgap_server::DiffgapServer;

/// Bound listeners, not yet serving: [`Listening::local_addr`] says where the gRPC one
/// listens and [`Listening::metrics_addr`] where `/metrics` is served (useful with port 0).
pub struct Listening {
    cfg: ServeConfig,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    metrics: Option<metrics::MetricsListener>,
    security: security::Security,
}

/// Checks the configuration (reading its TLS files and tokens) and binds `cfg.listen`.
pub async fn bind(cfg: ServeConfig) -> Result<Listening, ServiceError> {
    cfg.validate().map_err(ServiceError::Config)?;
    let security = security::Security::load(&cfg).map_err(ServiceError::Config)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServiceError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServiceError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let metrics = match cfg.metrics_addr().map_err(ServiceError::Config)? {
        None => None,
        Some(at) => {
            let bind_err = |source| ServiceError::Bind { addr: at, source };
            let listener = tokio::net::TcpListener::bind(at).await.map_err(bind_err)?;
            let addr = listener.local_addr().map_err(bind_err)?;
            Some(metrics::MetricsListener { listener, addr })
        }
    };
    Ok(Listening {
        cfg,
        listener,
        addr,
        metrics,
        security,
    })
}

/// Binds and serves until `shutdown` resolves (see [`Listening::serve`]).
pub async fn serve(
    cfg: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    bind(cfg).await?.serve(shutdown).await
}

impl Listening {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served; `None` when `metrics_listen` is off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// Serves until `shutdown` resolves, then drains: health turns NOT_SERVING (for "" and
    /// the service) at once, no new connection is accepted, and the requests in flight get up
    /// to `drain_timeout_secs` to finish before the server stops anyway; then the model worker
    /// is stopped (waited for within the same bound). The port answers at once: health
    /// reports NOT_SERVING (and the RPCs UNAVAILABLE) while the model loads and warms up,
    /// SERVING after. Fails if the model cannot be loaded.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError> {
        let Listening {
            cfg,
            listener,
            addr,
            metrics: metrics_listener,
            security,
        } = self;
        // Stops the metrics listener when this function returns (the sender is dropped).
        let (_metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(m) = metrics_listener {
            if let Some(handle) = metrics::install() {
                if security.auth.enabled() {
                    security::register_metrics();
                }
                tracing::info!(addr = %m.addr, "serving Prometheus metrics at /metrics");
                tokio::spawn(metrics::serve(m.listener, handle, async move {
                    let _ = metrics_stopped.await;
                }));
            }
        }
        let device = cfg.device.resolve().map_err(ServiceError::Config)?;
        let (reporter, health) = tonic_health::server::health_reporter();
        set_status(&reporter, ServingStatus::NotServing).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServiceError::Internal(format!("reflection: {e}")))?;
        // v1alpha too: grpcio-reflection's client and older tools only speak it.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServiceError::Internal(format!("reflection: {e}")))?;

        let (deaths, mut died) = tokio::sync::mpsc::unbounded_channel();
        let repo = Arc::new(repository::Repository::new(
            repository::Sources {
                model: cfg.model.clone(),
                repository: cfg.model_repository.clone(),
                catalogs: cfg.catalogs.clone(),
                device,
                worker: (&cfg).into(),
            },
            deaths,
        ));
        let reload_access = if security.admin.is_some() {
            "admin token"
        } else {
            "off (no admin token; SIGHUP only)"
        };
        let service = api::service::DiffgapService::new(
            repo.clone(),
            api::Limits {
                max_items_per_request: cfg.max_items_per_request,
                max_batch_rows: cfg.max_batch_rows,
                queue_capacity: cfg.queue_capacity,
            },
        )
        .with_admin(security.admin.clone());
        let max_message = cfg.message_limit();
        let server = DiffgapServer::new(service)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);

        let drain = Duration::from_secs(cfg.drain_timeout_secs);
        let drain_deadline = Arc::new(OnceLock::<Instant>::new());
        let draining = Arc::new(tokio::sync::Notify::new());
        let stop_reporter = reporter.clone();
        let (deadline_set, draining_set) = (drain_deadline.clone(), draining.clone());
        let shutdown = async move {
            shutdown.await;
            let _ = deadline_set.set(Instant::now() + drain);
            set_status(&stop_reporter, ServingStatus::NotServing).await;
            tracing::info!(
                drain_timeout_secs = drain.as_secs(),
                "shutting down: NOT_SERVING, no new connections; finishing the requests in flight"
            );
            draining_set.notify_one();
        };
        tracing::info!(%addr, model = %cfg.model.display(), security = %security.describe(), reload = reload_access, "listening; loading the model");
        let mut builder =
            tonic::transport::Server::builder().http2_max_header_list_size(cfg.header_list_limit());
        if let Some(tls) = security.tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| ServiceError::Config(format!("tls_cert, tls_key: {e}")))?;
        }
        let serving = builder
            .layer(security.auth)
            .layer(api::faults::ClientFaultLayer::new(cfg.max_metadata_bytes))
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(server)
            .serve_with_incoming_shutdown(incoming(listener), shutdown);
        // The server ends once its connections are done after the signal, or at the drain
        // deadline with whatever is still in flight abandoned.
        let serving = async move {
            tokio::select! {
                served = serving => served.map_err(ServiceError::from),
                () = async {
                    draining.notified().await;
                    tokio::time::sleep(drain).await;
                } => {
                    tracing::warn!(
                        drain_timeout_secs = drain.as_secs(),
                        "drain timeout: stopping with requests still in flight"
                    );
                    Ok(())
                }
            }
        };
        tokio::pin!(serving);

        let loading = repo.load();
        let result = tokio::select! {
            loaded = loading => match loaded {
                Ok(report) => {
                    if let Ok(r) = repo.get() {
                        for m in r.ordered() {
                            tracing::info!(name = %m.info.name, dim = m.info.dim, device = %m.info.device, catalogs = m.catalogs.len(), "model loaded and warmed up");
                        }
                    }
                    for c in report.catalogs.iter().filter(|c| c.error.is_some()) {
                        tracing::warn!(catalog = %c.name, "not served: {}", c.error.as_deref().unwrap_or(""));
                    }
                    set_status(&reporter, ServingStatus::Serving).await;
                    tracing::info!("serving");
                    // A worker that dies takes the service out of rotation.
                    let dead_reporter = reporter.clone();
                    tokio::spawn(async move {
                        if let Some(msg) = died.recv().await {
                            tracing::error!("{msg}; health is NOT_SERVING");
                            set_status(&dead_reporter, ServingStatus::NotServing).await;
                        }
                    });
                    #[cfg(unix)]
                    spawn_reload_on_sighup(repo.clone());
                    serving.await
                }
                Err(e) => Err(e),
            },
            // Shut down (or failed) before the model was ready.
            served = &mut serving => served,
        };
        // Once the registry is gone, each worker's loop ends with its last request; wait for
        // them, until the drain deadline (at least a second) when shutting down.
        let threads = repo.take_threads();
        repo.clear();
        let (joined_tx, joined) = tokio::sync::oneshot::channel();
        let _ = std::thread::Builder::new()
            .name("diffgap-join".into())
            .spawn(move || {
                for thread in threads {
                    let _ = thread.join();
                }
                let _ = joined_tx.send(());
            });
        let left = drain_deadline.get().map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1))
        });
        if tokio::time::timeout(left, joined).await.is_err() {
            tracing::warn!("the model thread is still busy; leaving it");
        }
        result
    }
}

/// Reloads the repository and the catalogs on every SIGHUP (see [`repository`]).
#[cfg(unix)]
fn spawn_reload_on_sighup(repo: Arc<repository::Repository>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP: {e}");
            return;
        }
    };
    // Holds the repository weakly, so that the task does not keep the workers alive.
    let repo = Arc::downgrade(&repo);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(repo) = repo.upgrade() else { return };
            tracing::info!("SIGHUP: reloading the models and catalogs");
            match repo.reload().await {
                Ok(r) => {
                    let failed = r
                        .models
                        .iter()
                        .chain(&r.catalogs)
                        .filter(|o| o.error.is_some())
                        .count();
                    tracing::info!(
                        models = r.models.len(),
                        catalogs = r.catalogs.len(),
                        failed,
                        "reloaded"
                    );
                }
                Err(e) => tracing::error!("reload failed, keeping what was served: {e}"),
            }
        }
    });
}

async fn set_status(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <DiffgapServer<api::service::DiffgapService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// The accepted connections, with `TCP_NODELAY`: a listener handed to tonic (bound by us for
/// ephemeral ports) skips the builder's socket options, and with Nagle's algorithm on, a small
/// response waits for the client's delayed ACK (40 ms on Linux) before it leaves.
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("TCP_NODELAY readable"));
    }
}
