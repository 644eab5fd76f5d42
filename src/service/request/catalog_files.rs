//! A catalog entry's audio file, for the playground's players. Only a catalog built from an
//! audio folder (`diffgap catalog build --audio-dir`) has files: its ids are the files' paths
//! relative to the folder, which `catalog.json` records as its `source`. A file is served only
//! for an id the catalog lists, as a relative path below that folder; the client names an
//! entry, never a path.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::service::echo::echo;
use crate::service::error::ServiceError;
use crate::service::request::catalog::CatalogData;
use crate::service::request::repository::Registry;

/// The largest entry file served, in bytes (a catalog of clips holds seconds, not hours).
pub const MAX_ENTRY_FILE_BYTES: u64 = 64 << 20;

/// An entry's file and its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFile {
    pub path: PathBuf,
    pub content_type: &'static str,
}

/// The catalog `name`, whichever served model it belongs to.
pub fn find(registry: &Registry, name: &str) -> Result<Arc<CatalogData>, ServiceError> {
    registry
        .ordered()
        .into_iter()
        .find_map(|m| m.catalogs.get(name).cloned())
        .ok_or_else(|| ServiceError::NotFound(format!("no catalog {:?}", echo(name))))
}

/// The media type of an audio file, by its extension (those `catalog build --audio-dir` reads).
pub fn content_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "mp3" => "audio/mpeg",
        _ => return None,
    })
}

/// Whether the entries of `c` are files: it was built from an audio folder, recorded absolute,
/// which is still there.
pub fn has_files(c: &CatalogData) -> bool {
    let folder = Path::new(&c.meta.source);
    folder.is_absolute() && folder.is_dir()
}

/// The file of entry `id` of `c`, or NOT_FOUND: for an id the catalog does not list, for a
/// catalog whose entries are not files, and for an id that is not a plain relative path.
pub fn entry_file(c: &CatalogData, id: &str) -> Result<EntryFile, ServiceError> {
    let name = &c.meta.name;
    if !c.meta.ids.iter().any(|i| i == id) {
        return Err(ServiceError::NotFound(format!(
            "catalog '{name}' has no entry {:?}",
            echo(id)
        )));
    }
    let folder = Path::new(&c.meta.source);
    if !has_files(c) {
        return Err(ServiceError::NotFound(format!(
            "the entries of catalog '{name}' are not files (it was not built from an audio folder)"
        )));
    }
    let relative = Path::new(id);
    let plain = relative
        .components()
        .all(|part| matches!(part, Component::Normal(_)));
    let content_type = content_type(relative).filter(|_| plain).ok_or_else(|| {
        ServiceError::NotFound(format!(
            "entry {:?} of catalog '{name}' is not an audio file below its folder",
            echo(id)
        ))
    })?;
    Ok(EntryFile {
        path: folder.join(relative),
        content_type,
    })
}

/// The bytes of `file`, at most [`MAX_ENTRY_FILE_BYTES`] (read on the blocking pool).
pub async fn read(file: &EntryFile) -> Result<Vec<u8>, ServiceError> {
    let path = file.path.clone();
    tokio::task::spawn_blocking(move || read_blocking(&path))
        .await
        .map_err(|e| ServiceError::Internal(format!("reading a catalog entry's file: {e}")))?
}

fn read_blocking(path: &Path) -> Result<Vec<u8>, ServiceError> {
    let gone = |e: std::io::Error| {
        tracing::warn!(path = %path.display(), "a catalog entry's file: {e}");
        ServiceError::NotFound("the entry's file is gone from its catalog's folder".into())
    };
    let f = std::fs::File::open(path).map_err(gone)?;
    let meta = f.metadata().map_err(gone)?;
    if !meta.is_file() {
        return Err(ServiceError::NotFound("the entry is not a file".into()));
    }
    if meta.len() > MAX_ENTRY_FILE_BYTES {
        return Err(ServiceError::FailedPrecondition(format!(
            "the entry's file has {} bytes, more than the {MAX_ENTRY_FILE_BYTES} served",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded again in case the file grew since its size was read.
    f.take(MAX_ENTRY_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(gone)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::types::CatalogMeta;
    use std::collections::BTreeMap;

    fn catalog(source: &Path, ids: &[&str]) -> CatalogData {
        CatalogData {
            meta: CatalogMeta {
                format: 1,
                name: "clips".into(),
                model: "m".into(),
                model_fingerprint: "sha256:0".into(),
                modality: "audio".into(),
                dim: 2,
                ids: ids.iter().map(|s| s.to_string()).collect(),
                seed: 0,
                reverse: BTreeMap::new(),
                source: source.display().to_string(),
                source_fingerprint: "sha256:0".into(),
                tensors_sha256: "0".into(),
            },
            embeddings: vec![1.0, 0.0],
            reverse: BTreeMap::new(),
        }
    }

    #[test]
    fn only_listed_plain_relative_audio_paths_are_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = ["a.wav", "sub/b.FLAC", "../x.wav", "/etc/x.wav", "c.txt"];
        let c = catalog(dir.path(), &ids);
        let f = entry_file(&c, "sub/b.FLAC").expect("a listed file");
        assert_eq!(f.path, dir.path().join("sub/b.FLAC"));
        assert_eq!(f.content_type, "audio/flac");
        assert_eq!(
            entry_file(&c, "a.wav").expect("listed").content_type,
            "audio/wav"
        );
        for id in [
            "../x.wav",
            "/etc/x.wav",
            "c.txt",
            "b.wav",
            "sub/../a.wav",
            "",
        ] {
            let e = entry_file(&c, id).expect_err(id);
            assert!(matches!(e, ServiceError::NotFound(_)), "{id}: {e}");
        }
    }

    #[test]
    fn a_catalog_built_from_a_file_of_embeddings_has_no_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pairs = dir.path().join("pairs.safetensors");
        std::fs::write(&pairs, b"x").expect("write");
        let e = entry_file(&catalog(&pairs, &["a.wav"]), "a.wav").expect_err("no folder");
        assert!(e.to_string().contains("not files"), "{e}");
        let e = entry_file(&catalog(Path::new("rel"), &["a.wav"]), "a.wav").expect_err("relative");
        assert!(e.to_string().contains("not files"), "{e}");
    }
}
