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
    #[error("sources file: package {package}: {field} {value:?} is empty or holds whitespace")]
    NotAWord {
        package: String,
        field: &'static str,
        value: String,
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

    /// The packages of the `only` sources (all when empty), in the file's order, one line
    /// each: `source name version deb sha256` (what scripts/build-corpus.sh fetches, checks
    /// and extracts).
    pub fn fetch_list(&self, only: &[Source]) -> Result<String, SourcesError> {
        let mut out = String::new();
        let wanted = |p: &&Package| only.is_empty() || only.iter().any(|s| s.name() == p.source);
        for p in self.packages.iter().filter(wanted) {
            let fields = [
                ("source", &p.source),
                ("name", &p.name),
                ("version", &p.version),
                ("deb", &p.deb),
                ("sha256", &p.sha256),
            ];
            let mut line = Vec::with_capacity(fields.len());
            for (field, value) in fields {
                if value.is_empty() || value.chars().any(char::is_whitespace) {
                    return Err(SourcesError::NotAWord {
                        package: p.name.clone(),
                        field,
                        value: value.clone(),
                    });
                }
                line.push(value.as_str());
            }
            out.push_str(&line.join(" "));
            out.push('\n');
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
suite = "bookworm"

[[package]]
source = "wesnoth"
name = "wesnoth-1.16-data"
version = "1:1.16.9-1"
deb = "wesnoth-1.16-data_1%3a1.16.9-1_all.deb"
sha256 = "aa"
size = 1
licence = "GPL-2+"
licence_note = "free text, with spaces = and quotes \" in it"

[[package]]
source = "freedesktop"
name = "sound-theme-freedesktop"
version = "0.8-2"
deb = "sound-theme-freedesktop_0.8-2_all.deb"
sha256 = "bb"
size = 2
"#;

    #[test]
    fn the_fetch_list_has_one_line_per_wanted_package_in_file_order() {
        let file: SourcesFile = toml::from_str(TWO).expect("valid");
        assert_eq!(
            file.fetch_list(&[]).expect("listed"),
            "wesnoth wesnoth-1.16-data 1:1.16.9-1 wesnoth-1.16-data_1%3a1.16.9-1_all.deb aa\n\
             freedesktop sound-theme-freedesktop 0.8-2 sound-theme-freedesktop_0.8-2_all.deb bb\n"
        );
        assert_eq!(
            file.fetch_list(&[Source::Freedesktop]).expect("listed"),
            "freedesktop sound-theme-freedesktop 0.8-2 sound-theme-freedesktop_0.8-2_all.deb bb\n"
        );
        assert_eq!(file.fetch_list(&[Source::Tuxpaint]).expect("listed"), "");
    }

    #[test]
    fn a_field_the_script_cannot_split_is_refused() {
        let mut file: SourcesFile = toml::from_str(TWO).expect("valid");
        file.packages[1].version = "0.8 2".into();
        let e = file.fetch_list(&[]).expect_err("a space in the version");
        assert!(e.to_string().contains("version \"0.8 2\""), "{e}");
        file.packages[1].version = String::new();
        assert!(file.fetch_list(&[]).is_err());
    }

    #[test]
    fn the_pinned_sources_list_every_source() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/corpus-sources.toml");
        let (file, _) = SourcesFile::load(&path).expect("the pinned sources");
        let list = file.fetch_list(&[]).expect("listed");
        let sources: Vec<&str> = list.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(sources, ["tuxpaint", "wesnoth", "freedesktop", "timgm6mb"]);
        assert!(list.lines().all(|l| l.split(' ').count() == 5), "{list}");
    }
}
