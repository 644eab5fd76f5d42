//! `diffgap soak`: a bounded soak of a running `diffgap serve`. Closed-loop clients send the
//! mixed valid and invalid traffic of [`mix`] for `--seconds`, the server's resident memory is
//! sampled every `--sample-seconds`; then `--reloads` Reload calls, each followed by a few
//! seconds of the same traffic (so the new models are used) and a memory sample. The tables
//! and goals are [`report`]'s; `--check` fails the command when a goal is missed.

mod mix;
pub mod report;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tonic::transport::Channel;

use super::load::{lazy_client, ready_server};
use super::outcome::rss_mib;
use crate::service::proto::diffgap_client::DiffgapClient;
use crate::service::proto::ReloadRequest;
use mix::{Mix, Verdict};
use report::{Counts, ReloadSample, Sample, SoakReport};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The server's process id (its memory is read from Linux /proc).
    #[arg(long)]
    pub server_pid: u32,
    /// Closed-loop clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Connections the clients take in turn.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Length of the mixed traffic, in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub seconds: f64,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 10.0)]
    pub sample_seconds: f64,
    /// Start of the traffic during which memory may grow (allocator pools, caches).
    #[arg(long, default_value_t = 120.0)]
    pub warmup_seconds: f64,
    /// Reload calls after the traffic.
    #[arg(long, default_value_t = 20)]
    pub reloads: usize,
    /// Seconds of traffic after each reload.
    #[arg(long, default_value_t = 5.0)]
    pub reload_seconds: f64,
    /// A file whose first line is an admin token of the server (Reload needs one).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Deadline of each call, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Writes the samples as JSON here.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Fails (exit status 1) when a goal is missed.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &SoakArgs) -> Result<()> {
    if args.clients == 0 || args.connections == 0 || args.sample_seconds <= 0.0 {
        bail!("--clients, --connections and --sample-seconds must be positive");
    }
    let admin = match (&args.admin_token_file, args.reloads) {
        (_, 0) => None,
        (Some(f), _) => Some(first_line(f)?),
        (None, _) => bail!("--reloads needs --admin-token-file (Reload needs an admin token)"),
    };
    let rt = tokio::runtime::Runtime::new().context("the async runtime")?;
    let report = rt.block_on(soak(args, admin))?;
    print!("{}", report.table());
    if let Some(path) = &args.summary_json {
        let text = serde_json::to_string_pretty(&report).context("encoding the summary")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = report.failed_goals();
    if args.check && !failed.is_empty() {
        bail!("soak goals missed: {}", failed.join("; "));
    }
    Ok(())
}

fn first_line(path: &PathBuf) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the admin token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        bail!("{} holds no token", path.display());
    }
    Ok(token)
}

async fn soak(args: &SoakArgs, admin: Option<String>) -> Result<SoakReport> {
    let ready = ready_server(&args.addr).await?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let mix = Arc::new(Mix::new(&ready.model, &ready.from, &ready.to, timeout));
    let mut conns = vec![ready.client.clone()];
    for _ in 1..args.connections {
        conns.push(lazy_client(&args.addr)?);
    }
    println!(
        "soak of {} (model {}, catalog {:?}): {} clients, {:.0} s, then {} reloads",
        args.addr,
        ready.model.name,
        mix.catalog.as_ref().map(|c| &c.0),
        args.clients,
        args.seconds,
        args.reloads
    );
    let traffic = Traffic {
        mix,
        conns,
        clients: args.clients,
        pid: args.server_pid,
    };
    let samples = traffic.run(args.seconds, args.sample_seconds).await?;
    let mut reloads = Vec::new();
    let mut client = ready.client;
    for reload in 1..=args.reloads {
        let reloaded = reload_all(&mut client, admin.as_deref().unwrap_or_default()).await?;
        let after = traffic
            .run(args.reload_seconds, args.reload_seconds)
            .await?;
        let last = after.last().context("no sample after a reload")?;
        reloads.push(ReloadSample {
            reload,
            reloaded,
            rss_mib: last.rss_mib,
            calls: last.calls,
        });
    }
    Ok(SoakReport {
        clients: args.clients,
        warmup_seconds: args.warmup_seconds,
        samples,
        reloads,
    })
}

/// Reload with `token`: whether every model and catalog reloaded.
async fn reload_all(client: &mut DiffgapClient<Channel>, token: &str) -> Result<bool> {
    let mut req = tonic::Request::new(ReloadRequest {});
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the admin token as a header")?,
    );
    let resp = client.reload(req).await.context("Reload")?.into_inner();
    let all = resp.models.iter().chain(&resp.catalogs);
    Ok(all.clone().all(|o| o.reloaded) && all.count() > 0)
}

/// The closed-loop clients.
struct Traffic {
    mix: Arc<Mix>,
    conns: Vec<DiffgapClient<Channel>>,
    clients: usize,
    pid: u32,
}

#[derive(Default)]
struct Tally([AtomicU64; 4]);

impl Tally {
    fn add(&self, v: Verdict) {
        self.0[v as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> Counts {
        let n = |v: Verdict| self.0[v as usize].load(Ordering::Relaxed);
        Counts {
            answered: n(Verdict::Answered),
            rejected: n(Verdict::Rejected),
            shed: n(Verdict::Shed),
            unexpected: n(Verdict::Unexpected),
        }
    }
}

impl Traffic {
    /// Runs the clients for `seconds`, sampling the server's memory and the calls every
    /// `every` seconds; returns once every client has stopped.
    async fn run(&self, seconds: f64, every: f64) -> Result<Vec<Sample>> {
        let (stop, tally, next) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Tally::default()),
            Arc::new(AtomicUsize::new(0)),
        );
        let tasks: Vec<_> = (0..self.clients)
            .map(|c| {
                let mut client = self.conns[c % self.conns.len()].clone();
                let (mix, stop, tally, next) =
                    (self.mix.clone(), stop.clone(), tally.clone(), next.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let (_, verdict) = mix.call(&mut client, i).await;
                        tally.add(verdict);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        let mut samples = Vec::new();
        let mut before = Counts::default();
        let mut at = 0.0;
        while at < seconds {
            at = (at + every).min(seconds);
            tokio::time::sleep_until((start + Duration::from_secs_f64(at)).into()).await;
            let now = tally.read();
            samples.push(Sample {
                seconds: at,
                rss_mib: rss_mib(self.pid).context("reading the server's memory (--server-pid)")?,
                calls: minus(now, before),
            });
            before = now;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.context("a soak client")?;
        }
        // The calls that ended after the last sample count in it.
        if let Some(last) = samples.last_mut() {
            let late = minus(tally.read(), before);
            last.calls = add(last.calls, late);
        }
        Ok(samples)
    }
}

fn minus(a: Counts, b: Counts) -> Counts {
    Counts {
        answered: a.answered - b.answered,
        rejected: a.rejected - b.rejected,
        shed: a.shed - b.shed,
        unexpected: a.unexpected - b.unexpected,
    }
}

fn add(a: Counts, b: Counts) -> Counts {
    Counts {
        answered: a.answered + b.answered,
        rejected: a.rejected + b.rejected,
        shed: a.shed + b.shed,
        unexpected: a.unexpected + b.unexpected,
    }
}
