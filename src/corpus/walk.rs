//! Sorted, deterministic listing of a package's audio files.

use std::path::{Path, PathBuf};

/// Extensions of audio files the corpus reads.
pub const AUDIO_EXTENSIONS: [&str; 5] = ["ogg", "oga", "wav", "flac", "mp3"];

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not under {root} or not UTF-8")]
    BadPath { path: PathBuf, root: PathBuf },
}

impl WalkError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        WalkError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Regular audio files under `root` (recursively), sorted by path. Symbolic links are left out:
/// in these packages they are aliases of another file (freedesktop's `dialog-error.oga` ->
/// `dialog-warning.oga`), and an alias under another name would put one sound under two
/// identities.
pub fn audio_files(root: &Path) -> Result<Vec<PathBuf>, WalkError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| WalkError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| WalkError::io(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| WalkError::io(&path, e))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && is_audio(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Symbolic links to audio files directly in `dir` (counted in the summary as aliases).
pub fn audio_symlinks(dir: &Path) -> Result<usize, WalkError> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| WalkError::io(dir, e))? {
        let entry = entry.map_err(|e| WalkError::io(dir, e))?;
        let kind = entry
            .file_type()
            .map_err(|e| WalkError::io(&entry.path(), e))?;
        if kind.is_symlink() && is_audio(&entry.path()) {
            n += 1;
        }
    }
    Ok(n)
}

fn is_audio(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `path` relative to `root`, with `/` separators.
pub fn rel_string(root: &Path, path: &Path) -> Result<String, WalkError> {
    let bad = || WalkError::BadPath {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
    };
    let rel = path.strip_prefix(root).map_err(|_| bad())?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Ok(parts.ok_or_else(bad)?.join("/"))
}
