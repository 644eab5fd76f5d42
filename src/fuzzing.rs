//! The fuzzers' entry points: bytes in, an outcome out, never a panic. `fuzz/` wraps each in a
//! `cargo fuzz` target, and `tests/integration/fuzz_regressions.rs` runs each on its seed corpus, on every
//! input a fuzzer ever crashed, and on a fixed set of mutations of those (the CI's smoke run).
//!
//! Each function returns whether the input was accepted, so that the regression test can say
//! which seeds must stay valid.

use std::path::Path;
use std::sync::OnceLock;

use prost::Message;

use crate::audio::decode::{decode, DecodeOptions};
use crate::data::pairs::PairedSet;
use crate::model::artifact::parse_card;
use crate::model::card::{FusionWeights, HubFusion, SamplingDefaults};
use crate::service::proto;
use crate::service::request::{catalog, rank_mode, validate};
use crate::service::types::ModelInfo;

/// A fuzz target: whether the input was accepted.
pub type Target = fn(&[u8]) -> bool;

/// Every fuzz target: its name (the `fuzz/fuzz_targets/NAME.rs` file and corpus folder) and its
/// entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("audio_decode", audio_decode),
    ("paired_safetensors", paired_safetensors),
    ("paired_npz", paired_npz),
    ("model_card", model_card),
    ("catalog", catalog_files),
    ("request_validation", request_validation),
];

/// Audio bytes as the service decodes them (the encoder's rate, a 30 s limit).
pub fn audio_decode(data: &[u8]) -> bool {
    decode(data, &DecodeOptions::new(32_000, 30.0)).is_ok()
}

/// A paired embedding file in safetensors form, read and validated as `diffgap train` does.
pub fn paired_safetensors(data: &[u8]) -> bool {
    PairedSet::from_bytes(Path::new("fuzz.safetensors"), data).is_ok()
}

/// A paired embedding file in npz form, read and validated as `diffgap train` does.
pub fn paired_npz(data: &[u8]) -> bool {
    PairedSet::from_bytes(Path::new("fuzz.npz"), data).is_ok()
}

/// A model card's text, parsed and checked as a model load does.
pub fn model_card(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|text| parse_card(Path::new("fuzz"), text).is_ok())
}

/// A catalog's two files, as `[description length: u32 LE][catalog.json][embeddings.safetensors]`,
/// checked as the server's catalog loader does (the tensors' hash aside: a fuzzer cannot forge
/// it, and it is checked before these bytes are parsed).
pub fn catalog_files(data: &[u8]) -> bool {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return false;
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return false;
    }
    let (meta, tensors) = rest.split_at(len);
    std::str::from_utf8(meta)
        .is_ok_and(|text| catalog::parse(Path::new("fuzz"), text, tensors).is_ok())
}

/// A request body as the server's request core validates it: the first byte picks the message
/// (0 Bridge, 1 Refine, 2 Rank), the rest is its protobuf, decoded, then checked into rows (or
/// a Rank mode) against a small text-audio model of dimension 8.
pub fn request_validation(data: &[u8]) -> bool {
    let Some((&kind, body)) = data.split_first() else {
        return false;
    };
    let m = fuzz_model();
    match kind {
        0 => proto::BridgeRequest::decode(body).is_ok_and(|req| {
            validate::bridge_items(m, req.items).is_ok_and(|items| items.into_rows(m, 0).is_ok())
        }),
        1 => proto::RefineRequest::decode(body).is_ok_and(|req| {
            validate::refine_item(m, req).is_ok_and(|item| item.into_rows(m).is_ok())
        }),
        2 => proto::RankRequest::decode(body).is_ok_and(|req| {
            let modalities = (req.query_modality.as_str(), req.candidate_modality.as_str());
            validate::check_modality(m, "query_modality", modalities.0).is_ok()
                && validate::check_modality(m, "candidate_modality", modalities.1).is_ok()
                && rank_mode::resolve(m, req.mode, req.shortlist, modalities).is_ok()
                && validate::check_embedding("query", req.query, m.dim).is_ok()
        }),
        _ => false,
    }
}

/// The model [`request_validation`] checks against.
fn fuzz_model() -> &'static ModelInfo {
    static MODEL: OnceLock<ModelInfo> = OnceLock::new();
    MODEL.get_or_init(|| {
        let keys = ["text->audio", "audio->text"].map(String::from);
        let weights = FusionWeights {
            contrastive: 0.4,
            bridged: 0.3,
            reverse: 0.3,
        };
        let hub = HubFusion {
            weights,
            beta: 10.0,
            cv_objective: 0.0,
            cv_objective_contrastive: 0.0,
        };
        ModelInfo {
            name: "fuzz".into(),
            space: "fuzz".into(),
            modalities: vec!["text".into(), "audio".into()],
            dim: 8,
            directions: vec![
                ("text".into(), "audio".into()),
                ("audio".into(), "text".into()),
            ],
            defaults: SamplingDefaults {
                steps: 10,
                guidance: 1.0,
                samples: 4,
                refine_strength: 0.5,
                rank_steps: 10,
                rank_samples: 4,
            },
            max_steps: 1000,
            parameters: 0,
            fusion: keys.iter().map(|k| (k.clone(), weights)).collect(),
            hub_fusion: keys.iter().map(|k| (k.clone(), hub)).collect(),
            validated_best: keys
                .iter()
                .map(|k| (k.clone(), "fused_hub".into()))
                .collect(),
            has_baselines: true,
            ladders: Vec::new(),
            device: "cpu".into(),
            fingerprint: "sha256:fuzz".into(),
            encoders: None,
            instances: 1,
            threads_per_instance: 1,
            dtype: "float32".into(),
        }
    })
}
