//! Operations: the Prometheus metrics ([`metrics`]), the log subscriber ([`telemetry`]), the
//! threads of the runtime ([`threads`]) and freed memory given back ([`memory`]).

pub mod memory;
pub mod metrics;
pub mod telemetry;
pub mod threads;
