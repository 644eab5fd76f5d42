//! The evaluation protocol on one paired set: retrieval in both directions for the raw
//! contrastive score, every DiffGAP mode and (when the model holds them) the fitted cheap
//! baselines, each with its cost per query; the gap measures; and the generation-side measures
//! of every mapped query set against the real targets.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::fusion::{self, ModeScores};
use super::gap;
use super::generation::{self, GenerationReport};
use super::ladder::{self, timed};
use super::retrieval::{evaluate, RetrievalMetrics};
use super::views::{view, View};
use crate::baselines::Baselines;
use crate::data::pairs::PairedSet;
use crate::diffusion::sampler::SampleOptions;
use crate::model::card::{direction_key, FusionWeights, HubFusion, ValidatedBest};
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
    /// The baselines' modes and DiffGAP's: contrastive (raw cosine), centred, inverted_softmax,
    /// ridge, procrustes, adapter; bridged, reverse, fused, fused_hub, generative.
    pub modes: BTreeMap<String, RetrievalMetrics>,
    /// Microseconds per query of each mode on this machine (see `docs/results`).
    #[serde(default)]
    pub cost_us: BTreeMap<String, f64>,
    #[serde(default)]
    pub hub_fusion: Option<HubFusion>,
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
    /// Every mapped query set against the real targets (empty without baselines but for raw
    /// and bridged).
    #[serde(default)]
    pub generation: Vec<GenerationReport>,
    /// With the card's fusion: the card's record of which mode won on validation.
    #[serde(default)]
    pub validated_best: BTreeMap<String, ValidatedBest>,
    pub seconds: f64,
}

/// Where the fused modes' weights come from.
pub enum Fusion<'a> {
    /// The card's weights, fitted at training time on validation rows (`fused_hub` from the
    /// card's `hub_fusion`).
    Card(&'a BTreeMap<String, FusionWeights>),
    /// Fit on this very set: only for the validation split itself.
    FitOnThisSet,
}

/// DiffGAP's modes, in the order the report lists them after the baselines.
pub const MODES: [&str; 6] = [
    "contrastive",
    "bridged",
    "reverse",
    "fused",
    "fused_hub",
    "generative",
];

/// One modality of the set with its bridged rows.
struct Side<'a> {
    name: &'a str,
    full: Tensor,
    view: View,
    emb: Tensor,
    /// Bridged for retrieval (`steps`).
    bridged: Tensor,
    /// Microseconds per row of that bridging.
    bridge_us: f64,
    /// Bridged for the gap measures (`gap_steps`).
    generated: Tensor,
}

fn side<'a>(
    model: &DiffgapModel,
    set: &PairedSet,
    (name, other): (&'a str, &str),
    salt: u64,
    opts: &EvalOptions,
    with_generated: bool,
) -> Result<Side<'a>, ModelError> {
    let full = set
        .modality(name)
        .map_err(|e| ModelError::Invalid(e.to_string()))?
        .to_device(model.device());
    let view = view(&full.to_device(tch::Device::Cpu), &set.groups);
    let emb = view.select(&full);
    let seeds: Vec<u64> = (0..view.rows.len())
        .map(|i| row_seed(opts.seed ^ salt, i))
        .collect();
    let sample = sample_options(opts, opts.steps);
    let (bridged, bridge_us) = timed(emb.size()[0], || {
        model.bridge(&emb, name, other, &seeds, sample)
    });
    let bridged = bridged?;
    let generated = if !with_generated || opts.gap_steps == opts.steps {
        bridged.shallow_clone()
    } else {
        model.bridge(
            &emb,
            name,
            other,
            &seeds,
            sample_options(opts, opts.gap_steps),
        )?
    };
    Ok(Side {
        name,
        full,
        view,
        emb,
        bridged,
        bridge_us,
        generated,
    })
}

fn sample_options(opts: &EvalOptions, steps: usize) -> SampleOptions {
    SampleOptions {
        steps,
        guidance: opts.guidance,
        samples: opts.samples,
    }
}

/// Mean over both directions of the bridged mode's R@1, and nothing else of the protocol: what
/// early stopping watches every epoch (the same number as [`bridged_r1`] of a full report).
pub fn bridged_r1_only(
    model: &DiffgapModel,
    set: &PairedSet,
    pair: (&str, &str),
    opts: EvalOptions,
) -> Result<f64, ModelError> {
    let a = side(model, set, (pair.0, pair.1), 0xA, &opts, false)?;
    let b = side(model, set, (pair.1, pair.0), 0xB, &opts, false)?;
    let r1 = |q: &Side<'_>, c: &Side<'_>| {
        evaluate(
            &q.bridged.matmul(&c.emb.tr()),
            &q.view.groups,
            &c.view.groups,
        )
        .r1
    };
    Ok((r1(&a, &b) + r1(&b, &a)) / 2.0)
}

pub fn evaluate_model(
    model: &DiffgapModel,
    set: &PairedSet,
    pair: (&str, &str),
    fusion: Fusion<'_>,
    opts: EvalOptions,
) -> Result<EvalReport, ModelError> {
    evaluate_with_baselines(model, set, pair, fusion, opts, None)
}

/// The whole protocol; with `baselines`, the ladder, the hubness-corrected fusion and the
/// generation measures of every map too.
pub fn evaluate_with_baselines(
    model: &DiffgapModel,
    set: &PairedSet,
    pair: (&str, &str),
    fusion: Fusion<'_>,
    opts: EvalOptions,
    baselines: Option<&Baselines>,
) -> Result<EvalReport, ModelError> {
    let started = Instant::now();
    let a = side(model, set, (pair.0, pair.1), 0xA, &opts, true)?;
    let b = side(model, set, (pair.1, pair.0), 0xB, &opts, true)?;
    let items = {
        let mut g = set.groups.clone();
        g.sort_unstable();
        g.dedup();
        g.len()
    };
    let mut directions = Vec::new();
    let mut gaps = Vec::new();
    let mut generation = Vec::new();
    for (q, c) in [(&a, &b), (&b, &a)] {
        let (d, g) = direction(model, q, c, &fusion, &opts, baselines)?;
        directions.push(d);
        generation.extend(g);
        gaps.push(gap_report(model, q, c));
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
        generation,
        validated_best: match fusion {
            Fusion::Card(_) => model.card.validated_best.clone(),
            Fusion::FitOnThisSet => BTreeMap::new(),
        },
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn direction(
    model: &DiffgapModel,
    q: &Side<'_>,
    c: &Side<'_>,
    fusion: &Fusion<'_>,
    opts: &EvalOptions,
    baselines: Option<&Baselines>,
) -> Result<(DirectionReport, Vec<GenerationReport>), ModelError> {
    let n = q.emb.size()[0];
    let groups = (&q.view.groups[..], &c.view.groups[..]);
    let (contrastive, matmul_us) = timed(n, || q.emb.matmul(&c.emb.tr()));
    let scores = ModeScores {
        contrastive,
        bridged: q.bridged.matmul(&c.emb.tr()),
        reverse: q.emb.matmul(&c.bridged.tr()),
    };
    let key = direction_key(q.name, c.name);
    let weights = match fusion {
        Fusion::Card(w) => *w.get(&key).ok_or_else(|| {
            ModelError::Invalid(format!("the model card has no fusion weights for {key}"))
        })?,
        Fusion::FitOnThisSet => fusion::fit(&scores, groups.0, groups.1).0,
    };
    let fused = scores.fuse(&weights);
    let mut modes = BTreeMap::new();
    let mut cost = BTreeMap::new();
    let mut add = |mode: &str, s: &Tensor, us: f64| {
        modes.insert(mode.to_string(), evaluate(s, groups.0, groups.1));
        cost.insert(mode.to_string(), us);
    };
    add("contrastive", &scores.contrastive, matmul_us);
    add("bridged", &scores.bridged, q.bridge_us + matmul_us);
    // Reverse bridging is done once per candidate set (a catalog), not per query.
    add("reverse", &scores.reverse, matmul_us);
    add("fused", &fused, q.bridge_us + 3.0 * matmul_us);
    if opts.shortlist > 0 {
        let (g, us) = timed(n, || {
            generative_rerank(model, &fused, q, c, opts.shortlist, opts.seed)
        });
        add("generative", &g?, q.bridge_us + 3.0 * matmul_us + us);
    }
    let mut hub_fusion = None;
    let mut reports = Vec::new();
    if let Some(b) = baselines {
        let invalid = |e: String| ModelError::Invalid(e);
        let bank = bank_scores(model, b, q, c, opts)?;
        let hub = match fusion {
            Fusion::Card(_) => model.card.hub_fusion.get(&key).copied(),
            Fusion::FitOnThisSet => Some(fusion::fit_hub(&scores, &bank, groups.0, groups.1)),
        };
        if let Some(h) = hub {
            let (s, us) = timed(n, || fusion::hub_fused(&scores, &bank, &h));
            add("fused_hub", &s, q.bridge_us + 3.0 * matmul_us + us);
            hub_fusion = Some(h);
        }
        let rungs = ladder::rungs(b, (&q.emb, q.name), (&c.emb, c.name)).map_err(invalid)?;
        let mut mapped = vec![
            ("raw", q.emb.shallow_clone()),
            ("bridged", q.generated.shallow_clone()),
        ];
        for r in rungs {
            add(r.mode, &r.scores, r.us_per_query);
            if let Some(m) = r.mapped {
                mapped.push((r.mode, m));
            }
        }
        let of_row = Tensor::from_slice(&q.view.of_row).to_device(model.device());
        for (method, m) in mapped {
            reports.push(generation::measure(
                (q.name, c.name, method),
                &m,
                &c.emb,
                &m.index_select(0, &of_row),
                &c.full,
            ));
        }
    }
    let report = DirectionReport {
        query: q.name.into(),
        candidate: c.name.into(),
        queries: q.view.rows.len(),
        candidates: c.view.rows.len(),
        fusion: weights,
        modes,
        cost_us: cost,
        hub_fusion,
    };
    Ok((report, reports))
}

/// The three mode scores of the query bank against the candidates; the bank's queries are
/// bridged like real queries (their own seeds), once per candidate set.
fn bank_scores(
    model: &DiffgapModel,
    b: &Baselines,
    q: &Side<'_>,
    c: &Side<'_>,
    opts: &EvalOptions,
) -> Result<ModeScores, ModelError> {
    let bank = b
        .bank(q.name)
        .map_err(ModelError::Invalid)?
        .to_device(model.device());
    let seeds: Vec<u64> = (0..bank.size()[0] as usize)
        .map(|i| row_seed(opts.seed ^ 0xBA4C, i))
        .collect();
    let bridged = model.bridge(
        &bank,
        q.name,
        c.name,
        &seeds,
        sample_options(opts, opts.steps),
    )?;
    Ok(ModeScores {
        contrastive: bank.matmul(&c.emb.tr()),
        bridged: bridged.matmul(&c.emb.tr()),
        reverse: bank.matmul(&c.bridged.tr()),
    })
}

fn gap_report(model: &DiffgapModel, q: &Side<'_>, c: &Side<'_>) -> GapReport {
    // Each query row against its own partner: map rows of the set onto both views.
    let q_rows = q.generated.index_select(
        0,
        &Tensor::from_slice(&q.view.of_row).to_device(model.device()),
    );
    GapReport {
        source: q.name.into(),
        target: c.name.into(),
        mean_distance_before: gap::mean_distance(&q.emb, &c.emb),
        mean_distance_after: gap::mean_distance(&q.generated, &c.emb),
        frechet_before: gap::frechet_distance(&q.emb, &c.emb),
        frechet_after: gap::frechet_distance(&q.generated, &c.emb),
        paired_cosine_before: gap::mean_paired_cosine(&q.full, &c.full),
        paired_cosine_after: gap::mean_paired_cosine(&q_rows, &c.full),
    }
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

/// Mean over both directions of the bridged mode's R@1: the number training stops on.
pub fn bridged_r1(report: &EvalReport) -> f64 {
    mean_over_directions(report, "bridged", |m| m.r1)
}

/// Mean over both directions of the fused mode's R@1 + mAP@10.
pub fn fused_objective(report: &EvalReport) -> f64 {
    mean_over_directions(report, "fused", RetrievalMetrics::objective)
}

fn mean_over_directions(
    report: &EvalReport,
    mode: &str,
    f: impl Fn(&RetrievalMetrics) -> f64,
) -> f64 {
    let v: Vec<f64> = report
        .directions
        .iter()
        .filter_map(|d| d.modes.get(mode).map(&f))
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

/// Hubness-corrected fusion per direction, as stored in a card.
pub fn hub_fusions(report: &EvalReport) -> BTreeMap<String, HubFusion> {
    report
        .directions
        .iter()
        .filter_map(|d| {
            d.hub_fusion
                .map(|h| (direction_key(&d.query, &d.candidate), h))
        })
        .collect()
}

/// The winning mode per direction, and the best baseline, by R@1 + mAP@10, as stored in a card
/// from the validation report (ties go to the cheaper, earlier-listed mode).
pub fn validated_best(report: &EvalReport) -> BTreeMap<String, ValidatedBest> {
    let baselines: Vec<&str> = ["contrastive"]
        .into_iter()
        .chain(ladder::BASELINE_MODES)
        .collect();
    let best = |d: &DirectionReport, modes: &[&str]| -> Option<(String, f64)> {
        let mut best: Option<(String, f64)> = None;
        for m in modes {
            if let Some(r) = d.modes.get(*m) {
                if best.as_ref().is_none_or(|b| r.objective() > b.1 + 1e-12) {
                    best = Some((m.to_string(), r.objective()));
                }
            }
        }
        best
    };
    let all: Vec<&str> = baselines
        .iter()
        .copied()
        .chain(MODES[1..].iter().copied())
        .collect();
    report
        .directions
        .iter()
        .filter_map(|d| {
            let (mode, objective) = best(d, &all)?;
            let (best_baseline, best_baseline_objective) = best(d, &baselines)?;
            Some((
                direction_key(&d.query, &d.candidate),
                ValidatedBest {
                    mode,
                    objective,
                    best_baseline,
                    best_baseline_objective,
                },
            ))
        })
        .collect()
}
