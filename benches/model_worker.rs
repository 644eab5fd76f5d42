//! The model worker without the network: how much of a step its scheduling costs, with one
//! instance over every core and with one single-threaded instance per core, and what a second
//! OpenMP team in the process does to libtorch's speed.
//!
//! `cargo bench --bench model_worker` (on `models/default`, or the model folder given as
//! `DIFFGAP_BENCH_MODEL`). For each layout, each round times a plain in-process bridge on every
//! instance's thread at once (256 rows x 10 steps each), then 2 x 256 in-process clients per
//! instance saturating the step-level worker with 1-, 10- and 50-step requests for 10 s (the
//! first 2 s not counted); it reports per-row-step times (over all instances) and their ratio,
//! the median of 3 rounds. Then, apart (it slows the rest of the process): a bridge on a fresh
//! thread before and after the main thread has run one of its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diffgap::bench::timing::{time_median, BridgeCall};
use diffgap::diffusion::sampler::SampleOptions;
use diffgap::eval::retrieval::median;
use diffgap::loadgen::lcg_vector;
use diffgap::model::{artifact, DiffgapModel};
use diffgap::service::types::BridgeRow;
use diffgap::service::worker::{ModelWorker, WorkerOptions};
use tch::{Device, Kind, Tensor};

const ROWS: usize = 256;
/// In-process clients per instance: enough to keep its batch full and a queue behind it.
const CLIENTS_PER_INSTANCE: usize = 2 * ROWS;
const ROUNDS: usize = 3;

/// Median milliseconds per step of a 10-step bridge of ROWS rows.
fn bridge_ms_per_step(m: &DiffgapModel) -> Result<f64> {
    let _g = tch::no_grad_guard();
    let d = m
        .card
        .directions
        .first()
        .context("the model has no direction")?;
    let call = BridgeCall {
        model: m,
        x: Tensor::randn([ROWS as i64, m.dim()], (Kind::Float, Device::Cpu)),
        from: &d.condition,
        to: &d.target,
        seeds: (0..ROWS as u64).collect(),
        opts: SampleOptions {
            steps: 10,
            guidance: m.card.defaults.guidance,
            samples: 1,
        },
    };
    Ok(time_median(3, || call.run())? * 1e3 / 10.0)
}

/// A bridge timed on a thread of its own, which ends (and frees its OpenMP team) afterwards.
fn on_fresh_thread(dir: &Path) -> Result<f64> {
    let dir = dir.to_owned();
    std::thread::spawn(move || bridge_ms_per_step(&artifact::load(&dir, Device::Cpu)?))
        .join()
        .map_err(|_| anyhow::anyhow!("the timing thread panicked"))?
}

/// Per-row-step milliseconds, over all instances, of ROUNDS rounds of (plain bridges on every
/// instance at once, then the worker saturated by in-process clients).
async fn saturate(
    dir: &Path,
    opts: WorkerOptions,
    (from, to, dim, guidance): (&str, &str, usize, f32),
) -> Result<(Vec<f64>, Vec<f64>)> {
    let w = ModelWorker::spawn_with(dir.to_owned(), Device::Cpu, opts)?;
    w.ready.await??;
    let (h, stats) = (w.handle, w.stats);
    let clients = CLIENTS_PER_INSTANCE * opts.instances;
    let (mut bridge, mut worker) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let ms = h
            .call_all(|ctx| {
                bridge_ms_per_step(ctx.model)
                    .map_err(|e| diffgap::service::error::ServiceError::Internal(e.to_string()))
            })
            .await?;
        // Row-steps per ms over the instances, as one per-row-step time.
        let bridge_per_row = 1.0 / ms.iter().map(|m| ROWS as f64 / m).sum::<f64>();
        let stop = Instant::now() + Duration::from_secs(10);
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (h, from, to) = (h.clone(), from.to_owned(), to.to_owned());
                tokio::spawn(async move {
                    let mut i = c;
                    while Instant::now() < stop {
                        let row = BridgeRow::bridge(
                            &from,
                            &to,
                            lcg_vector(i as u64 | 1, dim),
                            SampleOptions {
                                steps: [1, 10, 50][i % 3],
                                guidance,
                                samples: 1,
                            },
                            i as u64,
                        );
                        let _ = h.bridge(vec![row]).await;
                        i += clients;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (s0, t0) = (stats.snapshot(), Instant::now());
        tokio::time::sleep(Duration::from_secs(8)).await;
        let (s1, el) = (stats.snapshot(), t0.elapsed().as_secs_f64());
        for t in tasks {
            t.await?;
        }
        let steps = (s1.steps - s0.steps).max(1) as f64;
        let rows = (s1.rows_denoised - s0.rows_denoised).max(1) as f64;
        let per_row = el * 1e3 / rows;
        println!(
            "  round {}: bridges {:.1} us/row-step; worker {:.0} rows a step, {:.1} us/row-step",
            round + 1,
            bridge_per_row * 1e3,
            rows / steps,
            per_row * 1e3,
        );
        bridge.push(bridge_per_row);
        worker.push(per_row);
    }
    Ok((bridge, worker))
}

fn main() -> Result<()> {
    let dir = std::env::var_os("DIFFGAP_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models/default"));
    // Read on a thread that ends, so that the main thread never starts an OpenMP team.
    let d2 = dir.clone();
    let (from, to, dim, guidance) = std::thread::spawn(move || -> Result<_> {
        let m = artifact::load(&d2, Device::Cpu)?;
        let d = m.card.directions.first().context("no direction")?;
        Ok((
            d.condition.clone(),
            d.target.clone(),
            m.dim() as usize,
            m.card.defaults.guidance,
        ))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("loading panicked"))?
    .with_context(|| format!("loading {}", dir.display()))?;

    // libtorch keeps the last thread count set as the default of new threads, and the
    // single-threaded instances set 1: restored for the OpenMP measurement below.
    let default_threads = tch::get_num_threads();
    let rt = tokio::runtime::Runtime::new()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut layouts = vec![1];
    if cores > 1 {
        layouts.push(cores);
    }
    for instances in layouts {
        let opts = WorkerOptions {
            instances,
            ..WorkerOptions::new(ROWS, 4 * CLIENTS_PER_INSTANCE * instances)
        };
        let (bridge, worker) = rt.block_on(saturate(&dir, opts, (&from, &to, dim, guidance)))?;
        let ratios: Vec<f64> = bridge.iter().zip(&worker).map(|(b, w)| b / w).collect();
        println!(
            "{instances} instance(s) x {} thread(s): worker / plain bridge throughput per row-step: median {:.3} over {ROUNDS} rounds {ratios:.3?}; plain bridge {:.0} row-steps/s",
            opts.threads_per_instance().map_or_else(|| "default".to_owned(), |n| n.to_string()),
            median(&mut ratios.clone()),
            1e3 / median(&mut bridge.clone()),
        );
    }
    drop(rt);
    tch::set_num_threads(default_threads);

    let alone = on_fresh_thread(&dir)?;
    // The main thread's own bridge starts a second OpenMP team, which stays.
    let m = artifact::load(&dir, Device::Cpu)?;
    let main = bridge_ms_per_step(&m)?;
    let after = on_fresh_thread(&dir)?;
    println!(
        "OpenMP teams: a bridge step on a fresh thread {alone:.2} ms alone, {after:.2} ms once the main thread has run one ({main:.2} ms there): x{:.2}",
        after / alone
    );
    Ok(())
}
