//! `diffgap bench`: bridging throughput over batch sizes and step counts, and the denoiser's
//! achieved GFLOP/s next to a plain matrix product of its widest layer, measured in one run so
//! the ratio is meaningful on a noisy machine.
//!
//! - [`timing`]: the in-process timing shared with `diffgap loadgen` and the model-worker bench.

pub mod timing;

use std::path::PathBuf;

use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::device::{describe, DeviceChoice};
use crate::diffusion::denoiser::DenoiserShape;
use crate::diffusion::sampler::SampleOptions;
use crate::model::{artifact, row_seed, DiffgapModel};

use timing::{sync, time_median, BridgeCall};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Model directory to measure.
    #[arg(long, default_value = "models/default")]
    pub model: PathBuf,
    /// Batch sizes (rows per call).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64,256,1024")]
    pub batch_sizes: Vec<usize>,
    /// DDIM step counts.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    pub steps: Vec<usize>,
    /// Timed repetitions per cell; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// libtorch intra-op threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Multiply-adds x 2 of one denoiser forward pass for one row.
pub fn flops_per_row(s: &DenoiserShape) -> f64 {
    let (d, w, depth) = (s.dim as f64, s.width as f64, s.depth as f64);
    let embed = w * w * 2.0 + d * w; // time MLP + condition projection
    let blocks = depth * (w * 3.0 * w + w * 2.0 * w + 2.0 * w * w);
    let ends = d * w + w * 2.0 * w + w * d; // input, final modulation, output
    2.0 * (embed + blocks + ends)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let model: DiffgapModel = artifact::load(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let shape = model.card.denoiser;
    let (from, to) = (
        &model.card.directions[0].condition,
        &model.card.directions[0].target,
    );
    let flops = flops_per_row(&shape);
    println!(
        "model {} (dim {}, width {}, depth {}, {} parameters), device {}, {} threads, median of {} runs",
        args.model.display(),
        shape.dim,
        shape.width,
        shape.depth,
        model.card.parameters,
        describe(device),
        tch::get_num_threads(),
        args.reps
    );
    println!("\n| batch | steps | embeddings/s | ms per call | denoiser GFLOP/s | matmul GFLOP/s | ratio |");
    println!("|---|---|---|---|---|---|---|");
    let _g = tch::no_grad_guard();
    for &b in &args.batch_sizes {
        let x = Tensor::randn([b as i64, shape.dim], (Kind::Float, device));
        // The widest layer's shape at this batch size: [b, w] x [w, 3w].
        let lhs = Tensor::randn([b as i64, shape.width], (Kind::Float, device));
        let rhs = Tensor::randn([shape.width, 3 * shape.width], (Kind::Float, device));
        let mm = time_median(args.reps, || {
            for _ in 0..10 {
                let _ = lhs.matmul(&rhs);
            }
            sync(device);
            Ok(())
        })? / 10.0;
        let mm_gflops = 2.0 * b as f64 * shape.width as f64 * 3.0 * shape.width as f64 / mm / 1e9;
        for &steps in &args.steps {
            let call = BridgeCall {
                model: &model,
                x: x.shallow_clone(),
                from,
                to,
                seeds: (0..b).map(|i| row_seed(1, i)).collect(),
                opts: SampleOptions {
                    steps,
                    guidance: 1.0,
                    samples: 1,
                },
            };
            let secs = time_median(args.reps, || call.run())?;
            let gflops = flops * (b * steps) as f64 / secs / 1e9;
            println!(
                "| {b} | {steps} | {:.0} | {:.2} | {:.1} | {:.1} | {:.2} |",
                b as f64 / secs,
                secs * 1e3,
                gflops,
                mm_gflops,
                gflops / mm_gflops
            );
        }
    }
    Ok(())
}
