//! Paired embedding files: one 2-D float tensor per modality (same row = same pair) and an
//! optional int64 `group` tensor (rows of one item, e.g. the five captions of an AudioCaps clip,
//! share a group). Read from safetensors or NumPy `.npz`, validated so that a bad file fails
//! with a message naming the tensor and the row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use crate::diffusion::normalize::l2_normalize;

/// The name of the optional item-identity tensor.
pub const GROUP_KEY: &str = "group";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {format} file: {detail}")]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    #[error("{path}: unsupported extension; use .safetensors or .npz")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: tensor '{name}' {problem}")]
    BadTensor {
        path: PathBuf,
        name: String,
        problem: String,
    },
    #[error(
        "{path}: modality '{name}' has {got} rows but '{first}' has {expected}; rows must pair up"
    )]
    RowMismatch {
        path: PathBuf,
        name: String,
        got: i64,
        first: String,
        expected: i64,
    },
    #[error("{path}: modality '{name}' has dimension {got} but '{first}' has {expected}; a space has one dimension")]
    DimMismatch {
        path: PathBuf,
        name: String,
        got: i64,
        first: String,
        expected: i64,
    },
    #[error("{path}: modality '{name}' row {row} is {what}")]
    BadRow {
        path: PathBuf,
        name: String,
        row: i64,
        what: &'static str,
    },
    #[error("{path}: no modality '{name}'; the file has {available:?}")]
    UnknownModality {
        path: PathBuf,
        name: String,
        available: Vec<String>,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// A validated paired set, every embedding L2-normalised, kept on the CPU.
#[derive(Debug)]
pub struct PairedSet {
    pub path: PathBuf,
    pub modalities: BTreeMap<String, Tensor>,
    /// Item identity per row; row i is its own item when the file has no `group` tensor.
    pub groups: Vec<i64>,
    /// `sha256:<hex>` of the file's bytes.
    pub fingerprint: String,
}

impl PairedSet {
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// A paired file's bytes, read as [`PairedSet::load`] reads them (the format by `path`'s
    /// extension; `path` also names the file in errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, DataError> {
        let fingerprint = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let named = read_named(path, bytes)?;
        let mut set = Self::from_named(path, named)?;
        set.fingerprint = fingerprint;
        Ok(set)
    }

    /// Validates named tensors as a paired set (the file checks, minus the fingerprint).
    pub fn from_named(path: &Path, named: Vec<(String, Tensor)>) -> Result<Self, DataError> {
        let bad = |name: &str, problem: String| DataError::BadTensor {
            path: path.into(),
            name: name.into(),
            problem,
        };
        let mut modalities = BTreeMap::new();
        let mut groups = None;
        let mut first: Option<(String, i64, i64)> = None;
        for (name, t) in named {
            if name == GROUP_KEY {
                if t.dim() != 1 || !matches!(t.kind(), Kind::Int64 | Kind::Int) {
                    return Err(bad(
                        &name,
                        format!(
                            "must be a 1-D int64 tensor, got {:?} {:?}",
                            t.kind(),
                            t.size()
                        ),
                    ));
                }
                groups = Some(
                    Vec::<i64>::try_from(&t.to_kind(Kind::Int64))
                        .map_err(|e| bad(&name, e.to_string()))?,
                );
                continue;
            }
            if t.dim() != 2 {
                return Err(bad(
                    &name,
                    format!("must be 2-D [rows, dim], got shape {:?}", t.size()),
                ));
            }
            if !t.is_floating_point() {
                return Err(bad(
                    &name,
                    format!("must be a float tensor, got {:?}", t.kind()),
                ));
            }
            let (rows, dim) = (t.size()[0], t.size()[1]);
            if rows == 0 || dim == 0 {
                return Err(bad(&name, format!("is empty (shape {:?})", t.size())));
            }
            let t = t.to_kind(Kind::Float);
            check_rows(path, &name, &t)?;
            match &first {
                None => first = Some((name.clone(), rows, dim)),
                Some((f, r, d)) => {
                    if rows != *r {
                        return Err(DataError::RowMismatch {
                            path: path.into(),
                            name,
                            got: rows,
                            first: f.clone(),
                            expected: *r,
                        });
                    }
                    if dim != *d {
                        return Err(DataError::DimMismatch {
                            path: path.into(),
                            name,
                            got: dim,
                            first: f.clone(),
                            expected: *d,
                        });
                    }
                }
            }
            modalities.insert(name, l2_normalize(&t));
        }
        let Some((_, rows, _)) = first else {
            return Err(DataError::Invalid {
                path: path.into(),
                detail: "holds no modality tensor".into(),
            });
        };
        let groups = match groups {
            Some(g) if g.len() as i64 != rows => {
                return Err(bad(
                    GROUP_KEY,
                    format!("has {} entries for {rows} rows", g.len()),
                ))
            }
            Some(g) => g,
            None => (0..rows).collect(),
        };
        Ok(Self {
            path: path.into(),
            modalities,
            groups,
            fingerprint: String::new(),
        })
    }

    pub fn rows(&self) -> usize {
        self.groups.len()
    }

    pub fn dim(&self) -> i64 {
        self.modalities.values().next().map_or(0, |t| t.size()[1])
    }

    pub fn names(&self) -> Vec<String> {
        self.modalities.keys().cloned().collect()
    }

    pub fn modality(&self, name: &str) -> Result<&Tensor, DataError> {
        self.modalities
            .get(name)
            .ok_or_else(|| DataError::UnknownModality {
                path: self.path.clone(),
                name: name.into(),
                available: self.names(),
            })
    }

    /// The rows `idx`, as a new set that keeps the parent's fingerprint.
    pub fn subset(&self, idx: &[i64]) -> Self {
        let index = Tensor::from_slice(idx);
        Self {
            path: self.path.clone(),
            modalities: self
                .modalities
                .iter()
                .map(|(k, v)| (k.clone(), v.index_select(0, &index)))
                .collect(),
            groups: idx.iter().map(|&i| self.groups[i as usize]).collect(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

fn check_rows(path: &Path, name: &str, t: &Tensor) -> Result<(), DataError> {
    let row_err = |row: i64, what| DataError::BadRow {
        path: path.into(),
        name: name.into(),
        row,
        what,
    };
    let finite = t.isfinite().all_dim(1, false);
    if let Some(row) = first_false(&finite) {
        return Err(row_err(row, "not finite (NaN or Inf)"));
    }
    let nonzero = t.abs().amax([1i64].as_slice(), false).gt(0.0);
    if let Some(row) = first_false(&nonzero) {
        return Err(row_err(row, "all zeros (no direction to normalise)"));
    }
    Ok(())
}

fn first_false(mask: &Tensor) -> Option<i64> {
    let bad = mask.logical_not().nonzero();
    (bad.size()[0] > 0).then(|| bad.int64_value(&[0, 0]))
}

fn read_named(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>, DataError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let corrupt = |format, detail: String| DataError::Corrupt {
        path: path.into(),
        format,
        detail,
    };
    match ext {
        "safetensors" => {
            // Parsed from the bytes already read, so the fingerprint and the data agree.
            safetensors_tensors(bytes).map_err(|e| corrupt("safetensors", e))
        }
        "npz" => super::npz::read(bytes).map_err(|e| corrupt("npz", e)),
        _ => Err(DataError::UnknownFormat { path: path.into() }),
    }
}

/// The named tensors of safetensors bytes (checked by the `safetensors` crate, no file).
pub fn safetensors_tensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            Tensor::try_from(view)
                .map(|t| (name.clone(), t))
                .map_err(|e| format!("tensor '{name}': {e}"))
        })
        .collect()
}

/// Writes named tensors as safetensors or npz, by the path's extension.
pub fn write_named(path: &Path, named: &[(String, Tensor)]) -> anyhow::Result<()> {
    use anyhow::Context;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let named: Vec<(String, Tensor)> = named
        .iter()
        .map(|(k, v)| (k.clone(), v.to_device(tch::Device::Cpu).contiguous()))
        .collect();
    match ext {
        "safetensors" => Tensor::write_safetensors(&named, path),
        "npz" => Tensor::write_npz(&named, path),
        _ => anyhow::bail!("{}: use a .safetensors or .npz extension", path.display()),
    }
    .with_context(|| format!("writing {}", path.display()))
}
