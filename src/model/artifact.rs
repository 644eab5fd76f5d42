//! The model directory: `card.json`, the denoiser as TorchScript (`denoiser.pt`, EMA weights
//! traced in), and the weights as safetensors (`ema.safetensors` served, `weights.safetensors`
//! the raw training weights, for resuming).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::card::{ModelCard, CARD_FORMAT, TORCH_VERSION};
use super::engine::DiffgapModel;
use super::error::ModelError;
use crate::baselines::Baselines;
use crate::device::Dtype;
use crate::diffusion::denoiser::{self, Denoiser, DenoiserNet, ScriptedDenoiser};

pub const CARD_FILE: &str = "card.json";
pub const SCRIPT_FILE: &str = "denoiser.pt";
pub const EMA_FILE: &str = "ema.safetensors";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The fitted cheap baselines (`crate::baselines`), listed in the card when present.
pub const BASELINES_FILE: &str = "baselines.safetensors";

fn artifact_err(dir: &Path, detail: impl Into<String>) -> ModelError {
    ModelError::Artifact {
        dir: dir.into(),
        detail: detail.into(),
    }
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

/// Writes a complete artifact. `ema` is traced into TorchScript; both var stores are saved, and
/// the baselines when given.
pub fn save(
    dir: &Path,
    card: &mut ModelCard,
    ema_net: &Denoiser,
    (ema, raw): (&tch::nn::VarStore, &tch::nn::VarStore),
    baselines: Option<&Baselines>,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| artifact_err(dir, e.to_string()))?;
    let module = denoiser::trace(ema_net, ema.device())?;
    module.save(dir.join(SCRIPT_FILE))?;
    ema.save(dir.join(EMA_FILE))?;
    raw.save(dir.join(WEIGHTS_FILE))?;
    card.files.clear();
    for f in [SCRIPT_FILE, EMA_FILE, WEIGHTS_FILE] {
        let h = sha256_file(&dir.join(f)).map_err(|e| artifact_err(dir, format!("{f}: {e}")))?;
        card.files.insert(f.into(), h);
    }
    match baselines {
        Some(b) => write_baselines(dir, card, b),
        None => write_card(dir, card),
    }
}

fn write_card(dir: &Path, card: &ModelCard) -> Result<(), ModelError> {
    let json = serde_json::to_string_pretty(card).map_err(|e| artifact_err(dir, e.to_string()))?;
    std::fs::write(dir.join(CARD_FILE), json + "\n").map_err(|e| artifact_err(dir, e.to_string()))
}

/// Writes (or replaces) the baselines of a model directory and records them in its card.
pub fn write_baselines(
    dir: &Path,
    card: &mut ModelCard,
    baselines: &Baselines,
) -> Result<(), ModelError> {
    let named: Vec<(String, Tensor)> = baselines
        .named()
        .into_iter()
        .map(|(k, t)| (k, t.to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&named, dir.join(BASELINES_FILE))?;
    let h = sha256_file(&dir.join(BASELINES_FILE))
        .map_err(|e| artifact_err(dir, format!("{BASELINES_FILE}: {e}")))?;
    card.files.insert(BASELINES_FILE.into(), h);
    card.baselines = Some(baselines.card.clone());
    write_card(dir, card)
}

/// The model's fitted baselines, `None` for a model trained without them.
pub fn load_baselines(
    dir: &Path,
    card: &ModelCard,
    device: Device,
) -> Result<Option<Baselines>, ModelError> {
    let Some(fit) = &card.baselines else {
        return Ok(None);
    };
    let path = verify_hash(dir, card, BASELINES_FILE)?;
    let named = Tensor::read_safetensors(&path).map_err(|e| {
        artifact_err(
            dir,
            format!("{BASELINES_FILE} is not a safetensors file: {e}"),
        )
    })?;
    Baselines::from_named(
        fit.clone(),
        named,
        &card.space.modalities,
        card.space.dim,
        device,
    )
    .map(Some)
    .map_err(|e| artifact_err(dir, format!("{BASELINES_FILE}: {e}")))
}

pub fn read_card(dir: &Path) -> Result<ModelCard, ModelError> {
    let path = dir.join(CARD_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| artifact_err(dir, format!("cannot read {CARD_FILE}: {e}")))?;
    parse_card(dir, &text)
}

/// A card's text, parsed and checked as [`read_card`] does (`dir` only names it in errors).
pub fn parse_card(dir: &Path, text: &str) -> Result<ModelCard, ModelError> {
    let card: ModelCard = serde_json::from_str(text)
        .map_err(|e| artifact_err(dir, format!("{CARD_FILE} is not a valid model card: {e}")))?;
    check_card(dir, &card)?;
    Ok(card)
}

fn check_card(dir: &Path, card: &ModelCard) -> Result<(), ModelError> {
    if card.format != CARD_FORMAT {
        return Err(artifact_err(
            dir,
            format!(
                "card format {} is not supported (this build reads format {CARD_FORMAT})",
                card.format
            ),
        ));
    }
    if version_tuple(&card.torch_version) > version_tuple(TORCH_VERSION) {
        return Err(artifact_err(
            dir,
            format!(
                "exported with libtorch {} but this build links {TORCH_VERSION}; TorchScript is not forward compatible",
                card.torch_version
            ),
        ));
    }
    let d = card.space.dim;
    if card.denoiser.dim != d {
        return Err(artifact_err(
            dir,
            format!("denoiser dim {} != space dim {d}", card.denoiser.dim),
        ));
    }
    for m in &card.space.modalities {
        match card.normalization.get(m) {
            None => {
                return Err(artifact_err(
                    dir,
                    format!("no normalisation statistics for modality '{m}'"),
                ))
            }
            Some(s) if s.mean.len() as i64 != d || s.scale.is_nan() || s.scale <= 0.0 => {
                return Err(artifact_err(
                    dir,
                    format!("normalisation statistics of '{m}' do not fit dimension {d}"),
                ))
            }
            Some(_) => {}
        }
    }
    if card.directions.len() as i64 != card.denoiser.directions {
        return Err(artifact_err(
            dir,
            "direction list does not match the denoiser",
        ));
    }
    for dct in &card.directions {
        for m in [&dct.condition, &dct.target] {
            if !card.space.modalities.contains(m) {
                return Err(artifact_err(
                    dir,
                    format!("direction names unknown modality '{m}'"),
                ));
            }
        }
    }
    if card.train_timesteps == 0 {
        return Err(artifact_err(dir, "train_timesteps is 0"));
    }
    Ok(())
}

fn version_tuple(v: &str) -> Vec<u64> {
    v.split(['.', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

fn verify_hash(dir: &Path, card: &ModelCard, file: &str) -> Result<PathBuf, ModelError> {
    let path = dir.join(file);
    let expected = card
        .files
        .get(file)
        .ok_or_else(|| artifact_err(dir, format!("card lists no hash for {file}")))?;
    let actual =
        sha256_file(&path).map_err(|e| artifact_err(dir, format!("cannot read {file}: {e}")))?;
    if &actual != expected {
        return Err(ModelError::HashMismatch {
            dir: dir.into(),
            file: file.into(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(path)
}

/// Loads an artifact for serving in float32: the TorchScript module, after checking the card,
/// the file hashes and the module's input/output contract.
pub fn load(dir: &Path, device: Device) -> Result<DiffgapModel, ModelError> {
    load_as(dir, device, Dtype::Float32)
}

/// Loads an artifact for serving with its denoiser in `dtype`. float32 runs the TorchScript
/// module; bfloat16 runs the EMA weights (what the module was traced from) in the Rust network,
/// converted, since a traced module holds its weights as float32 constants.
pub fn load_as(dir: &Path, device: Device, dtype: Dtype) -> Result<DiffgapModel, ModelError> {
    let mut card = read_card(dir)?;
    // A model is named by its directory, as in Triton's repository: renaming or moving the
    // directory renames the model, whatever name it was trained under.
    if let Some(name) = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        card.name = name;
    }
    let net: Box<dyn DenoiserNet> = match dtype {
        Dtype::Float32 => Box::new(scripted(dir, &card, device)?),
        Dtype::Bfloat16 => Box::new(eager(dir, &card, device, Kind::BFloat16)?),
    };
    check_contract(dir, net.as_ref(), &card, device)?;
    Ok(DiffgapModel::new(card, net, device).with_dtype(dtype))
}

fn scripted(dir: &Path, card: &ModelCard, device: Device) -> Result<ScriptedDenoiser, ModelError> {
    let path = verify_hash(dir, card, SCRIPT_FILE)?;
    let module = tch::CModule::load_on_device(&path, device).map_err(|e| {
        artifact_err(
            dir,
            format!("{SCRIPT_FILE} is not a loadable TorchScript module: {e}"),
        )
    })?;
    Ok(ScriptedDenoiser::new(module))
}

/// Loads the EMA weights into the trainable Rust network instead of the TorchScript module.
pub fn load_eager(dir: &Path, device: Device) -> Result<DiffgapModel, ModelError> {
    let card = read_card(dir)?;
    let net = eager(dir, &card, device, Kind::Float)?;
    Ok(DiffgapModel::new(card, Box::new(net), device))
}

/// The EMA weights in the Rust network, their values converted to `kind`.
fn eager(dir: &Path, card: &ModelCard, device: Device, kind: Kind) -> Result<Denoiser, ModelError> {
    let path = verify_hash(dir, card, EMA_FILE)?;
    let mut vs = tch::nn::VarStore::new(device);
    let net = Denoiser::new(&vs.root(), card.denoiser);
    vs.load(&path).map_err(|e| {
        artifact_err(
            dir,
            format!("{EMA_FILE} does not fit the card's denoiser: {e}"),
        )
    })?;
    // In place: the network's handles share the variables' storage.
    vs.set_kind(kind);
    Ok(net)
}

/// Runs the module once on a 2-row batch: a module with the wrong signature or output shape
/// fails here, at load, with a message, instead of on the first request.
fn check_contract(
    dir: &Path,
    net: &dyn DenoiserNet,
    card: &ModelCard,
    device: Device,
) -> Result<(), ModelError> {
    let _g = tch::no_grad_guard();
    let d = card.space.dim;
    let out = net
        .denoise(
            &Tensor::zeros([2, d], (Kind::Float, device)),
            &Tensor::from_slice(&[0f32, 1.0]).to_device(device),
            &Tensor::zeros([2, d], (Kind::Float, device)),
            &Tensor::zeros([2], (Kind::Int64, device)),
            &Tensor::from_slice(&[1f32, 0.0]).to_device(device),
        )
        .map_err(|e| {
            artifact_err(
                dir,
                format!("{SCRIPT_FILE} does not take (x_t [B,{d}], t [B], cond [B,{d}], direction [B] int64, cond_mask [B]): {e}"),
            )
        })?;
    if out.size() != [2, d] {
        return Err(artifact_err(
            dir,
            format!(
                "{SCRIPT_FILE} returns shape {:?} for a batch of 2, expected [2, {d}]",
                out.size()
            ),
        ));
    }
    Ok(())
}
