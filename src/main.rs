use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tch::{Device, Kind, Tensor};

use diffgap::data::pairs::{write_named, PairedSet};
use diffgap::data::synthetic::{self, SyntheticSpec};
use diffgap::device::{describe, DeviceChoice, Dtype};
use diffgap::diffusion::sampler::SampleOptions;
use diffgap::eval::report::{self, EvalOptions, Fusion};
use diffgap::model::{artifact, row_seed};
use diffgap::service::ops::telemetry;
use diffgap::service::{LogFormat, ServeArgs, ServeConfig};
use diffgap::{bench, train};

/// DiffGAP: bridge the modality gap of a contrastive embedding space (text-audio CLAP, video-audio
/// CAVP, or your own) with a lightweight bidirectional diffusion model.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a denoiser on paired embeddings and write a model directory.
    Train(train::TrainConfig),
    /// Evaluate a model on paired embeddings: retrieval in both directions for the contrastive
    /// baseline and each DiffGAP mode, plus gap measures.
    Eval(EvalArgs),
    /// The bridge for generation: step count, samples averaged and guidance swept, judged by
    /// the generation measures (Frechet, k-NN precision/recall/density/coverage) next to ridge.
    BridgeSweep(diffgap::eval::sweep::SweepArgs),
    /// Print several `diffgap eval --json` reports side by side (ablations).
    Compare(diffgap::eval::compare::CompareArgs),
    /// Bridge embeddings of one modality into another's region (e.g. text -> audio-like).
    Bridge(BridgeArgs),
    /// Write a synthetic paired set (known non-linear relation plus a modality gap).
    Synth(SynthArgs),
    /// Measure bridging throughput and the denoiser's GFLOP/s against a plain matrix product.
    Bench(bench::BenchArgs),
    /// Load a running server (closed loop over concurrencies, open loop at a rate) and print
    /// throughput and latency percentiles next to the in-process engine's best throughput.
    Loadgen(diffgap::loadgen::LoadgenArgs),
    /// The service benchmark's tables from `diffgap loadgen --summary-json` files (run by
    /// scripts/bench-service.sh).
    #[command(subcommand)]
    LoadgenSummary(diffgap::loadgen::report::LoadgenSummaryCommand),
    /// The results pages under docs/results (run by scripts/results.sh).
    #[command(subcommand)]
    Results(diffgap::eval::results::ResultsCommand),
    /// Bridge latency alone and beside clients looping long-audio Embeds (a markdown table).
    LoadgenAudio(diffgap::loadgen::audio::LoadgenAudioArgs),
    /// A bounded soak of a running server: mixed valid and invalid traffic, then reloads, with
    /// the server's memory sampled (run by scripts/soak.sh).
    Soak(diffgap::loadgen::soak::SoakArgs),
    /// Serve a model over gRPC (diffgap.v1.Diffgap: Bridge, Rank, Info; plus health and
    /// reflection, and Prometheus metrics on their own port) until SIGINT or SIGTERM, then
    /// drain. Settings layer: defaults < diffgap.toml (or --config FILE / DIFFGAP_CONFIG) <
    /// DIFFGAP_* environment variables < flags.
    Serve(ServeArgs),
    /// Inspect the serving configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask a server's grpc.health.v1 service; exits 0 when SERVING, 1 otherwise (for a
    /// container HEALTHCHECK or a script).
    Health(diffgap::service::api::security::HealthArgs),
    /// The real corpus of described sounds from Debian packages (run through
    /// scripts/build-corpus.sh, which fetches the pinned packages first).
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// Catalogs: named candidate sets the server ranks against (Rank with `catalog`).
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// The small CLAP: embed a corpus with the frozen encoders, train the projection heads.
    #[command(subcommand)]
    Projection(diffgap::projection::ProjectionCommand),
    /// Draw the modality gap before and after bridging (2-D principal axes) to a PNG.
    PlotGap(diffgap::eval::plot::PlotGapArgs),
    /// The cheap baselines every DiffGAP number stands next to.
    #[command(subcommand)]
    Baselines(BaselinesCommand),
    /// Give a model directory its encoders (raw text and audio in, instead of embeddings).
    #[command(subcommand)]
    Encoders(EncodersCommand),
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Build a catalog for a model from a paired or single-modality embeddings file, or from a
    /// folder of audio files through the model's encoders: the entries, their ids and their
    /// reverse-bridged embeddings (so Rank against it is exact and needs no bridging of
    /// candidates).
    Build(diffgap::service::request::catalog::BuildArgs),
    /// Export a catalog for a vector database: entries.jsonl (id, the raw embedding and the
    /// reverse-bridged ones as named vectors, the model's fingerprint) and export.json (the
    /// model, and how Rank's weighted modes score a query against the vectors).
    Export(diffgap::service::request::catalog_export::ExportArgs),
}

#[derive(Subcommand)]
enum BaselinesCommand {
    /// Fit the baselines (mean-centring, inverted softmax, ridge, Procrustes, contrastive
    /// adapter) and the hubness-corrected fusion on a trained model's training and validation
    /// rows, and store them in its directory, as `diffgap train` does. For models trained
    /// before the baselines existed.
    Fit(diffgap::train::baselines::FitArgs),
}

#[derive(Subcommand)]
enum EncodersCommand {
    /// Copy the exported encoders (models/export_encoders.py) and the projection heads into
    /// <model>/encoders/ and write encoders.json with their sha256.
    Attach(diffgap::encoders::attach::AttachArgs),
}

#[derive(Subcommand)]
enum CorpusCommand {
    /// Build the clips (mono 44.1 kHz float WAV), manifest.jsonl (caption, sound identity,
    /// split, package, version, path, licence, rendering parameters) and the summary from the
    /// extracted packages; split by sound identity; a no-op when the output is up to date.
    Build(diffgap::corpus::CorpusBuildArgs),
    /// Print the pinned packages of the sources file, one `source name version deb sha256`
    /// line each (what scripts/build-corpus.sh fetches, checks and extracts).
    Packages(diffgap::corpus::CorpusPackagesArgs),
    /// Check each fetched .deb against its pin, unpack only the files the corpus reads and
    /// delete the .deb (packages whose tree is up to date are left alone).
    Extract(diffgap::corpus::CorpusExtractArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration of `diffgap serve` (the file, the environment and
    /// these flags layered over the defaults) as TOML, and exit.
    Print(ServeArgs),
}

#[derive(clap::Args)]
struct SamplingArgs {
    /// DDIM steps (1..=T). More steps follow the learned distribution more closely; retrieval
    /// quality usually saturates after 10-20. Default: the model card's.
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance: 1 = plain conditional; above 1 pushes samples towards the
    /// condition at the cost of diversity; 0 ignores the condition.
    #[arg(long)]
    guidance: Option<f32>,
    /// Samples averaged per item: more samples approach the conditional mean, at linear cost.
    #[arg(long)]
    samples: Option<usize>,
    /// Seed; row i uses a stream derived from (seed, i), so results do not depend on batching.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Number format of the denoiser network (float32 runs the TorchScript module).
    #[arg(long, value_enum, default_value_t = Dtype::Float32)]
    dtype: Dtype,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Model directory written by `diffgap train`.
    #[arg(long)]
    model: PathBuf,
    /// Held-out paired embeddings (.safetensors or .npz) with the model's two modalities.
    #[arg(long)]
    pairs: PathBuf,
    /// Also write every number, with the data fingerprint, as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Candidates per query re-ranked by the generative score (0 skips it; cost grows linearly).
    #[arg(long, default_value_t = 10)]
    shortlist: usize,
    /// DDIM steps of the bridged vectors the gap measures use. Default: the card's generation
    /// steps (`--steps` defaults to its ranking steps).
    #[arg(long)]
    gap_steps: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(clap::Args)]
struct BridgeArgs {
    #[arg(long)]
    model: PathBuf,
    /// File holding a [rows, dim] tensor named after --from.
    #[arg(long)]
    input: PathBuf,
    /// Source modality (the condition).
    #[arg(long)]
    from: String,
    /// Target modality (what to sample).
    #[arg(long)]
    to: String,
    /// Output file (.safetensors or .npz) with a tensor named after --to.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(clap::Args)]
struct SynthArgs {
    /// Output file (.safetensors or .npz).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    spec: SyntheticSpec,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // `serve` chooses its log format in its configuration; everything else logs text.
    let serve_cfg = match &cli.command {
        Command::Serve(args) | Command::Config(ConfigCommand::Print(args)) => {
            Some(ServeConfig::load(args).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    telemetry::init(serve_cfg.as_ref().map_or(LogFormat::Text, |c| c.log_format));
    match cli.command {
        Command::Train(cfg) => {
            let out = train::train(&cfg)?;
            println!("{}", diffgap::eval::render::render(&out.report));
            println!(
                "model written to {} ({} parameters)",
                cfg.out.display(),
                out.card.parameters
            );
        }
        Command::Eval(args) => eval(args)?,
        Command::BridgeSweep(args) => print!("{}", diffgap::eval::sweep::sweep(&args)?),
        Command::Compare(args) => print!("{}", diffgap::eval::compare::compare(&args)?),
        Command::Bridge(args) => bridge(args)?,
        Command::Synth(args) => {
            write_named(&args.out, &synthetic::generate(&args.spec))?;
            println!("wrote {}", args.out.display());
        }
        Command::Bench(args) => bench::run(&args)?,
        Command::Loadgen(args) => diffgap::loadgen::run(&args)?,
        Command::LoadgenSummary(cmd) => cmd.run()?,
        Command::Results(cmd) => cmd.run()?,
        Command::LoadgenAudio(args) => diffgap::loadgen::audio::run(&args)?,
        Command::Soak(args) => diffgap::loadgen::soak::run(&args)?,
        Command::Serve(_) => serve(serve_cfg.context("the serve configuration")?)?,
        Command::Health(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match rt.block_on(diffgap::service::api::security::check_health(&args)) {
                Ok(status) if status == "SERVING" => println!("{status}"),
                Ok(status) => {
                    println!("{status}");
                    std::process::exit(1);
                }
                Err(e) => {
                    eprintln!("diffgap health: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Corpus(CorpusCommand::Build(args)) => {
            let started = std::time::Instant::now();
            let report = diffgap::corpus::build(&args.options())?;
            print!("{}", report.summary.table());
            let what = if report.cached { "up to date" } else { "built" };
            println!(
                "corpus {what}: {} ({:.1} s)",
                args.out.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Corpus(CorpusCommand::Packages(args)) => print!("{}", args.listing()?),
        Command::Corpus(CorpusCommand::Extract(args)) => print!("{}", args.run()?),
        Command::Projection(cmd) => cmd.run()?,
        Command::Catalog(CatalogCommand::Build(args)) => {
            let meta = diffgap::service::request::catalog::build(&args)?;
            println!(
                "catalog '{}' for model '{}': {} {} entries, reverse-bridged into {:?}; written to {}",
                meta.name,
                meta.model,
                meta.ids.len(),
                meta.modality,
                meta.reverse.keys().collect::<Vec<_>>(),
                args.out.display()
            );
        }
        Command::Catalog(CatalogCommand::Export(args)) => {
            let meta = diffgap::service::request::catalog_export::export(&args)?;
            println!(
                "catalog '{}' exported: {} entries with vectors {:?} for model '{}' ({}); written to {}",
                meta.catalog,
                meta.entries,
                meta.vectors.keys().collect::<Vec<_>>(),
                meta.model,
                meta.model_fingerprint,
                args.out.display()
            );
        }
        Command::PlotGap(args) => {
            diffgap::eval::plot::plot_gap(&args)?;
            println!("wrote {}", args.out.display());
        }
        Command::Baselines(BaselinesCommand::Fit(args)) => {
            let card = diffgap::train::baselines::fit_into_model(&args)?;
            println!(
                "baselines fitted on {} rows, stored in {}",
                card.baselines.as_ref().map_or(0, |b| b.train_rows),
                args.model.display()
            );
        }
        Command::Encoders(EncodersCommand::Attach(args)) => {
            let dir = diffgap::encoders::attach::attach(&args)?;
            println!("encoders attached: {}", dir.display());
        }
        Command::Config(ConfigCommand::Print(_)) => {
            let cfg = serve_cfg.context("the serve configuration")?;
            print!("{}", cfg.to_toml().map_err(anyhow::Error::msg)?);
        }
    }
    Ok(())
}

fn sample_options(s: &SamplingArgs, card: &diffgap::model::card::ModelCard) -> SampleOptions {
    SampleOptions {
        steps: s.steps.unwrap_or(card.defaults.steps),
        guidance: s.guidance.unwrap_or(card.defaults.guidance),
        samples: s.samples.unwrap_or(card.defaults.samples),
    }
}

fn resolve(d: DeviceChoice) -> Result<Device> {
    d.resolve().map_err(anyhow::Error::msg)
}

fn eval(args: EvalArgs) -> Result<()> {
    let device = resolve(args.sampling.device)?;
    let model = artifact::load_as(&args.model, device, args.sampling.dtype)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let set = PairedSet::load(&args.pairs)?;
    let m = &model.card.space.modalities;
    if m.len() != 2 {
        bail!("the model has modalities {m:?}; eval needs a two-modality model");
    }
    // Retrieval scores use the card's ranking defaults, the gap measures its generation ones.
    let d = &model.card.defaults;
    let opts = EvalOptions {
        steps: args.sampling.steps.unwrap_or(d.rank_steps),
        samples: args.sampling.samples.unwrap_or(d.rank_samples),
        guidance: args.sampling.guidance.unwrap_or(d.guidance),
        seed: args.sampling.seed,
        shortlist: args.shortlist,
        gap_steps: args.gap_steps.unwrap_or(d.steps),
    };
    tracing::info!(device = %describe(device), "evaluating on {} rows", set.rows());
    let baselines = artifact::load_baselines(&args.model, &model.card, device)?;
    if baselines.is_none() {
        tracing::warn!(
            "{} holds no fitted baselines (trained before they existed): the ladder is left out; add them with `diffgap baselines fit`",
            args.model.display()
        );
    }
    let rep = report::evaluate_with_baselines(
        &model,
        &set,
        (&m[0], &m[1]),
        Fusion::Card(&model.card.fusion),
        opts,
        baselines.as_ref(),
    )?;
    println!("{}", diffgap::eval::render::render(&rep));
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&rep)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bridge(args: BridgeArgs) -> Result<()> {
    let device = resolve(args.sampling.device)?;
    let model = artifact::load_as(&args.model, device, args.sampling.dtype)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let set = PairedSet::load(&args.input)?;
    let x = set.modality(&args.from)?;
    let seeds: Vec<u64> = (0..set.rows())
        .map(|i| row_seed(args.sampling.seed, i))
        .collect();
    let y = model.bridge(
        x,
        &args.from,
        &args.to,
        &seeds,
        sample_options(&args.sampling, &model.card),
    )?;
    let y: Tensor = y.to_kind(Kind::Float);
    write_named(&args.out, &[(args.to.clone(), y)])?;
    println!(
        "bridged {} rows {} -> {} into {}",
        set.rows(),
        args.from,
        args.to,
        args.out.display()
    );
    Ok(())
}

fn serve(cfg: ServeConfig) -> Result<()> {
    let runtime = diffgap::service::ops::threads::runtime(cfg.io_thread_policy)
        .context("starting the async runtime")?;
    let served = runtime.block_on(diffgap::service::serve(cfg, shutdown_signal()));
    // Whatever is still running (a model thread past the drain deadline) is not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT (ctrl-c) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for ctrl-c: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
