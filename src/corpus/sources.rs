//! The pinned Debian packages (`models/corpus-sources.toml`) and their verification: each
//! `.deb` must have the recorded sha256, and its extracted tree must carry a stamp with the same
//! hash (written by `scripts/build-corpus.sh` after `dpkg-deb -x`).
//!
//! Layout under the debs folder (default `.cache/debs`): `<deb file name>` and `<package name>/`
//! (the extracted tree) with `<package name>.extracted` holding the `.deb`'s sha256.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::candidate::Source;

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Which corpus source it feeds (`tuxpaint`, `wesnoth`, `freedesktop`, `timgm6mb`).
    pub source: String,
    pub name: String,
    pub version: String,
    /// The `.deb` file name as `apt-get download` writes it.
    pub deb: String,
    pub sha256: String,
    pub size: u64,
    /// The package's licence when its copyright file is not machine-readable, as read by a
    /// person from that file (with `licence_note` saying what it says).
    #[serde(default)]
    pub licence: Option<String>,
    #[serde(default)]
    pub licence_note: Option<String>,
}

/// The sources file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesFile {
    /// The Debian release the versions come from.
    pub suite: String,
    #[serde(rename = "package")]
    pub packages: Vec<Package>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourcesError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "sources file: unknown source {0:?} (known: tuxpaint, wesnoth, freedesktop, timgm6mb)"
    )]
    UnknownSource(String),
    #[error("sources file: no package for source {0}")]
    MissingSource(String),
    #[error(
        "{deb}: missing; run scripts/build-corpus.sh (it fetches the pinned packages with \
         apt-get download)"
    )]
    MissingDeb { deb: PathBuf },
    #[error("{deb}: sha256 {actual}, but the sources file pins {expected}")]
    HashMismatch {
        deb: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "{dir}: not extracted from the pinned .deb (stamp {stamp}); run scripts/build-corpus.sh"
    )]
    NotExtracted { dir: PathBuf, stamp: PathBuf },
}

impl SourcesFile {
    pub fn load(path: &Path) -> Result<(SourcesFile, String), SourcesError> {
        let read = |message: String| SourcesError::Read {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        let file: SourcesFile = toml::from_str(&text).map_err(|e| read(e.to_string()))?;
        for p in &file.packages {
            if Source::parse(&p.source).is_none() {
                return Err(SourcesError::UnknownSource(p.source.clone()));
            }
        }
        Ok((file, text))
    }

    pub fn package(&self, source: Source) -> Result<&Package, SourcesError> {
        self.packages
            .iter()
            .find(|p| p.source == source.name())
            .ok_or_else(|| SourcesError::MissingSource(source.name().to_string()))
    }
}

/// Checks the `.deb` hash and the extraction stamp; returns the extracted tree's root.
pub fn verify(debs_dir: &Path, package: &Package) -> Result<PathBuf, SourcesError> {
    let deb = debs_dir.join(&package.deb);
    if !deb.is_file() {
        return Err(SourcesError::MissingDeb { deb });
    }
    let actual = sha256_file(&deb).map_err(|e| SourcesError::Read {
        path: deb.clone(),
        message: e.to_string(),
    })?;
    if !actual.eq_ignore_ascii_case(&package.sha256) {
        return Err(SourcesError::HashMismatch {
            deb,
            expected: package.sha256.clone(),
            actual,
        });
    }
    let dir = debs_dir.join(&package.name);
    let stamp = debs_dir.join(format!("{}.extracted", package.name));
    let stamped = std::fs::read_to_string(&stamp).unwrap_or_default();
    if !dir.is_dir() || !stamped.trim().eq_ignore_ascii_case(&package.sha256) {
        return Err(SourcesError::NotExtracted { dir, stamp });
    }
    Ok(dir)
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
