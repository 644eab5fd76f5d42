//! The service benchmark's goal ratios: the service's throughput over the in-process engine's
//! (interleaved rounds, so that a slow spell of a shared machine does not decide it), and the
//! open loop's p99 over twice the single-batch compute time.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::args::LoadgenArgs;
use super::in_process;
use super::loops::{closed_loop, LevelTime};
use super::summary::{InProcess, LevelSummary, RatioRound};
use super::sweep::Driven;
use crate::eval::retrieval::median;

/// `--ratio-rounds` rounds of (the service at the sweep's saturating concurrency, then the
/// in-process mix on its best layout), printed as they end; none without an in-process
/// comparison or a closed-loop sweep.
pub(super) fn rounds(
    rt: &tokio::runtime::Runtime,
    args: &LoadgenArgs,
    driven: &Driven,
    in_process: Option<&InProcess>,
) -> Result<Vec<RatioRound>> {
    // The concurrency of the sweep's best level saturates the service.
    let saturating = args
        .concurrency
        .iter()
        .zip(&driven.closed)
        .max_by(|a, b| a.1.items_per_s.total_cmp(&b.1.items_per_s))
        .map(|(&c, _)| c);
    let mut ratio_rounds = Vec::new();
    let level_time = LevelTime::new(args);
    let (Some(p), Some(c)) = (in_process, saturating) else {
        return Ok(ratio_rounds);
    };
    if args.ratio_rounds > 0 {
        println!(
            "\nthroughput ratio, {} rounds of {} s at conc {c} then the in-process mix:",
            args.ratio_rounds, args.max_seconds
        );
    }
    for round in 0..args.ratio_rounds {
        let (cpu, started) = (process_cpu(), Instant::now());
        let r = rt.block_on(closed_loop(
            &driven.clients,
            &driven.load,
            c,
            args.requests,
            level_time,
        ));
        let client_cores = cpu
            .zip(process_cpu())
            .map(|(a, b)| (b - a).as_secs_f64() / started.elapsed().as_secs_f64());
        let service = r.requests_per_s() * args.items as f64;
        let engine = in_process::mix_again(args, &driven.target, p)?;
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
    Ok(ratio_rounds)
}

/// The median of the rounds' ratios, or with no rounds the sweep's best (`saturation` items/s)
/// over the in-process mix; printed. `label` is the run's label as printed, e.g. " (step)".
pub(super) fn throughput_ratio(
    rounds: &[RatioRound],
    saturation: f64,
    in_process: Option<&InProcess>,
    label: &str,
) -> Option<f64> {
    if rounds.is_empty() {
        return in_process.map(|p| {
            let ratio = saturation / p.mix_items_per_s.max(1e-9);
            println!(
                "\nservice/in-process{label}: best service {saturation:.1} items/s / in-process {:.1} items/s = {ratio:.3}",
                p.mix_items_per_s
            );
            ratio
        });
    }
    let mut ratios: Vec<f64> = rounds.iter().map(|r| r.ratio).collect();
    let m = median(&mut ratios);
    println!(
        "\nservice/in-process{label}: median of {} rounds = {m:.3}",
        ratios.len()
    );
    Some(m)
}

/// The open loop's p99 over twice the single-batch compute time of the longest step count;
/// printed.
pub(super) fn p99_over_twice_batch(
    open: Option<&LevelSummary>,
    in_process: Option<&InProcess>,
    label: &str,
) -> Option<f64> {
    let (o, t) = (open?, in_process?.longest_batch_seconds()?);
    let ratio = o.p99_ms / (2.0 * t * 1e3);
    println!(
        "open-loop p99{label}: {:.1} ms / (2 x single-batch compute {:.1} ms) = {ratio:.3}",
        o.p99_ms,
        t * 1e3
    );
    Some(ratio)
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
