//! The gRPC service (`diffgap serve`): `diffgap.v1.Diffgap` (Bridge, Rank, Info) plus
//! `grpc.health.v1` and server reflection, in front of one model worker thread.
//!
//! - [`config`]: what `diffgap serve` takes;
//! - [`worker`]: the thread that owns the model and batches requests;
//! - [`scheduler`]: the worker's step-level (continuous) batching, deadlines and cancellation;
//! - [`grpc`]: request validation and the RPC implementations;
//! - [`error`]: the error type and its gRPC status codes.

pub mod config;
pub mod error;
pub mod grpc;
pub mod scheduler;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

pub use config::ServeConfig;
pub use error::ServiceError;

/// The generated protobuf and gRPC code of `proto/diffgap/v1/diffgap.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("diffgap.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("diffgap_descriptor");
}

use proto::diffgap_server::DiffgapServer;

/// A bound listener, not yet serving: [`Listening::local_addr`] says where it listens (useful
/// with port 0).
pub struct Listening {
    cfg: ServeConfig,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

/// Checks the configuration and binds `cfg.listen`.
pub async fn bind(cfg: ServeConfig) -> Result<Listening, ServiceError> {
    cfg.validate().map_err(ServiceError::Config)?;
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
    Ok(Listening {
        cfg,
        listener,
        addr,
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

    /// Serves until `shutdown` resolves, then finishes the requests in flight and stops the
    /// model worker. The port answers at once: health reports NOT_SERVING (and the RPCs
    /// UNAVAILABLE) while the model loads and warms up, SERVING after, and NOT_SERVING again
    /// from the start of shutdown. Fails if the model cannot be loaded.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError> {
        let Listening {
            cfg,
            listener,
            addr,
        } = self;
        let device = cfg.device.resolve().map_err(ServiceError::Config)?;
        let (reporter, health) = tonic_health::server::health_reporter();
        set_status(&reporter, ServingStatus::NotServing).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServiceError::Internal(format!("reflection: {e}")))?;

        let worker = worker::ModelWorker::spawn_with(cfg.model.clone(), device, (&cfg).into())?;
        let model = Arc::new(OnceLock::new());
        let service = grpc::DiffgapService::new(
            worker.handle,
            model.clone(),
            grpc::Limits {
                max_items_per_request: cfg.max_items_per_request,
                max_batch_rows: cfg.max_batch_rows,
                queue_capacity: cfg.queue_capacity,
            },
        );
        // Room for the largest request (a Rank with every candidate) plus framing.
        let max_message = (cfg.max_items_per_request + 1)
            .saturating_mul(64 * 1024)
            .max(4 * 1024 * 1024);
        let server = DiffgapServer::new(service)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);

        let stop_reporter = reporter.clone();
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing the requests in flight");
            set_status(&stop_reporter, ServingStatus::NotServing).await;
        };
        tracing::info!(%addr, model = %cfg.model.display(), "listening; loading the model");
        let serving = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(reflection)
            .add_service(server)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown);
        tokio::pin!(serving);

        let mut ready = worker.ready;
        let result = tokio::select! {
            loaded = &mut ready => match loaded {
                Ok(Ok(info)) => {
                    tracing::info!(name = %info.name, dim = info.dim, device = %info.device, "model loaded and warmed up; serving");
                    let _ = model.set(info);
                    set_status(&reporter, ServingStatus::Serving).await;
                    serving.await.map_err(ServiceError::from)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ServiceError::Internal("the model thread ended while loading".into())),
            },
            // Shut down (or failed) before the model was ready.
            served = &mut serving => served.map_err(ServiceError::from),
        };
        // Every handle is gone with the server, so the worker's loop ends; wait for it.
        let thread = worker.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        result
    }
}

async fn set_status(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <DiffgapServer<grpc::DiffgapService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
