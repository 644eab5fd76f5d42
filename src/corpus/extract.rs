//! Extracting a pinned `.deb` down to what the corpus reads, and checking that it was.
//!
//! The game data packages are mostly textures, models and music: extracting them whole took
//! 3.4 GB next to their 2.5 GB of `.deb`s, and a CI machine ran out of disk. So only the files a
//! source's kind reads are unpacked (audio under `dirs`, the `.sf2`, Tux Paint's stamp sounds and
//! descriptions, the copyright file), straight from `dpkg-deb --fsys-tarfile`'s stream, and the
//! `.deb` is deleted once its tree is complete. The tree's stamp names the `.deb`'s sha256 and
//! a digest of what was kept, so a changed `dirs` or `sf2` makes the tree stale.
//!
//! Layout under the debs folder (default `.cache/debs`): `<package name>/` (the kept files at
//! their paths in the package) and `<package name>.extracted` (the stamp); the `.deb` itself only
//! between `apt-get download` and the extraction.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::candidate::SourceKind;
use super::sources::{sha256_file, Package, SourcesError};
use super::tuxpaint::STAMPS_DIR;
use super::walk::AUDIO_EXTENSIONS;

/// Bumped when [`keeps`] changes for a given package entry.
const FILTER_VERSION: &str = "keep-v1";

/// What one extraction kept.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Extracted {
    pub files: usize,
    pub bytes: u64,
}

/// The stamp a complete extraction of `package` carries.
pub fn stamp_text(package: &Package) -> String {
    let mut h = Sha256::new();
    h.update(FILTER_VERSION);
    h.update(format!("{:?}", package.kind));
    for d in &package.dirs {
        h.update(b"\0dir\0");
        h.update(d);
    }
    if let Some(sf2) = &package.sf2 {
        h.update(b"\0sf2\0");
        h.update(sf2);
    }
    format!("{} {}", package.sha256, hex::encode(h.finalize()))
}

fn stamp_path(debs_dir: &Path, package: &Package) -> PathBuf {
    debs_dir.join(format!("{}.extracted", package.name))
}

/// Whether the package's tree is complete and was kept with today's filter.
pub fn is_extracted(debs_dir: &Path, package: &Package) -> bool {
    let stamped = std::fs::read_to_string(stamp_path(debs_dir, package)).unwrap_or_default();
    debs_dir.join(&package.name).is_dir() && stamped.trim() == stamp_text(package)
}

/// Checks the extraction stamp; returns the extracted tree's root.
pub fn verify(debs_dir: &Path, package: &Package) -> Result<PathBuf, SourcesError> {
    let dir = debs_dir.join(&package.name);
    if !is_extracted(debs_dir, package) {
        let stamp = stamp_path(debs_dir, package);
        return Err(SourcesError::NotExtracted { dir, stamp });
    }
    Ok(dir)
}

/// Whether the corpus reads the package file at `path` (relative, `/`-separated).
pub fn keeps(package: &Package, path: &str) -> bool {
    if path == format!("usr/share/doc/{}/copyright", package.name) {
        return true;
    }
    match package.kind {
        SourceKind::Named => is_audio(path) && package.dirs.iter().any(|d| is_under(path, d)),
        SourceKind::Soundfont => package.sf2.as_deref() == Some(path),
        SourceKind::Tuxpaint => {
            is_under(path, STAMPS_DIR) && (is_audio(path) || has_extension(path, "txt"))
        }
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn has_extension(path: &str, ext: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.')
        .is_some_and(|(_, e)| e.eq_ignore_ascii_case(ext))
}

fn is_audio(path: &str) -> bool {
    AUDIO_EXTENSIONS.iter().any(|e| has_extension(path, e))
}

/// Checks the `.deb`'s hash, unpacks the files [`keeps`] wants into a fresh tree, stamps it and
/// deletes the `.deb`.
pub fn extract(debs_dir: &Path, package: &Package) -> Result<Extracted, SourcesError> {
    let deb = debs_dir.join(&package.deb);
    if !deb.is_file() {
        return Err(SourcesError::MissingDeb { deb });
    }
    let actual = sha256_file(&deb).map_err(|e| read_error(&deb, e))?;
    if !actual.eq_ignore_ascii_case(&package.sha256) {
        let expected = package.sha256.clone();
        return Err(SourcesError::HashMismatch {
            deb,
            expected,
            actual,
        });
    }
    let dir = debs_dir.join(&package.name);
    let partial = debs_dir.join(format!("{}.partial", package.name));
    let stamp = stamp_path(debs_dir, package);
    remove_dir(&partial)?;
    let kept = unpack_kept(&deb, package, &partial)?;
    remove_file(&stamp)?;
    remove_dir(&dir)?;
    std::fs::rename(&partial, &dir).map_err(|e| read_error(&dir, e))?;
    std::fs::write(&stamp, stamp_text(package)).map_err(|e| read_error(&stamp, e))?;
    remove_file(&deb)?;
    Ok(kept)
}

/// Streams the package's file system out of `dpkg-deb` and unpacks the kept entries.
fn unpack_kept(deb: &Path, package: &Package, into: &Path) -> Result<Extracted, SourcesError> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| read_error(deb, e))?;
    let stdout = child.stdout.take().ok_or_else(|| SourcesError::Read {
        path: deb.to_path_buf(),
        message: "dpkg-deb gave no output stream".into(),
    })?;
    let unpacked = unpack_stream(stdout, package, into).map_err(|e| read_error(deb, e));
    // Reap the child even when the stream failed, then report the first failure.
    let status = child.wait().map_err(|e| read_error(deb, e))?;
    let kept = unpacked?;
    if !status.success() {
        return Err(SourcesError::Read {
            path: deb.to_path_buf(),
            message: format!("dpkg-deb --fsys-tarfile failed ({status})"),
        });
    }
    Ok(kept)
}

fn unpack_stream(stream: impl Read, package: &Package, into: &Path) -> std::io::Result<Extracted> {
    std::fs::create_dir_all(into)?;
    let mut archive = tar::Archive::new(stream);
    let mut kept = Extracted::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_string();
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_symlink()) || !keeps(package, &path) {
            continue;
        }
        kept.files += 1;
        kept.bytes += entry.size();
        // `unpack_in` refuses paths that would leave `into` (`..`, absolute links).
        entry.unpack_in(into)?;
    }
    Ok(kept)
}

fn read_error(path: &Path, e: std::io::Error) -> SourcesError {
    SourcesError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn remove_dir(dir: &Path) -> Result<(), SourcesError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(read_error(dir, e)),
        _ => Ok(()),
    }
}

fn remove_file(file: &Path) -> Result<(), SourcesError> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(read_error(file, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(kind: SourceKind) -> Package {
        Package {
            source: "s".into(),
            kind,
            name: "pkg".into(),
            version: "1".into(),
            deb: "pkg_1_all.deb".into(),
            sha256: "ab".repeat(32),
            size: 1,
            licence: None,
            licence_note: None,
            folder_licences: Default::default(),
            dirs: vec!["usr/share/games/x/sounds".into()],
            exclude: vec![],
            copyright_paths: vec![],
            sf2: Some("usr/share/sounds/sf2/A.sf2".into()),
        }
    }

    #[test]
    fn named_sources_keep_audio_under_their_dirs_and_the_copyright() {
        let p = package(SourceKind::Named);
        assert!(keeps(&p, "usr/share/games/x/sounds/boom.ogg"));
        assert!(keeps(&p, "usr/share/games/x/sounds/sub/Boom.WAV"));
        assert!(keeps(&p, "usr/share/doc/pkg/copyright"));
        assert!(!keeps(&p, "usr/share/games/x/sounds/boom.png"));
        assert!(!keeps(&p, "usr/share/games/x/soundsextra/boom.ogg"));
        assert!(!keeps(&p, "usr/share/games/x/music/song.ogg"));
        assert!(!keeps(&p, "usr/share/doc/pkg/changelog.gz"));
    }

    #[test]
    fn soundfonts_keep_their_sf2_and_tuxpaint_its_stamp_sounds_and_descriptions() {
        let p = package(SourceKind::Soundfont);
        assert!(keeps(&p, "usr/share/sounds/sf2/A.sf2"));
        assert!(!keeps(&p, "usr/share/sounds/sf2/B.sf2"));
        let t = package(SourceKind::Tuxpaint);
        assert!(keeps(&t, &format!("{STAMPS_DIR}/animals/cat.ogg")));
        assert!(keeps(&t, &format!("{STAMPS_DIR}/animals/cat.txt")));
        assert!(!keeps(&t, &format!("{STAMPS_DIR}/animals/cat.png")));
    }

    #[test]
    fn the_stamp_changes_with_what_is_kept() {
        let a = package(SourceKind::Named);
        let mut b = a.clone();
        b.dirs.push("usr/share/games/x/more".into());
        assert_ne!(stamp_text(&a), stamp_text(&b));
        assert!(stamp_text(&a).starts_with(&a.sha256));
    }

    #[test]
    fn a_stream_unpacks_only_the_kept_entries_and_a_tree_without_its_stamp_is_stale() {
        let p = package(SourceKind::Named);
        let mut builder = tar::Builder::new(Vec::new());
        for (path, body) in [
            ("./usr/share/games/x/sounds/boom.ogg", &b"ogg"[..]),
            ("./usr/share/games/x/textures/wall.png", &b"png"[..]),
            ("./usr/share/doc/pkg/copyright", &b"Format: x"[..]),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, body).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let into = tmp.path().join(&p.name);
        let kept = unpack_stream(&bytes[..], &p, &into).unwrap();
        assert_eq!(
            kept,
            Extracted {
                files: 2,
                bytes: 12
            }
        );
        assert!(into.join("usr/share/games/x/sounds/boom.ogg").is_file());
        assert!(into.join("usr/share/doc/pkg/copyright").is_file());
        assert!(!into.join("usr/share/games/x/textures").exists());
        assert!(matches!(
            verify(tmp.path(), &p),
            Err(SourcesError::NotExtracted { .. })
        ));
        std::fs::write(stamp_path(tmp.path(), &p), stamp_text(&p)).unwrap();
        assert_eq!(verify(tmp.path(), &p).unwrap(), into);
    }
}
