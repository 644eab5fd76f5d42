//! The JSON bodies of the API routes, and their conversion into the request types the gRPC
//! handlers take (`proto::*`): field for field the proto's messages, with embeddings as plain
//! arrays of numbers, raw inputs as `{"text": "..."}`, `{"audio": "<base64 file>"}`,
//! `{"samples": {...}}` or `{"video": {...}}`, and Rank's mode by name ("fused", "bridged",
//! ...). Unknown fields are refused; every field may be left out, and the request core then
//! says what is missing, exactly as for a gRPC request.

use base64::Engine;
// Serialize: the schema shows each field's default (`#[serde(default)]`), which needs it.
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::ToSchema;

use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::proto::{self, raw_input::Input, RankMode};

/// A raw input for the model's encoders: exactly one of the four.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawJson {
    Text(String),
    /// The bytes of an audio file (WAV, FLAC, OGG/Vorbis, MP3), base64 (standard alphabet).
    Audio(String),
    Samples(SamplesJson),
    Video(VideoJson),
}

/// Decoded audio samples, interleaved by channel.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SamplesJson {
    values: Vec<f32>,
    sample_rate: u32,
    channels: u32,
}

/// Video frames, row-major (frames, height, width, RGB).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct VideoJson {
    values: Vec<f32>,
    frames: u32,
    height: u32,
    width: u32,
}

/// `raw` as the proto's raw input; `field` names it in errors.
pub fn raw_input(field: &str, raw: RawJson) -> Result<proto::RawInput, ServiceError> {
    let input = match raw {
        RawJson::Text(t) => Input::Text(t),
        RawJson::Audio(b64) => Input::Audio(decode_base64(&format!("{field}.audio"), &b64)?),
        RawJson::Samples(s) => Input::Samples(proto::AudioSamples {
            values: s.values,
            sample_rate: s.sample_rate,
            channels: s.channels,
        }),
        RawJson::Video(v) => Input::Video(proto::VideoFrames {
            values: v.values,
            frames: v.frames,
            height: v.height,
            width: v.width,
        }),
    };
    Ok(proto::RawInput { input: Some(input) })
}

pub fn decode_base64(field: &str, text: &str) -> Result<Vec<u8>, ServiceError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| ServiceError::invalid(field, format!("is not base64: {e}")))
}

fn raw_opt(field: &str, raw: Option<RawJson>) -> Result<Option<proto::RawInput>, ServiceError> {
    raw.map(|r| raw_input(field, r)).transpose()
}

fn embedding(values: Option<Vec<f32>>) -> Option<proto::Embedding> {
    values.map(|values| proto::Embedding { values })
}

/// `POST /v1/embed`: raw inputs through the model's encoders (the proto's EmbedRequest).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedJson {
    /// A served model's name; "" or left out: the default model.
    pub model: String,
    pub inputs: Vec<RawJson>,
}

impl EmbedJson {
    pub fn into_proto(self) -> Result<proto::EmbedRequest, ServiceError> {
        let inputs = self
            .inputs
            .into_iter()
            .enumerate()
            .map(|(i, r)| raw_input(&format!("inputs[{i}]"), r))
            .collect::<Result<_, _>>()?;
        Ok(proto::EmbedRequest {
            model: self.model,
            inputs,
        })
    }
}

/// One item to bridge: an embedding or a raw input (the proto's BridgeItem).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeItemJson {
    source_modality: String,
    target_modality: String,
    embedding: Option<Vec<f32>>,
    raw: Option<RawJson>,
    steps: Option<u32>,
    guidance: Option<f32>,
    samples: Option<u32>,
    seed: Option<u64>,
}

/// `POST /v1/bridge` (the proto's BridgeRequest).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeJson {
    /// A served model's name; "" or left out: the default model.
    pub model: String,
    pub items: Vec<BridgeItemJson>,
}

impl BridgeJson {
    pub fn into_proto(self) -> Result<proto::BridgeRequest, ServiceError> {
        let items = self
            .items
            .into_iter()
            .enumerate()
            .map(|(i, it)| {
                Ok(proto::BridgeItem {
                    source_modality: it.source_modality,
                    target_modality: it.target_modality,
                    embedding: embedding(it.embedding),
                    steps: it.steps,
                    guidance: it.guidance,
                    samples: it.samples,
                    seed: it.seed,
                    raw: raw_opt(&format!("items[{i}].raw"), it.raw)?,
                })
            })
            .collect::<Result<_, ServiceError>>()?;
        Ok(proto::BridgeRequest {
            model: self.model,
            items,
        })
    }
}

/// `POST /v1/refine` (the proto's RefineRequest).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RefineJson {
    /// A served model's name; "" or left out: the default model.
    pub model: String,
    modality: String,
    embedding: Option<Vec<f32>>,
    raw: Option<RawJson>,
    partner_modality: String,
    partner: Option<Vec<f32>>,
    raw_partner: Option<RawJson>,
    strength: Option<f32>,
    steps: Option<u32>,
    guidance: Option<f32>,
    samples: Option<u32>,
    seed: Option<u64>,
}

impl RefineJson {
    pub fn into_proto(self) -> Result<proto::RefineRequest, ServiceError> {
        Ok(proto::RefineRequest {
            model: self.model,
            modality: self.modality,
            embedding: embedding(self.embedding),
            partner_modality: self.partner_modality,
            partner: embedding(self.partner),
            strength: self.strength,
            steps: self.steps,
            guidance: self.guidance,
            samples: self.samples,
            seed: self.seed,
            raw: raw_opt("raw", self.raw)?,
            raw_partner: raw_opt("raw_partner", self.raw_partner)?,
        })
    }
}

/// A candidate given inline: an id and an embedding or a raw input.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CandidateJson {
    id: String,
    embedding: Option<Vec<f32>>,
    raw: Option<RawJson>,
}

/// `POST /v1/rank` (the proto's RankRequest): candidates inline or a catalog's name.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RankJson {
    /// A served model's name; "" or left out: the default model.
    pub model: String,
    query: Option<Vec<f32>>,
    raw_query: Option<RawJson>,
    query_modality: String,
    candidate_modality: String,
    pub candidates: Vec<CandidateJson>,
    /// The mode's name: the RankMode without its prefix, lower case ("fused_hub"); left
    /// out: fused.
    #[schema(schema_with = mode_schema)]
    mode: Option<String>,
    top_k: u32,
    seed: Option<u64>,
    catalog: String,
    shortlist: Option<u32>,
}

impl RankJson {
    pub fn into_proto(self) -> Result<proto::RankRequest, ServiceError> {
        let candidates = self
            .candidates
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                Ok(proto::Candidate {
                    id: c.id,
                    embedding: embedding(c.embedding),
                    raw: raw_opt(&format!("candidates[{i}].raw"), c.raw)?,
                })
            })
            .collect::<Result<_, ServiceError>>()?;
        Ok(proto::RankRequest {
            model: self.model,
            query: embedding(self.query),
            query_modality: self.query_modality,
            candidate_modality: self.candidate_modality,
            candidates,
            mode: self.mode.as_deref().map_or(Ok(0), rank_mode)?,
            top_k: self.top_k,
            seed: self.seed,
            catalog: self.catalog,
            shortlist: self.shortlist,
            raw_query: raw_opt("raw_query", self.raw_query)?,
        })
    }
}

/// The RankMode named `name` (its proto name without `RANK_MODE_`, any case).
fn rank_mode(name: &str) -> Result<i32, ServiceError> {
    let full = format!("RANK_MODE_{}", name.to_ascii_uppercase());
    match RankMode::from_str_name(&full) {
        Some(m) if m != RankMode::Unspecified => Ok(m as i32),
        _ => {
            let known: Vec<String> = (1..)
                .map_while(|i| RankMode::try_from(i).ok())
                .map(mode_name)
                .collect();
            Err(ServiceError::invalid(
                "mode",
                format!("unknown mode '{}'; one of {known:?}", echo(name)),
            ))
        }
    }
}

/// The schema of Rank's `mode`: one of the modes' names, or null (the default).
fn mode_schema() -> Schema {
    let names = (1..)
        .map_while(|i| RankMode::try_from(i).ok())
        .map(|m| serde_json::Value::from(mode_name(m)));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(names.chain([serde_json::Value::Null])))
        .into()
}

/// The JSON name of `m`: "fused_hub" for RANK_MODE_FUSED_HUB.
fn mode_name(m: RankMode) -> String {
    m.as_str_name()
        .trim_start_matches("RANK_MODE_")
        .to_ascii_lowercase()
}

/// An empty body (GET routes).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_by_name() {
        assert_eq!(rank_mode("fused_hub").ok(), Some(RankMode::FusedHub as i32));
        assert_eq!(rank_mode("Bridged").ok(), Some(RankMode::Bridged as i32));
        let e = rank_mode("best").unwrap_err().to_string();
        assert!(e.starts_with("mode: unknown mode 'best'"), "{e}");
        assert!(e.contains("\"inverted_softmax\""), "{e}");
        assert!(rank_mode("unspecified").is_err());
    }

    #[test]
    fn unknown_fields_and_two_raw_kinds_are_refused() {
        let bad = serde_json::from_str::<BridgeJson>(r#"{"items": [], "extra": 1}"#);
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown field `extra`"));
        let two = serde_json::from_str::<RawJson>(r#"{"text": "a", "audio": "b"}"#);
        assert!(two.is_err());
        let raw = raw_input(
            "r",
            serde_json::from_str(r#"{"audio": "UklGRg=="}"#).unwrap(),
        );
        assert_eq!(
            raw.unwrap().input,
            Some(Input::Audio(b"RIFF".to_vec())),
            "base64 audio bytes"
        );
        let e = raw_input("r", RawJson::Audio("***".into())).unwrap_err();
        assert!(e.to_string().starts_with("r.audio: is not base64"), "{e}");
    }
}
