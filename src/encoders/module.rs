//! Loading a TorchScript encoder and checking its input/output contract before it is used, so
//! that a wrong file fails at start-up with a message that says what was expected, not at the
//! first request with a libtorch backtrace.

use std::path::{Path, PathBuf};

use tch::{CModule, Device, Kind, Tensor};

use super::error::{first_line, EncoderError};

/// The input/output contracts an encoder module can be held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `forward(input_ids: int64 [B, L], attention_mask: int64 [B, L]) -> float [B, D]`.
    Text,
    /// `forward(wave: float [N]) -> float [D]`: one mono waveform at the encoder's rate.
    Audio { sample_rate: u32 },
    /// `forward(frames: float [B, T, 3, H, W]) -> float [B, D]`.
    Video {
        frames: i64,
        height: i64,
        width: i64,
    },
}

impl Contract {
    pub fn name(&self) -> &'static str {
        match self {
            Contract::Text => "text (input_ids, attention_mask int64 [B, L]) -> [B, D]",
            Contract::Audio { .. } => "audio (waveform float [N]) -> [D]",
            Contract::Video { .. } => "video (frames float [B, T, 3, H, W]) -> [B, D]",
        }
    }
}

/// A loaded encoder module whose contract has been checked; `dim` is its output width.
pub struct EncoderModule {
    pub path: PathBuf,
    pub module: CModule,
    pub contract: Contract,
    pub dim: i64,
    pub device: Device,
}

/// Loads any TorchScript archive (ours or a third party's) onto `device`.
pub fn load_torchscript(path: &Path, device: Device) -> Result<CModule, EncoderError> {
    if !path.is_file() {
        return Err(EncoderError::NotTorchScript {
            path: path.into(),
            detail: "no such file".into(),
        });
    }
    let mut module =
        CModule::load_on_device(path, device).map_err(|e| EncoderError::NotTorchScript {
            path: path.into(),
            detail: first_line(&e.to_string()),
        })?;
    module.set_eval();
    Ok(module)
}

/// Loads `path` and runs it once on a small probe input of `contract`; the output must be a
/// finite float tensor of the contract's shape, with `expected_dim` columns when given.
pub fn load_encoder(
    path: &Path,
    device: Device,
    contract: Contract,
    expected_dim: Option<i64>,
) -> Result<EncoderModule, EncoderError> {
    let module = load_torchscript(path, device)?;
    let bad = |detail: String| EncoderError::Contract {
        path: path.into(),
        contract: contract.name(),
        detail,
    };
    let (inputs, batch): (Vec<Tensor>, Option<i64>) = match contract {
        Contract::Text => {
            // "[CLS] hello [SEP] [PAD]" and "[CLS] hello world [SEP]" in BERT's vocabulary; any
            // in-range ids do for a shape check.
            let ids = Tensor::from_slice(&[101i64, 7592, 102, 0, 101, 7592, 2088, 102])
                .view([2, 4])
                .to_device(device);
            let mask = Tensor::from_slice(&[1i64, 1, 1, 0, 1, 1, 1, 1])
                .view([2, 4])
                .to_device(device);
            (vec![ids, mask], Some(2))
        }
        Contract::Audio { sample_rate } => {
            // Half a second of a quiet 440 Hz tone.
            let n = (sample_rate / 2).max(1) as usize;
            let wave: Vec<f32> = (0..n)
                .map(|i| {
                    0.1 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / sample_rate as f32).sin()
                })
                .collect();
            (vec![Tensor::from_slice(&wave).to_device(device)], None)
        }
        Contract::Video {
            frames,
            height,
            width,
        } => (
            vec![Tensor::zeros(
                [1, frames, 3, height, width],
                (Kind::Float, device),
            )],
            Some(1),
        ),
    };
    let out = tch::no_grad(|| module.forward_ts(&inputs)).map_err(|e| {
        bad(format!(
            "the probe input fails: {}",
            first_line(&e.to_string())
        ))
    })?;
    if !matches!(
        out.kind(),
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    ) {
        return Err(bad(format!(
            "output is {:?}, not a float tensor",
            out.kind()
        )));
    }
    let size = out.size();
    let dim = match (batch, size.as_slice()) {
        (Some(b), [rows, d]) if *rows == b => *d,
        (None, [d]) => *d,
        _ => {
            return Err(bad(format!(
                "output shape {size:?}, expected {}",
                match batch {
                    Some(b) => format!("[{b}, D]"),
                    None => "[D]".into(),
                }
            )))
        }
    };
    if let Some(want) = expected_dim {
        if dim != want {
            return Err(bad(format!("output width {dim}, expected {want}")));
        }
    }
    let finite = out.isfinite().all().int64_value(&[]) == 1;
    if !finite {
        return Err(bad("output on the probe input is not finite".into()));
    }
    Ok(EncoderModule {
        path: path.into(),
        module,
        contract,
        dim,
        device,
    })
}

impl EncoderModule {
    /// Runs the module without autograd; inputs must already be on its device.
    pub fn forward(&self, inputs: &[Tensor]) -> Result<Tensor, EncoderError> {
        Ok(tch::no_grad(|| self.module.forward_ts(inputs))?.to_kind(Kind::Float))
    }
}
