//! A request body, read under the size limit and parsed as JSON.

use axum::body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::service::echo::echo;
use crate::service::error::ServiceError;

/// The JSON body as `T` (an empty body is `{}`). A body over `limit` bytes is refused with
/// PayloadTooLarge (413): at once when its `content-length` says so, else as soon as the
/// bytes read pass the limit, never after holding it whole.
pub async fn read_json<T: DeserializeOwned>(
    body: Body,
    headers: &http::HeaderMap,
    limit: usize,
) -> Result<T, ServiceError> {
    let too_large = ServiceError::PayloadTooLarge { limit };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large),
        Err(e) => {
            return Err(ServiceError::invalid(
                "body",
                format!("cannot be read: {}", echo(&e.to_string())),
            ))
        }
    };
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(text).map_err(|e| {
        ServiceError::invalid(
            "body",
            format!("not the route's JSON: {}", echo(&e.to_string())),
        )
    })
}
