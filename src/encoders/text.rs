//! The text encoder: Hugging Face tokenisation in Rust (the `tokenizers` crate reading the
//! model's own `tokenizer.json`), then the TorchScript sentence encoder.

use std::path::Path;

use tch::{Device, Tensor};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::error::EncoderError;
use super::module::{load_encoder, Contract, EncoderModule};

/// Longest accepted text, in bytes, before tokenisation (the tokenizer truncates to
/// `max_tokens` anyway; this bounds the work a single request can ask for).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// The tokens the encoder reads of `text` (special tokens included, after truncation; no
/// padding); 0 when it cannot be tokenised.
pub fn count_tokens(tokenizer: &Tokenizer, text: &str) -> usize {
    tokenizer.encode(text, true).map_or(0, |e| {
        e.get_attention_mask().iter().filter(|&&m| m != 0).count()
    })
}

pub struct TextEncoder {
    tokenizer: Tokenizer,
    module: EncoderModule,
}

impl TextEncoder {
    pub fn load(
        module: &Path,
        tokenizer: &Path,
        max_tokens: usize,
        dim: Option<i64>,
        device: Device,
    ) -> Result<Self, EncoderError> {
        let tok_err = |detail: String| EncoderError::Tokenizer {
            path: tokenizer.into(),
            detail,
        };
        let mut tok = Tokenizer::from_file(tokenizer).map_err(|e| tok_err(e.to_string()))?;
        // The file pads every input to a fixed length; pad to the longest of a batch instead
        // (the attention mask makes the results equal) and truncate where the model's
        // sentence-transformers configuration does.
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tok.with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..Default::default()
        }))
        .map_err(|e| tok_err(e.to_string()))?;
        let module = load_encoder(module, device, Contract::Text, dim)?;
        Ok(Self {
            tokenizer: tok,
            module,
        })
    }

    pub fn dim(&self) -> i64 {
        self.module.dim
    }

    /// The tokenizer, as configured for the encoder (truncation included).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Raw encoder outputs, [texts.len(), dim], on the encoder's device.
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor, EncoderError> {
        if texts.is_empty() {
            return Err(EncoderError::Input("no text to encode".into()));
        }
        for (i, t) in texts.iter().enumerate() {
            if t.trim().is_empty() {
                return Err(EncoderError::Input(format!("text {i} is empty")));
            }
            if t.len() > MAX_TEXT_BYTES {
                return Err(EncoderError::Input(format!(
                    "text {i} has {} bytes, more than the limit of {MAX_TEXT_BYTES}",
                    t.len()
                )));
            }
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EncoderError::Input(format!("cannot tokenise: {e}")))?;
        let rows = encodings.len() as i64;
        let len = encodings.first().map_or(0, |e| e.get_ids().len()) as i64;
        let mut ids = Vec::with_capacity((rows * len) as usize);
        let mut mask = Vec::with_capacity((rows * len) as usize);
        for e in &encodings {
            ids.extend(e.get_ids().iter().map(|&x| x as i64));
            mask.extend(e.get_attention_mask().iter().map(|&x| x as i64));
        }
        let device = self.module.device;
        let ids = Tensor::from_slice(&ids).view([rows, len]).to_device(device);
        let mask = Tensor::from_slice(&mask)
            .view([rows, len])
            .to_device(device);
        self.module.forward(&[ids, mask])
    }
}
