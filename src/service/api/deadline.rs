//! A request's deadline, from its `grpc-timeout` metadata.

use std::time::{Duration, Instant};

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
    fn grpc_timeout_metadata_becomes_a_deadline() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(deadline_from_metadata(&md), None);
        md.insert("grpc-timeout", "2S".parse().expect("ascii"));
        let d = deadline_from_metadata(&md).expect("a deadline");
        let left = d.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_millis(1500) && left <= Duration::from_secs(2));
    }
}
