//! The service's one error type, and its one mapping to gRPC status codes and HTTP statuses
//! ([`ServiceError::code`], [`ServiceError::http_status`]).

use crate::model::ModelError;
use crate::service::echo::echo;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed; `field` names the offending field (e.g. `items[2].steps`).
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("no model named '{}'; this server serves {available:?}", echo(.name))]
    ModelNotFound {
        name: String,
        available: Vec<String>,
    },
    /// A named thing other than a model (a catalog) is not served.
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the model cannot serve it (e.g. no fusion weights).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Refused to protect the requests already taken; the client should retry after
    /// `retry_after` (sent as `grpc-retry-pushback-ms`).
    #[error("{what}; retry in {} ms", retry_after.as_millis())]
    Overloaded {
        what: String,
        retry_after: std::time::Duration,
    },
    /// The call carries no credential where one is needed (Reload without an admin token).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not make this call (Reload with a token that is not an admin token, or
    /// on a server without admin tokens).
    #[error("{0}")]
    PermissionDenied(String),
    /// Still loading, shutting down, or the model worker is gone.
    #[error("{0}")]
    Unavailable(String),
    /// An HTTP request body larger than the limit (`max_message_bytes`), refused before it
    /// was read whole.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request's deadline (its `grpc-timeout`) passed before it was answered.
    #[error("the deadline passed before the request was answered")]
    DeadlineExceeded,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("loading the model: {0}")]
    Load(#[from] ModelError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl ServiceError {
    /// The gRPC code of the error (and the `status` label of its metrics).
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            ServiceError::InvalidArgument { .. } => Code::InvalidArgument,
            ServiceError::ModelNotFound { .. } | ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Overloaded { .. } | ServiceError::PayloadTooLarge { .. } => {
                Code::ResourceExhausted
            }
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::DeadlineExceeded => Code::DeadlineExceeded,
            ServiceError::Internal(_)
            | ServiceError::Config(_)
            | ServiceError::Load(_)
            | ServiceError::Bind { .. }
            | ServiceError::Transport(_) => Code::Internal,
        }
    }

    /// The HTTP status of the error on the HTTP listener: the gRPC code's usual HTTP
    /// counterpart, but 408 for an expired deadline (the client's own timeout header) and 413
    /// for a body over the limit (both RESOURCE_EXHAUSTED and 429 otherwise).
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        use tonic::Code;
        if let ServiceError::PayloadTooLarge { .. } = self {
            return S::PAYLOAD_TOO_LARGE;
        }
        match self.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => S::BAD_REQUEST,
            Code::Unauthenticated => S::UNAUTHORIZED,
            Code::PermissionDenied => S::FORBIDDEN,
            Code::NotFound => S::NOT_FOUND,
            Code::DeadlineExceeded => S::REQUEST_TIMEOUT,
            Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
            Code::Unavailable => S::SERVICE_UNAVAILABLE,
            Code::Unimplemented => S::NOT_IMPLEMENTED,
            _ => S::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        let mut status = tonic::Status::new(e.code(), e.to_string());
        if let ServiceError::Overloaded { retry_after, .. } = &e {
            status
                .metadata_mut()
                .insert(RETRY_PUSHBACK, pushback_value(*retry_after));
        }
        status
    }
}

/// The trailer that tells a refused gRPC client when to retry (gRFC A6: clients with a retry
/// policy wait this long instead of their own backoff).
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// `retry_after` in whole milliseconds, as the trailer's value.
pub fn pushback_value(
    retry_after: std::time::Duration,
) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    tonic::metadata::MetadataValue::from(retry_after.as_millis().min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_http_status() {
        let cases = [
            (ServiceError::invalid("f", "bad"), 400),
            (ServiceError::FailedPrecondition("x".into()), 400),
            (ServiceError::Unauthenticated("x".into()), 401),
            (ServiceError::PermissionDenied("x".into()), 403),
            (ServiceError::NotFound("x".into()), 404),
            (
                ServiceError::ModelNotFound {
                    name: "m".into(),
                    available: vec![],
                },
                404,
            ),
            (ServiceError::DeadlineExceeded, 408),
            (ServiceError::PayloadTooLarge { limit: 1 }, 413),
            (
                ServiceError::Overloaded {
                    what: "full".into(),
                    retry_after: std::time::Duration::from_millis(250),
                },
                429,
            ),
            (ServiceError::Unavailable("x".into()), 503),
            (ServiceError::Internal("x".into()), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.http_status().as_u16(), status, "{e}");
        }
    }
}
