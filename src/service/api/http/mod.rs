//! The HTTP/JSON listener (config `http_listen`): the gRPC API's unary RPCs as JSON routes,
//! the OpenAI-compatible `POST /v1/embeddings`, and liveness and readiness probes.
//!
//! Each route turns its JSON into the request type the gRPC handler builds (`proto::*`,
//! [`json`]) and calls the same handler function ([`crate::service::api::embed`], `bridge`,
//! `rank`, `info`) over the same [`Context`]: the same validation, limits, model worker and
//! catalogs. Every call goes through [`frame`]: the same bearer tokens, request ids, deadline
//! (header `x-request-timeout-ms`), metrics (`rpc` = "http:" and the route) and error mapping
//! ([`crate::service::error::ServiceError::http_status`]) as gRPC; a body over
//! `max_message_bytes` is refused with 413 before it is read whole.
//!
//! | route | answers |
//! |---|---|
//! | `POST /v1/embed`, `/v1/bridge`, `/v1/refine`, `/v1/rank` | the RPC's response as JSON |
//! | `GET /v1/info` | `InfoResponse` as JSON |
//! | `POST /v1/embeddings` | OpenAI's embeddings response ([`openai`]) |
//! | `GET /health/live` | 200 while the process serves HTTP |
//! | `GET /health/ready` | 200 when gRPC health says SERVING, else 503 |
//! | `GET /playground`, `GET /v1/catalogs/...` | the playground page and its routes ([`playground`]) |
//! | `GET /openapi.json` | the OpenAPI document of these routes ([`openapi`]) |
//!
//! The drain: when it begins (SIGTERM), readiness turns 503 with gRPC health, the listener
//! stops accepting, idle connections close, and [`serve`] returns once the requests in flight
//! are answered (bounded by `drain_timeout_secs`, as gRPC).

mod body;
mod frame;
mod json;
mod openai;
mod openapi;
mod playground;
mod reply;
mod routes;
mod views;

use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use frame::{HttpApi, Shared};

use crate::service::error::ServiceError;

/// The router of every route over `api`.
pub fn router(api: HttpApi) -> axum::Router {
    routes::router(Arc::new(api))
}

/// Serves `shared`'s routes on `listener` until `drain` turns true, then finishes the
/// requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    mut drain: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let app = router(HttpApi::new(shared));
    // Small JSON answers go out at once rather than waiting on the peer's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = drain.wait_for(|draining| *draining).await;
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("HTTP listener: {e}")))
}
