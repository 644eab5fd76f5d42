pub mod metrics;
pub mod telemetry;
pub mod threads;
