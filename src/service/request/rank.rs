//! Rank: scores candidates (inline, or a served catalog's entries) against a query by the
//! contrastive, bridged and reverse cosines, their fused sum, or the generative re-rank of a
//! fused short list. Inline candidates are bridged through the worker's batches; a catalog's
//! scores are computed on the model's device, in the worker, against its precomputed reverse
//! embeddings, with an exact top-k there.

use std::time::Duration;

use tch::{Kind, Tensor};

use crate::diffusion::sampler::SampleOptions;
use crate::model::row_seed;
use crate::service::error::ServiceError;
use crate::service::proto;
use crate::service::request::rank_mode::Scoring;
pub use crate::service::request::rank_scores::Candidates;
use crate::service::request::rank_scores::{inline_weighted, on_worker, CandidateSet, Query};
use crate::service::types::{BridgeRow, CheckedRows, ModelInfo, RowStart};
use crate::service::worker::WorkerHandle;

/// What a validated Rank asks for.
pub struct Plan {
    pub query: Vec<f32>,
    pub query_modality: String,
    pub candidate_modality: String,
    pub scoring: Scoring,
    /// Re-rank this many fused candidates by the generative score (0: no re-rank).
    pub shortlist: usize,
    pub top_k: usize,
    pub seed: u64,
}

/// Scores, best first, and the worker time spent (queue, compute).
pub struct Ranking {
    pub results: Vec<proto::Ranked>,
    pub queue: Duration,
    pub compute: Duration,
}

fn rank_options(m: &ModelInfo) -> SampleOptions {
    SampleOptions {
        steps: m.defaults.rank_steps,
        guidance: m.defaults.guidance,
        samples: m.defaults.rank_samples,
    }
}

pub async fn rank(
    m: &ModelInfo,
    worker: &WorkerHandle,
    plan: Plan,
    candidates: Candidates,
    deadline: Option<std::time::Instant>,
) -> Result<Ranking, ServiceError> {
    let w = plan.scoring.weights();
    let (need_b, need_r) = (w.bridged != 0.0, w.reverse != 0.0);
    let opts = rank_options(m);
    let (q, c) = (plan.query_modality.clone(), plan.candidate_modality.clone());
    let mut rows = Vec::new();
    if need_b {
        rows.push(BridgeRow {
            from: q.clone(),
            to: c.clone(),
            embedding: plan.query.clone(),
            opts,
            seed: row_seed(plan.seed, 0),
            start: RowStart::Noise,
        });
    }
    if let (true, Candidates::Inline { embeddings, .. }) = (need_r, &candidates) {
        rows.extend(embeddings.iter().enumerate().map(|(i, e)| BridgeRow {
            from: c.clone(),
            to: q.clone(),
            embedding: e.clone(),
            opts,
            seed: row_seed(plan.seed, i + 1),
            start: RowStart::Noise,
        }));
    }
    let (mut queue, mut compute) = (Duration::ZERO, Duration::ZERO);
    let bridged = if rows.is_empty() {
        Vec::new()
    } else {
        // The plan's query and inline candidates were checked into it (values, modalities and
        // the directions its weights use); the options are the model's ranking defaults.
        let out = worker
            .bridge_checked(CheckedRows::checked(rows), deadline)
            .await?;
        queue = out.queue;
        compute = out.compute;
        out.embeddings
    };
    let mut bridged = bridged.into_iter();
    let bq = if need_b { bridged.next() } else { None };
    let reversed: Vec<Vec<f32>> = bridged.collect();

    let q_in = Query {
        modalities: (q.clone(), c.clone()),
        query: plan.query.clone(),
        bridged: bq,
        reversed,
    };
    let t0 = std::time::Instant::now();
    let (ids, mut scored, cand_rows, catalog_name) = match (plan.scoring, candidates) {
        (Scoring::Weighted(w), Candidates::Inline { ids, embeddings }) => {
            let scored = inline_weighted(w, &q_in, &embeddings);
            (ids, scored, Some(embeddings), None)
        }
        (scoring, Candidates::Inline { ids, embeddings }) => {
            let set = CandidateSet::Inline(embeddings);
            let scored = on_worker(worker, scoring, q_in, set).await?;
            compute += t0.elapsed();
            (ids, scored, None, None)
        }
        (scoring, Candidates::Catalog { name, ids }) => {
            let set = CandidateSet::Catalog(name.clone());
            let scored = on_worker(worker, scoring, q_in, set).await?;
            compute += t0.elapsed();
            (ids, scored, None, Some(name))
        }
    };
    // Stable, so equal scores keep the request order.
    scored.sort_by(|x, y| y.score.total_cmp(&x.score));

    if plan.shortlist > 0 {
        let k = plan.shortlist.min(scored.len());
        let picked: Vec<usize> = scored[..k].iter().map(|s| s.index).collect();
        let query = plan.query.clone();
        let (qm, cm) = (q.clone(), c.clone());
        let inline: Option<Vec<Vec<f32>>> = cand_rows
            .as_ref()
            .map(|rows| picked.iter().map(|&i| rows[i].clone()).collect());
        let catalog = catalog_name.clone();
        let seed = row_seed(plan.seed ^ 0x6E, 0);
        let t0 = std::time::Instant::now();
        let generative: Vec<f64> = worker
            .call(move |ctx| {
                let device = ctx.model.device();
                let dim = query.len() as i64;
                let cands = match inline {
                    Some(rows) => {
                        let flat: Vec<f32> = rows.concat();
                        Tensor::from_slice(&flat)
                            .view([k as i64, dim])
                            .to_device(device)
                    }
                    None => {
                        let name = catalog.unwrap_or_default();
                        let cat = ctx.catalogs.get(&name).ok_or_else(|| {
                            ServiceError::NotFound(format!("catalog '{name}' is not served"))
                        })?;
                        let idx: Vec<i64> = picked.iter().map(|&i| i as i64).collect();
                        cat.embeddings
                            .index_select(0, &Tensor::from_slice(&idx).to_device(device))
                    }
                };
                let queries = Tensor::from_slice(&query)
                    .to_device(device)
                    .unsqueeze(0)
                    .expand([k as i64, dim], false)
                    .contiguous();
                // Every candidate sees the same noise: the comparison is between conditions.
                let seeds = vec![seed; k];
                let g = ctx
                    .model
                    .generative_score(&queries, &qm, &cands, &cm, &seeds)
                    .map_err(ServiceError::Load)?;
                Vec::<f64>::try_from(g.to_kind(Kind::Double).to_device(tch::Device::Cpu))
                    .map_err(|e| ServiceError::Internal(e.to_string()))
            })
            .await?;
        compute += t0.elapsed();
        for (s, g) in scored.iter_mut().zip(generative) {
            s.generative = Some(g);
        }
        // The short list by its generative score, then the rest in fused order.
        scored[..k].sort_by(|x, y| {
            y.generative
                .unwrap_or(f64::MIN)
                .total_cmp(&x.generative.unwrap_or(f64::MIN))
        });
    }
    if plan.top_k > 0 {
        scored.truncate(plan.top_k);
    }
    let results = scored
        .into_iter()
        .map(|s| proto::Ranked {
            id: ids.get(s.index).cloned().unwrap_or_default(),
            score: s.generative.unwrap_or(s.score) as f32,
            contrastive: s.contrastive as f32,
            bridged: s.bridged.map(|v| v as f32),
            reverse: s.reverse.map(|v| v as f32),
            generative: s.generative.map(|v| v as f32),
        })
        .collect();
    Ok(Ranking {
        results,
        queue,
        compute,
    })
}
