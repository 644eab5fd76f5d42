//! The service side of a run: connect, warm up, the closed-loop sweep over concurrencies, then
//! the open loop at its rate, each level printed as it ends.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tonic::transport::Channel;

use super::args::LoadgenArgs;
use super::load::{connect, one, Load, Target};
use super::loops::{closed_loop, open_loop, LevelResult, LevelTime};
use super::outcome::rss_mib;
use super::report::{header, row};
use super::summary::LevelSummary;
use super::DiffgapClient;

/// What [`drive`] measured, with the client and load for later rounds.
pub(super) struct Driven {
    pub target: Target,
    /// One client per connection.
    pub clients: Vec<DiffgapClient<Channel>>,
    pub load: Arc<Load>,
    pub closed: Vec<LevelSummary>,
    pub open_rate: Option<f64>,
    pub open: Option<LevelSummary>,
}

pub(super) async fn drive(args: &LoadgenArgs) -> Result<Driven> {
    let (mut clients, target) = connect(args).await?;
    let load = Arc::new(Load::new(target.clone(), args));
    // Warm the connections and the server.
    for (i, client) in clients.iter_mut().enumerate() {
        one(client, &load, i)
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
            let r = closed_loop(&clients, &load, c, args.requests, level_time).await;
            let r = summarised(&r, &format!("conc {c}"), args);
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
            &clients,
            &load,
            rate,
            Duration::from_secs_f64(args.open_seconds),
        )
        .await;
        let r = summarised(&r, &format!("{rate:.0} rps"), args);
        row(&r);
        open = Some(r);
    }
    Ok(Driven {
        target,
        clients,
        load,
        closed,
        open_rate: (rate > 0.0).then_some(rate),
        open,
    })
}

/// A level's summary, with the server's resident memory now (`--server-pid`).
fn summarised(r: &LevelResult, load: &str, args: &LoadgenArgs) -> LevelSummary {
    LevelSummary {
        server_rss_mib: args.server_pid.and_then(rss_mib),
        ..r.summary(load, args.items)
    }
}
