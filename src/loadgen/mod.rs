//! `diffgap loadgen`: load against a running `diffgap serve`, with the generated tonic client.
//!
//! - closed loop: `c` clients each send their next request as soon as the last one is
//!   answered, for each concurrency `c` of a sweep;
//! - open loop: requests sent at a fixed rate whatever the answers (latency counted from the
//!   scheduled send time, so a slow server cannot hide its queueing);
//! - in the same run, the in-process engine's best batched throughput on the same step mix
//!   (the model loaded here and `DiffgapModel::bridge` timed over batch sizes and over
//!   layouts: one instance on every core, or several single-threaded instances side by side,
//!   as `diffgap serve --instances` runs them), so that the service's efficiency can be
//!   printed as a ratio against the engine at its best.
//!
//! Step counts are cycled over requests (`--steps 1,10,50` gives a mixed load).
//!
//! - [`args`]: the command line;
//! - [`load`]: the requests and the connection to the server;
//! - [`loops`]: the closed and open loops;
//! - [`outcome`]: how calls failed (refused apart from the rest), and the server's memory;
//! - [`sweep`]: the service side of a run (the concurrency sweep, then the open loop);
//! - [`in_process`]: the in-process engine over batch sizes and layouts;
//! - [`ratios`]: the goal ratios (service over in-process, p99 over the batch time);
//! - [`summary`]: what a run measured (`--summary-json`);
//! - [`overload`]: the overload goals of a saturating and an overloading level;
//! - [`report`]: the tables, and `diffgap loadgen-summary`'s goal tables of two runs;
//! - [`soak`]: `diffgap soak`, mixed valid and invalid traffic and reloads, the server's memory;
//! - [`peer`]: `--peer-addr`, diffgap against a peer server of the same Bridge (the Python
//!   peer) in interleaved rounds, after [`peer_check`] compared their outputs; the figures in
//!   [`peer_report`].

mod args;
pub mod audio;
mod in_process;
pub mod load;
mod loops;
mod outcome;
mod overload;
mod peer;
mod peer_check;
mod peer_report;
mod ratios;
pub mod report;
pub mod soak;
pub mod summary;
mod sweep;

use anyhow::{Context, Result};

pub use args::LoadgenArgs;
pub use load::lcg_vector;
pub use loops::LevelResult;
pub use summary::{InProcess, InProcessSteps, LayoutMix, LevelSummary, RatioRound, Summary};

// The service items the load generator uses, imported here only (the submodules take them
// from here).
use crate::service::ops::threads::{self, IoThreadPolicy};
use crate::service::proto::diffgap_client::DiffgapClient;
use crate::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use crate::service::worker::WorkerOptions;

pub fn run(args: &LoadgenArgs) -> Result<()> {
    args.check()?;
    if let Some(peer_addr) = &args.peer_addr {
        return peer::run(args, peer_addr);
    }
    let rt = threads::runtime(args.io_thread_policy).context("starting the async runtime")?;
    let driven = rt.block_on(sweep::drive(args))?;
    let saturation = driven
        .closed
        .iter()
        .map(|r| r.items_per_s)
        .fold(0.0, f64::max);
    let in_process = match args.no_in_process {
        true => None,
        false => {
            let p = in_process::best(args, &driven.target)?;
            println!(
                "  best: {} instance(s) x {} thread(s), cycled mix of steps {:?}: {:.0} items/s",
                p.instances, p.threads, args.steps, p.mix_items_per_s
            );
            Some(p)
        }
    };
    let label = if args.label.is_empty() {
        String::new()
    } else {
        format!(" ({})", args.label)
    };
    let ratio_rounds = ratios::rounds(&rt, args, &driven, in_process.as_ref())?;
    let throughput_ratio =
        ratios::throughput_ratio(&ratio_rounds, saturation, in_process.as_ref(), &label);
    let p99_over_twice_batch =
        ratios::p99_over_twice_batch(driven.open.as_ref(), in_process.as_ref(), &label);
    if let Some(path) = &args.summary_json {
        let summary = Summary {
            label: args.label.clone(),
            steps: args.steps.clone(),
            items: args.items,
            samples: args.samples,
            closed: driven.closed,
            open_rate: driven.open_rate,
            open: driven.open,
            saturation_items_per_s: saturation,
            in_process,
            ratio_rounds,
            throughput_ratio,
            p99_over_twice_batch,
        };
        let text = serde_json::to_string_pretty(&summary).context("encoding the summary")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
