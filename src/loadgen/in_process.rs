//! The in-process side of `diffgap loadgen`'s comparison: the served model loaded here and
//! bridged over batch sizes and over layouts (one instance on every core, or several
//! single-threaded instances side by side, as `diffgap serve --instances` runs them), timed
//! with the same code as `diffgap bench` ([`crate::bench::timing`]).

use std::sync::Barrier;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::args::LoadgenArgs;
use super::load::{vector, Target};
use super::summary::{InProcess, InProcessSteps, LayoutMix};
use super::{threads, WorkerOptions};
use crate::bench::timing::{median_seconds, BridgeCall};
use crate::device::describe;
use crate::diffusion::sampler::SampleOptions;
use crate::model::{artifact, row_seed, DiffgapModel};

/// How the in-process engine is laid out: `instances` threads, each with its own model and
/// `threads` intra-op threads, bridging side by side.
#[derive(Debug, Clone, Copy)]
struct Layout {
    instances: usize,
    threads: usize,
}

/// The model the in-process comparison runs, checked against the server's dimension.
fn load_model(args: &LoadgenArgs, target: &Target) -> Result<DiffgapModel> {
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let model = artifact::load(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    if model.dim() as usize != target.dim {
        bail!(
            "{} has dimension {}, the server's model {}; pass the served model with --model",
            args.model.display(),
            model.dim(),
            target.dim
        );
    }
    Ok(model)
}

/// Median seconds of one in-process bridge of `batch` items at `steps` (after a warm-up);
/// `start` is waited on before the warm-up and before the timed calls, so that the instances
/// of a layout run them side by side.
fn time_bridge(
    model: &DiffgapModel,
    target: &Target,
    job: Job,
    samples: usize,
    start: &Barrier,
) -> Result<f64> {
    let _g = tch::no_grad_guard();
    let opts = SampleOptions {
        steps: job.steps,
        guidance: model.card.defaults.guidance,
        samples,
    };
    let batch = job.batch;
    let flat: Vec<f32> = (0..batch)
        .flat_map(|i| vector(row_seed(i as u64, 0), target.dim))
        .collect();
    let x = Tensor::from_slice(&flat).view([batch as i64, target.dim as i64]);
    let call = BridgeCall {
        model,
        x,
        from: &target.from,
        to: &target.to,
        seeds: (0..batch).map(|i| row_seed(7, i)).collect(),
        opts,
    };
    // Both waits happen whatever the warm-up gives: the other instances count on them.
    start.wait();
    let warm = call.run();
    start.wait();
    warm?;
    median_seconds(3, || call.run())
}

/// An instance that has failed keeps taking its turns at the barrier (two per job), so that
/// the others never wait for it forever.
fn skip_turn(start: &Barrier) {
    start.wait();
    start.wait();
}

/// One timed in-process call shape.
#[derive(Debug, Clone, Copy)]
struct Job {
    steps: usize,
    batch: usize,
}

/// What a layout did on one [`Job`]: items/s summed over its instances, and the mean of
/// their median seconds per call.
#[derive(Debug, Clone, Copy)]
struct Timed {
    items_per_s: f64,
    seconds: f64,
}

/// Runs `jobs` on `layout`: one thread per instance, each with its own model and intra-op
/// thread count (as `diffgap serve --instances` sets them), all timing the same job at once.
/// The threads end afterwards, so their OpenMP teams do not outlive the measurement.
fn run_layout(
    args: &LoadgenArgs,
    target: &Target,
    layout: Layout,
    jobs: &[Job],
) -> Result<Vec<Timed>> {
    let start = Barrier::new(layout.instances);
    let per_instance: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..layout.instances)
            .map(|_| {
                let start = &start;
                scope.spawn(move || -> Result<Vec<f64>> {
                    let model = pin(&args.in_process_cpus).and_then(|()| {
                        tch::set_num_threads(layout.threads as i32);
                        load_model(args, target)
                    });
                    let mut secs: Result<Vec<f64>> = Ok(Vec::with_capacity(jobs.len()));
                    for &job in jobs {
                        match (&model, &mut secs) {
                            (Ok(m), Ok(v)) => {
                                match time_bridge(m, target, job, args.samples, start) {
                                    Ok(t) => v.push(t),
                                    Err(e) => secs = Err(e),
                                }
                            }
                            _ => skip_turn(start),
                        }
                    }
                    model.and(secs)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("an in-process instance panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(jobs
        .iter()
        .enumerate()
        .map(|(j, job)| {
            let secs: Vec<f64> = per_instance.iter().map(|v| v[j]).collect();
            Timed {
                items_per_s: secs.iter().map(|s| job.batch as f64 / s).sum(),
                seconds: secs.iter().sum::<f64>() / secs.len().max(1) as f64,
            }
        })
        .collect())
}

/// Items/s of the cycled mix when each step count costs `1 / items_per_s` per item.
fn mix_rate(items_per_s: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = items_per_s.fold((0.0, 0usize), |(s, n), r| (s + 1.0 / r, n + 1));
    n as f64 / sum.max(1e-12)
}

/// Pins the calling thread (and the OpenMP team it starts) to `cpus`, unless empty.
fn pin(cpus: &[usize]) -> Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    threads::pin_current(cpus).with_context(|| format!("--in-process-cpus {cpus:?}"))
}

/// The layouts compared: each of `--in-process-instances`, with the intra-op threads the
/// server gives that many instances (libtorch's default for one: `default_threads`, or all of
/// `--in-process-cpus`, which is what libtorch takes under `taskset`).
fn layouts(args: &LoadgenArgs, default_threads: usize) -> Vec<Layout> {
    let (cores, default_threads) = match args.in_process_cpus.len() {
        0 => (
            std::thread::available_parallelism().map_or(1, usize::from),
            default_threads,
        ),
        n => (n, n),
    };
    let mut counts: Vec<usize> = args
        .in_process_instances
        .iter()
        .map(|&n| if n == 0 { cores } else { n })
        .collect();
    counts.sort_unstable();
    counts.dedup();
    counts
        .into_iter()
        .map(|instances| {
            let threads = WorkerOptions {
                instances,
                ..WorkerOptions::new(1, 1)
            }
            .threads_per_instance_on(cores)
            .unwrap_or(default_threads);
            Layout { instances, threads }
        })
        .collect()
}

/// The in-process engine's best: for each layout, the best items/s per step count over the
/// batch sizes and the cycled mix of those (each step count equally often); the layout with
/// the best mix wins.
pub(super) fn best(args: &LoadgenArgs, target: &Target) -> Result<InProcess> {
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let default_threads = tch::get_num_threads().max(1) as usize;
    let pinned = match args.in_process_cpus.as_slice() {
        [] => String::new(),
        cpus => format!(", on CPUs {cpus:?}"),
    };
    println!(
        "\nin-process engine ({}, {}{pinned}): best items/s over batch sizes {:?}",
        args.model.display(),
        describe(device),
        args.in_process_batches
    );
    let jobs: Vec<Job> = args
        .steps
        .iter()
        .flat_map(|&steps| {
            args.in_process_batches
                .iter()
                .map(move |&batch| Job { steps, batch })
        })
        .collect();
    let mut best: Option<InProcess> = None;
    let mut compared = Vec::new();
    for layout in layouts(args, default_threads) {
        let timed = run_layout(args, target, layout, &jobs)?;
        let mut per_steps = Vec::new();
        for &steps in &args.steps {
            let of_steps = || jobs.iter().zip(&timed).filter(|(j, _)| j.steps == steps);
            let Some((job, top)) =
                of_steps().max_by(|a, b| a.1.items_per_s.total_cmp(&b.1.items_per_s))
            else {
                continue;
            };
            per_steps.push(InProcessSteps {
                steps,
                batch: job.batch,
                items_per_s: top.items_per_s,
                batch_seconds: top.seconds,
                one_item_seconds: of_steps()
                    .find(|(j, _)| j.batch == 1)
                    .map(|(_, t)| t.seconds),
            });
        }
        let mix_items_per_s = mix_rate(per_steps.iter().map(|b| b.items_per_s));
        println!(
            "  {} instance(s) x {} thread(s): mix {mix_items_per_s:.0} items/s",
            layout.instances, layout.threads
        );
        for p in &per_steps {
            println!(
                "    steps {:>4}: {:>10.0} items/s (batch {} per instance, {:.1} ms per batch)",
                p.steps,
                p.items_per_s,
                p.batch,
                p.batch_seconds * 1e3
            );
        }
        compared.push(LayoutMix {
            instances: layout.instances,
            threads: layout.threads,
            mix_items_per_s,
        });
        if best
            .as_ref()
            .is_none_or(|b| mix_items_per_s > b.mix_items_per_s)
        {
            best = Some(InProcess {
                device: describe(device),
                cpus: args.in_process_cpus.clone(),
                instances: layout.instances,
                threads: layout.threads,
                per_steps,
                mix_items_per_s,
                layouts: Vec::new(),
            });
        }
    }
    let mut best = best.context("--in-process-instances names no layout")?;
    best.layouts = compared;
    Ok(best)
}

/// The in-process mix again, on the best layout, each step count at the best batch found
/// before.
pub(super) fn mix_again(args: &LoadgenArgs, target: &Target, p: &InProcess) -> Result<f64> {
    let jobs: Vec<Job> = p
        .per_steps
        .iter()
        .map(|s| Job {
            steps: s.steps,
            batch: s.batch,
        })
        .collect();
    let layout = Layout {
        instances: p.instances,
        threads: p.threads,
    };
    let timed = run_layout(args, target, layout, &jobs)?;
    Ok(mix_rate(timed.iter().map(|t| t.items_per_s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_rate() {
        // One item at 1/s and one at 3/s: 2 items in 4/3 s.
        assert!((mix_rate([1.0, 3.0].into_iter()) - 1.5).abs() < 1e-12);
    }
}
