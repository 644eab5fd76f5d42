//! [`Listening::serve`]: the services behind the bound listener, the model's load, health's
//! transitions, SIGHUP reloads, and the drain ([`super::drain`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::server::NamedService;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::api::listener::{self, ConnectionLimits};
use super::api::{self, security};
use super::drain::{set_status, Drain};
use super::error::ServiceError;
use super::ops::metrics;
use super::proto::{self, diffgap_server::DiffgapServer};
use super::request::repository;
use super::{Listening, ServeConfig};

/// The name health reports the service under.
const SERVICE: &str = <DiffgapServer<api::service::DiffgapService> as NamedService>::NAME;

impl Listening {
    /// Serves until `shutdown` resolves, then drains ([`super::drain`]): health turns
    /// NOT_SERVING and its Watch streams end, every connection gets a GOAWAY, no new one is
    /// accepted, and `serve` returns as soon as the calls in flight are answered (at most
    /// `drain_timeout_secs` later), once the model worker has stopped (waited for within the
    /// same bound). The port answers at once: health reports NOT_SERVING (and the RPCs
    /// UNAVAILABLE) while the model loads and warms up, SERVING after. Fails if the model
    /// cannot be loaded.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError> {
        let Listening {
            cfg,
            listener,
            addr,
            metrics: metrics_listener,
            http,
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
        let reporter = HealthReporter::new();
        set_status(&reporter, SERVICE, ServingStatus::NotServing).await;
        let drain = Drain::new(Duration::from_secs(cfg.drain_timeout_secs));

        let (deaths, died) = tokio::sync::mpsc::unbounded_channel();
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
        tracing::info!(%addr, model = %cfg.model.display(), security = %security.describe(), reload = reload_access, "listening; loading the model");
        let incoming =
            listener::Incoming::new(listener, ConnectionLimits::of(&cfg), drain.subscribe());
        let stop = drain.begins_after(shutdown, reporter.clone(), SERVICE);
        let health = api::health::server(reporter.clone(), drain.subscribe());
        let ctx = api::context::Context {
            repo: repo.clone(),
            limits: api::Limits {
                max_items_per_request: cfg.max_items_per_request,
                max_batch_rows: cfg.max_batch_rows,
                queue_capacity: cfg.queue_capacity,
            },
        };
        let http_shared = api::http::Shared {
            ctx: ctx.clone(),
            auth: security.auth.clone(),
            body_limit: cfg.message_limit(),
            health: reporter.clone(),
            service: SERVICE,
        };
        let http_serving = http_server(http, http_shared, drain.subscribe());
        let grpc_serving = grpc_server(&cfg, security, ctx, health, (incoming, stop))?;
        let serving = drain.bounded(async move {
            let grpc = async { grpc_serving.await.map_err(ServiceError::from) };
            tokio::try_join!(grpc, http_serving).map(|_| ())
        });
        tokio::pin!(serving);

        let result = tokio::select! {
            loaded = repo.load() => match loaded {
                Ok(report) => {
                    on_loaded(&repo, &report, &reporter, died).await;
                    serving.await
                }
                Err(e) => Err(e),
            },
            // Shut down (or failed) before the model was ready.
            served = &mut serving => served,
        };
        // Once the registry is gone, each worker's loop ends with its last request.
        let threads = repo.take_threads();
        repo.clear();
        drain.join(threads).await;
        result
    }
}

/// The HTTP/JSON listener, when on, until the drain (see [`api::http`]).
async fn http_server(
    http: Option<(tokio::net::TcpListener, std::net::SocketAddr)>,
    shared: api::http::Shared,
    drain: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let Some((listener, addr)) = http else {
        return Ok(());
    };
    tracing::info!(%addr, "serving the HTTP/JSON API");
    api::http::serve(listener, shared, drain).await
}

/// The gRPC server: the services behind their layers, on `incoming` until `stop`.
fn grpc_server(
    cfg: &ServeConfig,
    security: security::Security,
    ctx: api::context::Context,
    health: HealthServer<api::health::DrainingHealth>,
    (incoming, stop): (listener::Incoming, impl Future<Output = ()> + Send),
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send, ServiceError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_err = |e| ServiceError::Internal(format!("reflection: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_err)?;
    // v1alpha too: grpcio-reflection's client and older tools only speak it.
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_err)?;
    let service = api::service::DiffgapService::of(ctx).with_admin(security.admin.clone());
    let max_message = cfg.message_limit();
    let diffgap = DiffgapServer::new(service)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let mut builder = tonic::transport::Server::builder()
        .http2_max_header_list_size(cfg.header_list_limit())
        .max_concurrent_streams(
            (cfg.max_concurrent_streams > 0).then_some(cfg.max_concurrent_streams),
        )
        .http2_keepalive_interval(Some(listener::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(listener::KEEPALIVE_TIMEOUT));
    if let Some(tls) = security.tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServiceError::Config(format!("tls_cert, tls_key: {e}")))?;
    }
    Ok(builder
        // Outermost, so that every call counts as open on its connection, refused ones too.
        .layer(listener::OpenStreamsLayer)
        .layer(security.auth)
        .layer(api::faults::ClientFaultLayer::new(cfg.max_metadata_bytes))
        // Inside the fault layer, which counts its refusals as it counts every answer given
        // before a handler.
        .layer(api::admission::AdmissionLayer::new(
            cfg.max_concurrent_requests,
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(diffgap)
        .serve_with_incoming_shutdown(incoming, stop))
}

/// The model is loaded: logs it, turns health SERVING, and takes the service out of rotation
/// if a worker dies later.
async fn on_loaded(
    repo: &Arc<repository::Repository>,
    report: &repository::ReloadReport,
    reporter: &HealthReporter,
    mut died: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    if let Ok(r) = repo.get() {
        for m in r.ordered() {
            tracing::info!(name = %m.info.name, dim = m.info.dim, device = %m.info.device, catalogs = m.catalogs.len(), "model loaded and warmed up");
        }
    }
    for c in report.catalogs.iter().filter(|c| c.error.is_some()) {
        tracing::warn!(catalog = %c.name, "not served: {}", c.error.as_deref().unwrap_or(""));
    }
    set_status(reporter, SERVICE, ServingStatus::Serving).await;
    tracing::info!("serving");
    let dead_reporter = reporter.clone();
    tokio::spawn(async move {
        if let Some(msg) = died.recv().await {
            tracing::error!("{msg}; health is NOT_SERVING");
            set_status(&dead_reporter, SERVICE, ServingStatus::NotServing).await;
        }
    });
    #[cfg(unix)]
    spawn_reload_on_sighup(repo);
}

/// Reloads the repository and the catalogs on every SIGHUP (see [`repository`]).
#[cfg(unix)]
fn spawn_reload_on_sighup(repo: &Arc<repository::Repository>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP: {e}");
            return;
        }
    };
    // Holds the repository weakly, so that the task does not keep the workers alive.
    let repo = Arc::downgrade(repo);
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
