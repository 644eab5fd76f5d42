//! The tonic implementation of `diffgap.v1.Diffgap`: validates each request against the model
//! and the server's limits, hands the rows to the model worker and shapes the answer.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::error::ServiceError;
use super::metrics;
use super::proto::{self, diffgap_server::Diffgap, RankMode};
use super::request_id::{self, Timed};
use super::worker::{BridgeRow, Bridged, ModelInfo, WorkerHandle};
use crate::diffusion::sampler::SampleOptions;
use crate::model::card::{direction_key, FusionWeights};
use crate::model::row_seed;

/// Largest accepted `samples` of a Bridge item.
pub const MAX_SAMPLES: usize = 64;
/// Largest accepted `guidance` of a Bridge item.
pub const MAX_GUIDANCE: f32 = 20.0;

/// The per-request limits of the service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items_per_request: usize,
    pub max_batch_rows: usize,
    pub queue_capacity: usize,
}

pub struct DiffgapService {
    worker: WorkerHandle,
    /// Set once the worker has loaded and warmed up the model; until then requests are
    /// answered UNAVAILABLE.
    model: Arc<OnceLock<ModelInfo>>,
    limits: Limits,
}

impl DiffgapService {
    pub fn new(worker: WorkerHandle, model: Arc<OnceLock<ModelInfo>>, limits: Limits) -> Self {
        Self {
            worker,
            model,
            limits,
        }
    }

    fn model(&self, name: &str) -> Result<&ModelInfo, ServiceError> {
        let m = self
            .model
            .get()
            .ok_or_else(|| ServiceError::Unavailable("the model is still loading".into()))?;
        if !name.is_empty() && name != m.name {
            return Err(ServiceError::ModelNotFound {
                name: name.into(),
                available: vec![m.name.clone()],
            });
        }
        Ok(m)
    }

    fn check_count(&self, field: &str, n: usize) -> Result<(), ServiceError> {
        let max = self.limits.max_items_per_request;
        if n == 0 {
            return Err(ServiceError::invalid(field, "is empty; send at least one"));
        }
        if n > max {
            return Err(ServiceError::invalid(
                field,
                format!("has {n} entries, the limit is {max}"),
            ));
        }
        Ok(())
    }

    async fn bridge_impl(
        &self,
        req: proto::BridgeRequest,
        deadline: Option<Instant>,
    ) -> Result<proto::BridgeResponse, ServiceError> {
        let t0 = Instant::now();
        let m = self.model(&req.model)?;
        self.check_count("items", req.items.len())?;
        let rows = req
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| bridge_row(m, i, item))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self.worker.bridge_until(rows, deadline).await?;
        let timings = timings(&out, t0);
        Ok(proto::BridgeResponse {
            embeddings: out
                .embeddings
                .into_iter()
                .map(|values| proto::Embedding { values })
                .collect(),
            timings: Some(timings),
        })
    }

    async fn rank_impl(
        &self,
        req: proto::RankRequest,
        deadline: Option<Instant>,
    ) -> Result<proto::RankResponse, ServiceError> {
        let t0 = Instant::now();
        let m = self.model(&req.model)?;
        let mode = match RankMode::try_from(req.mode) {
            Ok(RankMode::Unspecified) => RankMode::Fused,
            Ok(mode) => mode,
            Err(_) => {
                return Err(ServiceError::invalid(
                    "mode",
                    format!(
                        "unknown value {}; use RANK_MODE_CONTRASTIVE (1), RANK_MODE_BRIDGED (2), RANK_MODE_REVERSE (3) or RANK_MODE_FUSED (4)",
                        req.mode
                    ),
                ))
            }
        };
        let (q, c) = (&req.query_modality, &req.candidate_modality);
        check_modality(m, "query_modality", q)?;
        check_modality(m, "candidate_modality", c)?;
        if q == c {
            return Err(ServiceError::invalid(
                "candidate_modality",
                format!("must differ from query_modality (both are '{q}')"),
            ));
        }
        self.check_count("candidates", req.candidates.len())?;
        let query = check_embedding("query", req.query, m.dim)?;
        let mut ids = Vec::with_capacity(req.candidates.len());
        let mut cands = Vec::with_capacity(req.candidates.len());
        for (i, cand) in req.candidates.into_iter().enumerate() {
            cands.push(check_embedding(
                &format!("candidates[{i}].embedding"),
                cand.embedding,
                m.dim,
            )?);
            ids.push(cand.id);
        }
        let weights = match mode {
            RankMode::Contrastive => w(1.0, 0.0, 0.0),
            RankMode::Bridged => w(0.0, 1.0, 0.0),
            RankMode::Reverse => w(0.0, 0.0, 1.0),
            RankMode::Fused | RankMode::Unspecified => {
                *m.fusion.get(&direction_key(q, c)).ok_or_else(|| {
                    ServiceError::FailedPrecondition(format!(
                        "the model has no fusion weights for {}; use another mode",
                        direction_key(q, c)
                    ))
                })?
            }
        };
        let (need_b, need_r) = (weights.bridged != 0.0, weights.reverse != 0.0);
        if need_b {
            check_direction(m, "candidate_modality", q, c)?;
        }
        if need_r {
            check_direction(m, "query_modality", c, q)?;
        }

        let seed = req.seed.unwrap_or(0);
        let opts = default_options(m);
        let mut rows = Vec::new();
        if need_b {
            rows.push(BridgeRow {
                from: q.clone(),
                to: c.clone(),
                embedding: query.clone(),
                opts,
                seed: row_seed(seed, 0),
            });
        }
        if need_r {
            rows.extend(cands.iter().enumerate().map(|(i, e)| BridgeRow {
                from: c.clone(),
                to: q.clone(),
                embedding: e.clone(),
                opts,
                seed: row_seed(seed, i + 1),
            }));
        }
        let (bridged, timing) = if rows.is_empty() {
            (Vec::new(), None)
        } else {
            let out = self.worker.bridge_until(rows, deadline).await?;
            let t = (out.queue, out.compute);
            (out.embeddings, Some(t))
        };
        let mut bridged = bridged.into_iter();
        let bq = if need_b { bridged.next() } else { None };
        let reversed: Vec<Vec<f32>> = bridged.collect();

        let mut results: Vec<proto::Ranked> = ids
            .into_iter()
            .zip(&cands)
            .enumerate()
            .map(|(i, (id, a))| {
                let contrastive = cosine(&query, a);
                let b = bq.as_deref().map(|bq| cosine(bq, a));
                let r = reversed.get(i).map(|ba| cosine(&query, ba));
                let score = weights.contrastive * contrastive
                    + weights.bridged * b.unwrap_or(0.0)
                    + weights.reverse * r.unwrap_or(0.0);
                proto::Ranked {
                    id,
                    score: score as f32,
                    contrastive: contrastive as f32,
                    bridged: b.map(|v| v as f32),
                    reverse: r.map(|v| v as f32),
                }
            })
            .collect();
        // Stable, so equal scores keep the request order.
        results.sort_by(|x, y| y.score.total_cmp(&x.score));
        if req.top_k > 0 {
            results.truncate(req.top_k as usize);
        }
        let (queue, compute) = timing.unwrap_or_default();
        Ok(proto::RankResponse {
            results,
            timings: Some(proto::Timings {
                queue_ns: nanos(queue),
                compute_ns: nanos(compute),
                total_ns: nanos(t0.elapsed()),
            }),
        })
    }

    fn info_impl(&self) -> Result<proto::InfoResponse, ServiceError> {
        let m = self.model("")?;
        let u32_of = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(proto::InfoResponse {
            models: vec![proto::ModelInfo {
                name: m.name.clone(),
                space: m.space.clone(),
                modalities: m.modalities.clone(),
                dim: u32_of(m.dim),
                directions: m
                    .directions
                    .iter()
                    .map(|(a, b)| direction_key(a, b))
                    .collect(),
                default_steps: u32_of(m.defaults.steps),
                default_guidance: m.defaults.guidance,
                default_samples: u32_of(m.defaults.samples),
                max_steps: u32_of(m.max_steps),
                parameters: m.parameters.max(0) as u64,
            }],
            device: m.device.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            limits: Some(proto::Limits {
                max_items_per_request: u32_of(self.limits.max_items_per_request),
                max_batch_rows: u32_of(self.limits.max_batch_rows),
                queue_capacity: u32_of(self.limits.queue_capacity),
                max_samples: u32_of(MAX_SAMPLES),
                max_guidance: MAX_GUIDANCE,
            }),
        })
    }
}

impl DiffgapService {
    /// Every RPC goes through here, and only here: the request id, the RPC's span (carried
    /// into the model worker), the RPC-level metrics (recorded once per call) and the
    /// response metadata (the id echoed, the timing headers).
    async fn handle<Req, Resp, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        items: fn(&Req) -> usize,
        run: impl FnOnce(Req) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Resp, ServiceError>>,
        Resp: Timed,
    {
        let id = request_id::from_metadata(request.metadata());
        let req = request.into_inner();
        let span = tracing::info_span!(
            "rpc",
            rpc,
            request_id = %id,
            items = items(&req),
            status = tracing::field::Empty,
            total_ms = tracing::field::Empty,
        );
        let model = self
            .model
            .get()
            .map_or_else(|| "none".to_owned(), |m| m.name.clone());
        let observation = metrics::RpcObservation::start(rpc, model);
        let out = run(req).instrument(span.clone()).await;
        let total = observation.elapsed();
        let _entered = span.enter();
        span.record("total_ms", total.as_secs_f64() * 1e3);
        match out {
            Ok(resp) => {
                observation.finish("ok", None);
                span.record("status", "ok");
                tracing::debug!("answered");
                let (queue, compute) = resp.timings().unzip();
                let mut response = Response::new(resp);
                request_id::set_id(response.metadata_mut(), &id);
                request_id::set_timings(response.metadata_mut(), queue, compute, total);
                Ok(response)
            }
            Err(e) => {
                let unknown_model = matches!(e, ServiceError::ModelNotFound { .. });
                let mut status = Status::from(e);
                let code = metrics::code_name(status.code());
                observation.finish(code, unknown_model.then(|| "unknown".to_owned()));
                span.record("status", code);
                match status.code() {
                    tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
                        tracing::error!(message = status.message(), "failed")
                    }
                    _ => tracing::info!(message = status.message(), "refused"),
                }
                request_id::set_id(status.metadata_mut(), &id);
                request_id::set_timings(status.metadata_mut(), None, None, total);
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl Diffgap for DiffgapService {
    async fn bridge(
        &self,
        request: Request<proto::BridgeRequest>,
    ) -> Result<Response<proto::BridgeResponse>, Status> {
        let deadline = super::scheduler::deadline_from_metadata(request.metadata());
        self.handle(
            "Bridge",
            request,
            |r| r.items.len(),
            |r| self.bridge_impl(r, deadline),
        )
        .await
    }

    async fn rank(
        &self,
        request: Request<proto::RankRequest>,
    ) -> Result<Response<proto::RankResponse>, Status> {
        let deadline = super::scheduler::deadline_from_metadata(request.metadata());
        self.handle(
            "Rank",
            request,
            |r| r.candidates.len(),
            |r| self.rank_impl(r, deadline),
        )
        .await
    }

    async fn info(
        &self,
        request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        self.handle("Info", request, |_| 0, |_| async { self.info_impl() })
            .await
    }
}

fn w(contrastive: f64, bridged: f64, reverse: f64) -> FusionWeights {
    FusionWeights {
        contrastive,
        bridged,
        reverse,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn timings(out: &Bridged, t0: Instant) -> proto::Timings {
    proto::Timings {
        queue_ns: nanos(out.queue),
        compute_ns: nanos(out.compute),
        total_ns: nanos(t0.elapsed()),
    }
}

fn default_options(m: &ModelInfo) -> SampleOptions {
    SampleOptions {
        steps: m.defaults.rank_steps,
        guidance: m.defaults.guidance,
        samples: m.defaults.rank_samples,
    }
}

fn check_modality(m: &ModelInfo, field: &str, name: &str) -> Result<(), ServiceError> {
    if m.modalities.iter().any(|x| x == name) {
        return Ok(());
    }
    Err(ServiceError::invalid(
        field,
        format!(
            "unknown modality '{name}'; the model knows {:?}",
            m.modalities
        ),
    ))
}

fn check_direction(m: &ModelInfo, field: &str, from: &str, to: &str) -> Result<(), ServiceError> {
    if m.directions.iter().any(|(a, b)| a == from && b == to) {
        return Ok(());
    }
    let known: Vec<String> = m
        .directions
        .iter()
        .map(|(a, b)| direction_key(a, b))
        .collect();
    Err(ServiceError::invalid(
        field,
        format!("the model has no direction {from}->{to}; it knows {known:?}"),
    ))
}

/// The values of a required embedding, after checking its length, finiteness and norm.
fn check_embedding(
    field: &str,
    e: Option<proto::Embedding>,
    dim: usize,
) -> Result<Vec<f32>, ServiceError> {
    let values = e
        .ok_or_else(|| ServiceError::invalid(field, "is required"))?
        .values;
    if values.len() != dim {
        return Err(ServiceError::invalid(
            format!("{field}.values"),
            format!(
                "has {} values, the model's dimension is {dim}",
                values.len()
            ),
        ));
    }
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(ServiceError::invalid(
            format!("{field}.values[{i}]"),
            format!("is {v}; every value must be finite"),
        ));
    }
    // The model normalises in f32: the norm must be positive and finite there too.
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm == 0.0 {
        return Err(ServiceError::invalid(
            format!("{field}.values"),
            "is the zero vector (or too small to normalise); an embedding needs a direction",
        ));
    }
    if !norm.is_finite() {
        return Err(ServiceError::invalid(
            format!("{field}.values"),
            "has a norm too large to represent as f32; scale it down",
        ));
    }
    Ok(values)
}

/// Validates one Bridge item into a worker row.
fn bridge_row(m: &ModelInfo, i: usize, item: proto::BridgeItem) -> Result<BridgeRow, ServiceError> {
    let field = format!("items[{i}]");
    check_modality(
        m,
        &format!("{field}.source_modality"),
        &item.source_modality,
    )?;
    check_modality(
        m,
        &format!("{field}.target_modality"),
        &item.target_modality,
    )?;
    check_direction(
        m,
        &format!("{field}.target_modality"),
        &item.source_modality,
        &item.target_modality,
    )?;
    let embedding = check_embedding(&format!("{field}.embedding"), item.embedding, m.dim)?;
    let steps = item.steps.map_or(m.defaults.steps, |s| s as usize);
    if steps == 0 || steps > m.max_steps {
        return Err(ServiceError::invalid(
            format!("{field}.steps"),
            format!("must be in 1..={}, got {steps}", m.max_steps),
        ));
    }
    let guidance = item.guidance.unwrap_or(m.defaults.guidance);
    if !(guidance.is_finite() && (0.0..=MAX_GUIDANCE).contains(&guidance)) {
        return Err(ServiceError::invalid(
            format!("{field}.guidance"),
            format!("must be in [0, {MAX_GUIDANCE}], got {guidance}"),
        ));
    }
    let samples = item.samples.map_or(m.defaults.samples, |s| s as usize);
    if samples == 0 || samples > MAX_SAMPLES {
        return Err(ServiceError::invalid(
            format!("{field}.samples"),
            format!("must be in 1..={MAX_SAMPLES}, got {samples}"),
        ));
    }
    Ok(BridgeRow {
        from: item.source_modality,
        to: item.target_modality,
        embedding,
        opts: SampleOptions {
            steps,
            guidance,
            samples,
        },
        seed: item.seed.unwrap_or_else(|| row_seed(0, i)),
    })
}

/// Cosine similarity, computed in f64.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
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
