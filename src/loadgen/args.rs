//! `diffgap loadgen`'s command line, and the checks its values need before a run starts.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::IoThreadPolicy;
use crate::device::DeviceChoice;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Closed-loop concurrency levels (empty skips the closed loop).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
    /// Connections to the server; the clients of a level take them in turn (many clients
    /// arrive over many connections).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Closed loop: a client refused with a `grpc-retry-pushback-ms` trailer waits that long
    /// (at most 10 s) before its next request, as a gRPC client with a retry policy does
    /// (gRFC A6). Without it, a refused client sends its next request at once.
    #[arg(long)]
    pub honor_pushback: bool,
    /// The server's process id: its resident memory is read (Linux /proc) after each level.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Requests per closed-loop level.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    /// Longest time per closed-loop level, in seconds (the level stops early past it).
    #[arg(long, default_value_t = 20.0)]
    pub max_seconds: f64,
    /// Start of each closed-loop level not counted, in seconds (at most a quarter of
    /// --max-seconds): the level starts with an empty batch, so the work in progress when it
    /// stops would otherwise go uncounted while none was inherited at its start (about 4 % of
    /// a 12 s level at 512 clients and 50 steps), and its first requests queue behind the
    /// initial burst. Latency percentiles are over the requests sent after it.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_seconds: f64,
    /// Open-loop rate in requests per second (0 skips the open loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Open-loop rate as a fraction of this run's best closed-loop rate (its saturation), e.g.
    /// 0.5; replaces --rate.
    #[arg(long)]
    pub open_fraction: Option<f64>,
    /// Rounds of (service at the saturating concurrency, then the in-process engine at its best
    /// batches), one after the other, for the throughput ratio: its median over the rounds is
    /// reported, so that a slow spell of a shared machine does not decide it (0: one ratio from
    /// the sweep's best level and the in-process figures). With --peer-addr: the rounds of
    /// (diffgap, peer) at each level (at least 1).
    #[arg(long, default_value_t = 3)]
    pub ratio_rounds: usize,
    /// Writes the run's figures (closed and open loop, in-process, ratios) as JSON here.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Open-loop duration in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub open_seconds: f64,
    /// DDIM step counts, cycled over requests (several give a mixed load).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    pub steps: Vec<usize>,
    /// Items per request.
    #[arg(long, default_value_t = 1)]
    pub items: usize,
    /// Samples per item.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Per-request timeout in seconds (sent as grpc-timeout too).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Model directory for the in-process comparison (the one the server serves).
    #[arg(long, default_value = "models/default")]
    pub model: PathBuf,
    /// Skip the in-process comparison.
    #[arg(long)]
    pub no_in_process: bool,
    /// Scheduling of the client's network threads: batch (they do not preempt the server's
    /// model threads when client and server share the cores, as a remote client would not) or
    /// normal.
    #[arg(long, value_enum, default_value = "batch")]
    pub io_thread_policy: IoThreadPolicy,
    /// Batch sizes (rows per call, per instance) of the in-process comparison.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub in_process_batches: Vec<usize>,
    /// Instance counts of the in-process comparison: each runs that many threads side by
    /// side, each with its own model and the intra-op threads `diffgap serve --instances`
    /// gives them; the best counts (0: the cores of this machine).
    #[arg(long, value_delimiter = ',', default_value = "1,0")]
    pub in_process_instances: Vec<usize>,
    /// CPUs the in-process engine runs on (Linux; e.g. the server's `taskset` CPUs while this
    /// client runs on others, so that the client's own work takes nothing from either side).
    /// Empty: wherever this process may run.
    #[arg(long, value_delimiter = ',')]
    pub in_process_cpus: Vec<usize>,
    /// Device of the in-process comparison (use the server's).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// A label printed with the tables (e.g. the server's batching mode).
    #[arg(long, default_value = "")]
    pub label: String,
    /// A second server of the same Bridge on the same model, e.g. the Python peer of
    /// benches/python_peer/ (scripts/bench-peer.sh): its outputs are checked against
    /// --addr's, then each --concurrency level and the open loop run on both in interleaved
    /// rounds (--ratio-rounds), and the ratios diffgap / peer (throughput, p99) are printed
    /// with their medians over rounds. Replaces the sweep and the in-process comparison.
    #[arg(long)]
    pub peer_addr: Option<String>,
    /// With --peer-addr: only the output check, no load.
    #[arg(long)]
    pub peer_check_only: bool,
    /// With --peer-addr: the largest difference of an output value the check accepts.
    #[arg(long, default_value_t = 1e-6)]
    pub peer_tolerance: f64,
}

impl LoadgenArgs {
    /// The values clap cannot check alone.
    pub fn check(&self) -> Result<()> {
        if self.connections == 0 || self.connections > 4096 {
            bail!("--connections must be in 1..=4096");
        }
        if self.steps.is_empty() || self.steps.contains(&0) {
            bail!("--steps needs step counts of at least 1");
        }
        if self.peer_check_only && self.peer_addr.is_none() {
            bail!("--peer-check-only needs --peer-addr");
        }
        if !(self.peer_tolerance.is_finite() && self.peer_tolerance >= 0.0) {
            bail!("--peer-tolerance must be a finite number of at least 0");
        }
        if let Some(f) = self.open_fraction {
            if !(f.is_finite() && f > 0.0) {
                bail!("--open-fraction must be a positive number, got {f}");
            }
        }
        Ok(())
    }
}
