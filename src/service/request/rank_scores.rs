//! Rank's scores, candidate by candidate: cosines of inline candidates (computed here), and on
//! the model thread a catalog's weighted scores and the modes that need the model's baselines
//! (the hubness-corrected fused score and the baselines themselves). The inverted softmax's bank
//! term depends on the candidates only, so a catalog's is computed once and kept with it.

use tch::{Device, Kind, Tensor};

use crate::baselines::hubness::{bank_norm, ModeScores};
use crate::baselines::modes::BaselineMode;
use crate::diffusion::normalize::l2_normalize;
use crate::model::card::{direction_key, FusionWeights, HubFusion};
use crate::service::error::ServiceError;
use crate::service::request::rank_mode::Scoring;
use crate::service::worker::context::WorkerCtx;
use crate::service::worker::ranking::RankState;
use crate::service::worker::WorkerHandle;

/// Where the candidates are.
pub enum Candidates {
    Inline {
        ids: Vec<String>,
        embeddings: Vec<Vec<f32>>,
    },
    Catalog {
        name: String,
        ids: Vec<String>,
    },
}

/// One candidate's scores.
#[derive(Clone, Copy)]
pub struct Scored {
    pub index: usize,
    pub score: f64,
    pub contrastive: f64,
    pub bridged: Option<f64>,
    pub reverse: Option<f64>,
    pub generative: Option<f64>,
}

/// The query, its bridged form, and the candidates bridged into the query's modality (inline
/// candidates; a catalog has its own), as far as the scoring needs them.
pub struct Query {
    pub modalities: (String, String),
    pub query: Vec<f32>,
    pub bridged: Option<Vec<f32>>,
    pub reversed: Vec<Vec<f32>>,
}

/// The weighted scores of inline candidates, in candidate order.
pub fn inline_weighted(w: FusionWeights, q: &Query, embeddings: &[Vec<f32>]) -> Vec<Scored> {
    embeddings
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let contrastive = cosine(&q.query, a);
            let b = q.bridged.as_deref().map(|bq| cosine(bq, a));
            let r = q.reversed.get(i).map(|ba| cosine(&q.query, ba));
            Scored {
                index: i,
                score: w.contrastive * contrastive
                    + w.bridged * b.unwrap_or(0.0)
                    + w.reverse * r.unwrap_or(0.0),
                contrastive,
                bridged: b,
                reverse: r,
                generative: None,
            }
        })
        .collect()
}

/// The candidates the model thread scores.
pub enum CandidateSet {
    Inline(Vec<Vec<f32>>),
    /// A served catalog's name.
    Catalog(String),
}

/// Scores every candidate on the model thread by `scoring`, in candidate order (inline
/// weighted scores need no model thread: [`inline_weighted`]).
pub async fn on_worker(
    worker: &WorkerHandle,
    scoring: Scoring,
    q: Query,
    candidates: CandidateSet,
) -> Result<Vec<Scored>, ServiceError> {
    worker
        .call(move |ctx| {
            let _g = tch::no_grad_guard();
            let set = CandidateTensors::of(ctx, &q, candidates)?;
            let terms = Terms::of(&q, &set, ctx.model.device(), scoring.weights());
            let score = match scoring {
                Scoring::Weighted(w) => terms.mode_scores(w)?.fuse(&w),
                Scoring::FusedHub(h) => fused_hub(ctx, &q, &set, &terms, h)?,
                Scoring::Baseline(mode) => baseline(ctx, &q, &set, &terms, mode)?,
            };
            terms.scored(&score)
        })
        .await
}

/// The candidates as tensors on the model's device, L2-normalised.
struct CandidateTensors {
    catalog: Option<String>,
    embeddings: Tensor,
    /// Bridged into the query's modality, when there are such rows.
    reverse: Option<Tensor>,
}

impl CandidateTensors {
    fn of(ctx: &WorkerCtx<'_>, q: &Query, set: CandidateSet) -> Result<Self, ServiceError> {
        let device = ctx.model.device();
        let name = match set {
            CandidateSet::Inline(embeddings) => {
                return Ok(Self {
                    catalog: None,
                    embeddings: rows(&embeddings, device)?,
                    reverse: (!q.reversed.is_empty())
                        .then(|| rows(&q.reversed, device))
                        .transpose()?,
                })
            }
            CandidateSet::Catalog(name) => name,
        };
        let cat = ctx
            .catalogs
            .get(&name)
            .ok_or_else(|| ServiceError::NotFound(format!("catalog '{name}' is not served")))?;
        Ok(Self {
            catalog: Some(name.clone()),
            embeddings: cat.embeddings.shallow_clone(),
            reverse: cat.reverse.get(&q.modalities.0).map(Tensor::shallow_clone),
        })
    }
}

/// The cosine terms of every candidate, [1, C] each: the bridged and reverse ones when the
/// mode weighs them.
struct Terms {
    contrastive: Tensor,
    bridged: Option<Tensor>,
    reverse: Option<Tensor>,
    query: Tensor,
}

impl Terms {
    fn of(q: &Query, set: &CandidateTensors, device: Device, w: FusionWeights) -> Self {
        let one = |v: &[f32]| l2_normalize(&Tensor::from_slice(v).to_device(device).unsqueeze(0));
        let query = one(&q.query);
        Terms {
            contrastive: query.matmul(&set.embeddings.tr()),
            bridged: q
                .bridged
                .as_deref()
                .filter(|_| w.bridged != 0.0)
                .map(|b| one(b).matmul(&set.embeddings.tr())),
            reverse: set
                .reverse
                .as_ref()
                .filter(|_| w.reverse != 0.0)
                .map(|r| query.matmul(&r.tr())),
            query,
        }
    }

    fn mode_scores(&self, w: FusionWeights) -> Result<ModeScores, ServiceError> {
        let zeros = || self.contrastive.zeros_like();
        Ok(ModeScores {
            contrastive: self.contrastive.shallow_clone(),
            bridged: needed(w.bridged, &self.bridged, "a bridged query")?.unwrap_or_else(zeros),
            reverse: needed(w.reverse, &self.reverse, "reverse-bridged candidates")?
                .unwrap_or_else(zeros),
        })
    }

    /// One [`Scored`] per candidate, in candidate order.
    fn scored(&self, score: &Tensor) -> Result<Vec<Scored>, ServiceError> {
        let score = values(score)?;
        let contrastive = values(&self.contrastive)?;
        let bridged = self.bridged.as_ref().map(values).transpose()?;
        let reverse = self.reverse.as_ref().map(values).transpose()?;
        Ok((0..score.len())
            .map(|i| Scored {
                index: i,
                score: score[i],
                contrastive: contrastive[i],
                bridged: bridged.as_ref().map(|v| v[i]),
                reverse: reverse.as_ref().map(|v| v[i]),
                generative: None,
            })
            .collect())
    }
}

fn needed(weight: f64, t: &Option<Tensor>, what: &str) -> Result<Option<Tensor>, ServiceError> {
    match t {
        Some(t) => Ok(Some(t.shallow_clone())),
        None if weight != 0.0 => Err(ServiceError::FailedPrecondition(format!(
            "this mode needs {what}, which the candidates lack (a catalog built without reverse bridging for the query's modality?); use another mode"
        ))),
        None => Ok(None),
    }
}

fn state<'m>(ctx: &WorkerCtx<'m>) -> Result<&'m RankState, ServiceError> {
    ctx.ranking.ok_or_else(|| {
        ServiceError::FailedPrecondition(
            "the model has no fitted baselines (trained without them); use another mode".into(),
        )
    })
}

/// The hubness-corrected fused score: beta fused(q, c) - logsumexp_bank beta fused(b, c).
fn fused_hub(
    ctx: &mut WorkerCtx<'_>,
    q: &Query,
    set: &CandidateTensors,
    terms: &Terms,
    h: HubFusion,
) -> Result<Tensor, ServiceError> {
    let state = state(ctx)?;
    let key = direction_key(&q.modalities.0, &q.modalities.1);
    let fused = terms.mode_scores(h.weights)?.fuse(&h.weights);
    let norm = cached_norm(ctx, set, format!("fused_hub {key}"), || {
        let bank = state
            .baselines
            .bank(&q.modalities.0)
            .map_err(ServiceError::Internal)?
            .to_device(set.embeddings.device());
        let bridged = state
            .bridged_banks
            .get(&key)
            .ok_or_else(|| ServiceError::Internal(format!("no bridged query bank for {key}")))?;
        let c_t = set.embeddings.tr();
        let bank_scores = ModeScores {
            contrastive: bank.matmul(&c_t),
            bridged: bridged.matmul(&c_t),
            reverse: match &set.reverse {
                Some(r) => bank.matmul(&r.tr()),
                None => bank.matmul(&c_t).zeros_like(),
            },
        };
        Ok(bank_norm(&bank_scores.fuse(&h.weights), h.beta))
    })?;
    Ok(fused * h.beta - norm)
}

fn baseline(
    ctx: &mut WorkerCtx<'_>,
    q: &Query,
    set: &CandidateTensors,
    terms: &Terms,
    mode: BaselineMode,
) -> Result<Tensor, ServiceError> {
    let b = &state(ctx)?.baselines;
    let (qm, cm) = (q.modalities.0.as_str(), q.modalities.1.as_str());
    if mode != BaselineMode::InvertedSoftmax {
        return b
            .scores(mode, (&terms.query, qm), (&set.embeddings, cm))
            .map_err(ServiceError::Internal);
    }
    let key = direction_key(qm, cm);
    let beta = b
        .fit(&key)
        .map_err(ServiceError::Internal)?
        .inverted_softmax_beta;
    let norm = cached_norm(ctx, set, format!("inverted_softmax {key}"), || {
        let bank = b
            .bank_scores(qm, &set.embeddings)
            .map_err(ServiceError::Internal)?;
        Ok(bank_norm(&bank, beta))
    })?;
    Ok(&terms.contrastive * beta - norm)
}

/// A bank term, kept with the catalog when the candidates are one.
fn cached_norm(
    ctx: &mut WorkerCtx<'_>,
    set: &CandidateTensors,
    key: String,
    compute: impl FnOnce() -> Result<Tensor, ServiceError>,
) -> Result<Tensor, ServiceError> {
    let Some(cat) = set
        .catalog
        .as_deref()
        .and_then(|name| ctx.catalogs.get_mut(name))
    else {
        return compute();
    };
    if let Some(t) = cat.bank_norms.get(&key) {
        return Ok(t.shallow_clone());
    }
    let t = compute()?;
    cat.bank_norms.insert(key, t.shallow_clone());
    Ok(t)
}

fn rows(v: &[Vec<f32>], device: Device) -> Result<Tensor, ServiceError> {
    let dim = v.first().map_or(0, Vec::len) as i64;
    let flat: Vec<f32> = v.concat();
    if flat.len() as i64 != dim * v.len() as i64 {
        return Err(ServiceError::Internal(
            "candidates of unequal lengths".into(),
        ));
    }
    Ok(l2_normalize(
        &Tensor::from_slice(&flat)
            .view([v.len() as i64, dim])
            .to_device(device),
    ))
}

fn values(t: &Tensor) -> Result<Vec<f64>, ServiceError> {
    Vec::<f64>::try_from(t.reshape([-1]).to_kind(Kind::Double).to_device(Device::Cpu))
        .map_err(|e| ServiceError::Internal(e.to_string()))
}

/// Cosine similarity, computed in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let denom = (na.sqrt() * nb.sqrt()).max(1e-12);
    dot / denom
}
