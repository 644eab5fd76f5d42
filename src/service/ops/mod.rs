//! Operations: the Prometheus metrics ([`metrics`]), the log subscriber ([`telemetry`]) and the
//! threads of the runtime ([`threads`]).

pub mod metrics;
pub mod telemetry;
pub mod threads;
