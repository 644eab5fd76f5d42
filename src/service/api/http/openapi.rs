//! The HTTP API's OpenAPI 3.1 document, `GET /openapi.json`: derived by utoipa from the
//! request and response types ([`super::json`], [`super::views`], [`super::openai`],
//! [`super::reply`]) and the `#[utoipa::path]` attribute of each route handler. The errors
//! and headers every framed call shares ([`super::frame`]) are described once here.
//!
//! The document needs no token: it is the same for every deployment of this version (no
//! model, catalog or limit in it; those are `GET /v1/info`'s, behind the token), and tools
//! that read it (schemathesis, client generators) fetch it before they hold credentials.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::response::Response;
use http::StatusCode;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response as Reply, ResponseBuilder};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, HeaderBuilder, OpenApi as Document, RefOr, Required};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi};

use super::reply::{self, ErrorJson, OpenAiErrorJson};
use super::{openai, playground, routes};
use crate::service::api::deadline::HTTP_TIMEOUT;

/// The name of the bearer security scheme the routes refer to.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "diffgap HTTP/JSON API",
        description = "The gRPC API's unary RPCs as JSON routes, OpenAI's embeddings route, \
            the health probes and the playground's page and routes; see docs/api.md. The field names are the proto's \
            (proto/diffgap/v1/diffgap.proto)."
    ),
    paths(
        routes::embed_route,
        routes::bridge_route,
        routes::refine_route,
        routes::rank_route,
        routes::info_route,
        openai::embeddings,
        routes::live,
        routes::ready,
        playground::root,
        playground::page,
        playground::asset,
        playground::gap_route,
        playground::audio_route,
        document,
    ),
    components(schemas(ErrorJson, OpenAiErrorJson)),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut Document) {
        let scheme = SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, scheme);
    }
}

/// The document, built once.
pub fn spec() -> &'static Document {
    static SPEC: LazyLock<Document> = LazyLock::new(ApiDoc::openapi);
    &SPEC
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub async fn document() -> Response {
    reply::plain(StatusCode::OK, spec())
}

/// A file's bytes (a catalog entry's sound).
pub enum AudioFile {}

impl utoipa::PartialSchema for AudioFile {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        let binary = SchemaFormat::KnownFormat(KnownFormat::Binary);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(binary))
            .into()
    }
}

impl utoipa::ToSchema for AudioFile {}

/// The errors of the routes that run a model (service-shaped bodies).
pub enum ServiceErrors {}
/// The errors of `GET /v1/info`, which runs none.
pub enum InfoErrors {}
/// The errors of `POST /v1/embeddings`, in OpenAI's shape.
pub enum OpenAiErrors {}

const MODEL_ERRORS: &[u16] = &[400, 401, 404, 408, 413, 429, 503];

impl IntoResponses for ServiceErrors {
    fn responses() -> BTreeMap<String, RefOr<Reply>> {
        errors("ErrorJson", MODEL_ERRORS)
    }
}

impl IntoResponses for InfoErrors {
    fn responses() -> BTreeMap<String, RefOr<Reply>> {
        errors("ErrorJson", &[400, 401, 408, 413, 503])
    }
}

impl IntoResponses for OpenAiErrors {
    fn responses() -> BTreeMap<String, RefOr<Reply>> {
        errors("OpenAiErrorJson", MODEL_ERRORS)
    }
}

/// Error responses of `statuses`, each a JSON body of the schema `body`.
fn errors(body: &str, statuses: &[u16]) -> BTreeMap<String, RefOr<Reply>> {
    statuses
        .iter()
        .map(|&status| {
            let content = Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                body,
            ))));
            let mut r = ResponseBuilder::new()
                .description(error_description(status))
                .content("application/json", content);
            r = match status {
                401 => r.header(
                    "www-authenticate",
                    header("`Bearer`: the call needs a bearer token"),
                ),
                429 => r.header(
                    "retry-after",
                    header("Seconds to wait before retrying (the admission's delay, rounded up)"),
                ),
                _ => r,
            };
            (status.to_string(), RefOr::T(r.build()))
        })
        .collect()
}

fn header(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => {
            "INVALID_ARGUMENT or FAILED_PRECONDITION: malformed JSON, unknown fields, a bad \
                value (the message names the field and the limit), a malformed header"
        }
        401 => "UNAUTHENTICATED: no bearer token, or not a known one",
        404 => "NOT_FOUND: no such model or catalog",
        408 => "DEADLINE_EXCEEDED: the x-request-timeout-ms deadline passed",
        413 => "RESOURCE_EXHAUSTED: the body is over max_message_bytes",
        429 => "RESOURCE_EXHAUSTED: the model's queue is full",
        503 => "UNAVAILABLE: the server is loading or shutting down",
        _ => "an error",
    }
}

/// The request headers every API route reads.
pub enum CallHeaders {}

impl IntoParams for CallHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let timeout = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(99_999_999));
        // Any value is taken (one that is not 1 to 128 visible ASCII characters is replaced),
        // so the schema constrains none.
        let id = ObjectBuilder::new().schema_type(Type::String);
        vec![
            ParameterBuilder::new()
                .name(HTTP_TIMEOUT)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "The call's deadline in whole milliseconds (at most 8 digits); past it the \
                     call is dropped and answered 408",
                ))
                .schema(Some(timeout))
                .build(),
            ParameterBuilder::new()
                .name("x-request-id")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "The call's id (1 to 128 visible ASCII characters), echoed in the answer \
                     and on every log line; a generated one replaces any other value",
                ))
                .schema(Some(id))
                .build(),
        ]
    }
}
