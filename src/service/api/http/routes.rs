//! The routes: each turns its JSON into the gRPC request type ([`super::json`]), calls the
//! gRPC handler's function, and shapes its response ([`super::views`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http::StatusCode;
use serde_json::json;

use super::frame::HttpApi;
use super::json::{BridgeJson, EmbedJson, Empty, RankJson, RefineJson};
use super::openai;
use super::openapi::{self, CallHeaders, InfoErrors, ServiceErrors};
use super::playground;
use super::reply::{self, Style};
use super::views::{self, HealthJson, HealthStatus};
use crate::service::api::{bridge, embed, info, rank};
use crate::service::proto;

type Api = State<Arc<HttpApi>>;

pub fn router(api: Arc<HttpApi>) -> Router {
    Router::new()
        .route("/v1/embed", post(embed_route))
        .route("/v1/bridge", post(bridge_route))
        .route("/v1/refine", post(refine_route))
        .route("/v1/rank", post(rank_route))
        .route("/v1/info", get(info_route))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/", get(playground::root))
        .route("/playground", get(playground::page))
        .route("/playground/{name}", get(playground::asset))
        .route("/v1/catalogs/{catalog}/gap", get(playground::gap_route))
        .route(
            "/v1/catalogs/{catalog}/entries/{id}/audio",
            get(playground::audio_route),
        )
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// Embed: raw inputs through the model's encoders.
#[utoipa::path(post, path = "/v1/embed", operation_id = "embed", request_body = EmbedJson,
    params(CallHeaders), security(("bearer" = [])),
    responses(
        (status = 200, description = "One embedding per input", body = views::EmbedReply),
        ServiceErrors
    ))]
pub(super) async fn embed_route(State(api): Api, request: Request) -> Response {
    let ctx = api.ctx();
    api.call(
        ("http:/v1/embed", Style::Service),
        request,
        |r: &EmbedJson| (r.inputs.len(), &r.model),
        |r, deadline| async move {
            Ok(views::embed(
                embed::embed(ctx, r.into_proto()?, deadline).await?,
            ))
        },
    )
    .await
}

/// Bridge: embeddings (or raw inputs) into another modality.
#[utoipa::path(post, path = "/v1/bridge", operation_id = "bridge", request_body = BridgeJson,
    params(CallHeaders), security(("bearer" = [])),
    responses(
        (status = 200, description = "The bridged embeddings", body = views::BridgeReply),
        ServiceErrors
    ))]
pub(super) async fn bridge_route(State(api): Api, request: Request) -> Response {
    let ctx = api.ctx();
    api.call(
        ("http:/v1/bridge", Style::Service),
        request,
        |r: &BridgeJson| (r.items.len(), &r.model),
        |r, deadline| async move {
            Ok(views::bridge(
                bridge::bridge(ctx, r.into_proto()?, deadline).await?,
            ))
        },
    )
    .await
}

/// Refine: an embedding denoised towards a partner of the other modality.
#[utoipa::path(post, path = "/v1/refine", operation_id = "refine", request_body = RefineJson,
    params(CallHeaders), security(("bearer" = [])),
    responses(
        (status = 200, description = "The refined embedding", body = views::RefineReply),
        ServiceErrors
    ))]
pub(super) async fn refine_route(State(api): Api, request: Request) -> Response {
    let ctx = api.ctx();
    api.call(
        ("http:/v1/refine", Style::Service),
        request,
        |r: &RefineJson| (1, &r.model),
        |r, deadline| async move {
            Ok(views::refine(
                bridge::refine(ctx, r.into_proto()?, deadline).await?,
            ))
        },
    )
    .await
}

/// Rank: candidates (inline or a catalog) for a query.
#[utoipa::path(post, path = "/v1/rank", operation_id = "rank", request_body = RankJson,
    params(CallHeaders), security(("bearer" = [])),
    responses(
        (status = 200, description = "The best candidates, best first", body = views::RankReply),
        ServiceErrors
    ))]
pub(super) async fn rank_route(State(api): Api, request: Request) -> Response {
    let ctx = api.ctx();
    api.call(
        ("http:/v1/rank", Style::Service),
        request,
        |r: &RankJson| (r.candidates.len(), &r.model),
        |r, deadline| async move {
            Ok(views::rank(
                rank::rank(ctx, r.into_proto()?, deadline).await?,
            ))
        },
    )
    .await
}

/// Info: the served models, device, version and limits.
#[utoipa::path(get, path = "/v1/info", operation_id = "info", params(CallHeaders),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What is served", body = proto::InfoResponse),
        InfoErrors
    ))]
pub(super) async fn info_route(State(api): Api, request: Request) -> Response {
    let ctx = api.ctx();
    api.call(
        ("http:/v1/info", Style::Service),
        request,
        |_: &Empty| (0, ""),
        |_, _| async move { Ok(views::info(info::info(ctx)?)) },
    )
    .await
}

/// Liveness: the process answers HTTP.
#[utoipa::path(get, path = "/health/live",
    responses((status = 200, description = "Live", body = HealthJson)))]
pub(super) async fn live() -> Response {
    reply::plain(StatusCode::OK, &views::health(HealthStatus::Live))
}

/// Readiness: gRPC health's status of the API (NOT_SERVING while loading, when a model
/// worker died, and from the start of the drain).
#[utoipa::path(get, path = "/health/ready", responses(
    (status = 200, description = "Serving", body = HealthJson),
    (status = 503, description = "Not serving", body = HealthJson)
))]
pub(super) async fn ready(State(api): Api) -> Response {
    if api.serving().await {
        reply::plain(StatusCode::OK, &views::health(HealthStatus::Serving))
    } else {
        let status = views::health(HealthStatus::NotServing);
        reply::plain(StatusCode::SERVICE_UNAVAILABLE, &status)
    }
}

async fn not_found(request: Request) -> Response {
    let message = format!(
        "no route {}; see docs/api.md",
        crate::service::echo::echo(request.uri().path())
    );
    reply::plain(
        StatusCode::NOT_FOUND,
        &json!({"error": {"code": "not_found", "message": message}}),
    )
}

async fn method_not_allowed(request: Request) -> Response {
    let message = format!("method {} not allowed here", request.method());
    reply::plain(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": {"code": "method_not_allowed", "message": message}}),
    )
}

#[cfg(test)]
mod tests {
    use crate::service::ops::metrics::HTTP_ROUTES;

    #[test]
    fn every_route_label_is_registered() {
        let source = include_str!("routes.rs").to_owned()
            + include_str!("openai.rs")
            + include_str!("playground.rs");
        let used: Vec<&str> = source
            .split('"')
            .filter(|s| s.starts_with("http:/v1/") && s.len() > "http:/v1/".len())
            .collect();
        assert_eq!(used.len(), HTTP_ROUTES.len(), "{used:?}");
        for label in used {
            assert!(HTTP_ROUTES.contains(&label), "{label}");
        }
    }
}
