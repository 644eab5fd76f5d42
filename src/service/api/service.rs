//! The tonic implementation of `diffgap.v1.Diffgap`: finds the model a request names, resolves
//! its raw inputs through the model's encoders, validates it against the model and the server's
//! limits, hands the rows to the model worker and shapes the answer. Every unary RPC goes
//! through [`DiffgapService::handle`] (ids, spans, metrics, response headers).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::model::card::{direction_key, FusionWeights};
use crate::model::row_seed;
use crate::service::api::request_id::{self, Timed};
use crate::service::api::security::Tokens;
use crate::service::error::ServiceError;
use crate::service::ops::metrics;
use crate::service::proto::{self, diffgap_server::Diffgap, RankMode};
use crate::service::request::rank::{self, Candidates, Plan};
use crate::service::request::raw_input::{self, Slot};
use crate::service::request::repository::{Repository, Served};
use crate::service::request::validate::{self, check_count, check_direction, check_modality};
use crate::service::worker::{BridgeRow, ModelInfo, RowStart};

pub use crate::service::request::validate::{MAX_GUIDANCE, MAX_SAMPLES};

/// The per-request limits of the service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_items_per_request: usize,
    pub max_batch_rows: usize,
    pub queue_capacity: usize,
}

pub struct DiffgapService {
    repo: Arc<Repository>,
    limits: Limits,
    /// The tokens that may call Reload (`None`: Reload is refused).
    admin: Option<Tokens>,
}

/// Chunks of one BridgeStream call computed at the same time (later ones wait).
const STREAM_CHUNKS_IN_FLIGHT: usize = 4;

impl DiffgapService {
    pub fn new(repo: Arc<Repository>, limits: Limits) -> Self {
        Self {
            repo,
            limits,
            admin: None,
        }
    }

    /// Lets the holders of `admin` tokens call Reload (see [`crate::service::api::security::admin`]).
    pub fn with_admin(mut self, admin: Option<Tokens>) -> Self {
        self.admin = admin;
        self
    }

    /// The model `name` ("" = the default), or UNAVAILABLE while loading, NOT_FOUND if unknown.
    fn served(&self, name: &str) -> Result<Arc<Served>, ServiceError> {
        Ok(self.repo.get()?.model(name)?.clone())
    }

    fn count(&self, field: &str, n: usize) -> Result<(), ServiceError> {
        check_count(field, n, self.limits.max_items_per_request)
    }

    /// The embedding of a field given either as `embedding` or as `raw`, with the raw ones
    /// resolved together (one pass of the encoder worker) by [`resolve_all`].
    async fn bridge_impl(
        &self,
        req: proto::BridgeRequest,
        deadline: Option<Instant>,
    ) -> Result<proto::BridgeResponse, ServiceError> {
        let t0 = Instant::now();
        let s = self.served(&req.model)?;
        self.count("items", req.items.len())?;
        let rows = bridge_rows(&s, req.items, 0, deadline).await?;
        let out = s.worker.bridge_until(rows.rows, deadline).await?;
        Ok(proto::BridgeResponse {
            embeddings: out
                .embeddings
                .into_iter()
                .map(|values| proto::Embedding { values })
                .collect(),
            timings: Some(timings(
                out.queue + rows.encode.0,
                out.compute + rows.encode.1,
                t0,
            )),
        })
    }

    async fn refine_impl(
        &self,
        req: proto::RefineRequest,
        deadline: Option<Instant>,
    ) -> Result<proto::RefineResponse, ServiceError> {
        let t0 = Instant::now();
        let s = self.served(&req.model)?;
        let m = &s.info;
        check_modality(m, "modality", &req.modality)?;
        let partner_modality = if req.partner_modality.is_empty() {
            let others: Vec<&String> = m
                .modalities
                .iter()
                .filter(|x| **x != req.modality)
                .collect();
            match others.as_slice() {
                [one] => (*one).clone(),
                _ => {
                    return Err(ServiceError::invalid(
                        "partner_modality",
                        format!("is required: the model has modalities {:?}", m.modalities),
                    ))
                }
            }
        } else {
            check_modality(m, "partner_modality", &req.partner_modality)?;
            req.partner_modality.clone()
        };
        check_direction(m, "modality", &partner_modality, &req.modality)?;
        let strength = req.strength.map_or(m.defaults.refine_strength, f64::from);
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(ServiceError::invalid(
                "strength",
                format!("must be in (0, 1], got {strength}"),
            ));
        }
        let opts = validate::sample_options(m, "", req.steps, req.guidance, req.samples)?;
        let mut inputs = vec![
            Field::new("embedding", "raw", &req.modality, req.embedding, req.raw),
            Field::new(
                "partner",
                "raw_partner",
                &partner_modality,
                req.partner,
                req.raw_partner,
            ),
        ];
        let encode = resolve_all(&s, &mut inputs, deadline).await?;
        let [x, partner] = <[Field; 2]>::try_from(inputs)
            .map_err(|_| ServiceError::Internal("refine inputs".into()))?;
        let row = BridgeRow {
            from: partner_modality,
            to: req.modality,
            embedding: partner.values(m.dim)?,
            opts,
            seed: req.seed.unwrap_or_else(|| row_seed(0, 0)),
            start: RowStart::Refine {
                embedding: x.values(m.dim)?,
                strength,
            },
        };
        let out = s.worker.bridge_until(vec![row], deadline).await?;
        Ok(proto::RefineResponse {
            embedding: out
                .embeddings
                .into_iter()
                .next()
                .map(|values| proto::Embedding { values }),
            timings: Some(timings(out.queue + encode.0, out.compute + encode.1, t0)),
        })
    }

    async fn rank_impl(
        &self,
        req: proto::RankRequest,
        deadline: Option<Instant>,
    ) -> Result<proto::RankResponse, ServiceError> {
        let t0 = Instant::now();
        let s = self.served(&req.model)?;
        let m = &s.info;
        let mode = match RankMode::try_from(req.mode) {
            Ok(RankMode::Unspecified) => RankMode::Fused,
            Ok(mode) => mode,
            Err(_) => {
                return Err(ServiceError::invalid(
                    "mode",
                    format!(
                        "unknown value {}; use RANK_MODE_CONTRASTIVE (1), RANK_MODE_BRIDGED (2), RANK_MODE_REVERSE (3), RANK_MODE_FUSED (4) or RANK_MODE_GENERATIVE (5)",
                        req.mode
                    ),
                ))
            }
        };
        let q = req.query_modality.clone();
        check_modality(m, "query_modality", &q)?;
        let catalog = if req.catalog.is_empty() {
            None
        } else {
            if !req.candidates.is_empty() {
                return Err(ServiceError::invalid(
                    "candidates",
                    "must be empty when catalog is set",
                ));
            }
            Some(s.catalogs.get(&req.catalog).cloned().ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "model '{}' serves no catalog '{}'; it serves {:?}",
                    m.name,
                    req.catalog,
                    s.catalogs.keys().collect::<Vec<_>>()
                ))
            })?)
        };
        let c = match &catalog {
            Some(cat) if req.candidate_modality.is_empty() => cat.meta.modality.clone(),
            Some(cat) if req.candidate_modality != cat.meta.modality => {
                return Err(ServiceError::invalid(
                    "candidate_modality",
                    format!(
                        "is '{}' but catalog '{}' holds {}",
                        req.candidate_modality, req.catalog, cat.meta.modality
                    ),
                ))
            }
            _ => req.candidate_modality.clone(),
        };
        check_modality(m, "candidate_modality", &c)?;
        if q == c {
            return Err(ServiceError::invalid(
                "candidate_modality",
                format!("must differ from query_modality (both are '{q}')"),
            ));
        }
        if catalog.is_none() {
            self.count("candidates", req.candidates.len())?;
        }
        let fused = || -> Result<FusionWeights, ServiceError> {
            m.fusion
                .get(&direction_key(&q, &c))
                .copied()
                .ok_or_else(|| {
                    ServiceError::FailedPrecondition(format!(
                        "the model has no fusion weights for {}; use another mode",
                        direction_key(&q, &c)
                    ))
                })
        };
        let (weights, shortlist) = match mode {
            RankMode::Contrastive => (w(1.0, 0.0, 0.0), 0),
            RankMode::Bridged => (w(0.0, 1.0, 0.0), 0),
            RankMode::Reverse => (w(0.0, 0.0, 1.0), 0),
            RankMode::Fused | RankMode::Unspecified => (fused()?, 0),
            RankMode::Generative => {
                let k = req
                    .shortlist
                    .map_or(validate::DEFAULT_SHORTLIST, |k| k as usize);
                if k == 0 || k > validate::MAX_SHORTLIST {
                    return Err(ServiceError::invalid(
                        "shortlist",
                        format!("must be in 1..={}, got {k}", validate::MAX_SHORTLIST),
                    ));
                }
                check_direction(m, "query_modality", &c, &q)?;
                (fused()?, k)
            }
        };
        if weights.bridged != 0.0 {
            check_direction(m, "candidate_modality", &q, &c)?;
        }
        if weights.reverse != 0.0 && catalog.is_none() {
            check_direction(m, "query_modality", &c, &q)?;
        }
        let mut fields = vec![Field::new(
            "query",
            "raw_query",
            &q,
            req.query,
            req.raw_query,
        )];
        let mut ids = Vec::with_capacity(req.candidates.len());
        for (i, cand) in req.candidates.into_iter().enumerate() {
            fields.push(Field::new(
                &format!("candidates[{i}].embedding"),
                &format!("candidates[{i}].raw"),
                &c,
                cand.embedding,
                cand.raw,
            ));
            ids.push(cand.id);
        }
        let encode = resolve_all(&s, &mut fields, deadline).await?;
        let mut values = fields
            .into_iter()
            .map(|f| f.values(m.dim))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let query = values
            .next()
            .ok_or_else(|| ServiceError::Internal("rank query".into()))?;
        let candidates = match catalog {
            Some(cat) => Candidates::Catalog {
                name: req.catalog.clone(),
                ids: cat.meta.ids.clone(),
            },
            None => Candidates::Inline {
                ids,
                embeddings: values.collect(),
            },
        };
        let plan = Plan {
            query,
            query_modality: q,
            candidate_modality: c,
            weights,
            shortlist,
            top_k: req.top_k as usize,
            seed: req.seed.unwrap_or(0),
        };
        let out = rank::rank(m, &s.worker, plan, candidates, deadline).await?;
        Ok(proto::RankResponse {
            results: out.results,
            timings: Some(timings(out.queue + encode.0, out.compute + encode.1, t0)),
        })
    }

    async fn embed_impl(
        &self,
        req: proto::EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<proto::EmbedResponse, ServiceError> {
        let t0 = Instant::now();
        let s = self.served(&req.model)?;
        self.count("inputs", req.inputs.len())?;
        let slots = req
            .inputs
            .into_iter()
            .enumerate()
            .map(|(i, raw)| Slot {
                field: format!("inputs[{i}]"),
                modality: String::new(),
                raw,
            })
            .collect();
        let out = raw_input::resolve(
            &s.worker,
            s.info.encoders.as_ref(),
            &s.info.name,
            slots,
            deadline,
        )
        .await?;
        Ok(proto::EmbedResponse {
            embeddings: out
                .rows
                .into_iter()
                .zip(out.modalities)
                .map(|(values, modality)| proto::EmbeddedInput {
                    modality,
                    embedding: Some(proto::Embedding { values }),
                })
                .collect(),
            timings: Some(timings(out.queue, out.compute, t0)),
        })
    }

    fn info_impl(&self) -> Result<proto::InfoResponse, ServiceError> {
        let registry = self.repo.get()?;
        let u32_of = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let models: Vec<proto::ModelInfo> = registry
            .ordered()
            .into_iter()
            .map(|s| {
                let m = &s.info;
                let enc = m.encoders.clone();
                proto::ModelInfo {
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
                    fingerprint: m.fingerprint.clone(),
                    catalogs: s
                        .catalogs
                        .values()
                        .map(|c| proto::CatalogInfo {
                            name: c.meta.name.clone(),
                            modality: c.meta.modality.clone(),
                            entries: c.meta.ids.len() as u64,
                            reverse_modalities: c.reverse.keys().cloned().collect(),
                        })
                        .collect(),
                    default_refine_strength: m.defaults.refine_strength as f32,
                    raw_modalities: enc
                        .as_ref()
                        .map(|e| {
                            [&e.text, &e.audio, &e.video]
                                .into_iter()
                                .flatten()
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default(),
                    audio_sample_rate: enc.as_ref().map_or(0, |e| e.sample_rate),
                    max_audio_seconds: enc.as_ref().map_or(0.0, |e| e.max_audio_seconds as f32),
                    video_shape: enc
                        .as_ref()
                        .and_then(|e| e.video_shape)
                        .map(|(t, h, w)| vec![t as u32, 3, h as u32, w as u32])
                        .unwrap_or_default(),
                    instances: u32_of(m.instances),
                    threads_per_instance: u32_of(m.threads_per_instance),
                }
            })
            .collect();
        let device = registry
            .ordered()
            .first()
            .map(|s| s.info.device.clone())
            .unwrap_or_default();
        Ok(proto::InfoResponse {
            models,
            device,
            version: env!("CARGO_PKG_VERSION").into(),
            limits: Some(proto::Limits {
                max_items_per_request: u32_of(self.limits.max_items_per_request),
                max_batch_rows: u32_of(self.limits.max_batch_rows),
                queue_capacity: u32_of(self.limits.queue_capacity),
                max_samples: u32_of(MAX_SAMPLES),
                max_guidance: MAX_GUIDANCE,
                max_stream_items: validate::MAX_STREAM_ITEMS,
                max_shortlist: u32_of(validate::MAX_SHORTLIST),
            }),
        })
    }

    async fn reload_impl(&self) -> Result<proto::ReloadResponse, ServiceError> {
        let report = self.repo.reload().await?;
        let outcome = |o: crate::service::request::repository::Outcome| proto::ReloadOutcome {
            reloaded: o.error.is_none(),
            error: o.error.unwrap_or_default(),
            name: o.name,
        };
        Ok(proto::ReloadResponse {
            models: report.models.into_iter().map(outcome).collect(),
            catalogs: report.catalogs.into_iter().map(outcome).collect(),
            removed_models: report.removed_models,
        })
    }

    /// The model label of a request's metrics: its model, or the default's name.
    fn model_label(&self, name: &str) -> String {
        if !name.is_empty() {
            return name.to_owned();
        }
        self.repo
            .get()
            .map_or_else(|_| "none".to_owned(), |r| r.default.clone())
    }

    /// Every unary RPC goes through here, and only here: the request id, the RPC's span
    /// (carried into the model worker), the RPC-level metrics (recorded once per call) and the
    /// response metadata (the id echoed, the timing headers).
    async fn handle<Req, Resp, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        meta: fn(&Req) -> (usize, &str),
        run: impl FnOnce(Req) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Resp, ServiceError>>,
        Resp: Timed,
    {
        let id = request_id::from_metadata(request.metadata());
        let req = request.into_inner();
        let (items, model) = meta(&req);
        let span = tracing::info_span!(
            "rpc",
            rpc,
            request_id = %id,
            items,
            status = tracing::field::Empty,
            total_ms = tracing::field::Empty,
        );
        let observation = metrics::RpcObservation::start(rpc, self.model_label(model));
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

/// A request field given as an embedding or as a raw input, resolved to values.
struct Field {
    /// The embedding's field, e.g. `items[2].embedding`.
    name: String,
    /// The raw input's field, e.g. `items[2].raw`.
    raw_name: String,
    modality: String,
    embedding: Option<proto::Embedding>,
    raw: Option<proto::RawInput>,
    resolved: Option<Vec<f32>>,
}

impl Field {
    fn new(
        name: &str,
        raw_name: &str,
        modality: &str,
        embedding: Option<proto::Embedding>,
        raw: Option<proto::RawInput>,
    ) -> Self {
        Self {
            name: name.into(),
            raw_name: raw_name.into(),
            modality: modality.into(),
            embedding,
            raw,
            resolved: None,
        }
    }

    /// The field's values, checked against the model's dimension.
    fn values(self, dim: usize) -> Result<Vec<f32>, ServiceError> {
        match (self.resolved, self.embedding) {
            (Some(v), _) => validate::check_values(&self.name, v, dim),
            (None, e) => validate::check_embedding(&self.name, e, dim),
        }
    }
}

/// Resolves every field given raw through the model's encoders in one call; returns the
/// encoder worker's (queue, compute). A field with both `embedding` and `raw` is refused.
async fn resolve_all(
    s: &Served,
    fields: &mut [Field],
    deadline: Option<Instant>,
) -> Result<(Duration, Duration), ServiceError> {
    let mut slots = Vec::new();
    let mut at = Vec::new();
    for (i, f) in fields.iter_mut().enumerate() {
        if let Some(raw) = f.raw.take() {
            if f.embedding.is_some() {
                return Err(ServiceError::invalid(
                    f.raw_name.as_str(),
                    format!("is set together with {}; send one of them", f.name),
                ));
            }
            slots.push(Slot {
                field: f.raw_name.clone(),
                modality: f.modality.clone(),
                raw,
            });
            at.push(i);
        }
    }
    if slots.is_empty() {
        return Ok((Duration::ZERO, Duration::ZERO));
    }
    let out = raw_input::resolve(
        &s.worker,
        s.info.encoders.as_ref(),
        &s.info.name,
        slots,
        deadline,
    )
    .await?;
    for (i, values) in at.into_iter().zip(out.rows) {
        fields[i].resolved = Some(values);
    }
    Ok((out.queue, out.compute))
}

/// Bridge items as worker rows (raw inputs resolved), `first` being the index of the first
/// item in its request or stream (for default seeds).
struct Rows {
    rows: Vec<BridgeRow>,
    encode: (Duration, Duration),
}

async fn bridge_rows(
    s: &Served,
    items: Vec<proto::BridgeItem>,
    first: usize,
    deadline: Option<Instant>,
) -> Result<Rows, ServiceError> {
    let m: &ModelInfo = &s.info;
    let mut fields = Vec::with_capacity(items.len());
    let mut stripped = Vec::with_capacity(items.len());
    for (i, mut item) in items.into_iter().enumerate() {
        fields.push(Field::new(
            &format!("items[{i}].embedding"),
            &format!("items[{i}].raw"),
            &item.source_modality,
            item.embedding.take(),
            item.raw.take(),
        ));
        stripped.push(item);
    }
    // Model-level checks first, so that a bad item costs no encoding.
    for (i, item) in stripped.iter().enumerate() {
        let f = format!("items[{i}]");
        check_modality(m, &format!("{f}.source_modality"), &item.source_modality)?;
        check_modality(m, &format!("{f}.target_modality"), &item.target_modality)?;
    }
    let encode = resolve_all(s, &mut fields, deadline).await?;
    let rows = stripped
        .into_iter()
        .zip(fields)
        .enumerate()
        .map(|(i, (item, field))| {
            let values = field.values(m.dim)?;
            validate::bridge_row(m, &format!("items[{i}]"), first + i, item, values)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rows { rows, encode })
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<proto::BridgeStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Diffgap for DiffgapService {
    async fn bridge(
        &self,
        request: Request<proto::BridgeRequest>,
    ) -> Result<Response<proto::BridgeResponse>, Status> {
        let deadline =
            crate::service::worker::scheduler::deadline_from_metadata(request.metadata());
        self.handle(
            "Bridge",
            request,
            |r| (r.items.len(), &r.model),
            |r| self.bridge_impl(r, deadline),
        )
        .await
    }

    async fn rank(
        &self,
        request: Request<proto::RankRequest>,
    ) -> Result<Response<proto::RankResponse>, Status> {
        let deadline =
            crate::service::worker::scheduler::deadline_from_metadata(request.metadata());
        self.handle(
            "Rank",
            request,
            |r| (r.candidates.len(), &r.model),
            |r| self.rank_impl(r, deadline),
        )
        .await
    }

    async fn info(
        &self,
        request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        self.handle("Info", request, |_| (0, ""), |_| async { self.info_impl() })
            .await
    }

    async fn refine(
        &self,
        request: Request<proto::RefineRequest>,
    ) -> Result<Response<proto::RefineResponse>, Status> {
        let deadline =
            crate::service::worker::scheduler::deadline_from_metadata(request.metadata());
        self.handle(
            "Refine",
            request,
            |r| (1, &r.model),
            |r| self.refine_impl(r, deadline),
        )
        .await
    }

    async fn embed(
        &self,
        request: Request<proto::EmbedRequest>,
    ) -> Result<Response<proto::EmbedResponse>, Status> {
        let deadline =
            crate::service::worker::scheduler::deadline_from_metadata(request.metadata());
        self.handle(
            "Embed",
            request,
            |r| (r.inputs.len(), &r.model),
            |r| self.embed_impl(r, deadline),
        )
        .await
    }

    async fn reload(
        &self,
        request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        self.handle(
            "Reload",
            request,
            |_| (0, ""),
            |_| async move {
                crate::service::api::security::admin::check(
                    self.admin.as_ref(),
                    authorization.as_deref(),
                )?;
                self.reload_impl().await
            },
        )
        .await
    }

    type BridgeStreamStream = ChunkStream;

    /// Each chunk is validated and sent to the worker as soon as it arrives (up to
    /// [`STREAM_CHUNKS_IN_FLIGHT`] at once), and answered in order. The first bad chunk ends
    /// the stream with its status; chunks already answered stay answered.
    async fn bridge_stream(
        &self,
        request: Request<Streaming<proto::BridgeStreamRequest>>,
    ) -> Result<Response<Self::BridgeStreamStream>, Status> {
        let deadline =
            crate::service::worker::scheduler::deadline_from_metadata(request.metadata());
        let id = request_id::from_metadata(request.metadata());
        let mut input = request.into_inner();
        let repo = self.repo.clone();
        let max_items = self.limits.max_items_per_request;
        let observation = metrics::RpcObservation::start("BridgeStream", self.model_label(""));
        let span = tracing::info_span!("rpc", rpc = "BridgeStream", request_id = %id);
        let (pending_tx, mut pending_rx) = tokio::sync::mpsc::channel::<
            tokio::task::JoinHandle<Result<proto::BridgeStreamResponse, Status>>,
        >(STREAM_CHUNKS_IN_FLIGHT);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(STREAM_CHUNKS_IN_FLIGHT);
        // Reader: validates chunks and starts their work, in order. A bad chunk goes through
        // the same queue as a finished task, so that it ends the stream only after the chunks
        // before it are answered.
        let fail = |e: Status| tokio::spawn(std::future::ready(Err(e)));
        tokio::spawn(
            async move {
                let mut served: Option<Arc<Served>> = None;
                let mut next_item: u64 = 0;
                let mut chunk: u64 = 0;
                while let Some(msg) = input.next().await {
                    let started = Instant::now();
                    let req = match msg {
                        Ok(r) => r,
                        Err(status) => {
                            let _ = pending_tx.send(fail(status)).await;
                            return;
                        }
                    };
                    let s = match &served {
                        Some(s) => {
                            if !req.model.is_empty() && req.model != s.info.name {
                                let e = ServiceError::invalid(
                                    "model",
                                    format!(
                                        "chunk {chunk} names '{}' but the stream is on '{}'",
                                        req.model, s.info.name
                                    ),
                                );
                                let _ = pending_tx.send(fail(Status::from(e))).await;
                                return;
                            }
                            s.clone()
                        }
                        None => match repo.get().and_then(|r| Ok(r.model(&req.model)?.clone())) {
                            Ok(s) => {
                                served = Some(s.clone());
                                s
                            }
                            Err(e) => {
                                let _ = pending_tx.send(fail(Status::from(e))).await;
                                return;
                            }
                        },
                    };
                    let n = req.items.len();
                    if let Err(e) = check_count("items", n, max_items) {
                        let _ = pending_tx.send(fail(Status::from(e))).await;
                        return;
                    }
                    if next_item + n as u64 > validate::MAX_STREAM_ITEMS {
                        let e = ServiceError::invalid(
                            "items",
                            format!(
                                "the stream passes {} items, the limit is {}",
                                next_item + n as u64,
                                validate::MAX_STREAM_ITEMS
                            ),
                        );
                        let _ = pending_tx.send(fail(Status::from(e))).await;
                        return;
                    }
                    let first = next_item;
                    let this = chunk;
                    let task = tokio::spawn(
                        async move {
                            let rows = bridge_rows(&s, req.items, first as usize, deadline).await?;
                            let out = s.worker.bridge_until(rows.rows, deadline).await?;
                            Ok(proto::BridgeStreamResponse {
                                chunk: this,
                                first_item: first,
                                embeddings: out
                                    .embeddings
                                    .into_iter()
                                    .map(|values| proto::Embedding { values })
                                    .collect(),
                                timings: Some(timings(
                                    out.queue + rows.encode.0,
                                    out.compute + rows.encode.1,
                                    started,
                                )),
                            })
                        }
                        .in_current_span(),
                    );
                    if pending_tx.send(task).await.is_err() {
                        return;
                    }
                    next_item += n as u64;
                    chunk += 1;
                }
            }
            .instrument(span.clone()),
        );
        // Writer: answers the chunks in order.
        tokio::spawn(
            async move {
                let mut status = "ok";
                while let Some(task) = pending_rx.recv().await {
                    let answer = match task.await {
                        Ok(answer) => answer,
                        Err(e) => Err(Status::internal(format!("chunk task: {e}"))),
                    };
                    let failed = answer.is_err();
                    if let Err(s) = &answer {
                        status = metrics::code_name(s.code());
                    }
                    if out_tx.send(answer).await.is_err() || failed {
                        break;
                    }
                }
                observation.finish(status, None);
            }
            .instrument(span),
        );
        let stream = tokio_stream::wrappers::ReceiverStream::new(out_rx);
        Ok(Response::new(Box::pin(stream) as Self::BridgeStreamStream))
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

fn timings(queue: Duration, compute: Duration, t0: Instant) -> proto::Timings {
    proto::Timings {
        queue_ns: nanos(queue),
        compute_ns: nanos(compute),
        total_ns: nanos(t0.elapsed()),
    }
}
