//! `diffgap bridge-sweep`: the bridge for generation, judged by the generation measures. A
//! conditional mean (one DDIM step, or many samples averaged) sits close to each partner but
//! collapses the spread; a sampler that follows the target distribution should cover it. This
//! sweeps step count, samples averaged and guidance, next to the ridge map's regression, so the
//! generation defaults can be chosen on validation rows with numbers.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;
use tch::Tensor;

use super::generation::{self, GenerationReport};
use super::views::view;
use crate::data::pairs::PairedSet;
use crate::diffusion::sampler::SampleOptions;
use crate::model::card::direction_key;
use crate::model::{artifact, row_seed};

#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Model directory.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Paired embeddings: the validation split to choose on, the test split to report.
    #[arg(long)]
    pub pairs: std::path::PathBuf,
    /// Also write every row as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "auto")]
    pub device: crate::device::DeviceChoice,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub steps: usize,
    pub samples: usize,
    pub guidance: f32,
    pub measures: GenerationReport,
}

/// (steps, samples, guidance): steps with one sample and with four averaged, then guidance.
fn grid() -> Vec<(usize, usize, f32)> {
    let mut g = Vec::new();
    for samples in [1, 4] {
        for steps in [1, 2, 5, 10, 25, 50] {
            g.push((steps, samples, 1.0));
        }
    }
    for guidance in [1.5, 2.0, 3.0] {
        g.push((10, 1, guidance));
    }
    g
}

pub fn sweep(args: &SweepArgs) -> Result<String> {
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let model = artifact::load(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let baselines = artifact::load_baselines(&args.model, &model.card, device)?;
    let set = PairedSet::load(&args.pairs)?;
    let m = model.card.space.modalities.clone();
    let mut rows = Vec::new();
    let mut ridge = Vec::new();
    for (q, c) in [(&m[0], &m[1]), (&m[1], &m[0])] {
        let side = |name: &str| -> Result<(Tensor, Tensor, Vec<i64>)> {
            let full = set.modality(name)?.to_device(device);
            let v = view(&full.to_device(tch::Device::Cpu), &set.groups);
            Ok((v.select(&full), full, v.of_row))
        };
        let (qe, _, of_row) = side(q)?;
        let (ce, c_full, _) = side(c)?;
        let of_row = Tensor::from_slice(&of_row).to_device(device);
        let measure = |method: &str, mapped: &Tensor| {
            generation::measure(
                (q, c, method),
                mapped,
                &ce,
                &mapped.index_select(0, &of_row),
                &c_full,
            )
        };
        let seeds: Vec<u64> = (0..qe.size()[0] as usize)
            .map(|i| row_seed(args.seed, i))
            .collect();
        for (steps, samples, guidance) in grid() {
            let opts = SampleOptions {
                steps,
                guidance,
                samples,
            };
            let bridged = model.bridge(&qe, q, c, &seeds, opts)?;
            rows.push(SweepRow {
                steps,
                samples,
                guidance,
                measures: measure("bridged", &bridged),
            });
        }
        if let Some(b) = &baselines {
            let maps = b.maps(&direction_key(q, c)).map_err(anyhow::Error::msg)?;
            ridge.push(measure("ridge", &maps.ridge.apply(&qe)));
        }
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({"data_fingerprint": set.fingerprint, "bridged": rows, "ridge": ridge});
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(render(&set, &rows, &ridge))
}

fn render(set: &PairedSet, rows: &[SweepRow], ridge: &[GenerationReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "data {} ({} rows)", set.path.display(), set.rows());
    let _ = writeln!(s, "| direction | method | steps | samples | guidance | Frechet | Frechet (shrunk) | cosine to partner | precision | recall | density | coverage |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let line =
        |s: &mut String, g: &GenerationReport, cfg: String| {
            let p = &g.prdc;
            let _ =
                writeln!(
            s,
            "| {} -> {} | {} | {cfg} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {:.3} | {:.3} |",
            g.source, g.target, g.method, g.frechet, g.frechet_shrunk, g.paired_cosine,
            p.precision, p.recall, p.density, p.coverage
        );
        };
    for r in rows {
        line(
            &mut s,
            &r.measures,
            format!("{} | {} | {}", r.steps, r.samples, r.guidance),
        );
    }
    for g in ridge {
        line(&mut s, g, "| | ".into());
    }
    s
}
