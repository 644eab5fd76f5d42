//! `diffgap loadgen --peer-addr`: diffgap (`--addr`) against a peer server of the same Bridge
//! on the same model (the Python peer of `benches/python_peer/`, `scripts/bench-peer.sh`).
//!
//! First the output check ([`super::peer_check`]); then, in `--ratio-rounds` rounds, the closed
//! loop at each `--concurrency` on one server and then on the other, with the same requests
//! (the same step mix, cycled by request index, and the same seeds); then the open loop at one
//! rate, `--open-fraction` of diffgap's saturation (the highest of its closed-loop medians), in
//! rounds the same way. Which server goes first alternates from round to round, so that a
//! slow spell of a shared machine, or whatever one level leaves behind for the next, falls on
//! both alike. Each round prints its ratios (diffgap over peer: throughput, p99) and each load
//! the medians over rounds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tonic::transport::Channel;

use super::args::LoadgenArgs;
use super::load::{connect_to, one, Load};
use super::loops::{closed_loop, open_loop, LevelTime};
use super::peer_check;
use super::peer_report::{PeerMedians, PeerRound, PeerSummary};
use super::summary::LevelSummary;
use super::{threads, DiffgapClient};
use crate::service::proto::ModelInfo;

/// One server of the comparison: its clients (one per connection) and its load.
struct Side {
    clients: Vec<DiffgapClient<Channel>>,
    load: Arc<Load>,
}

/// What a level of each side runs: a closed loop of `c` clients, or an open loop at a rate.
#[derive(Clone, Copy)]
enum Level {
    Closed(usize),
    Open(f64),
}

impl Level {
    fn name(self) -> String {
        match self {
            Level::Closed(c) => format!("conc {c}"),
            Level::Open(rate) => format!("{rate:.0} rps"),
        }
    }

    async fn run(self, side: &Side, args: &LoadgenArgs) -> LevelSummary {
        let r = match self {
            Level::Closed(c) => {
                let time = LevelTime::new(args);
                closed_loop(&side.clients, &side.load, c, args.requests, time).await
            }
            Level::Open(rate) => {
                let time = Duration::from_secs_f64(args.open_seconds);
                open_loop(&side.clients, &side.load, rate, time).await
            }
        };
        r.summary(&self.name(), args.items)
    }
}

pub fn run(args: &LoadgenArgs, peer_addr: &str) -> Result<()> {
    let rt = threads::runtime(args.io_thread_policy).context("starting the async runtime")?;
    let summary = rt.block_on(compare(args, peer_addr))?;
    if let Some(path) = &args.summary_json {
        let text = serde_json::to_string_pretty(&summary).context("encoding the summary")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Both servers must serve the same model for their answers (and their speed) to compare.
fn same_model(d: &ModelInfo, p: &ModelInfo) -> Result<()> {
    let shape = |m: &ModelInfo| {
        (
            m.dim,
            m.directions.clone(),
            m.max_steps,
            m.default_steps,
            m.default_samples,
        )
    };
    if shape(d) != shape(p) || d.default_guidance.to_bits() != p.default_guidance.to_bits() {
        bail!(
            "the servers serve different models: diffgap {} (dim {}, {:?}), peer {} (dim {}, {:?})",
            d.name,
            d.dim,
            d.directions,
            p.name,
            p.dim,
            p.directions
        );
    }
    Ok(())
}

async fn compare(args: &LoadgenArgs, peer_addr: &str) -> Result<PeerSummary> {
    let (d_clients, d_target, d_model) = connect_to(&args.addr, "diffgap", args).await?;
    let (p_clients, p_target, p_model) = connect_to(peer_addr, "peer", args).await?;
    same_model(&d_model, &p_model)?;
    if d_target != p_target {
        bail!("the servers' first directions differ: {d_target:?} against {p_target:?}");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let check = peer_check::check(
        &d_clients[0],
        &p_clients[0],
        &d_model,
        args.peer_tolerance,
        timeout,
    )
    .await?;
    let load = Arc::new(Load::new(d_target, args));
    let sides = [
        Side {
            clients: d_clients,
            load: load.clone(),
        },
        Side {
            clients: p_clients,
            load,
        },
    ];
    let mut summary = PeerSummary {
        label: args.label.clone(),
        diffgap_addr: args.addr.clone(),
        peer_addr: peer_addr.to_owned(),
        steps: args.steps.clone(),
        items: args.items,
        samples: args.samples,
        check,
        closed: Vec::new(),
        open_rate: None,
        open: Vec::new(),
        medians: Vec::new(),
    };
    if args.peer_check_only {
        return Ok(summary);
    }
    warm_up(&sides).await?;
    rounds_and_medians(&sides, args, &mut summary).await?;
    Ok(summary)
}

/// One request per connection to each server, as `diffgap loadgen` warms a server.
async fn warm_up(sides: &[Side; 2]) -> Result<()> {
    for (side, name) in sides.iter().zip(["diffgap", "peer"]) {
        for (i, client) in side.clients.iter().enumerate() {
            one(&mut client.clone(), &side.load, i)
                .await
                .map_err(|s| anyhow::anyhow!("warm-up request to {name}: {s}"))?;
        }
    }
    Ok(())
}

async fn rounds_and_medians(
    sides: &[Side; 2],
    args: &LoadgenArgs,
    summary: &mut PeerSummary,
) -> Result<()> {
    let rounds = args.ratio_rounds.max(1);
    let closed: Vec<Level> = args.concurrency.iter().map(|&c| Level::Closed(c)).collect();
    if !closed.is_empty() {
        let time = LevelTime::new(args);
        println!(
            "\nclosed loop, {rounds} round(s): up to {} requests or {} s per level and server, the first {:.1} s not counted",
            args.requests,
            args.max_seconds,
            time.warmup.as_secs_f64()
        );
        summary.closed = interleaved(sides, args, &closed, rounds).await;
        medians(&summary.closed, &closed, &mut summary.medians);
    }
    let rate = match args.open_fraction {
        Some(f) => {
            let saturation = summary
                .medians
                .iter()
                .map(|m| m.diffgap_requests_per_s)
                .fold(0.0, f64::max);
            if saturation <= 0.0 {
                bail!("--open-fraction needs closed-loop rounds in which diffgap answered");
            }
            println!(
                "\nopen-loop rate: {f} x diffgap's saturation {saturation:.1} req/s = {:.1} req/s",
                f * saturation
            );
            f * saturation
        }
        None => args.rate,
    };
    if rate > 0.0 {
        println!(
            "\nopen loop, {rounds} round(s): {rate:.1} req/s for {} s per level and server",
            args.open_seconds
        );
        let open = [Level::Open(rate)];
        summary.open_rate = Some(rate);
        summary.open = interleaved(sides, args, &open, rounds).await;
        medians(&summary.open, &open, &mut summary.medians);
    }
    Ok(())
}

/// `rounds` rounds of every level on both servers; diffgap first in odd rounds, the peer in
/// even ones.
async fn interleaved(
    sides: &[Side; 2],
    args: &LoadgenArgs,
    levels: &[Level],
    rounds: usize,
) -> Vec<PeerRound> {
    let mut out = Vec::new();
    for round in 1..=rounds {
        let diffgap_first = round % 2 == 1;
        for &level in levels {
            let (d, p) = if diffgap_first {
                let d = level.run(&sides[0], args).await;
                (d, level.run(&sides[1], args).await)
            } else {
                let p = level.run(&sides[1], args).await;
                (level.run(&sides[0], args).await, p)
            };
            let r = PeerRound::new(&level.name(), round, diffgap_first, d, p);
            r.print();
            out.push(r);
        }
    }
    out
}

/// The medians of each level's rounds, printed and appended to `out`.
fn medians(rounds: &[PeerRound], levels: &[Level], out: &mut Vec<PeerMedians>) {
    println!("medians over rounds (ratios diffgap / peer):");
    for level in levels {
        if let Some(m) = PeerMedians::of(rounds, &level.name()) {
            m.print();
            out.push(m);
        }
    }
}
