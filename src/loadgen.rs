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
//! Step counts are cycled over requests (`--steps 1,10,50` gives a mixed load). Latencies go to
//! an HDR histogram (microseconds, 3 significant digits).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tch::{Kind, Tensor};
use tonic::transport::Channel;

use crate::device::{describe, DeviceChoice};
use crate::diffusion::sampler::SampleOptions;
use crate::model::{artifact, row_seed, DiffgapModel};
use crate::service::ops::threads::{self, IoThreadPolicy};
use crate::service::proto::diffgap_client::DiffgapClient;
use crate::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use crate::service::worker::WorkerOptions;

#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Closed-loop concurrency levels (empty skips the closed loop).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub concurrency: Vec<usize>,
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
    /// the sweep's best level and the in-process figures).
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
}

/// The outcome of one load level.
#[derive(Debug)]
pub struct LevelResult {
    pub ok: u64,
    pub errors: u64,
    /// The time the rate is counted over, and the successful requests answered in it.
    pub wall: Duration,
    pub ok_in_wall: u64,
    /// Latency of successful requests, in microseconds.
    pub latency: Histogram<u64>,
}

impl LevelResult {
    pub fn requests_per_s(&self) -> f64 {
        self.ok_in_wall as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e3
    }

    fn summary(&self, load: &str, items: usize) -> LevelSummary {
        LevelSummary {
            load: load.to_owned(),
            ok: self.ok,
            errors: self.errors,
            requests_per_s: self.requests_per_s(),
            items_per_s: self.requests_per_s() * items as f64,
            p50_ms: self.ms(0.5),
            p95_ms: self.ms(0.95),
            p99_ms: self.ms(0.99),
        }
    }
}

/// One load level, as printed and as written to `--summary-json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LevelSummary {
    pub load: String,
    pub ok: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub items_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// The in-process engine on one step count: its best batch size and what it took.
#[derive(Debug, Clone, serde::Serialize)]
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

/// How the in-process engine is laid out: `instances` threads, each with its own model and
/// `threads` intra-op threads, bridging side by side.
#[derive(Debug, Clone, Copy)]
struct Layout {
    instances: usize,
    threads: usize,
}

/// A layout's mix throughput.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayoutMix {
    pub instances: usize,
    pub threads: usize,
    pub mix_items_per_s: f64,
}

/// The in-process engine at its best layout.
#[derive(Debug, Clone, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
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

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What the load needs to know about the served model.
struct Target {
    from: String,
    to: String,
    dim: usize,
}

/// The shape of every request: its items' embeddings, step counts cycled by request index.
struct Load {
    target: Target,
    steps: Vec<usize>,
    items: usize,
    samples: usize,
    timeout: Duration,
}

impl Load {
    fn request(&self, i: usize) -> tonic::Request<BridgeRequest> {
        let steps = self.steps[i % self.steps.len()];
        let items = (0..self.items)
            .map(|j| {
                let seed = row_seed(i as u64, j);
                let values = vector(seed, self.target.dim);
                BridgeItem {
                    steps: Some(steps as u32),
                    samples: Some(self.samples as u32),
                    ..BridgeItem::new(&self.target.from, &self.target.to, values, Some(seed))
                }
            })
            .collect();
        let mut req = tonic::Request::new(BridgeRequest::new(items));
        req.set_timeout(self.timeout);
        req
    }
}

/// A deterministic pseudo-random vector with components in [-0.5, 0.5).
fn vector(seed: u64, dim: usize) -> Vec<f32> {
    lcg_vector(seed | 1, dim)
}

/// `dim` components in [-0.5, 0.5) from a 64-bit linear congruential generator started at
/// `state` (deterministic load and test vectors).
pub fn lcg_vector(state: u64, dim: usize) -> Vec<f32> {
    let mut s = state;
    (0..dim)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

async fn one(
    client: &mut DiffgapClient<Channel>,
    load: &Load,
    i: usize,
) -> Result<(), tonic::Status> {
    client.bridge(load.request(i)).await.map(|_| ())
}

/// How long a closed-loop level runs and how much of its start is not counted.
#[derive(Debug, Clone, Copy)]
struct LevelTime {
    /// The level's longest time.
    max: Duration,
    /// Its uncounted start.
    warmup: Duration,
}

impl LevelTime {
    fn new(args: &LoadgenArgs) -> Self {
        let max = Duration::from_secs_f64(args.max_seconds.max(0.0));
        Self {
            max,
            warmup: Duration::from_secs_f64(args.warmup_seconds.max(0.0)).min(max / 4),
        }
    }
}

/// `concurrency` clients, each sending its next request when the last is answered, until
/// `requests` are sent or `time.max` has passed. The rate counts the requests answered while every
/// client was still sending (up to the first client's stop), so that the drain at the end,
/// with fewer clients, does not lower the saturation figure.
async fn closed_loop(
    client: &DiffgapClient<Channel>,
    load: &Arc<Load>,
    concurrency: usize,
    requests: usize,
    time: LevelTime,
) -> LevelResult {
    let LevelTime { max, warmup } = time;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (mut client, load, next) = (client.clone(), load.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            // Latency of all requests, and of those sent after the warm-up.
            let (mut all, mut h) = (histogram(), histogram());
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut answered = Vec::new();
            let stopped = loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || start.elapsed() >= max {
                    break start.elapsed();
                }
                let t = Instant::now();
                let steady = t.duration_since(start) >= warmup;
                match one(&mut client, &load, i).await {
                    Ok(()) => {
                        ok += 1;
                        let us = t.elapsed().as_micros() as u64;
                        all.saturating_record(us);
                        if steady {
                            h.saturating_record(us);
                        }
                        answered.push(start.elapsed());
                    }
                    Err(status) => {
                        errors += 1;
                        if errors == 1 {
                            tracing::warn!("request failed: {status}");
                        }
                    }
                }
            };
            (all, h, ok, errors, answered, stopped)
        }));
    }
    let mut all = histogram();
    let mut out = LevelResult {
        ok: 0,
        errors: 0,
        wall: Duration::ZERO,
        ok_in_wall: 0,
        latency: histogram(),
    };
    let mut answered = Vec::new();
    let mut first_stop = None::<Duration>;
    for task in tasks {
        if let Ok((a, h, ok, errors, times, stopped)) = task.await {
            all.add(&a).expect("same bounds");
            out.latency.add(&h).expect("same bounds");
            out.ok += ok;
            out.errors += errors;
            answered.extend(times);
            first_stop = Some(first_stop.map_or(stopped, |s| s.min(stopped)));
        }
    }
    let stop = first_stop.unwrap_or_else(|| start.elapsed());
    let (wall, counted, steady) = counting_window(&answered, warmup, stop);
    out.wall = wall;
    out.ok_in_wall = counted;
    if !steady || out.latency.is_empty() {
        out.latency = all;
    }
    out
}

/// The time a closed-loop level's rate is counted over and the answers in it: from the end of
/// the warm-up to the first client's stop, or the whole level (false) when too short a level
/// (e.g. few --requests) leaves nothing after its warm-up.
fn counting_window(
    answered: &[Duration],
    warmup: Duration,
    stop: Duration,
) -> (Duration, u64, bool) {
    let until_stop = || answered.iter().filter(move |&&t| t <= stop);
    let steady = until_stop().filter(|&&t| t > warmup).count() as u64;
    if stop > warmup && steady > 0 {
        (stop - warmup, steady, true)
    } else {
        (stop, until_stop().count() as u64, false)
    }
}

/// Requests sent at `rate` per second for `duration`; latency from each scheduled send time.
async fn open_loop(
    client: &DiffgapClient<Channel>,
    load: &Arc<Load>,
    rate: f64,
    duration: Duration,
) -> LevelResult {
    let n = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let (mut client, load) = (client.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let r = one(&mut client, &load, i).await;
            (r.is_ok(), at.elapsed())
        }));
    }
    let mut out = LevelResult {
        ok: 0,
        errors: 0,
        wall: Duration::ZERO,
        ok_in_wall: 0,
        latency: histogram(),
    };
    for task in tasks {
        match task.await {
            Ok((true, latency)) => {
                out.ok += 1;
                out.latency.saturating_record(latency.as_micros() as u64);
            }
            _ => out.errors += 1,
        }
    }
    out.wall = start.elapsed();
    out.ok_in_wall = out.ok;
    out
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
    let seeds: Vec<u64> = (0..batch).map(|i| row_seed(7, i)).collect();
    let run = || -> Result<f64> {
        let t = Instant::now();
        let y = model.bridge(&x, &target.from, &target.to, &seeds, opts)?;
        let _ = y.sum(Kind::Float).double_value(&[]);
        Ok(t.elapsed().as_secs_f64())
    };
    // Both waits happen whatever the warm-up gives: the other instances count on them.
    start.wait();
    let warm = run();
    start.wait();
    warm?;
    let mut times: Vec<f64> = (0..3).map(|_| run()).collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[1])
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
fn in_process(args: &LoadgenArgs, target: &Target) -> Result<InProcess> {
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
fn in_process_mix(args: &LoadgenArgs, target: &Target, p: &InProcess) -> Result<f64> {
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

/// The CPU time (user + system) this process has used so far.
#[cfg(unix)]
fn process_cpu() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` fills the `rusage` it is pointed to, which lives until the end of
    // this function; a zeroed `rusage` is a valid value whatever the call does.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(time(usage.ru_utime) + time(usage.ru_stime))
}

#[cfg(not(unix))]
fn process_cpu() -> Option<Duration> {
    None
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn header() {
    println!(
        "| {:>10} | {:>8} | {:>6} | {:>9} | {:>9} | {:>8} | {:>8} | {:>8} |",
        "load", "ok", "errors", "req/s", "items/s", "p50 ms", "p95 ms", "p99 ms"
    );
    println!(
        "|{0:->12}|{0:->10}|{0:->8}|{0:->11}|{0:->11}|{0:->10}|{0:->10}|{0:->10}|",
        ""
    );
}

fn row(r: &LevelSummary) {
    println!(
        "| {:>10} | {:>8} | {:>6} | {:>9.1} | {:>9.1} | {:>8.2} | {:>8.2} | {:>8.2} |",
        r.load, r.ok, r.errors, r.requests_per_s, r.items_per_s, r.p50_ms, r.p95_ms, r.p99_ms
    );
}

pub fn run(args: &LoadgenArgs) -> Result<()> {
    if args.steps.is_empty() || args.steps.contains(&0) {
        bail!("--steps needs step counts of at least 1");
    }
    if let Some(f) = args.open_fraction {
        if !(f.is_finite() && f > 0.0) {
            bail!("--open-fraction must be a positive number, got {f}");
        }
    }
    let rt = threads::runtime(args.io_thread_policy).context("starting the async runtime")?;
    let Driven {
        target,
        client,
        load,
        closed,
        open_rate,
        open,
    } = rt.block_on(drive(args))?;
    let saturation = closed.iter().map(|r| r.items_per_s).fold(0.0, f64::max);
    let in_process = match args.no_in_process {
        true => None,
        false => {
            let p = in_process(args, &target)?;
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
    // The concurrency of the sweep's best level saturates the service.
    let saturating = args
        .concurrency
        .iter()
        .zip(&closed)
        .max_by(|a, b| a.1.items_per_s.total_cmp(&b.1.items_per_s))
        .map(|(&c, _)| c);
    let mut ratio_rounds = Vec::new();
    let level_time = LevelTime::new(args);
    if let (Some(p), Some(c)) = (&in_process, saturating) {
        if args.ratio_rounds > 0 {
            println!(
                "\nthroughput ratio, {} rounds of {} s at conc {c} then the in-process mix:",
                args.ratio_rounds, args.max_seconds
            );
        }
        for round in 0..args.ratio_rounds {
            let (cpu, started) = (process_cpu(), Instant::now());
            let r = rt.block_on(closed_loop(&client, &load, c, args.requests, level_time));
            let client_cores = cpu
                .zip(process_cpu())
                .map(|(a, b)| (b - a).as_secs_f64() / started.elapsed().as_secs_f64());
            let service = r.requests_per_s() * args.items as f64;
            let engine = in_process_mix(args, &target, p)?;
            let ratio = service / engine.max(1e-9);
            let client = client_cores.map_or(String::new(), |c| format!(" (client {c:.3} cores)"));
            println!(
                "  round {}: service {service:.1} items/s{client}, in-process {engine:.1} items/s, ratio {ratio:.3}",
                round + 1
            );
            ratio_rounds.push(RatioRound {
                service_items_per_s: service,
                in_process_items_per_s: engine,
                ratio,
                client_cores,
            });
        }
    }
    let throughput_ratio = if ratio_rounds.is_empty() {
        in_process.as_ref().map(|p| {
            let ratio = saturation / p.mix_items_per_s.max(1e-9);
            println!(
                "\nservice/in-process{label}: best service {saturation:.1} items/s / in-process {:.1} items/s = {ratio:.3}",
                p.mix_items_per_s
            );
            ratio
        })
    } else {
        let ratios: Vec<f64> = ratio_rounds.iter().map(|r| r.ratio).collect();
        let m = median(&ratios);
        println!(
            "\nservice/in-process{label}: median of {} rounds = {m:.3}",
            ratios.len()
        );
        Some(m)
    };
    let p99_over_twice_batch = match (&open, in_process.as_ref()) {
        (Some(o), Some(p)) => p.longest_batch_seconds().map(|t| {
            let ratio = o.p99_ms / (2.0 * t * 1e3);
            println!(
                "open-loop p99{label}: {:.1} ms / (2 x single-batch compute {:.1} ms) = {ratio:.3}",
                o.p99_ms,
                t * 1e3
            );
            ratio
        }),
        _ => None,
    };
    if let Some(path) = &args.summary_json {
        let summary = Summary {
            label: args.label.clone(),
            steps: args.steps.clone(),
            items: args.items,
            samples: args.samples,
            closed,
            open_rate,
            open,
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

/// What [`drive`] measured, with the client and load for later rounds.
struct Driven {
    target: Target,
    client: DiffgapClient<Channel>,
    load: Arc<Load>,
    closed: Vec<LevelSummary>,
    open_rate: Option<f64>,
    open: Option<LevelSummary>,
}

async fn drive(args: &LoadgenArgs) -> Result<Driven> {
    let channel = Channel::from_shared(args.addr.clone())
        .context("--addr")?
        // Connects on first use; a server still starting answers UNAVAILABLE, retried below.
        .connect_lazy();
    let mut client = DiffgapClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    // UNAVAILABLE until the server listens and has loaded its model: wait (bounded).
    let ready_by = Instant::now() + Duration::from_secs(120);
    let info = loop {
        match client.info(InfoRequest {}).await {
            Ok(info) => break info.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < ready_by => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(s) => return Err(anyhow::anyhow!("Info: {s}")),
        }
    };
    let m = info.models.first().context("the server serves no model")?;
    let dir = m.directions.first().context("the model has no direction")?;
    let (from, to) = dir
        .split_once("->")
        .with_context(|| format!("direction '{dir}'"))?;
    let target = Target {
        from: from.into(),
        to: to.into(),
        dim: m.dim as usize,
    };
    let load = Arc::new(Load {
        target: Target {
            from: from.into(),
            to: to.into(),
            dim: m.dim as usize,
        },
        steps: args.steps.clone(),
        items: args.items,
        samples: args.samples,
        timeout: Duration::from_secs_f64(args.timeout),
    });
    println!(
        "server {} ({}, model {}, dim {}, {from}->{to}){}: steps {:?} cycled, {} item(s) x {} sample(s) per request",
        args.addr,
        info.device,
        m.name,
        m.dim,
        if args.label.is_empty() {
            String::new()
        } else {
            format!(" [{}]", args.label)
        },
        args.steps,
        args.items,
        args.samples
    );
    // Warm the connection and the server.
    for i in 0..4 {
        one(&mut client, &load, i)
            .await
            .map_err(|s| anyhow::anyhow!("warm-up request: {s}"))?;
    }
    let mut closed = Vec::new();
    let level_time = LevelTime::new(args);
    if !args.concurrency.is_empty() {
        println!(
            "\nclosed loop: up to {} requests or {} s per level, the first {:.1} s not counted",
            args.requests,
            args.max_seconds,
            level_time.warmup.as_secs_f64()
        );
        header();
        for &c in &args.concurrency {
            let r = closed_loop(&client, &load, c, args.requests, level_time).await;
            let r = r.summary(&format!("conc {c}"), args.items);
            row(&r);
            closed.push(r);
        }
    }
    let rate = match args.open_fraction {
        Some(f) => {
            let saturation = closed.iter().map(|r| r.requests_per_s).fold(0.0, f64::max);
            if saturation <= 0.0 {
                bail!("--open-fraction needs a closed-loop sweep that completed requests");
            }
            println!(
                "\nopen-loop rate: {f} x saturation {saturation:.1} req/s = {:.1} req/s",
                f * saturation
            );
            f * saturation
        }
        None => args.rate,
    };
    let mut open = None;
    if rate > 0.0 {
        println!("\nopen loop: {rate:.1} req/s for {} s", args.open_seconds);
        header();
        let r = open_loop(
            &client,
            &load,
            rate,
            Duration::from_secs_f64(args.open_seconds),
        )
        .await;
        let r = r.summary(&format!("{rate:.0} rps"), args.items);
        row(&r);
        open = Some(r);
    }
    Ok(Driven {
        target,
        client,
        load,
        closed,
        open_rate: (rate > 0.0).then_some(rate),
        open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_leaves_the_warm_up_out() {
        let ms = Duration::from_millis;
        // 10 answers per second for 10 s, then nothing: the rate after a 2 s warm-up.
        let answered: Vec<Duration> = (1..=100).map(|i| ms(i * 100)).collect();
        let (wall, n, steady) = counting_window(&answered, ms(2000), ms(10_000));
        assert!(steady);
        assert_eq!((wall, n), (ms(8000), 80));
        // Answers past the first client's stop do not count.
        let (wall, n, _) = counting_window(&answered, ms(2000), ms(5000));
        assert_eq!((wall, n), (ms(3000), 30));
        // A level that ended within its warm-up counts from its start.
        let (wall, n, steady) = counting_window(&answered[..10], ms(2000), ms(1000));
        assert!(!steady);
        assert_eq!((wall, n), (ms(1000), 10));
    }

    #[test]
    fn vectors_are_deterministic_and_bounded() {
        let a = vector(3, 32);
        assert_eq!(a, vector(3, 32));
        assert_ne!(a, vector(4, 32));
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
    }

    #[test]
    fn medians_and_the_mix_rate() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        // One item at 1/s and one at 3/s: 2 items in 4/3 s.
        assert!((mix_rate([1.0, 3.0].into_iter()) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn quantiles_in_milliseconds() {
        let mut r = LevelResult {
            ok: 100,
            errors: 0,
            wall: Duration::from_secs(2),
            ok_in_wall: 100,
            latency: histogram(),
        };
        for us in 1..=100u64 {
            r.latency.record(us * 1000).expect("in range");
        }
        assert!((r.ms(0.5) - 50.0).abs() < 0.1, "{}", r.ms(0.5));
        assert!((r.ms(0.99) - 99.0).abs() < 0.1, "{}", r.ms(0.99));
        assert!((r.requests_per_s() - 50.0).abs() < 1e-9);
    }
}
