//! HTTP answers: JSON bodies with the request id and timing headers, and errors in the
//! service's shape or in OpenAI's. The status comes from
//! [`ServiceError::http_status`], the one mapping next to the gRPC one.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::api::request_id;
use crate::service::error::ServiceError;
use crate::service::ops::metrics::code_name;

/// An error in the service's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorJson {
    error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The gRPC code's name, as the metrics' `status` label.
    #[schema(example = "invalid_argument")]
    code: String,
    /// What went wrong, naming the field and the limit.
    message: String,
}

impl ErrorJson {
    pub fn new(code: &str, message: String) -> Self {
        let code = code.to_owned();
        Self {
            error: ErrorDetail { code, message },
        }
    }
}

/// An error in OpenAI's shape (`POST /v1/embeddings`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorJson {
    error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    message: String,
    /// "invalid_request_error", "rate_limit_error" or "server_error".
    #[serde(rename = "type")]
    kind: &'static str,
    /// The offending request field, when one is to blame.
    param: Option<String>,
    /// OpenAI's code ("model_not_found", "invalid_api_key", "rate_limit_exceeded") or the
    /// gRPC code's name.
    code: &'static str,
}

/// How a route's errors look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `{"error": {"code": "invalid_argument", "message": "..."}}`, the code being the gRPC
    /// code's name (as the metrics' `status` label).
    Service,
    /// OpenAI's `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
}

/// A 200 answer of `value`, with the id and timing headers.
pub fn json(
    id: &str,
    timings: Option<(Duration, Duration)>,
    total: Duration,
    value: &impl Serialize,
) -> Response {
    let mut r = body(StatusCode::OK, value);
    request_id::set_http_headers(r.headers_mut(), id, timings, total);
    r
}

/// The answer to a call that failed with `e`.
pub fn error(style: Style, id: &str, total: Duration, e: &ServiceError) -> Response {
    let status = e.http_status();
    let message = e.to_string();
    let mut r = match style {
        Style::Service => body(status, &ErrorJson::new(code_name(e.code()), message)),
        Style::OpenAi => {
            let (kind, code) = openai_kind(e, status);
            let param = match e {
                ServiceError::InvalidArgument { field, .. } => Some(field.clone()),
                ServiceError::ModelNotFound { .. } => Some("model".to_owned()),
                _ => None,
            };
            let error = OpenAiErrorDetail {
                message,
                kind,
                param,
                code,
            };
            body(status, &OpenAiErrorJson { error })
        }
    };
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let ServiceError::Overloaded { retry_after, .. } = e {
        // HTTP's Retry-After is in whole seconds: the admission's delay, rounded up.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    request_id::set_http_headers(r.headers_mut(), id, None, total);
    r
}

/// A JSON answer without the per-call headers (health, unknown routes).
pub fn plain(status: StatusCode, value: &impl Serialize) -> Response {
    body(status, value)
}

/// OpenAI's error `type` and `code` for `e`.
fn openai_kind(e: &ServiceError, status: StatusCode) -> (&'static str, &'static str) {
    match e {
        ServiceError::ModelNotFound { .. } => ("invalid_request_error", "model_not_found"),
        ServiceError::Unauthenticated(_) => ("invalid_request_error", "invalid_api_key"),
        ServiceError::Overloaded { .. } => ("rate_limit_error", "rate_limit_exceeded"),
        _ if status.is_server_error() => ("server_error", code_name(e.code())),
        _ => ("invalid_request_error", code_name(e.code())),
    }
}

fn body(status: StatusCode, value: &impl Serialize) -> Response {
    let (status, bytes) = match serde_json::to_vec(value) {
        Ok(b) => (status, b),
        Err(e) => {
            tracing::error!("rendering a JSON answer: {e}");
            let fallback = br#"{"error":{"code":"internal","message":"cannot render the answer"}}"#;
            (StatusCode::INTERNAL_SERVER_ERROR, fallback.to_vec())
        }
    };
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
