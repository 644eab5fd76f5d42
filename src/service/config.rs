//! What `diffgap serve` takes.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::device::DeviceChoice;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Model directory written by `diffgap train`.
    #[arg(long, env = "DIFFGAP_MODEL", default_value = "models/default")]
    pub model: PathBuf,
    /// Address to listen on; port 0 picks a free port (logged at startup).
    #[arg(long, env = "DIFFGAP_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// auto, cpu or cuda:N.
    #[arg(long, env = "DIFFGAP_DEVICE", default_value = "auto")]
    pub device: DeviceChoice,
    /// Most embedding rows the model worker batches into one pass (requests waiting together
    /// are merged up to this many rows).
    #[arg(long, env = "DIFFGAP_MAX_BATCH_ROWS", default_value_t = 256)]
    pub max_batch_rows: usize,
    /// Requests that may wait for the model worker; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "DIFFGAP_QUEUE_CAPACITY", default_value_t = 64)]
    pub queue_capacity: usize,
    /// Most items of a Bridge request and most candidates of a Rank request.
    #[arg(long, env = "DIFFGAP_MAX_ITEMS_PER_REQUEST", default_value_t = 64)]
    pub max_items_per_request: usize,
    /// step: requests join and leave the running batch at every denoising step (continuous
    /// batching); request: waiting requests run their whole sampling loops together.
    #[arg(long, env = "DIFFGAP_BATCHING", value_enum, default_value_t = super::scheduler::Batching::Step)]
    pub batching: super::scheduler::Batching,
    /// When the model worker is idle, how long (ms) the first arriving request may wait for
    /// others before the first step; 0 starts at once.
    #[arg(long, env = "DIFFGAP_MAX_BATCH_WAIT_MS", default_value_t = 0)]
    pub max_batch_wait_ms: u64,
}

impl ServeConfig {
    /// A configuration with the CLI defaults for `model` on `listen`.
    pub fn new(model: PathBuf, listen: SocketAddr, device: DeviceChoice) -> Self {
        Self {
            model,
            listen,
            device,
            max_batch_rows: 256,
            queue_capacity: 64,
            max_items_per_request: 64,
            batching: super::scheduler::Batching::Step,
            max_batch_wait_ms: 0,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("--max-batch-rows", self.max_batch_rows),
            ("--queue-capacity", self.queue_capacity),
            ("--max-items-per-request", self.max_items_per_request),
        ] {
            if v == 0 || v > u32::MAX as usize {
                return Err(format!("{name} must be in 1..={}, got {v}", u32::MAX));
            }
        }
        Ok(())
    }
}
