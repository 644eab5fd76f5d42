//! Audio encoder outputs cached by clip content, so that a corpus that grows, or a default model
//! rebuilt for another reason, embeds only the clips whose bytes are new. One safetensors file
//! (`audio`, [N, D]) and a JSON sidecar naming the encoder (sha256 of its TorchScript file) and
//! each row's clip (sha256 of its WAV file, as the corpus manifest records it). Another encoder,
//! or a cache that cannot be read, means an empty cache, never an error: the cache only saves
//! time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::data::pairs::{safetensors_tensors, write_named};

const TENSOR: &str = "audio";

#[derive(Serialize, Deserialize)]
struct Sidecar {
    encoder: String,
    clips: Vec<String>,
}

/// Cached rows by clip sha256, for one encoder.
pub struct AudioCache {
    encoder: String,
    rows: HashMap<String, i64>,
    table: Option<Tensor>,
}

impl AudioCache {
    /// A cache holding nothing, for `encoder`.
    pub fn empty(encoder: &str) -> AudioCache {
        AudioCache {
            encoder: encoder.to_string(),
            rows: HashMap::new(),
            table: None,
        }
    }

    /// The cache in `dir` if it was written for `encoder`; else an empty one.
    pub fn load(dir: &Path, encoder: &str) -> AudioCache {
        let empty = AudioCache::empty(encoder);
        match read(dir) {
            Ok((side, table)) if side.encoder == encoder => AudioCache {
                rows: (0..).zip(side.clips).map(|(i, c)| (c, i)).collect(),
                table: Some(table),
                ..empty
            },
            Ok(_) => {
                tracing::info!("audio cache: written for another encoder, not used");
                empty
            }
            Err(e) => {
                tracing::debug!("audio cache: none usable ({e:#})");
                empty
            }
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The cached row of a clip, [1, D] on the CPU.
    pub fn get(&self, clip_sha256: &str) -> Option<Tensor> {
        let row = *self.rows.get(clip_sha256)?;
        Some(self.table.as_ref()?.narrow(0, row, 1))
    }

    /// Writes `clips` (sha256) and their rows [N, D] as the cache, replacing the old one
    /// (a temporary file renamed over it, so a crash leaves the old cache or the new one).
    pub fn save(&self, dir: &Path, clips: &[String], rows: &Tensor) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("audio.tmp.safetensors");
        write_named(&tmp, &[(TENSOR.to_string(), rows.to_device(Device::Cpu))])?;
        let side = Sidecar {
            encoder: self.encoder.clone(),
            clips: clips.to_vec(),
        };
        let side_tmp = dir.join("audio.json.tmp");
        std::fs::write(&side_tmp, serde_json::to_vec(&side)?)
            .with_context(|| format!("writing {}", side_tmp.display()))?;
        std::fs::rename(&tmp, table_path(dir))?;
        std::fs::rename(&side_tmp, sidecar_path(dir))?;
        Ok(())
    }
}

fn table_path(dir: &Path) -> PathBuf {
    dir.join("audio.safetensors")
}

fn sidecar_path(dir: &Path) -> PathBuf {
    dir.join("audio.json")
}

fn read(dir: &Path) -> Result<(Sidecar, Tensor)> {
    let side: Sidecar = serde_json::from_slice(&std::fs::read(sidecar_path(dir))?)?;
    let bytes = std::fs::read(table_path(dir))?;
    let mut named = safetensors_tensors(&bytes).map_err(anyhow::Error::msg)?;
    let table = named
        .iter()
        .position(|(k, _)| k == TENSOR)
        .map(|i| named.swap_remove(i).1)
        .context("no audio tensor")?;
    if table.dim() != 2 || table.size()[0] != side.clips.len() as i64 {
        anyhow::bail!("the table does not match its sidecar");
    }
    Ok((side, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_for_the_same_encoder_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rows = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([3, 2]);
        let clips: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        AudioCache::load(dir.path(), "enc1")
            .save(dir.path(), &clips, &rows)
            .expect("saved");
        let cache = AudioCache::load(dir.path(), "enc1");
        assert_eq!(cache.len(), 3);
        let b = cache.get("b").expect("cached");
        assert_eq!(
            Vec::<f32>::try_from(b.flatten(0, -1)).expect("f32"),
            [3.0, 4.0]
        );
        assert!(cache.get("d").is_none());
        assert!(AudioCache::load(dir.path(), "enc2").is_empty());
        std::fs::write(dir.path().join("audio.safetensors"), b"garbage").expect("written");
        assert!(AudioCache::load(dir.path(), "enc1").is_empty());
    }
}
