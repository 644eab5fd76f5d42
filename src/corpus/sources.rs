//! The pinned Debian packages (`models/corpus-sources.toml`): what each source is, where its
//! files are inside its package, and the list scripts/build-corpus.sh fetches. Their extraction
//! and its stamp are in [`super::extract`].

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::candidate::{Source, SourceKind};

/// One pinned package: one corpus source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// The source's short name (clip ids, the summary, `--only`); unique in the file.
    pub source: String,
    /// How its clips are listed.
    pub kind: SourceKind,
    pub name: String,
    pub version: String,
    /// The `.deb` file name as `apt-get download` writes it.
    pub deb: String,
    pub sha256: String,
    pub size: u64,
    /// The licence of every clip of the package, as read by a person from its copyright file
    /// (with `licence_note` quoting it): when that file is not machine-readable, or when its
    /// patterns miss the installed files. Without it, each file's DEP-5 paragraph decides.
    #[serde(default)]
    pub licence: Option<String>,
    #[serde(default)]
    pub licence_note: Option<String>,
    /// Licences by folder name, read by a person from debian/copyright when its patterns name
    /// archives or paths that are not installed (a file under a folder of that name gets that
    /// licence; `licence_note` quotes the source); other files fall back as without it.
    #[serde(default)]
    pub folder_licences: std::collections::BTreeMap<String, String>,
    /// `named`: the folders inside the package whose audio files are the clips.
    #[serde(default)]
    pub dirs: Vec<String>,
    /// `named`: sub-folders left out (speech, music): a folder name anywhere under a `dirs`
    /// folder, or a path relative to one.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where debian/copyright's `Files:` patterns name the source tree rather than the
    /// installed files: `[installed prefix, source prefix]` pairs, the first matching prefix
    /// of a file's path replaced before its licence is looked up.
    #[serde(default)]
    pub copyright_paths: Vec<[String; 2]>,
    /// `soundfont`: the `.sf2` file inside the package.
    #[serde(default)]
    pub sf2: Option<String>,
}

impl Package {
    pub fn source(&self) -> Source {
        Source::new(&self.source)
    }

    /// A file's path as debian/copyright names it ([`Package::copyright_paths`]).
    pub fn copyright_path<'a>(&self, package_path: &'a str) -> std::borrow::Cow<'a, str> {
        for [installed, source] in &self.copyright_paths {
            if let Some(rest) = package_path.strip_prefix(installed.as_str()) {
                return format!("{source}{rest}").into();
            }
        }
        package_path.into()
    }

    /// What its kind needs and nothing its kind does not use.
    fn check(&self) -> Result<(), String> {
        let named = self.kind == SourceKind::Named;
        let soundfont = self.kind == SourceKind::Soundfont;
        if named == self.dirs.is_empty() {
            return Err("`dirs` is required for kind named and only for it".into());
        }
        if !named && !self.exclude.is_empty() {
            return Err("`exclude` is only for kind named".into());
        }
        if soundfont != self.sf2.is_some() {
            return Err("`sf2` is required for kind soundfont and only for it".into());
        }
        let paths = self.dirs.iter().chain(&self.exclude).chain(&self.sf2);
        if let Some(bad) = paths.into_iter().find(|p| !is_relative_inside(p)) {
            return Err(format!("{bad:?} is not a relative path inside the package"));
        }
        Ok(())
    }
}

/// A non-empty relative path with no `..` (the extracted tree is the root).
fn is_relative_inside(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|c| !c.is_empty() && c != "..")
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
    #[error("sources file: unknown source {0:?} (known: {1})")]
    UnknownSource(String, String),
    #[error("sources file: package {package}: {message}")]
    Invalid { package: String, message: String },
    #[error("sources file: source {0:?} is named twice")]
    DuplicateSource(String),
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
        let mut seen = std::collections::HashSet::new();
        for p in &file.packages {
            p.check().map_err(|message| SourcesError::Invalid {
                package: p.name.clone(),
                message,
            })?;
            if !seen.insert(p.source.as_str()) {
                return Err(SourcesError::DuplicateSource(p.source.clone()));
            }
        }
        Ok((file, text))
    }

    /// The packages of the `only` sources (all when empty), in the file's order; an unknown
    /// name is an error.
    pub fn selected(&self, only: &[String]) -> Result<Vec<&Package>, SourcesError> {
        if let Some(unknown) = only
            .iter()
            .find(|o| !self.packages.iter().any(|p| &p.source == *o))
        {
            let known: Vec<&str> = self.packages.iter().map(|p| p.source.as_str()).collect();
            return Err(SourcesError::UnknownSource(
                unknown.clone(),
                known.join(", "),
            ));
        }
        Ok(self
            .packages
            .iter()
            .filter(|p| only.is_empty() || only.contains(&p.source))
            .collect())
    }

    /// The packages of the `only` sources (all when empty), in the file's order, one line
    /// each: `source name version deb sha256` (what scripts/build-corpus.sh fetches, checks
    /// and extracts).
    pub fn fetch_list(&self, only: &[String]) -> Result<String, SourcesError> {
        fetch_lines(&self.selected(only)?)
    }
}

/// One `source name version deb sha256` line per package, in the given order.
pub fn fetch_lines(packages: &[&Package]) -> Result<String, SourcesError> {
    let mut out = String::new();
    for p in packages {
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
kind = "named"
name = "wesnoth-1.16-data"
version = "1:1.16.9-1"
deb = "wesnoth-1.16-data_1%3a1.16.9-1_all.deb"
sha256 = "aa"
size = 1
licence = "GPL-2+"
licence_note = "free text, with spaces = and quotes \" in it"
dirs = ["usr/share/games/wesnoth/1.16/data/core/sounds"]

[[package]]
source = "freedesktop"
kind = "named"
name = "sound-theme-freedesktop"
version = "0.8-2"
deb = "sound-theme-freedesktop_0.8-2_all.deb"
sha256 = "bb"
size = 2
dirs = ["usr/share/sounds/freedesktop/stereo"]
exclude = ["voices"]
"#;

    fn two() -> SourcesFile {
        toml::from_str(TWO).expect("valid")
    }

    fn load_text(text: &str) -> Result<SourcesFile, SourcesError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sources.toml");
        std::fs::write(&path, text).expect("written");
        SourcesFile::load(&path).map(|(f, _)| f)
    }

    #[test]
    fn the_fetch_list_has_one_line_per_wanted_package_in_file_order() {
        let file = two();
        assert_eq!(
            file.fetch_list(&[]).expect("listed"),
            "wesnoth wesnoth-1.16-data 1:1.16.9-1 wesnoth-1.16-data_1%3a1.16.9-1_all.deb aa\n\
             freedesktop sound-theme-freedesktop 0.8-2 sound-theme-freedesktop_0.8-2_all.deb bb\n"
        );
        assert_eq!(
            file.fetch_list(&["freedesktop".into()]).expect("listed"),
            "freedesktop sound-theme-freedesktop 0.8-2 sound-theme-freedesktop_0.8-2_all.deb bb\n"
        );
        let e = file
            .fetch_list(&["tuxpaint".into()])
            .expect_err("not in the file");
        assert!(e.to_string().contains("known: wesnoth, freedesktop"), "{e}");
    }

    #[test]
    fn a_field_the_script_cannot_split_is_refused() {
        let mut file = two();
        file.packages[1].version = "0.8 2".into();
        let e = file.fetch_list(&[]).expect_err("a space in the version");
        assert!(e.to_string().contains("version \"0.8 2\""), "{e}");
        file.packages[1].version = String::new();
        assert!(file.fetch_list(&[]).is_err());
    }

    #[test]
    fn each_kind_gets_exactly_the_fields_it_uses() {
        assert!(load_text(TWO).is_ok());
        let no_dirs = TWO.replace("dirs = [\"usr/share/sounds/freedesktop/stereo\"]", "");
        let e = load_text(&no_dirs).expect_err("named without dirs");
        assert!(e.to_string().contains("`dirs` is required"), "{e}");
        let sf2 = TWO.replace("exclude = [\"voices\"]", "sf2 = \"x.sf2\"");
        let e = load_text(&sf2).expect_err("sf2 on a named source");
        assert!(e.to_string().contains("`sf2`"), "{e}");
        let escape = TWO.replace("exclude = [\"voices\"]", "exclude = [\"../x\"]");
        let e = load_text(&escape).expect_err("a path out of the package");
        assert!(e.to_string().contains("not a relative path"), "{e}");
        let twice = TWO.replace("source = \"freedesktop\"", "source = \"wesnoth\"");
        let e = load_text(&twice).expect_err("a source named twice");
        assert!(e.to_string().contains("named twice"), "{e}");
        let unknown = TWO.replace(
            "kind = \"named\"\nname = \"sound",
            "kind = \"midi\"\nname = \"sound",
        );
        assert!(load_text(&unknown).is_err());
    }

    #[test]
    fn copyright_paths_rewrite_the_first_matching_prefix() {
        let mut p = two().packages.remove(0);
        p.copyright_paths = vec![
            ["usr/share/games/x/".into(), "share/x/".into()],
            ["usr/".into(), "other/".into()],
        ];
        assert_eq!(p.copyright_path("usr/share/games/x/a.ogg"), "share/x/a.ogg");
        assert_eq!(p.copyright_path("usr/lib/a.ogg"), "other/lib/a.ogg");
        assert_eq!(p.copyright_path("opt/a.ogg"), "opt/a.ogg");
    }

    #[test]
    fn the_pinned_sources_load_and_list_every_package() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/corpus-sources.toml");
        let (file, _) = SourcesFile::load(&path).expect("the pinned sources");
        let list = file.fetch_list(&[]).expect("listed");
        assert_eq!(list.lines().count(), file.packages.len());
        assert!(list.lines().all(|l| l.split(' ').count() == 5), "{list}");
        let kinds: Vec<SourceKind> = file.packages.iter().map(|p| p.kind).collect();
        assert!(kinds.contains(&SourceKind::Tuxpaint), "{kinds:?}");
        assert!(kinds.contains(&SourceKind::Named), "{kinds:?}");
        assert!(kinds.contains(&SourceKind::Soundfont), "{kinds:?}");
    }
}
