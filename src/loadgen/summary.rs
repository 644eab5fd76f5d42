//! What a run measured, as written to `--summary-json` and read back by
//! `diffgap loadgen-summary` (the service benchmark's goal tables).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One load level, as printed and as written to `--summary-json`. Latencies and rates are of
/// the successful calls; `errors` counts every failure, `refused` those answered
/// RESOURCE_EXHAUSTED and `other_errors` the rest by code.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LevelSummary {
    pub load: String,
    pub ok: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub items_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub refused: u64,
    pub refusal_p50_ms: Option<f64>,
    pub refusal_p99_ms: Option<f64>,
    pub other_errors: BTreeMap<String, u64>,
    /// The server's resident memory at the end of the level (`--server-pid`).
    pub server_rss_mib: Option<f64>,
}

/// The in-process engine on one step count: its best batch size and what it took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InProcessSteps {
    pub steps: usize,
    /// The batch size with the best items/s.
    pub batch: usize,
    pub items_per_s: f64,
    /// Median seconds of one call at that batch size: the single-batch compute time.
    pub batch_seconds: f64,
    /// Median seconds of one call of one item (when batch 1 was measured).
    pub one_item_seconds: Option<f64>,
}

/// A layout's mix throughput.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayoutMix {
    pub instances: usize,
    pub threads: usize,
    pub mix_items_per_s: f64,
}

/// The in-process engine at its best layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InProcess {
    pub device: String,
    /// The CPUs it was pinned to (`--in-process-cpus`), empty when not pinned.
    pub cpus: Vec<usize>,
    /// The best layout: instances side by side, intra-op threads each.
    pub instances: usize,
    pub threads: usize,
    pub per_steps: Vec<InProcessSteps>,
    /// Items/s of the cycled mix: each step count equally often, each at its best batch.
    pub mix_items_per_s: f64,
    /// Every layout compared.
    pub layouts: Vec<LayoutMix>,
}

impl InProcess {
    /// The single-batch compute time of the mix: one call at the best batch size of the
    /// longest step count (the longest batch a request may have to wait for, and take).
    pub fn longest_batch_seconds(&self) -> Option<f64> {
        self.per_steps
            .iter()
            .max_by_key(|s| s.steps)
            .map(|s| s.batch_seconds)
    }
}

/// One round of the throughput ratio.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RatioRound {
    pub service_items_per_s: f64,
    pub in_process_items_per_s: f64,
    pub ratio: f64,
    /// Cores this load generator itself used during the service's part of the round (user +
    /// system CPU time over wall time): on loopback the client takes them from the server.
    /// None where the OS does not tell.
    pub client_cores: Option<f64>,
}

/// Everything a run measured, with the goal ratios of the service benchmark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub label: String,
    pub steps: Vec<usize>,
    pub items: usize,
    pub samples: usize,
    pub closed: Vec<LevelSummary>,
    /// The open loop's rate (req/s) and what it got.
    pub open_rate: Option<f64>,
    pub open: Option<LevelSummary>,
    /// Best closed-loop items/s (the service's saturation throughput).
    pub saturation_items_per_s: f64,
    pub in_process: Option<InProcess>,
    /// The interleaved rounds: (service items/s, in-process mix items/s, ratio) each.
    pub ratio_rounds: Vec<RatioRound>,
    /// The median of the rounds' ratios, or with no rounds saturation_items_per_s /
    /// in_process.mix_items_per_s.
    pub throughput_ratio: Option<f64>,
    /// Open-loop p99 / (2 x the single-batch compute time of the longest step count).
    pub p99_over_twice_batch: Option<f64>,
}

impl Summary {
    /// A summary written by `diffgap loadgen --summary-json`.
    pub fn load(path: &Path) -> Result<Summary> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a `diffgap loadgen --summary-json` summary",
                path.display()
            )
        })
    }
}
