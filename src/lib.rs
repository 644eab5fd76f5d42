//! diffgap: DiffGAP (Mo et al., ICASSP 2025), a lightweight conditional diffusion model inside a
//! contrastive embedding space that bridges the modality gap, with its training, evaluation and
//! serving code.
//!
//! - [`diffusion`]: the math (schedules, denoiser, DDIM sampling, normalisation);
//! - [`model`]: a trained model, its card and artifact, and its operations;
//! - [`train`]: bidirectional split training;
//! - [`baselines`]: the cheap gap-closing baselines (centring, inverted softmax, ridge,
//!   Procrustes, contrastive adapter) as fitted objects;
//! - [`eval`]: the retrieval and gap evaluation protocol, with the baseline ladder;
//! - [`data`]: paired embedding files and the synthetic set;
//! - [`audio`]: audio bytes (WAV, FLAC, OGG/Vorbis, MP3) to mono samples at the encoder's rate;
//! - [`corpus`]: the real corpus of described sounds from Debian packages (`diffgap corpus build`);
//! - [`encoders`]: real encoders (TorchScript text/audio/video) from raw input to the space;
//! - [`projection`]: the small CLAP's projection heads and their contrastive training;
//! - [`service`]: the gRPC service (`diffgap serve`);
//! - [`bench`]: throughput measurements;
//! - [`loadgen`]: load against a running server (`diffgap loadgen`, and Bridge latency beside
//!   heavy audio: `diffgap loadgen-audio`);
//! - [`fuzzing`]: the fuzzers' entry points (`fuzz/`).
// Client-controlled data must never reach a panic: no `unwrap` outside tests; the few true
// invariants say so with `expect("... This is a bug.")`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audio;
pub mod baselines;
pub mod bench;
pub mod corpus;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod encoders;
pub mod eval;
pub mod fuzzing;
pub mod loadgen;
pub mod model;
pub mod projection;
pub mod service;
pub mod train;
