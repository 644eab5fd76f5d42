//! A synthetic paired set with a known non-linear relation and a modality gap, for tests and the
//! interim default model. Both modalities are views of one latent item: "text" sees it through
//! a linear map, "audio" through a rotated, saturating one; each modality has its own offset
//! (the cone that makes the gap) and its own noise, and each item has several "captions".

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

use crate::diffusion::normalize::l2_normalize;

#[derive(Debug, Clone, Copy, clap::Args, serde::Serialize)]
pub struct SyntheticSpec {
    /// Distinct items (audio clips).
    #[arg(long, default_value_t = 2000)]
    pub items: usize,
    /// Text rows per item; the audio row is repeated for each, as in AudioCaps.
    #[arg(long, default_value_t = 2)]
    pub captions: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Intrinsic dimension of the items.
    #[arg(long, default_value_t = 12)]
    pub latent: usize,
    /// Seed of everything drawn.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the first N items: with the same seed, a file of items the N-item file does not
    /// hold, from the same space (a held-out set).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
}

fn randn(rng: &mut ChaCha8Rng, shape: [i64; 2]) -> Tensor {
    let v: Vec<f32> = (0..shape[0] * shape[1])
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Tensor::from_slice(&v).view(shape)
}

/// Named tensors `text`, `audio` and `group` ready to be written as a paired file.
pub fn generate(spec: &SyntheticSpec) -> Vec<(String, Tensor)> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let (n, d, k, caps) = (
        (spec.items + spec.offset) as i64,
        spec.dim as i64,
        spec.latent as i64,
        spec.captions as i64,
    );
    // The maps and offsets are drawn first, so files with the same seed share one space and
    // differ only in items: a larger file extends a smaller one with new items.
    let to_space = randn(&mut rng, [k, d]) / (k as f64).sqrt();
    let rotation = Tensor::linalg_qr(&randn(&mut rng, [d, d]), "reduced").0;
    let gap_text = l2_normalize(&randn(&mut rng, [1, d])) * 0.9;
    let gap_audio = l2_normalize(&randn(&mut rng, [1, d])) * 0.9;
    let z = randn(&mut rng, [n, k]);
    let u = z.matmul(&to_space);
    // Audio: half the signal is the text direction, half a saturated rotation of it, so cosine
    // similarity captures only part of the relation and the rest is learnable.
    let warped = (u.matmul(&rotation) * 1.5).tanh();
    let audio_core = l2_normalize(&(l2_normalize(&u) * 0.6 + l2_normalize(&warped) * 0.8));
    let audio_noise = randn(&mut rng, [n, d]) * (0.6 / (d as f64).sqrt());
    // The gap: each modality lives around its own offset (the cone effect).
    let audio = l2_normalize(&(audio_core + gap_audio + audio_noise));
    let text_base = l2_normalize(&u).repeat_interleave_self_int(caps, 0, None::<i64>);
    let text_noise = randn(&mut rng, [n * caps, d]) * (1.1 / (d as f64).sqrt());
    let text = l2_normalize(&(text_base + gap_text + text_noise));
    let audio = audio.repeat_interleave_self_int(caps, 0, None::<i64>);
    let group = Tensor::arange(n, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(
        caps,
        0,
        None::<i64>,
    );
    let skip = spec.offset as i64 * caps;
    let keep = |t: Tensor| t.narrow(0, skip, n * caps - skip).contiguous();
    vec![
        ("text".to_string(), keep(text)),
        ("audio".to_string(), keep(audio)),
        ("group".to_string(), keep(group)),
    ]
}
