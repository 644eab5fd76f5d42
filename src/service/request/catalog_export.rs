//! `diffgap catalog export`: a catalog's entries in a form any vector database ingests, so that
//! a catalog too large to keep in the server's memory can live in one (Qdrant, pgvector, ...).
//!
//! The export is a directory of two files:
//!
//! - `entries.jsonl`: one JSON object a line, in entry order: `id` (the catalog's id), `index`
//!   (its row, a natural integer point id), `model_fingerprint`, and its named vectors: `raw`
//!   (the entry's L2-normalised embedding, what the contrastive and bridged terms compare with)
//!   and `reverse_<m>` for every query modality `m` the catalog was reverse-bridged into (the
//!   entry bridged into `m`, what the reverse term compares with). Each f32 is printed so that
//!   it reads back as the same f32.
//! - `export.json`: the [`ExportMeta`], written last (an export without it is incomplete): the
//!   model's name, fingerprint and dimension, and per query modality how Rank scores the
//!   catalog: the fused weights and the Bridge options and seed that give the query's bridged
//!   vector exactly as Rank makes it. With those, the weighted Rank modes (contrastive,
//!   bridged, reverse, fused) are sums of cosine searches over the two named vectors.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::model::card::{direction_key, FusionWeights};
use crate::model::{artifact, row_seed};
use crate::service::request::catalog;

/// Bumped whenever a field changes meaning.
pub const EXPORT_FORMAT: u32 = 1;
/// The export's description.
pub const EXPORT_META_FILE: &str = "export.json";
/// The entries, one JSON object a line.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// The named vector of the entries' own embeddings.
pub const RAW_VECTOR: &str = "raw";

/// The named vector of the entries bridged into the query modality `m`.
pub fn reverse_vector(m: &str) -> String {
    format!("reverse_{m}")
}

/// What `diffgap catalog export` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The catalog directory (as `diffgap catalog build --out` wrote it).
    #[arg(long)]
    pub catalog: PathBuf,
    /// The model directory the catalog was built for (checked by name, fingerprint and
    /// dimension, as the server checks it): its fusion weights and ranking defaults go into
    /// the export.
    #[arg(long)]
    pub model: PathBuf,
    /// Output directory; gets entries.jsonl and export.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// `export.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportMeta {
    pub format: u32,
    /// The catalog's name (its directory's), its modality and entries.
    pub catalog: String,
    pub modality: String,
    pub entries: usize,
    /// The model the vectors belong to; a point whose fingerprint differs from the served
    /// model's is stale.
    pub model: String,
    pub model_fingerprint: String,
    pub dim: usize,
    /// Every named vector compares by cosine (they are L2-normalised).
    pub distance: String,
    /// Named vector -> the modality whose space it lives in.
    pub vectors: BTreeMap<String, String>,
    /// Query modality -> how Rank scores a query of it against this catalog.
    pub queries: BTreeMap<String, QueryPlan>,
    /// The catalog's seed: a Rank with this seed ranks it as it would rank the same candidates
    /// inline.
    pub seed: u64,
    /// Where the entries came from, and the catalog's own fingerprints.
    pub source: String,
    pub source_fingerprint: String,
    pub catalog_tensors_sha256: String,
}

/// How Rank scores a query of one modality `q` against the catalog: with `B(q)` the query's
/// bridged vector, contrastive = cos(q, raw), bridged = cos(B(q), raw), reverse =
/// cos(q, reverse_<q>), and the fused mode their sum weighted by `fused`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryPlan {
    /// The named vector the reverse term searches (absent: the catalog was not reverse-bridged
    /// into this modality, and modes that weigh the term are refused).
    pub reverse_vector: Option<String>,
    /// The fused mode's weights for this direction (absent: the model has none).
    pub fused: Option<FusionWeights>,
    /// The Bridge item options that make `B(q)` as a Rank with `seed` = the catalog's seed
    /// makes it (absent: the model does not bridge this modality into the catalog's).
    pub bridge: Option<BridgeOptions>,
}

/// A Bridge item's sampling options and seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BridgeOptions {
    pub steps: usize,
    pub guidance: f32,
    pub samples: usize,
    pub seed: u64,
}

/// One line of `entries.jsonl`, borrowed from the catalog.
#[derive(Serialize)]
struct EntryLine<'a> {
    id: &'a str,
    index: usize,
    model_fingerprint: &'a str,
    #[serde(flatten)]
    vectors: BTreeMap<&'a str, &'a [f32]>,
}

/// Writes the export of `args.catalog` into `args.out`; returns its description.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExportMeta> {
    let card = artifact::read_card(&args.model)
        .with_context(|| format!("reading the model {}", args.model.display()))?;
    // The server names a model by its directory, and so does the catalog's check.
    let model_name = dir_name(&args.model).unwrap_or_else(|| card.name.clone());
    let fingerprint = crate::service::types::fingerprint(&card);
    let dim = usize::try_from(card.space.dim).context("the model's dimension")?;
    let data = catalog::read(&args.catalog).map_err(anyhow::Error::msg)?;
    catalog::check_for_model(&data, &model_name, &fingerprint, dim).map_err(anyhow::Error::msg)?;
    let m = &data.meta;

    let mut vectors = BTreeMap::from([(RAW_VECTOR.to_owned(), m.modality.clone())]);
    let mut queries = BTreeMap::new();
    let d = card.defaults;
    let bridged_from = card.directions.iter().filter(|x| x.target == m.modality);
    for q in bridged_from.map(|x| &x.condition).chain(m.reverse.keys()) {
        let plan = QueryPlan {
            reverse_vector: m.reverse.contains_key(q).then(|| reverse_vector(q)),
            fused: card.fusion.get(&direction_key(q, &m.modality)).copied(),
            bridge: card.direction_index(q, &m.modality).map(|_| BridgeOptions {
                steps: d.rank_steps,
                guidance: d.guidance,
                samples: d.rank_samples,
                seed: row_seed(m.seed, 0),
            }),
        };
        if let Some(v) = &plan.reverse_vector {
            vectors.insert(v.clone(), q.clone());
        }
        queries.insert(q.clone(), plan);
    }

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // An earlier export's description goes first: until the new one is written, the
    // directory reads as incomplete.
    let meta_path = args.out.join(EXPORT_META_FILE);
    if meta_path.exists() {
        std::fs::remove_file(&meta_path)
            .with_context(|| format!("removing {}", meta_path.display()))?;
    }
    write_entries(&args.out.join(ENTRIES_FILE), &data, &fingerprint)?;
    let meta = ExportMeta {
        format: EXPORT_FORMAT,
        catalog: m.name.clone(),
        modality: m.modality.clone(),
        entries: data.entries(),
        model: model_name,
        model_fingerprint: fingerprint,
        dim,
        distance: "cosine".into(),
        vectors,
        queries,
        seed: m.seed,
        source: m.source.clone(),
        source_fingerprint: m.source_fingerprint.clone(),
        catalog_tensors_sha256: m.tensors_sha256.clone(),
    };
    std::fs::write(&meta_path, serde_json::to_string_pretty(&meta)? + "\n")
        .with_context(|| format!("writing {}", meta_path.display()))?;
    Ok(meta)
}

fn dir_name(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    Some(dir.file_name()?.to_string_lossy().into_owned())
}

fn write_entries<'a>(
    path: &Path,
    data: &'a catalog::CatalogData,
    fingerprint: &str,
) -> anyhow::Result<()> {
    let dim = data.meta.dim;
    let names: Vec<String> = data.reverse.keys().map(|m| reverse_vector(m)).collect();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (index, id) in data.meta.ids.iter().enumerate() {
        // catalog::read checked every tensor's shape against the ids and the dimension.
        let row = |v: &'a [f32]| {
            v.get(index * dim..(index + 1) * dim)
                .with_context(|| format!("entry {index} is past the catalog's tensors"))
        };
        let mut vectors = BTreeMap::from([(RAW_VECTOR, row(&data.embeddings)?)]);
        for (name, v) in names.iter().zip(data.reverse.values()) {
            vectors.insert(name.as_str(), row(v)?);
        }
        let line = EntryLine {
            id,
            index,
            model_fingerprint: fingerprint,
            vectors,
        };
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}
