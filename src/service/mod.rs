//! The gRPC service (`diffgap serve`): `diffgap.v1.Diffgap` (Bridge, Rank, Info) plus
//! `grpc.health.v1` and server reflection, in front of one model worker thread.
//!
//! A request flows one way through the stages, each a folder; start reading at [`api::service`].
//!
//! - [`api`]: the tonic layer: one handler file per RPC family, request ids, deadlines,
//!   security (TLS, bearer tokens, admin tokens, the health client); the HTTP/JSON listener
//!   over the same handlers (`api::http`);
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
//! This file binds ([`bind`]); `serving.rs` serves ([`Listening::serve`]) and `drain.rs`
//! drains on shutdown.
//!
//! The DiffGAP math itself lives in [`crate::diffusion`] and [`crate::model`].

pub mod api;
pub mod config;
mod drain;
pub mod echo;
pub mod error;
pub mod ops;
pub mod proto;
pub mod request;
mod serving;
pub mod types;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;

use api::security;
use ops::metrics;

pub use config::{LogFormat, ServeArgs, ServeConfig};
pub use error::ServiceError;

/// Bound listeners, not yet serving: [`Listening::local_addr`] says where the gRPC one
/// listens, [`Listening::metrics_addr`] where `/metrics` is served and
/// [`Listening::http_addr`] where the HTTP/JSON API is (useful with port 0).
pub struct Listening {
    cfg: ServeConfig,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    metrics: Option<metrics::MetricsListener>,
    /// The HTTP/JSON listener, when `http_listen` is on.
    http: Option<(tokio::net::TcpListener, SocketAddr)>,
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
    let http = match cfg.http_addr().map_err(ServiceError::Config)? {
        None => None,
        Some(at) => {
            let bind_err = |source| ServiceError::Bind { addr: at, source };
            let listener = tokio::net::TcpListener::bind(at).await.map_err(bind_err)?;
            let addr = listener.local_addr().map_err(bind_err)?;
            Some((listener, addr))
        }
    };
    Ok(Listening {
        cfg,
        listener,
        addr,
        metrics,
        http,
        security,
    })
}

/// Binds and serves until `shutdown` resolves, then drains (see [`Listening::serve`]).
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

    /// Where the HTTP/JSON API is served; `None` when `http_listen` is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.1)
    }
}
