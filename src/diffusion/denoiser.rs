//! The DiffGAP denoiser: a residual MLP over embedding vectors, modulated (adaptive LayerNorm
//! with a zero-initialised gate, as in DiT) by the sum of a sinusoidal timestep embedding, a
//! projection of the condition embedding and a direction embedding.
//!
//! The same network serves both directions of a space (text -> audio and audio -> text): the
//! direction embedding tells it which modality it is denoising, which is what lets one small
//! module do bidirectional split training.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Shape of the denoiser; stored in the model card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenoiserShape {
    /// Embedding dimension D of the space.
    pub dim: i64,
    /// Hidden width of the residual blocks.
    pub width: i64,
    /// Number of residual blocks.
    pub depth: i64,
    /// Number of (condition, target) directions the network knows.
    pub directions: i64,
}

/// What a denoiser computes, whoever implements it (the trainable Rust network or a loaded
/// TorchScript module). All inputs are batched along dim 0:
/// `x_t` [B, D] float, `t` [B] float timestep index, `cond` [B, D] float, `direction` [B] int64,
/// `cond_mask` [B] float (1 = use `cond`, 0 = the learned null condition).
pub trait DenoiserNet {
    fn denoise(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Tensor,
        direction: &Tensor,
        cond_mask: &Tensor,
    ) -> Result<Tensor, tch::TchError>;
}

#[derive(Debug)]
struct Block {
    modulation: nn::Linear,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

/// The trainable network, its variables held in a `VarStore` owned by the caller.
#[derive(Debug)]
pub struct Denoiser {
    shape: DenoiserShape,
    input: nn::Linear,
    time_fc1: nn::Linear,
    time_fc2: nn::Linear,
    cond_proj: nn::Linear,
    null_cond: Tensor,
    direction: nn::Embedding,
    blocks: Vec<Block>,
    final_modulation: nn::Linear,
    output: nn::Linear,
    freqs: Tensor,
}

fn zero_linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Const(0.0),
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, i, o, cfg)
}

impl Denoiser {
    pub fn new(p: &nn::Path, shape: DenoiserShape) -> Self {
        let w = shape.width;
        let blocks = (0..shape.depth)
            .map(|i| {
                let b = p / format!("block{i}");
                Block {
                    // Zero-initialised modulation makes every block start as the identity
                    // (adaLN-zero), which keeps early training stable.
                    modulation: zero_linear(&b / "modulation", w, 3 * w),
                    fc1: nn::linear(&b / "fc1", w, 2 * w, Default::default()),
                    fc2: nn::linear(&b / "fc2", 2 * w, w, Default::default()),
                }
            })
            .collect();
        let half = w / 2;
        let freqs = (Tensor::arange(half, (Kind::Float, p.device()))
            * (-(10_000f64.ln()) / half as f64))
            .exp();
        Self {
            shape,
            input: nn::linear(p / "input", shape.dim, w, Default::default()),
            time_fc1: nn::linear(p / "time_fc1", w, w, Default::default()),
            time_fc2: nn::linear(p / "time_fc2", w, w, Default::default()),
            cond_proj: nn::linear(p / "cond_proj", shape.dim, w, Default::default()),
            null_cond: p.randn("null_cond", &[w], 0.0, 0.02),
            direction: nn::embedding(p / "direction", shape.directions, w, Default::default()),
            blocks,
            final_modulation: zero_linear(p / "final_modulation", w, 2 * w),
            output: zero_linear(p / "output", w, shape.dim),
            freqs,
        }
    }

    pub fn shape(&self) -> DenoiserShape {
        self.shape
    }

    fn layer_norm(&self, x: &Tensor) -> Tensor {
        x.layer_norm(
            [self.shape.width],
            None::<Tensor>,
            None::<Tensor>,
            1e-6,
            false,
        )
    }

    pub fn forward(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Tensor,
        direction: &Tensor,
        cond_mask: &Tensor,
    ) -> Tensor {
        // The weights' kind: float32 in training, bfloat16 when served so (`Dtype`). The
        // sampler hands float32 in and gets float32 back either way.
        let kind = self.input.ws.kind();
        let args = t.unsqueeze(-1) * self.freqs.unsqueeze(0);
        let t_emb = Tensor::cat(&[args.sin(), args.cos()], -1).to_kind(kind);
        let t_emb = self.time_fc2.forward(&self.time_fc1.forward(&t_emb).silu());
        let mask = cond_mask.unsqueeze(-1).to_kind(kind);
        let c_emb =
            self.cond_proj.forward(&cond.to_kind(kind)) * &mask + &self.null_cond * (-&mask + 1.0);
        let emb = (t_emb + c_emb + self.direction.forward(direction)).silu();

        let mut h = self.input.forward(&x_t.to_kind(kind));
        for block in &self.blocks {
            let m = block.modulation.forward(&emb).chunk(3, -1);
            let y = self.layer_norm(&h) * (1.0 + &m[0]) + &m[1];
            let y = block.fc2.forward(&block.fc1.forward(&y).silu());
            // Not `+=`: layer_norm saved `h` for the backward pass, and an in-place add would
            // invalidate it during training.
            #[allow(clippy::assign_op_pattern)]
            {
                h = h + &m[2] * y;
            }
        }
        let m = self.final_modulation.forward(&emb).chunk(2, -1);
        let h = self.layer_norm(&h) * (1.0 + &m[0]) + &m[1];
        self.output.forward(&h).to_kind(Kind::Float)
    }
}

impl DenoiserNet for Denoiser {
    fn denoise(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Tensor,
        direction: &Tensor,
        cond_mask: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        Ok(self.forward(x_t, t, cond, direction, cond_mask))
    }
}

/// A denoiser loaded from TorchScript: the serving path, and the proof that an artifact does not
/// need this crate to run.
pub struct ScriptedDenoiser {
    module: tch::CModule,
}

impl ScriptedDenoiser {
    pub fn new(mut module: tch::CModule) -> Self {
        module.set_eval();
        Self { module }
    }
}

impl DenoiserNet for ScriptedDenoiser {
    fn denoise(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Tensor,
        direction: &Tensor,
        cond_mask: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        self.module
            .forward_ts(&[x_t, t, cond, direction, cond_mask])
    }
}

/// Traces the network into a TorchScript module. The trace holds the current variable values
/// as constants, so trace the EMA weights that are meant to be served.
pub fn trace(net: &Denoiser, device: tch::Device) -> Result<tch::CModule, tch::TchError> {
    let _guard = tch::no_grad_guard();
    let d = net.shape.dim;
    // A batch of 2 with distinct directions and masks, so no input value is special-cased.
    let inputs = [
        Tensor::randn([2, d], (Kind::Float, device)),
        Tensor::from_slice(&[10f32, 500.0]).to_device(device),
        Tensor::randn([2, d], (Kind::Float, device)),
        Tensor::from_slice(&[0i64, net.shape.directions - 1]).to_device(device),
        Tensor::from_slice(&[1f32, 0.0]).to_device(device),
    ];
    tch::CModule::create_by_tracing("DiffgapDenoiser", "forward", &inputs, &mut |x| {
        vec![net.forward(&x[0], &x[1], &x[2], &x[3], &x[4])]
    })
}

/// Parameter count, for the card and for keeping the module lightweight.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// Lets the trainer keep using the network it hands to an evaluation model.
impl<T: DenoiserNet + ?Sized> DenoiserNet for std::rc::Rc<T> {
    fn denoise(
        &self,
        x_t: &Tensor,
        t: &Tensor,
        cond: &Tensor,
        direction: &Tensor,
        cond_mask: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        (**self).denoise(x_t, t, cond, direction, cond_mask)
    }
}
