//! `diffgap loadgen-audio`: Bridge latency beside heavy audio, against a running `diffgap serve`.
//!
//! For each count `k` of `--audio-clients`: `k` clients loop Embed requests of long WAV clips
//! (valid audio, `--audio-seconds` each), and once each has been answered once (the load is in
//! its steady state) one client sends `--bridges` Bridge requests one after the other. Printed
//! per `k`: the Bridges' p50, p99 and max, the Embeds answered meanwhile, and the p99 as a
//! ratio of the first level's (normally `k` = 0, Bridges alone). A markdown table.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use super::load::ready_server;
use tonic::transport::Channel;

use crate::service::proto::diffgap_client::DiffgapClient;
use crate::service::proto::{raw_input::Input, BridgeItem, BridgeRequest, EmbedRequest, RawInput};

#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenAudioArgs {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Clients looping long-audio Embeds, one level each (the first is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "0,2,4")]
    pub audio_clients: Vec<usize>,
    /// Bridge requests per level, sent one after the other.
    #[arg(long, default_value_t = 200)]
    pub bridges: usize,
    /// Length of each clip, in seconds.
    #[arg(long, default_value_t = 29.0)]
    pub audio_seconds: f64,
    /// DDIM steps of each Bridge.
    #[arg(long, default_value_t = 10)]
    pub steps: u32,
    /// Deadline of each request, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
}

/// A mono 16-bit PCM WAV of `seconds` of deterministic noise at `rate` Hz.
pub fn noise_wav(seconds: f64, rate: u32, seed: u64) -> Result<Vec<u8>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut out, spec).context("WAV writer")?;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    for _ in 0..(seconds * rate as f64) as u64 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // A quarter of full scale: loud enough to be heard, far from clipping.
        w.write_sample(((state >> 48) as i16) / 4)
            .context("WAV sample")?;
    }
    w.finalize().context("WAV end")?;
    Ok(out.into_inner())
}

/// One level's result.
#[derive(Debug, Clone)]
pub struct Level {
    pub audio_clients: usize,
    pub bridges: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Embed requests answered while the Bridges ran.
    pub embeds_meanwhile: usize,
}

pub fn run(args: &LoadgenAudioArgs) -> Result<()> {
    if args.audio_clients.is_empty() || args.bridges == 0 {
        bail!("--audio-clients and --bridges need at least one");
    }
    let rt = tokio::runtime::Runtime::new().context("runtime")?;
    let levels = rt.block_on(drive(args))?;
    print_table(args, &levels);
    Ok(())
}

async fn drive(args: &LoadgenAudioArgs) -> Result<Vec<Level>> {
    let ready = ready_server(&args.addr).await?;
    let (client, m, from, to) = (ready.client, ready.model, ready.from, ready.to);
    let rate = m.audio_sample_rate;
    if rate == 0 {
        bail!("model '{}' has no audio encoder", m.name);
    }
    let wav = Arc::new(noise_wav(args.audio_seconds, rate, 7)?);
    let bridge = BridgeItem {
        steps: Some(args.steps),
        ..BridgeItem::new(
            &from,
            &to,
            crate::loadgen::lcg_vector(11, m.dim as usize),
            Some(3),
        )
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut levels = Vec::new();
    for &k in &args.audio_clients {
        levels.push(level(&client, k, &wav, &bridge, args.bridges, timeout).await?);
    }
    Ok(levels)
}

/// One level: `k` looping audio clients, then `n` Bridges one after the other.
async fn level(
    client: &DiffgapClient<Channel>,
    k: usize,
    wav: &Arc<Vec<u8>>,
    bridge: &BridgeItem,
    n: usize,
    timeout: Duration,
) -> Result<Level> {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(k.max(1));
    let mut loops = Vec::with_capacity(k);
    for _ in 0..k {
        let (mut c, wav, stop, answered, first) = (
            client.clone(),
            wav.clone(),
            stop.clone(),
            answered.clone(),
            first_tx.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut req = tonic::Request::new(EmbedRequest {
                    model: String::new(),
                    inputs: vec![RawInput {
                        input: Some(Input::Audio(wav.to_vec())),
                    }],
                });
                req.set_timeout(timeout);
                c.embed(req).await.context("Embed")?;
                answered.fetch_add(1, Ordering::Relaxed);
                let _ = first.try_send(());
            }
            anyhow::Ok(())
        }));
    }
    drop(first_tx);
    // Steady state: every looping client has been answered once.
    let mut firsts = 0;
    while firsts < k && first_rx.recv().await.is_some() {
        firsts += 1;
    }
    let mut hist = Histogram::<u64>::new(3).context("histogram")?;
    let mut c = client.clone();
    let before = answered.load(Ordering::Relaxed);
    for _ in 0..n {
        let mut req = tonic::Request::new(BridgeRequest::new(vec![bridge.clone()]));
        req.set_timeout(timeout);
        let t0 = Instant::now();
        c.bridge(req).await.context("Bridge")?;
        hist.record(t0.elapsed().as_micros().max(1) as u64)
            .context("record")?;
    }
    let embeds_meanwhile = answered.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.context("audio client")??;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Level {
        audio_clients: k,
        bridges: n,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
        embeds_meanwhile,
    })
}

fn print_table(args: &LoadgenAudioArgs, levels: &[Level]) {
    println!(
        "Bridge ({} steps, 1 item) latency beside clients looping {} s WAV Embeds, {} Bridges per level, one at a time:\n",
        args.steps, args.audio_seconds, args.bridges
    );
    println!("| audio clients | Bridges | p50 ms | p99 ms | max ms | Embeds answered meanwhile | p99 / p99 of the first level |");
    println!("|---|---|---|---|---|---|---|");
    let base = levels.first().map_or(f64::NAN, |l| l.p99_ms);
    for l in levels {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.2} |",
            l.audio_clients,
            l.bridges,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            l.embeds_meanwhile,
            l.p99_ms / base
        );
    }
}
