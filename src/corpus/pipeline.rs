//! `diffgap corpus build`: verify the pinned packages, list the candidate clips of each source,
//! make their audio (decode or render), finish and write every clip, and write the manifest and
//! the summary. The output folder is written under `<out>.partial` and renamed at the end; a
//! `fingerprint` (the sources file, the options and the corpus format version) makes a second
//! run with the same inputs a no-op.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::candidate::{AudioInput, Candidate, Source, SourceKind};
use super::clip::{finish, Dropped};
use super::copyright::Copyright;
use super::extract::verify;
use super::manifest::{Record, Summary};
use super::sources::{Package, SourcesFile};
use super::split::split_of;
use super::{named, soundfont, tuxpaint, CorpusError};
use crate::audio::decode::{decode, DecodeOptions, OverLong};
use crate::audio::ENCODER_SAMPLE_RATE;

/// Bumped whenever the corpus's content rules change (captions, splits, rendering, format).
pub const FORMAT_VERSION: &str = "diffgap-corpus-v3";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out: PathBuf,
    pub sources_file: PathBuf,
    pub debs_dir: PathBuf,
    /// Sources to include, by name (all when empty).
    pub only: Vec<String>,
    /// Length cap of a clip in seconds.
    pub max_seconds: f64,
    /// Rebuild even when the fingerprint matches.
    pub force: bool,
    /// Worker threads for decoding and rendering (the output does not depend on it).
    pub threads: usize,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub summary: Summary,
    /// True when the existing corpus was up to date and nothing was rebuilt.
    pub cached: bool,
}

/// Builds the corpus (or reuses it when its fingerprint matches).
pub fn build(opts: &BuildOptions) -> Result<BuildReport, CorpusError> {
    let (sources, sources_text) = SourcesFile::load(&opts.sources_file)?;
    let selected = sources.selected(&opts.only)?;
    let fingerprint = fingerprint(&sources_text, &selected, opts.max_seconds);
    let fp_path = opts.out.join("fingerprint");
    let summary_path = opts.out.join("summary.json");
    if !opts.force
        && std::fs::read_to_string(&fp_path).ok().as_deref() == Some(fingerprint.as_str())
        && opts.out.join("manifest.jsonl").is_file()
    {
        let text = std::fs::read_to_string(&summary_path).map_err(|e| io(&summary_path, e))?;
        let summary: Summary = serde_json::from_str(&text)
            .map_err(|e| CorpusError::Other(format!("{}: {e}", summary_path.display())))?;
        return Ok(BuildReport {
            summary,
            cached: true,
        });
    }

    let mut summary_drops: Vec<(&str, Source, usize)> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    let mut soundfonts: HashMap<Source, Arc<rustysynth::SoundFont>> = HashMap::new();
    for package in selected {
        let source = package.source();
        let root = verify(&opts.debs_dir, package)?;
        let licences = Licences::load(&root, package)?;
        let candidates =
            list_candidates(package, &source, &root, &mut soundfonts, &mut summary_drops)?;
        let mut no_licence = 0;
        for candidate in candidates {
            match licences.of(&package.copyright_path(&candidate.package_path)) {
                Some(licence) => jobs.push(Job {
                    candidate,
                    package: package.clone(),
                    licence,
                }),
                None => no_licence += 1,
            }
        }
        summary_drops.push(("no licence stated in debian/copyright", source, no_licence));
    }

    // The same bytes under two names would be one sound under two identities: keep the first.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut kept = Vec::with_capacity(jobs.len());
    let mut duplicates: HashMap<Source, usize> = HashMap::new();
    for job in jobs {
        if let AudioInput::File(path) = &job.candidate.input {
            let hash = super::sources::sha256_file(path).map_err(|e| io(path, e))?;
            if seen.insert(hash, job.candidate.clip_id.clone()).is_some() {
                *duplicates.entry(job.candidate.source.clone()).or_default() += 1;
                continue;
            }
        }
        kept.push(job);
    }
    for (source, n) in duplicates {
        summary_drops.push(("duplicate audio bytes", source, n));
    }

    let partial = partial_dir(&opts.out);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
    }
    let clips_dir = partial.join("clips");
    std::fs::create_dir_all(&clips_dir).map_err(|e| io(&clips_dir, e))?;

    let max_samples = (opts.max_seconds * f64::from(ENCODER_SAMPLE_RATE)).round() as usize;
    let outcomes = run_parallel(&kept, opts.threads.max(1), |job| {
        make_clip(job, &soundfonts, opts.max_seconds, max_samples, &clips_dir)
    });
    let mut records = Vec::new();
    for (job, outcome) in kept.iter().zip(outcomes) {
        match outcome? {
            Outcome::Kept(record) => records.push(*record),
            Outcome::Dropped(reason) => {
                summary_drops.push((reason, job.candidate.source.clone(), 1))
            }
        }
    }

    let mut summary = Summary::from_records(&records);
    for (reason, source, n) in summary_drops {
        summary.drop(reason, &source, n);
    }
    let mut manifest = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut manifest, r).map_err(|e| CorpusError::Other(e.to_string()))?;
        manifest.push(b'\n');
    }
    write(&partial.join("manifest.jsonl"), &manifest)?;
    let summary_json =
        serde_json::to_vec_pretty(&summary).map_err(|e| CorpusError::Other(e.to_string()))?;
    write(&partial.join("summary.json"), &summary_json)?;
    write(&partial.join("summary.txt"), summary.table().as_bytes())?;
    write(&partial.join("fingerprint"), fingerprint.as_bytes())?;
    if opts.out.exists() {
        std::fs::remove_dir_all(&opts.out).map_err(|e| io(&opts.out, e))?;
    }
    std::fs::rename(&partial, &opts.out).map_err(|e| io(&opts.out, e))?;
    Ok(BuildReport {
        summary,
        cached: false,
    })
}

/// The candidate clips of one package, by its kind; what the listing left out goes to `drops`.
fn list_candidates(
    package: &Package,
    source: &Source,
    root: &Path,
    soundfonts: &mut HashMap<Source, Arc<rustysynth::SoundFont>>,
    drops: &mut Vec<(&'static str, Source, usize)>,
) -> Result<Vec<Candidate>, CorpusError> {
    Ok(match package.kind {
        SourceKind::Tuxpaint => {
            let (c, skips) = tuxpaint::scan(source, root)?;
            drops.push((
                "speech (spoken letters and digits)",
                source.clone(),
                skips.speech,
            ));
            drops.push((
                "no English description",
                source.clone(),
                skips.no_description,
            ));
            c
        }
        SourceKind::Named => {
            let (c, skips) = named::scan(source, root, &package.dirs, &package.exclude)?;
            drops.push(("alias (symbolic link)", source.clone(), skips.aliases));
            drops.push((
                "excluded folder (speech, music)",
                source.clone(),
                skips.excluded,
            ));
            c
        }
        SourceKind::Soundfont => {
            let sf2 = package.sf2.as_deref().unwrap_or_default();
            let sf = soundfont::load(&root.join(sf2))?;
            let c = soundfont::plan(&sf, source, sf2, ENCODER_SAMPLE_RATE)?;
            soundfonts.insert(source.clone(), sf);
            c
        }
    })
}

struct Job {
    candidate: Candidate,
    package: Package,
    licence: String,
}

enum Outcome {
    Kept(Box<Record>),
    Dropped(&'static str),
}

/// Decodes or renders one clip, finishes it and writes its WAV.
fn make_clip(
    job: &Job,
    soundfonts: &HashMap<Source, Arc<rustysynth::SoundFont>>,
    max_seconds: f64,
    max_samples: usize,
    clips_dir: &Path,
) -> Result<Outcome, CorpusError> {
    let c = &job.candidate;
    let (raw, source_rate, source_channels, render) = match &c.input {
        AudioInput::File(path) => {
            let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
            let mut o = DecodeOptions::new(ENCODER_SAMPLE_RATE, max_seconds);
            o.over_long = OverLong::Truncate;
            o.extension = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_string);
            match decode(&bytes, &o) {
                Ok(d) => (d.samples, d.source_rate, d.source_channels, None),
                Err(e) => {
                    eprintln!("warning: {}: {e}; left out", path.display());
                    return Ok(Outcome::Dropped("undecodable"));
                }
            }
        }
        AudioInput::Render(spec) => {
            let sf = soundfonts
                .get(&c.source)
                .ok_or_else(|| CorpusError::Other("SoundFont not loaded. This is a bug.".into()))?;
            (
                soundfont::render(sf, spec)?,
                spec.sample_rate,
                2,
                Some(spec.clone()),
            )
        }
    };
    let finished = match finish(raw, ENCODER_SAMPLE_RATE, max_samples) {
        Ok(f) => f,
        Err(Dropped::Silent) => return Ok(Outcome::Dropped("silent")),
        Err(Dropped::TooShort) => return Ok(Outcome::Dropped("empty (under 50 ms of sound)")),
    };
    let wav = wav_bytes(&finished.samples)?;
    let file = format!("clips/{}.wav", c.clip_id);
    write(&clips_dir.join(format!("{}.wav", c.clip_id)), &wav)?;
    let samples = finished.samples.len();
    Ok(Outcome::Kept(Box::new(Record {
        clip_id: c.clip_id.clone(),
        file,
        identity: c.identity.clone(),
        caption: c.caption.clone(),
        split: split_of(job.package.kind, &c.identity),
        source: c.source.clone(),
        package: job.package.name.clone(),
        version: job.package.version.clone(),
        package_path: c.package_path.clone(),
        licence: job.licence.clone(),
        render,
        sample_rate: ENCODER_SAMPLE_RATE,
        samples,
        duration_s: samples as f64 / f64::from(ENCODER_SAMPLE_RATE),
        source_sample_rate: source_rate,
        source_channels,
        capped: finished.capped,
        peak: finished.peak,
        sha256: hex::encode(Sha256::digest(&wav)),
    })))
}

/// A mono 32-bit float WAV at the encoder's rate.
fn wav_bytes(samples: &[f32]) -> Result<Vec<u8>, CorpusError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: ENCODER_SAMPLE_RATE,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut cursor = std::io::Cursor::new(Vec::with_capacity(samples.len() * 4 + 64));
    let wav_err = |e: hound::Error| CorpusError::Other(format!("WAV writer: {e}"));
    let mut writer = hound::WavWriter::new(&mut cursor, spec).map_err(wav_err)?;
    for &s in samples {
        writer.write_sample(s).map_err(wav_err)?;
    }
    writer.finalize().map_err(wav_err)?;
    Ok(cursor.into_inner())
}

/// Runs `f` over `items` on `threads` threads; results in the order of `items`.
fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let results = std::sync::Mutex::new(&mut slots);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                if let Ok(mut guard) = results.lock() {
                    guard[i] = Some(r);
                }
            });
        }
    });
    slots.into_iter().flatten().collect()
}

/// The licences of a package's files: the one the sources file states (read by a person from
/// debian/copyright when that file is not machine-readable or its patterns miss the installed
/// files), else the DEP-5 paragraph matching the file.
struct Licences {
    dep5: Option<Copyright>,
    stated: Option<String>,
    by_folder: std::collections::BTreeMap<String, String>,
}

impl Licences {
    fn load(root: &Path, package: &Package) -> Result<Licences, CorpusError> {
        if let Some(stated) = &package.licence {
            return Ok(Licences {
                dep5: None,
                stated: Some(stated.clone()),
                by_folder: package.folder_licences.clone(),
            });
        }
        let path = root
            .join("usr/share/doc")
            .join(&package.name)
            .join("copyright");
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let Some(dep5) = Copyright::parse(&text) else {
            return Err(CorpusError::Other(format!(
                "{}: not machine-readable, and the sources file states no licence for {}",
                path.display(),
                package.name
            )));
        };
        Ok(Licences {
            dep5: Some(dep5),
            stated: None,
            by_folder: package.folder_licences.clone(),
        })
    }

    fn of(&self, package_path: &str) -> Option<String> {
        let folders = package_path.split('/').rev().skip(1);
        if let Some(licence) = folders.into_iter().find_map(|f| self.by_folder.get(f)) {
            return Some(licence.clone());
        }
        match &self.dep5 {
            Some(c) => c.licence_of(package_path).map(str::to_string),
            None => self.stated.clone(),
        }
    }
}

fn fingerprint(sources_text: &str, selected: &[&Package], max_seconds: f64) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT_VERSION.as_bytes());
    h.update(sources_text.as_bytes());
    for p in selected {
        h.update(p.source.as_bytes());
        h.update(b",");
    }
    h.update(max_seconds.to_le_bytes());
    hex::encode(h.finalize())
}

fn partial_dir(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CorpusError> {
    let mut f = std::fs::File::create(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))
}

fn io(path: &Path, e: std::io::Error) -> CorpusError {
    CorpusError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}
