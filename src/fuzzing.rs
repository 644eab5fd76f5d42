//! The fuzzers' entry points: bytes in, an outcome out, never a panic. `fuzz/` wraps each in a
//! `cargo fuzz` target, and `tests/fuzz_regressions.rs` runs each on its seed corpus, on every
//! input a fuzzer ever crashed, and on a fixed set of mutations of those (the CI's smoke run).
//!
//! Each function returns whether the input was accepted, so that the regression test can say
//! which seeds must stay valid.

use std::path::Path;

use crate::audio::decode::{decode, DecodeOptions};
use crate::data::pairs::PairedSet;
use crate::model::artifact::parse_card;

/// A fuzz target: whether the input was accepted.
pub type Target = fn(&[u8]) -> bool;

/// Every fuzz target: its name (the `fuzz/fuzz_targets/NAME.rs` file and corpus folder) and its
/// entry point.
pub const TARGETS: &[(&str, Target)] = &[
    ("audio_decode", audio_decode),
    ("paired_safetensors", paired_safetensors),
    ("paired_npz", paired_npz),
    ("model_card", model_card),
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
