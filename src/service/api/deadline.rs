//! A request's deadline: from its `grpc-timeout` metadata on the gRPC listener, from its
//! `x-request-timeout-ms` header on the HTTP one.

use std::time::{Duration, Instant};

use crate::service::error::ServiceError;

/// The HTTP request header of a call's timeout: decimal milliseconds (at most 8 digits, as
/// `grpc-timeout`), counted from when the server reads the request.
pub const HTTP_TIMEOUT: &str = "x-request-timeout-ms";

/// Parses a gRPC `grpc-timeout` value (`TimeoutValue TimeoutUnit`: at most 8 ASCII digits and
/// one of `H M S m u n`), e.g. `100m`, `5S`, `250u`, `1H`. None when malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline a request's `grpc-timeout` metadata asks for, counted from now.
pub fn deadline_from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    Instant::now().checked_add(parse_grpc_timeout(value)?)
}

/// The deadline an HTTP request's [`HTTP_TIMEOUT`] header asks for, counted from now;
/// INVALID_ARGUMENT when the header is not a number of milliseconds.
pub fn deadline_from_headers(headers: &http::HeaderMap) -> Result<Option<Instant>, ServiceError> {
    let Some(value) = headers.get(HTTP_TIMEOUT) else {
        return Ok(None);
    };
    let ms = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| (1..=8).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ServiceError::invalid(
                HTTP_TIMEOUT,
                "must be a whole number of milliseconds, at most 8 digits",
            )
        })?;
    Ok(Instant::now().checked_add(Duration::from_millis(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "10", "10x", "-1S", "123456789S", "1.5S", "S5"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_timeout_headers_parse_or_are_refused() {
        let mut h = http::HeaderMap::new();
        assert_eq!(deadline_from_headers(&h).expect("no header"), None);
        h.insert(HTTP_TIMEOUT, http::HeaderValue::from_static("1500"));
        let d = deadline_from_headers(&h).expect("ok").expect("a deadline");
        let left = d.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_millis(1000) && left <= Duration::from_millis(1500));
        for bad in ["", "1.5", "-1", "1s", "123456789"] {
            h.insert(HTTP_TIMEOUT, http::HeaderValue::from_static(bad));
            assert!(deadline_from_headers(&h).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeout_metadata_becomes_a_deadline() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(deadline_from_metadata(&md), None);
        md.insert("grpc-timeout", "2S".parse().expect("ascii"));
        let d = deadline_from_metadata(&md).expect("a deadline");
        let left = d.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_millis(1500) && left <= Duration::from_secs(2));
    }
}
