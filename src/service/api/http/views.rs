//! The gRPC handlers' responses as the routes' JSON: embeddings as plain arrays, the other
//! fields named as in the proto.

use std::time::Duration;

use serde_json::{json, Value};

use super::frame::Answer;
use crate::service::proto;

fn timings(t: Option<&proto::Timings>) -> (Value, Option<(Duration, Duration)>) {
    match t {
        None => (Value::Null, None),
        Some(t) => (
            json!({"queue_ns": t.queue_ns, "compute_ns": t.compute_ns, "total_ns": t.total_ns}),
            Some((
                Duration::from_nanos(t.queue_ns),
                Duration::from_nanos(t.compute_ns),
            )),
        ),
    }
}

fn values(e: Option<proto::Embedding>) -> Vec<f32> {
    e.map(|e| e.values).unwrap_or_default()
}

pub fn embed(r: proto::EmbedResponse) -> Answer {
    let (t, worker) = timings(r.timings.as_ref());
    let embeddings: Vec<Value> = r
        .embeddings
        .into_iter()
        .map(|e| json!({"modality": e.modality, "embedding": values(e.embedding)}))
        .collect();
    Answer {
        json: json!({"embeddings": embeddings, "timings": t}),
        timings: worker,
    }
}

pub fn bridge(r: proto::BridgeResponse) -> Answer {
    let (t, worker) = timings(r.timings.as_ref());
    let embeddings: Vec<Vec<f32>> = r.embeddings.into_iter().map(|e| e.values).collect();
    Answer {
        json: json!({"embeddings": embeddings, "timings": t}),
        timings: worker,
    }
}

pub fn refine(r: proto::RefineResponse) -> Answer {
    let (t, worker) = timings(r.timings.as_ref());
    Answer {
        json: json!({"embedding": values(r.embedding), "timings": t}),
        timings: worker,
    }
}

pub fn rank(r: proto::RankResponse) -> Answer {
    let (t, worker) = timings(r.timings.as_ref());
    let results: Vec<Value> = r
        .results
        .into_iter()
        .map(|c| {
            let mut v = json!({"id": c.id, "score": c.score, "contrastive": c.contrastive});
            for (key, score) in [
                ("bridged", c.bridged),
                ("reverse", c.reverse),
                ("generative", c.generative),
            ] {
                if let Some(s) = score {
                    v[key] = json!(s);
                }
            }
            v
        })
        .collect();
    Answer {
        json: json!({"results": results, "timings": t}),
        timings: worker,
    }
}

pub fn info(r: proto::InfoResponse) -> Answer {
    Answer {
        json: json!(r),
        timings: None,
    }
}
