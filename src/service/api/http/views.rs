//! The gRPC handlers' responses as the routes' JSON: embeddings as plain arrays, the other
//! fields named as in the proto. Each answer is a type, so that the OpenAPI document
//! ([`super::openapi`]) describes exactly what is sent.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use super::frame::Answer;
use crate::service::proto;

/// Where the time of a call went, in nanoseconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimingsJson {
    /// Waiting in the model worker's queue.
    queue_ns: u64,
    /// Computing in the model worker.
    compute_ns: u64,
    /// From the call's arrival to its answer.
    total_ns: u64,
}

/// One input's embedding.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddedJson {
    /// The space's modality of the embedding, e.g. "text" or "audio".
    modality: String,
    /// The (L2-normalised) embedding in the model's space.
    embedding: Vec<f32>,
}

/// `POST /v1/embed`: one embedding per input, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbedReply {
    embeddings: Vec<EmbeddedJson>,
    timings: Option<TimingsJson>,
}

/// `POST /v1/bridge`: one embedding per item, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BridgeReply {
    embeddings: Vec<Vec<f32>>,
    timings: Option<TimingsJson>,
}

/// `POST /v1/refine`: the refined embedding.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefineReply {
    embedding: Vec<f32>,
    timings: Option<TimingsJson>,
}

/// A scored candidate; the component scores the mode did not need are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct RankedJson {
    id: String,
    /// The score of the requested mode; results are sorted by it, best first.
    score: f32,
    /// cos(q, a); always computed.
    contrastive: f32,
    /// cos(B(q), a), when the mode needs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    bridged: Option<f32>,
    /// cos(q, B(a)), when the mode needs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reverse: Option<f32>,
    /// The generative score, for the shortlisted candidates of the generative mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    generative: Option<f32>,
}

/// `POST /v1/rank`: the `top_k` best candidates, best first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RankReply {
    results: Vec<RankedJson>,
    timings: Option<TimingsJson>,
}

/// A health probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthJson {
    status: HealthStatus,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub enum HealthStatus {
    /// The process answers (liveness).
    #[serde(rename = "live")]
    Live,
    /// gRPC health says SERVING (readiness).
    #[serde(rename = "SERVING")]
    Serving,
    /// Loading, a model worker died, or draining.
    #[serde(rename = "NOT_SERVING")]
    NotServing,
}

pub fn health(status: HealthStatus) -> HealthJson {
    HealthJson { status }
}

fn timings(t: Option<&proto::Timings>) -> (Option<TimingsJson>, Option<(Duration, Duration)>) {
    let Some(t) = t else {
        return (None, None);
    };
    let json = TimingsJson {
        queue_ns: t.queue_ns,
        compute_ns: t.compute_ns,
        total_ns: t.total_ns,
    };
    let worker = (
        Duration::from_nanos(t.queue_ns),
        Duration::from_nanos(t.compute_ns),
    );
    (Some(json), Some(worker))
}

fn values(e: Option<proto::Embedding>) -> Vec<f32> {
    e.map(|e| e.values).unwrap_or_default()
}

pub fn embed(r: proto::EmbedResponse) -> Answer<EmbedReply> {
    let (timings, worker) = timings(r.timings.as_ref());
    let embeddings = r
        .embeddings
        .into_iter()
        .map(|e| EmbeddedJson {
            modality: e.modality,
            embedding: values(e.embedding),
        })
        .collect();
    Answer {
        json: EmbedReply {
            embeddings,
            timings,
        },
        timings: worker,
    }
}

pub fn bridge(r: proto::BridgeResponse) -> Answer<BridgeReply> {
    let (timings, worker) = timings(r.timings.as_ref());
    let embeddings = r.embeddings.into_iter().map(|e| e.values).collect();
    Answer {
        json: BridgeReply {
            embeddings,
            timings,
        },
        timings: worker,
    }
}

pub fn refine(r: proto::RefineResponse) -> Answer<RefineReply> {
    let (timings, worker) = timings(r.timings.as_ref());
    Answer {
        json: RefineReply {
            embedding: values(r.embedding),
            timings,
        },
        timings: worker,
    }
}

pub fn rank(r: proto::RankResponse) -> Answer<RankReply> {
    let (timings, worker) = timings(r.timings.as_ref());
    let results = r
        .results
        .into_iter()
        .map(|c| RankedJson {
            id: c.id,
            score: c.score,
            contrastive: c.contrastive,
            bridged: c.bridged,
            reverse: c.reverse,
            generative: c.generative,
        })
        .collect();
    Answer {
        json: RankReply { results, timings },
        timings: worker,
    }
}

pub fn info(r: proto::InfoResponse) -> Answer<proto::InfoResponse> {
    Answer {
        json: r,
        timings: None,
    }
}
