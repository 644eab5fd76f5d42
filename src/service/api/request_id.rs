//! Request ids and the timing headers of a response.
//!
//! A request's id is its `x-request-id` metadata when that is a sane token (1 to 128 visible
//! ASCII characters), else a fresh random 64-bit hex id. It is a field of the RPC's span (so
//! every log line of the request carries it, on the model thread too) and is echoed in the
//! response's metadata, on errors as well.

use std::time::{Duration, Instant};

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::service::proto;

pub const REQUEST_ID: &str = "x-request-id";
pub const QUEUE_TIME: &str = "x-queue-time-ms";
pub const COMPUTE_TIME: &str = "x-compute-time-ms";
pub const TOTAL_TIME: &str = "x-total-time-ms";

/// The id the client sent, or a new one.
pub fn from_metadata(md: &MetadataMap) -> String {
    keep_or_generate(md.get(REQUEST_ID).and_then(|v| v.to_str().ok()))
}

/// The id an HTTP request's `x-request-id` header holds, or a new one (as [`from_metadata`]).
pub fn from_headers(headers: &http::HeaderMap) -> String {
    keep_or_generate(headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()))
}

fn keep_or_generate(sent: Option<&str>) -> String {
    sent.filter(|s| is_token(s))
        .map_or_else(generate, str::to_owned)
}

fn is_token(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A random 16-hex-digit id.
pub fn generate() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Sets `x-request-id` on `md`.
pub fn set_id(md: &mut MetadataMap, id: &str) {
    if let Ok(v) = MetadataValue::try_from(id) {
        md.insert(REQUEST_ID, v);
    }
}

/// Sets the timing headers (milliseconds, three decimals) on `md`.
pub fn set_timings(
    md: &mut MetadataMap,
    queue: Option<Duration>,
    compute: Option<Duration>,
    total: Duration,
) {
    for (key, value) in timing_values(queue, compute, total) {
        if let Ok(v) = MetadataValue::try_from(value.as_str()) {
            md.insert(key, v);
        }
    }
}

/// Sets `x-request-id` and the timing headers on an HTTP response's headers.
pub fn set_http_headers(
    headers: &mut http::HeaderMap,
    id: &str,
    timings: Option<(Duration, Duration)>,
    total: Duration,
) {
    if let Ok(v) = http::HeaderValue::from_str(id) {
        headers.insert(REQUEST_ID, v);
    }
    let (queue, compute) = timings.unzip();
    for (key, value) in timing_values(queue, compute, total) {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            headers.insert(key, v);
        }
    }
}

/// The timing headers that apply, with their values.
fn timing_values(
    queue: Option<Duration>,
    compute: Option<Duration>,
    total: Duration,
) -> Vec<(&'static str, String)> {
    [
        (QUEUE_TIME, queue),
        (COMPUTE_TIME, compute),
        (TOTAL_TIME, Some(total)),
    ]
    .into_iter()
    .filter_map(|(key, d)| d.map(|d| (key, ms(d))))
    .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Responses that report where their time went.
pub trait Timed {
    /// (queue, compute), when the request reached the model worker.
    fn timings(&self) -> Option<(Duration, Duration)>;
}

fn of(t: Option<&proto::Timings>) -> Option<(Duration, Duration)> {
    t.map(|t| {
        (
            Duration::from_nanos(t.queue_ns),
            Duration::from_nanos(t.compute_ns),
        )
    })
}

impl Timed for proto::BridgeResponse {
    fn timings(&self) -> Option<(Duration, Duration)> {
        of(self.timings.as_ref())
    }
}

impl Timed for proto::RankResponse {
    fn timings(&self) -> Option<(Duration, Duration)> {
        of(self.timings.as_ref())
    }
}

impl Timed for proto::RefineResponse {
    fn timings(&self) -> Option<(Duration, Duration)> {
        of(self.timings.as_ref())
    }
}

impl Timed for proto::EmbedResponse {
    fn timings(&self) -> Option<(Duration, Duration)> {
        of(self.timings.as_ref())
    }
}

impl Timed for proto::ReloadResponse {
    fn timings(&self) -> Option<(Duration, Duration)> {
        None
    }
}

impl Timed for proto::InfoResponse {
    fn timings(&self) -> Option<(Duration, Duration)> {
        None
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
/// The `timings` field of a response: the worker's queue and compute, and the total since
/// `t0`.
pub fn timings(queue: Duration, compute: Duration, t0: Instant) -> proto::Timings {
    proto::Timings {
        queue_ns: nanos(queue),
        compute_ns: nanos(compute),
        total_ns: nanos(t0.elapsed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_id_and_replaces_others() {
        let mut md = MetadataMap::new();
        md.insert(REQUEST_ID, MetadataValue::from_static("abc-123"));
        assert_eq!(from_metadata(&md), "abc-123");
        md.insert(REQUEST_ID, MetadataValue::from_static("has space"));
        let id = from_metadata(&md);
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(
            from_metadata(&MetadataMap::new()),
            from_metadata(&MetadataMap::new())
        );
    }
}
