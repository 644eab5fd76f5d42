//! The service's one error type, and its one mapping to gRPC status codes.

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

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        use tonic::Code;
        let code = match &e {
            ServiceError::InvalidArgument { .. } => Code::InvalidArgument,
            ServiceError::ModelNotFound { .. } | ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::Overloaded { .. } => Code::ResourceExhausted,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::DeadlineExceeded => Code::DeadlineExceeded,
            ServiceError::Internal(_)
            | ServiceError::Config(_)
            | ServiceError::Load(_)
            | ServiceError::Bind { .. }
            | ServiceError::Transport(_) => Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.to_string());
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
