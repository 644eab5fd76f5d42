//! The evaluation protocol: retrieval in both directions for the contrastive baseline and every
//! DiffGAP mode, plus the gap measures, on one paired set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::fusion::{self, ModeScores};
use super::gap;
use super::retrieval::{evaluate, RetrievalMetrics};
use super::views::{view, View};
use crate::data::pairs::PairedSet;
use crate::diffusion::sampler::SampleOptions;
use crate::model::card::{direction_key, FusionWeights};
use crate::model::{row_seed, DiffgapModel, ModelError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EvalOptions {
    pub steps: usize,
    pub samples: usize,
    pub guidance: f32,
    pub seed: u64,
    /// Candidates per query re-ranked by the generative score (0 = skip that mode).
    pub shortlist: usize,
    /// DDIM steps of the bridged vectors the gap measures are taken on (the generation side);
    /// `steps` is what the retrieval scores use.
    pub gap_steps: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectionReport {
    pub query: String,
    pub candidate: String,
    pub queries: usize,
    pub candidates: usize,
    pub fusion: FusionWeights,
    /// contrastive, bridged, reverse, fused, generative.
    pub modes: BTreeMap<String, RetrievalMetrics>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GapReport {
    pub source: String,
    pub target: String,
    pub mean_distance_before: f64,
    pub mean_distance_after: f64,
    pub frechet_before: f64,
    pub frechet_after: f64,
    pub paired_cosine_before: f64,
    pub paired_cosine_after: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub data_fingerprint: String,
    pub data_file: String,
    pub rows: usize,
    pub items: usize,
    pub fusion_source: String,
    pub options: EvalOptions,
    pub directions: Vec<DirectionReport>,
    pub gap: Vec<GapReport>,
    pub seconds: f64,
}

/// Where the fused mode's weights come from.
pub enum Fusion<'a> {
    /// The card's weights, fitted at training time on validation rows.
    Card(&'a BTreeMap<String, FusionWeights>),
    /// Fit on this very set: only for the validation split itself.
    FitOnThisSet,
}

pub const MODES: [&str; 5] = ["contrastive", "bridged", "reverse", "fused", "generative"];

struct Side<'a> {
    name: &'a str,
    full: Tensor,
    view: View,
    emb: Tensor,
    /// Bridged for retrieval (`steps`).
    bridged: Tensor,
    /// Bridged for the gap measures (`gap_steps`).
    generated: Tensor,
}

pub fn evaluate_model(
    model: &DiffgapModel,
    set: &PairedSet,
    pair: (&str, &str),
    fusion: Fusion<'_>,
    opts: EvalOptions,
) -> Result<EvalReport, ModelError> {
    let started = Instant::now();
    let sample = SampleOptions {
        steps: opts.steps,
        guidance: opts.guidance,
        samples: opts.samples,
    };
    let build = |name: &str,
                 other: &str,
                 salt: u64|
     -> Result<(Tensor, View, Tensor, Tensor, Tensor), ModelError> {
        let full = set
            .modality(name)
            .map_err(|e| ModelError::Invalid(e.to_string()))?
            .to_device(model.device());
        let v = view(&full.to_device(tch::Device::Cpu), &set.groups);
        let emb = v.select(&full);
        let seeds: Vec<u64> = (0..v.rows.len())
            .map(|i| row_seed(opts.seed ^ salt, i))
            .collect();
        let bridged = model.bridge(&emb, name, other, &seeds, sample)?;
        let generated = if opts.gap_steps == opts.steps {
            bridged.shallow_clone()
        } else {
            let gen = SampleOptions {
                steps: opts.gap_steps,
                ..sample
            };
            model.bridge(&emb, name, other, &seeds, gen)?
        };
        Ok((full, v, emb, bridged, generated))
    };
    let (fa, va, ea, ba, ga) = build(pair.0, pair.1, 0xA)?;
    let (fb, vb, eb, bb, gb) = build(pair.1, pair.0, 0xB)?;
    let a = Side {
        name: pair.0,
        full: fa,
        view: va,
        emb: ea,
        bridged: ba,
        generated: ga,
    };
    let b = Side {
        name: pair.1,
        full: fb,
        view: vb,
        emb: eb,
        bridged: bb,
        generated: gb,
    };

    let items = {
        let mut g = set.groups.clone();
        g.sort_unstable();
        g.dedup();
        g.len()
    };
    let mut directions = Vec::new();
    let mut gaps = Vec::new();
    for (q, c) in [(&a, &b), (&b, &a)] {
        let scores = ModeScores {
            contrastive: q.emb.matmul(&c.emb.tr()),
            bridged: q.bridged.matmul(&c.emb.tr()),
            reverse: q.emb.matmul(&c.bridged.tr()),
        };
        let key = direction_key(q.name, c.name);
        let weights = match &fusion {
            Fusion::Card(w) => *w.get(&key).ok_or_else(|| {
                ModelError::Invalid(format!("the model card has no fusion weights for {key}"))
            })?,
            Fusion::FitOnThisSet => fusion::fit(&scores, &q.view.groups, &c.view.groups).0,
        };
        let fused = scores.fuse(&weights);
        let mut modes = BTreeMap::new();
        modes.insert(
            "contrastive".into(),
            evaluate(&scores.contrastive, &q.view.groups, &c.view.groups),
        );
        modes.insert(
            "bridged".into(),
            evaluate(&scores.bridged, &q.view.groups, &c.view.groups),
        );
        modes.insert(
            "reverse".into(),
            evaluate(&scores.reverse, &q.view.groups, &c.view.groups),
        );
        modes.insert(
            "fused".into(),
            evaluate(&fused, &q.view.groups, &c.view.groups),
        );
        if opts.shortlist > 0 {
            let g = generative_rerank(model, &fused, q, c, opts.shortlist, opts.seed)?;
            modes.insert(
                "generative".into(),
                evaluate(&g, &q.view.groups, &c.view.groups),
            );
        }
        directions.push(DirectionReport {
            query: q.name.into(),
            candidate: c.name.into(),
            queries: q.view.rows.len(),
            candidates: c.view.rows.len(),
            fusion: weights,
            modes,
        });
        // Each query row against its own partner: map rows of the set onto both views.
        let q_rows = q.generated.index_select(
            0,
            &Tensor::from_slice(&q.view.of_row).to_device(model.device()),
        );
        gaps.push(GapReport {
            source: q.name.into(),
            target: c.name.into(),
            mean_distance_before: gap::mean_distance(&q.emb, &c.emb),
            mean_distance_after: gap::mean_distance(&q.generated, &c.emb),
            frechet_before: gap::frechet_distance(&q.emb, &c.emb),
            frechet_after: gap::frechet_distance(&q.generated, &c.emb),
            paired_cosine_before: gap::mean_paired_cosine(&q.full, &c.full),
            paired_cosine_after: gap::mean_paired_cosine(&q_rows, &c.full),
        });
    }
    Ok(EvalReport {
        data_fingerprint: set.fingerprint.clone(),
        data_file: set.path.display().to_string(),
        rows: set.rows(),
        items,
        fusion_source: match fusion {
            Fusion::Card(_) => "model card (fitted on the training run's validation split)".into(),
            Fusion::FitOnThisSet => "fitted on this set (validation split)".into(),
        },
        options: opts,
        directions,
        gap: gaps,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Re-ranks each query's `k` best fused candidates by the generative score (the denoising error
/// of the query conditioned on the candidate); the rest keep their fused order below them.
fn generative_rerank(
    model: &DiffgapModel,
    fused: &Tensor,
    q: &Side<'_>,
    c: &Side<'_>,
    k: usize,
    seed: u64,
) -> Result<Tensor, ModelError> {
    let (nq, nc) = (fused.size()[0], fused.size()[1]);
    let k = (k as i64).min(nc);
    let (_, top) = fused.topk(k, 1, true, true);
    let d = q.emb.size()[1];
    let queries = q
        .emb
        .unsqueeze(1)
        .expand([nq, k, d], false)
        .reshape([nq * k, d]);
    let cands = c.emb.index_select(0, &top.flatten(0, -1));
    // One seed per query: every candidate of a query sees the same noise, so the comparison is
    // between conditions, not between noise draws.
    let seeds: Vec<u64> = (0..nq as usize)
        .flat_map(|i| std::iter::repeat_n(row_seed(seed ^ 0x6E, i), k as usize))
        .collect();
    let g = model
        .generative_score(&queries, q.name, &cands, c.name, &seeds)?
        .view([nq, k]);
    let offset = fused.max().double_value(&[]) - g.min().double_value(&[]) + 1.0;
    Ok(fused.scatter(1, &top, &(g + offset).to_kind(fused.kind())))
}

/// The tables as text, for the terminal and the README.
pub fn render(report: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "data {} ({}), {} rows, {} items; steps {} (gap measures: {}), samples {}, guidance {}, seed {}; fusion: {}",
        report.data_file,
        short(&report.data_fingerprint),
        report.rows,
        report.items,
        report.options.steps,
        report.options.gap_steps,
        report.options.samples,
        report.options.guidance,
        report.options.seed,
        report.fusion_source
    );
    for d in &report.directions {
        let _ = writeln!(
            s,
            "\n{} -> {} ({} queries, {} candidates; fusion c/b/r = {:.1}/{:.1}/{:.1})",
            d.query,
            d.candidate,
            d.queries,
            d.candidates,
            d.fusion.contrastive,
            d.fusion.bridged,
            d.fusion.reverse
        );
        let _ = writeln!(s, "| mode | R@1 | R@5 | R@10 | mAP@10 | median rank |");
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for mode in MODES {
            if let Some(m) = d.modes.get(mode) {
                let _ = writeln!(
                    s,
                    "| {mode} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
                    m.r1, m.r5, m.r10, m.map10, m.median_rank
                );
            }
        }
    }
    let _ = writeln!(s, "\n| gap measure | before | after bridging |");
    let _ = writeln!(s, "|---|---|---|");
    for g in &report.gap {
        let dir = format!("{} -> {}", g.source, g.target);
        let _ = writeln!(
            s,
            "| {dir}: distance of means | {:.4} | {:.4} |",
            g.mean_distance_before, g.mean_distance_after
        );
        let _ = writeln!(
            s,
            "| {dir}: Frechet distance | {:.4} | {:.4} |",
            g.frechet_before, g.frechet_after
        );
        let _ = writeln!(
            s,
            "| {dir}: cosine to true partner | {:.4} | {:.4} |",
            g.paired_cosine_before, g.paired_cosine_after
        );
    }
    s
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(19)]
}

/// Mean over both directions of the bridged mode's R@1: the number training stops on.
pub fn bridged_r1(report: &EvalReport) -> f64 {
    let v: Vec<f64> = report
        .directions
        .iter()
        .filter_map(|d| d.modes.get("bridged").map(|m| m.r1))
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Mean over both directions of the fused mode's R@1 + mAP@10.
pub fn fused_objective(report: &EvalReport) -> f64 {
    let v: Vec<f64> = report
        .directions
        .iter()
        .filter_map(|d| d.modes.get("fused").map(|m| m.objective()))
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Fusion weights per direction, as stored in a card.
pub fn fusion_weights(report: &EvalReport) -> BTreeMap<String, FusionWeights> {
    report
        .directions
        .iter()
        .map(|d| (direction_key(&d.query, &d.candidate), d.fusion))
        .collect()
}
