//! `POST /v1/embeddings`, OpenAI's embeddings API: `input` (a string or a list of strings),
//! `model` (a served model's name; "" or left out: the default), `encoding_format` ("float",
//! the default, or "base64": little-endian f32), `dimensions` (only the model's own) and
//! `user` (ignored). The answer is OpenAI's list of `{"object": "embedding", "index",
//! "embedding"}` with `usage` counted by the text encoder's own tokenizer (special tokens
//! included, after its truncation; 0 for audio).
//!
//! Cross-modal extensions, fields OpenAI's clients send through `extra_body`:
//! - `modality`: what the inputs are, "text" (the default) or the model's audio modality
//!   (each input then a base64 audio file);
//! - `bridge_to`: a modality to bridge the embeddings into with the DiffGAP model (e.g. a
//!   text query as an audio-like embedding), with optional `steps`, `guidance`, `samples`
//!   and `seed` (every item's seed; unset: derived from the item's index, as Bridge).
//!
//! The request becomes the gRPC Embed request (or, with `bridge_to`, a Bridge request of raw
//! items) and goes through the same handler functions.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::ToSchema;

use super::frame::{Answer, HttpApi};
use super::json::decode_base64;
use super::openapi::{CallHeaders, OpenAiErrors};
use super::reply::Style;
use crate::encoders::text::count_tokens;
use crate::service::api::context::Context;
use crate::service::api::{bridge, embed};
use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::proto::{self, raw_input::Input};
use crate::service::types::EmbedderInfo;

/// How the embeddings are sent: arrays of numbers, or base64 of their little-endian f32.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Float,
    Base64,
}

/// OpenAI's embeddings request, with diffgap's cross-modal extensions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsJson {
    /// A string, or a non-empty list of strings (token arrays are not supported).
    #[schema(schema_with = input_schema)]
    input: Value,
    /// A served model's name; "" or left out: the default model.
    #[serde(default)]
    model: String,
    #[serde(default)]
    encoding_format: Option<Format>,
    /// Only the model's own dimension is accepted.
    dimensions: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as OpenAI's API does, not used
    user: Option<String>,
    /// What the inputs are: "text" (the default) or the model's audio modality, each input
    /// then a base64 audio file.
    modality: Option<String>,
    /// A modality to bridge the embeddings into; `steps`, `guidance`, `samples` and `seed`
    /// apply only with it.
    bridge_to: Option<String>,
    steps: Option<u32>,
    guidance: Option<f32>,
    samples: Option<u32>,
    seed: Option<u64>,
}

/// OpenAI's embeddings API, with diffgap's cross-modal extensions.
#[utoipa::path(post, path = "/v1/embeddings", operation_id = "embeddings",
    request_body = EmbeddingsJson, params(CallHeaders), security(("bearer" = [])),
    responses(
        (status = 200, description = "The embeddings", body = EmbeddingsReply),
        OpenAiErrors
    ))]
pub async fn embeddings(State(api): State<Arc<HttpApi>>, request: Request) -> Response {
    let ctx = api.ctx();
    api.call(
        ("http:/v1/embeddings", Style::OpenAi),
        request,
        |r: &EmbeddingsJson| {
            let items = r.input.as_array().map_or(1, Vec::len);
            (items, &r.model)
        },
        |r, deadline| run(ctx, r, deadline),
    )
    .await
}

/// The schema of `input`: a string, or a non-empty list of strings.
fn input_schema() -> Schema {
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let list = ArrayBuilder::new().items(text()).min_items(Some(1));
    OneOfBuilder::new().item(text()).item(list).into()
}

/// One input's embedding.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingJson {
    #[schema(value_type = String, example = "embedding")]
    object: &'static str,
    index: usize,
    embedding: EmbeddingValues,
}

/// The embedding as `encoding_format` asked.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValues {
    Float(Vec<f32>),
    /// The little-endian f32 bytes, base64 (standard alphabet).
    Base64(String),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Tokens of the text inputs, by the text encoder's own tokenizer (0 for audio).
    prompt_tokens: usize,
    total_tokens: usize,
}

/// OpenAI's embeddings response.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsReply {
    #[schema(value_type = String, example = "list")]
    object: &'static str,
    data: Vec<EmbeddingJson>,
    /// The model that answered.
    model: String,
    usage: Usage,
}

/// The inputs: a string, or a list of strings.
fn texts(input: Value) -> Result<Vec<String>, ServiceError> {
    let bad = || {
        ServiceError::invalid(
            "input",
            "must be a string or a list of strings (token arrays are not supported)",
        )
    };
    let texts = match input {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    if texts.is_empty() {
        return Err(ServiceError::invalid("input", "must not be empty"));
    }
    Ok(texts)
}

/// Whether the inputs of `modality` are text (else base64 audio files).
fn is_text(enc: &EmbedderInfo, model: &str, modality: &str) -> Result<bool, ServiceError> {
    if enc.text.as_deref() == Some(modality) {
        return Ok(true);
    }
    if enc.audio.as_deref() == Some(modality) {
        return Ok(false);
    }
    let takes: Vec<&String> = [&enc.text, &enc.audio].into_iter().flatten().collect();
    Err(ServiceError::invalid(
        "modality",
        format!(
            "model '{model}' takes text or audio inputs of {takes:?}, not '{}'",
            echo(modality)
        ),
    ))
}

async fn run(
    ctx: &Context,
    r: EmbeddingsJson,
    deadline: Option<Instant>,
) -> Result<Answer<EmbeddingsReply>, ServiceError> {
    let texts = texts(r.input)?;
    let s = ctx.served(&r.model)?;
    let m = &s.info;
    if let Some(d) = r.dimensions.filter(|&d| d != m.dim as u64) {
        return Err(ServiceError::invalid(
            "dimensions",
            format!(
                "is {d}, but model '{}' embeds in {} dimensions",
                m.name, m.dim
            ),
        ));
    }
    let enc = m.encoders.as_ref().ok_or_else(|| {
        ServiceError::FailedPrecondition(format!("model '{}' has no encoders", m.name))
    })?;
    let modality = r.modality.unwrap_or_else(|| "text".into());
    let text = is_text(enc, &m.name, &modality)?;
    if r.bridge_to.is_none() {
        for (key, set) in [
            ("steps", r.steps.is_some()),
            ("guidance", r.guidance.is_some()),
            ("samples", r.samples.is_some()),
            ("seed", r.seed.is_some()),
        ] {
            if set {
                return Err(ServiceError::invalid(key, "applies only with bridge_to"));
            }
        }
    }
    let (texts, tokens) = match (&enc.tokenizer, text) {
        (Some(tok), true) => {
            let tok = tok.clone();
            tokio::task::spawn_blocking(move || {
                let n: usize = texts.iter().map(|t| count_tokens(&tok, t)).sum();
                (texts, n)
            })
            .await
            .map_err(|e| ServiceError::Internal(format!("counting tokens: {e}")))?
        }
        _ => (texts, 0),
    };
    let raws = texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let input = if text {
                Input::Text(t)
            } else {
                Input::Audio(decode_base64(&format!("input[{i}]"), &t)?)
            };
            Ok(proto::RawInput { input: Some(input) })
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    let model = r.model.clone();
    let (rows, timings) = match &r.bridge_to {
        None => {
            let out = embed::embed(
                ctx,
                proto::EmbedRequest {
                    model,
                    inputs: raws,
                },
                deadline,
            )
            .await?;
            let rows = out.embeddings.into_iter().map(|e| e.embedding);
            (rows.map(|e| e.map(|e| e.values)).collect(), out.timings)
        }
        Some(target) => {
            let items = raws
                .into_iter()
                .map(|raw| proto::BridgeItem {
                    source_modality: modality.clone(),
                    target_modality: target.clone(),
                    embedding: None,
                    raw: Some(raw),
                    steps: r.steps,
                    guidance: r.guidance,
                    samples: r.samples,
                    seed: r.seed,
                })
                .collect();
            let out = bridge::bridge(ctx, proto::BridgeRequest { model, items }, deadline).await?;
            let rows = out.embeddings.into_iter().map(|e| Some(e.values));
            (rows.collect::<Vec<_>>(), out.timings)
        }
    };
    let format = r.encoding_format.unwrap_or_default();
    let data = rows
        .into_iter()
        .enumerate()
        .map(|(index, values)| {
            let values = values.unwrap_or_default();
            let embedding = match format {
                Format::Float => EmbeddingValues::Float(values),
                Format::Base64 => EmbeddingValues::Base64(base64_f32(&values)),
            };
            EmbeddingJson {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let worker = timings.map(|t| {
        let ns = std::time::Duration::from_nanos;
        (ns(t.queue_ns), ns(t.compute_ns))
    });
    let usage = Usage {
        prompt_tokens: tokens,
        total_tokens: tokens,
    };
    Ok(Answer {
        json: EmbeddingsReply {
            object: "list",
            data,
            model: m.name.clone(),
            usage,
        },
        timings: worker,
    })
}

/// `values` as OpenAI's base64 encoding: the little-endian f32 bytes, standard alphabet.
fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_are_a_string_or_strings() {
        assert_eq!(texts(json!("a")).unwrap(), vec!["a".to_owned()]);
        assert_eq!(texts(json!(["a", "b"])).unwrap().len(), 2);
        for bad in [json!([1, 2]), json!([[1]]), json!(3), json!(null)] {
            let e = texts(bad).unwrap_err().to_string();
            assert!(e.starts_with("input: must be a string or a list"), "{e}");
        }
        assert!(texts(json!([])).is_err());
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let b = base64_f32(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b)
            .expect("base64");
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }
}
