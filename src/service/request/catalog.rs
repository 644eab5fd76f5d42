//! Catalogs: named sets of candidates served for one model, so that a Rank request names a
//! catalog instead of sending every candidate.
//!
//! A catalog is a directory (`catalogs/NAME/`, named by its directory like a model):
//!
//! - `catalog.json`: the [`CatalogMeta`] (format, the model's name and fingerprint it was built
//!   for, modality, dimension, the ids in order, the seed and options of the reverse bridge, the
//!   source file and its fingerprint, and the sha256 of the tensor file);
//! - `embeddings.safetensors`: `embeddings` [entries, dim] (L2-normalised) and, for every
//!   modality `m` the model bridges the catalog's modality into, `reverse.m` [entries, dim]:
//!   each entry bridged into `m` with the model's ranking defaults and the seed
//!   `row_seed(seed, i + 1)`, exactly as an inline Rank with the same seed bridges its
//!   candidate i. So ranking against a catalog gives what ranking the same candidates inline
//!   gives.
//!
//! `diffgap catalog build` writes one ([`build`]); the server reads every catalog under its
//! `catalogs` directory ([`read_all`]), checks it against the served model and puts its tensors
//! on the model's device, in the model's worker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use sha2::{Digest, Sha256};

use crate::data::pairs::{safetensors_tensors, write_named, PairedSet};
use crate::diffusion::sampler::SampleOptions;
use crate::model::{artifact, row_seed, DiffgapModel};
pub use crate::service::types::{CatalogData, CatalogMeta, ReverseOptions};

/// Bumped whenever a field changes meaning; loading refuses other formats.
pub const CATALOG_FORMAT: u32 = 1;
/// The catalog's description.
pub const META_FILE: &str = "catalog.json";
/// The catalog's tensors.
pub const TENSOR_FILE: &str = "embeddings.safetensors";

fn err(dir: &Path, what: impl std::fmt::Display) -> String {
    format!("catalog {}: {what}", dir.display())
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>, tch::TchError> {
    Vec::<f32>::try_from(
        &t.to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]),
    )
}

/// Reads and checks one catalog directory (format, hashes, shapes, finite values). The name is
/// the directory's.
pub fn read(dir: &Path) -> Result<CatalogData, String> {
    let text = std::fs::read_to_string(dir.join(META_FILE))
        .map_err(|e| err(dir, format!("cannot read {META_FILE}: {e}")))?;
    let mut meta = parse_meta(dir, &text)?;
    let tensors = std::fs::read(dir.join(TENSOR_FILE))
        .map_err(|e| err(dir, format!("cannot read {TENSOR_FILE}: {e}")))?;
    if hex::encode(Sha256::digest(&tensors)) != meta.tensors_sha256 {
        return Err(err(
            dir,
            format!("{TENSOR_FILE} does not match the sha256 in {META_FILE} (changed or corrupt)"),
        ));
    }
    if let Some(name) = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
    {
        meta.name = name;
    }
    parse_tensors(dir, meta, &tensors)
}

/// Checks a catalog given as its files' contents (`dir` names it in errors), the tensors' hash
/// aside: what [`read`] checks after it.
pub fn parse(dir: &Path, text: &str, tensors: &[u8]) -> Result<CatalogData, String> {
    parse_tensors(dir, parse_meta(dir, text)?, tensors)
}

fn parse_meta(dir: &Path, text: &str) -> Result<CatalogMeta, String> {
    let meta: CatalogMeta = serde_json::from_str(text).map_err(|e| {
        err(
            dir,
            format!("{META_FILE} is not a catalog description: {e}"),
        )
    })?;
    if meta.format != CATALOG_FORMAT {
        return Err(err(
            dir,
            format!(
                "format {} (this server reads format {CATALOG_FORMAT}); rebuild it",
                meta.format
            ),
        ));
    }
    Ok(meta)
}

/// The tensors' shapes, values and names against the description.
fn parse_tensors(dir: &Path, meta: CatalogMeta, tensors: &[u8]) -> Result<CatalogData, String> {
    let named =
        safetensors_tensors(tensors).map_err(|e| err(dir, format!("{TENSOR_FILE}: {e}")))?;
    let rows = i64::try_from(meta.ids.len()).map_err(|e| err(dir, e))?;
    let dim = i64::try_from(meta.dim).map_err(|e| err(dir, e))?;
    if rows == 0 || dim == 0 {
        return Err(err(dir, "has no entries or dimension 0"));
    }
    let mut embeddings = None;
    let mut reverse = BTreeMap::new();
    for (name, t) in named {
        if t.size() != [rows, dim] {
            return Err(err(
                dir,
                format!(
                    "tensor '{name}' has shape {:?}, expected [{rows}, {dim}]",
                    t.size()
                ),
            ));
        }
        let v = to_vec(&t).map_err(|e| err(dir, format!("tensor '{name}': {e}")))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(err(
                dir,
                format!("tensor '{name}' row {} is not finite", i / meta.dim.max(1)),
            ));
        }
        if name == "embeddings" {
            embeddings = Some(v);
        } else if let Some(m) = name.strip_prefix("reverse.") {
            reverse.insert(m.to_owned(), v);
        } else {
            return Err(err(dir, format!("unexpected tensor '{name}'")));
        }
    }
    let embeddings = embeddings.ok_or_else(|| err(dir, "no 'embeddings' tensor"))?;
    for m in meta.reverse.keys() {
        if !reverse.contains_key(m) {
            return Err(err(dir, format!("no 'reverse.{m}' tensor")));
        }
    }
    Ok(CatalogData {
        meta,
        embeddings,
        reverse,
    })
}

/// Each catalog directory's name and what reading it gave.
pub type ReadCatalogs = Vec<(String, Result<CatalogData, String>)>;

/// Every catalog directory (a directory holding `catalog.json`) under `root`, by name, each
/// read or with the reason it could not be. An empty `root` path means no catalogs.
pub fn read_all(root: &Path) -> Result<ReadCatalogs, String> {
    if root.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(root).map_err(|e| {
        format!(
            "catalogs: cannot read the directory {}: {e}",
            root.display()
        )
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(META_FILE).is_file())
        .collect();
    dirs.sort();
    Ok(dirs
        .into_iter()
        .map(|d| {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, read(&d))
        })
        .collect())
}

/// Whether `c` was built for the served model `name` with `fingerprint` and `dim`.
pub fn check_for_model(
    c: &CatalogData,
    name: &str,
    fingerprint: &str,
    dim: usize,
) -> Result<(), String> {
    let m = &c.meta;
    if m.model != name {
        return Err(format!(
            "catalog '{}' was built for model '{}', not '{name}'",
            m.name, m.model
        ));
    }
    if m.model_fingerprint != fingerprint {
        return Err(format!(
            "catalog '{}' was built for another version of model '{name}' ({}; served: {fingerprint}); rebuild it",
            m.name, m.model_fingerprint
        ));
    }
    if m.dim != dim {
        return Err(format!(
            "catalog '{}' has dimension {}, the model {dim}",
            m.name, m.dim
        ));
    }
    Ok(())
}

/// What `diffgap catalog build` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// Model directory the catalog is for (its name and fingerprint are recorded; the server
    /// refuses the catalog for any other model or version).
    #[arg(long)]
    pub model: PathBuf,
    /// Embeddings file (.safetensors or .npz): a paired file or a single-modality one. Rows
    /// that share a `group` are one entry (the first row of the group).
    #[arg(
        long,
        required_unless_present = "audio_dir",
        conflicts_with = "audio_dir"
    )]
    pub pairs: Option<PathBuf>,
    /// Instead of --pairs: a folder of audio files (WAV, FLAC, OGG/Vorbis, MP3), embedded with
    /// the model's own encoders; each entry's id is its path relative to the folder, whose
    /// absolute path is recorded (the server plays the files from there).
    #[arg(long)]
    pub audio_dir: Option<PathBuf>,
    /// Modality of the entries (a tensor of that name in the file), e.g. audio.
    #[arg(long)]
    pub modality: String,
    /// Output directory; its name is the catalog's name (e.g. catalogs/sounds).
    #[arg(long)]
    pub out: PathBuf,
    /// Ids of the entries, one a line, in entry order. Default: the group id, or the row
    /// index when the file has no groups.
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Seed of the reverse bridge; a Rank with the same seed (default 0) ranks the catalog
    /// exactly as it would rank the same candidates inline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// auto, cpu or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: crate::device::DeviceChoice,
}

/// Builds a catalog directory; returns its description.
pub fn build(args: &BuildArgs) -> anyhow::Result<CatalogMeta> {
    use anyhow::{bail, Context};
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let model = artifact::load(&args.model, device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let (ids, emb, source) = match (&args.pairs, &args.audio_dir) {
        (_, Some(dir)) => {
            let (ids, emb) = crate::encoders::folder::embed_audio_folder(&args.model, dir, device)?;
            if args.ids.is_some() {
                bail!("--ids goes with --pairs; an audio folder's ids are its file paths");
            }
            // The folder's fingerprint: every file's path and content hash.
            let mut listing = String::new();
            for id in &ids {
                listing += &format!("{id}\t{}\n", artifact::sha256_file(&dir.join(id))?);
            }
            let digest = format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(listing.as_bytes()))
            );
            // Recorded absolute: the server finds the entries' files there (the playground).
            let dir = dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()))?;
            (ids, emb, (dir, digest))
        }
        (Some(pairs), None) => {
            let (ids, emb, fp) = entries_of_pairs(pairs, &args.modality, args.ids.as_deref())?;
            (ids, emb, (pairs.clone(), fp))
        }
        (None, None) => bail!("give --pairs or --audio-dir"),
    };
    let emb =
        crate::diffusion::normalize::l2_normalize(&emb.to_kind(Kind::Float).to_device(device));
    let mut named = vec![("embeddings".to_owned(), emb.shallow_clone())];
    let mut reverse = BTreeMap::new();
    let d = model.card.defaults;
    let opts = SampleOptions {
        steps: d.rank_steps,
        guidance: d.guidance,
        samples: d.rank_samples,
    };
    for dir in &model.card.directions {
        if dir.condition != args.modality {
            continue;
        }
        let seeds: Vec<u64> = (0..ids.len()).map(|i| row_seed(args.seed, i + 1)).collect();
        let b = bridge_all(&model, &emb, &args.modality, &dir.target, &seeds, opts)?;
        named.push((format!("reverse.{}", dir.target), b));
        reverse.insert(
            dir.target.clone(),
            ReverseOptions {
                steps: opts.steps,
                guidance: opts.guidance,
                samples: opts.samples,
            },
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let tensors = args.out.join(TENSOR_FILE);
    write_named(&tensors, &named)?;
    let meta = CatalogMeta {
        format: CATALOG_FORMAT,
        name: args
            .out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        model: model.card.name.clone(),
        model_fingerprint: crate::service::types::fingerprint(&model.card),
        modality: args.modality.clone(),
        dim: model.dim().max(0) as usize,
        ids,
        seed: args.seed,
        reverse,
        source: source.0.display().to_string(),
        source_fingerprint: source.1,
        tensors_sha256: artifact::sha256_file(&tensors)?,
    };
    std::fs::write(
        args.out.join(META_FILE),
        serde_json::to_string_pretty(&meta)? + "\n",
    )?;
    Ok(meta)
}

/// One entry per group of a paired (or single-modality) file: (ids, embeddings [n, dim],
/// the file's fingerprint).
fn entries_of_pairs(
    path: &Path,
    modality: &str,
    ids_file: Option<&Path>,
) -> anyhow::Result<(Vec<String>, Tensor, String)> {
    use anyhow::{bail, Context};
    let set = PairedSet::load(path)?;
    let x = set.modality(modality)?;
    // One entry per group (a clip's audio repeats on each of its caption rows).
    let mut seen = std::collections::BTreeSet::new();
    let mut rows = Vec::new();
    for (i, g) in set.groups.iter().enumerate() {
        if seen.insert(*g) {
            rows.push(i as i64);
        }
    }
    let ids: Vec<String> = match ids_file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let ids: Vec<String> = text.lines().map(str::to_owned).collect();
            if ids.len() != rows.len() {
                bail!(
                    "{} has {} ids, the file has {} entries",
                    f.display(),
                    ids.len(),
                    rows.len()
                );
            }
            ids
        }
        None => rows
            .iter()
            .map(|&r| set.groups[r as usize].to_string())
            .collect(),
    };
    if ids.is_empty() {
        bail!("{} has no rows", path.display());
    }
    let emb = x.index_select(0, &Tensor::from_slice(&rows));
    Ok((ids, emb, set.fingerprint.clone()))
}

/// Bridges every row, in chunks of 1024 rows (each row's result depends only on its seed).
fn bridge_all(
    model: &DiffgapModel,
    x: &Tensor,
    from: &str,
    to: &str,
    seeds: &[u64],
    opts: SampleOptions,
) -> anyhow::Result<Tensor> {
    let n = x.size()[0];
    let mut out = Vec::new();
    for start in (0..n).step_by(1024) {
        let len = 1024.min(n - start);
        let s = &seeds[start as usize..(start + len) as usize];
        out.push(
            model
                .bridge(&x.narrow(0, start, len), from, to, s, opts)?
                .to_device(Device::Cpu),
        );
    }
    Ok(Tensor::cat(&out, 0))
}
