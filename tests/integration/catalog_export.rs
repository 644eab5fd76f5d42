//! `diffgap catalog export` (the binary, as a user runs it): the export holds exactly the
//! catalog the server ranks with, and its description is enough to rank as the server's weighted
//! Rank modes do (the scores recomputed from the exported vectors against the real server's
//! Rank on the same catalog); bad input gets a clear error, never a panic.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use diffgap::device::DeviceChoice;
use diffgap::model::artifact;
use diffgap::service::proto::{BridgeItem, BridgeRequest, InfoRequest, RankMode, RankRequest};
use diffgap::service::request::catalog::{self, BuildArgs};
use diffgap::service::request::catalog_export::{ExportMeta, ENTRIES_FILE, EXPORT_META_FILE};
use support::{emb, serve_config, tiny_model, tiny_vector, TINY_DIM};

const CATALOG: &str = "sounds";

/// A catalog of the tiny model's audio, built once: `<tmp>/catalogs/sounds`.
fn catalog_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let pairs = support::synth_file(&dir, "catalog.safetensors", 40, TINY_DIM, 9);
        let out = dir.join("catalogs").join(CATALOG);
        catalog::build(&BuildArgs {
            model: tiny_model(),
            pairs: Some(pairs),
            audio_dir: None,
            modality: "audio".into(),
            out: out.clone(),
            ids: None,
            seed: 3,
            device: DeviceChoice::Cpu,
        })
        .expect("building the catalog");
        out
    })
    .clone()
}

/// Runs `diffgap catalog export`: (success, stdout + stderr).
fn export(catalog: &Path, model: &Path, out: &Path) -> (bool, String) {
    let o = support::diffgap_command()
        .args(["catalog", "export", "--catalog"])
        .arg(catalog)
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run diffgap");
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

/// One line of entries.jsonl.
#[derive(serde::Deserialize)]
struct Entry {
    id: String,
    index: usize,
    model_fingerprint: String,
    #[serde(flatten)]
    vectors: BTreeMap<String, Vec<f32>>,
}

fn read_export(dir: &Path) -> (ExportMeta, Vec<Entry>) {
    let meta = std::fs::read_to_string(dir.join(EXPORT_META_FILE)).expect("export.json");
    let meta: ExportMeta = serde_json::from_str(&meta).expect("an export description");
    let entries = std::fs::read_to_string(dir.join(ENTRIES_FILE)).expect("entries.jsonl");
    let entries = entries
        .lines()
        .map(|l| serde_json::from_str(l).expect("an entry line"))
        .collect();
    (meta, entries)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = dot(v, v).sqrt() as f32;
    v.iter().map(|x| x / n).collect()
}

#[test]
fn an_export_holds_the_catalog_the_server_reads() {
    let out = tempfile::tempdir().expect("tempdir");
    let (ok, text) = export(&catalog_dir(), &tiny_model(), out.path());
    assert!(ok, "{text}");
    assert!(text.contains("40 entries"), "{text}");
    let (meta, entries) = read_export(out.path());
    let data = catalog::read(&catalog_dir()).expect("read the catalog");
    let card = artifact::read_card(&tiny_model()).expect("card");
    let fingerprint = diffgap::service::types::fingerprint(&card);

    assert_eq!(
        (meta.catalog.as_str(), meta.modality.as_str()),
        (CATALOG, "audio")
    );
    assert_eq!((meta.model.as_str(), meta.dim), ("model", TINY_DIM));
    assert_eq!(meta.model_fingerprint, fingerprint);
    assert_eq!(meta.entries, data.entries());
    assert_eq!(meta.seed, 3);
    let plan = &meta.queries["text"];
    assert_eq!(plan.reverse_vector.as_deref(), Some("reverse_text"));
    assert_eq!(plan.fused, card.fusion.get("text->audio").copied());
    let bridge = plan.bridge.expect("text is bridged into audio");
    let d = card.defaults;
    assert_eq!(
        (bridge.steps, bridge.guidance, bridge.samples),
        (d.rank_steps, d.guidance, d.rank_samples)
    );
    assert_eq!(bridge.seed, diffgap::model::row_seed(3, 0));

    assert_eq!(entries.len(), data.entries());
    let reverse = &data.reverse["text"];
    for (i, e) in entries.iter().enumerate() {
        assert_eq!((e.index, &e.id), (i, &data.meta.ids[i]));
        assert_eq!(e.model_fingerprint, fingerprint);
        let row = i * TINY_DIM..(i + 1) * TINY_DIM;
        assert_eq!(e.vectors.len(), 2, "raw and reverse_text");
        assert_eq!(e.vectors["raw"], data.embeddings[row.clone()], "entry {i}");
        assert_eq!(e.vectors["reverse_text"], reverse[row], "entry {i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exported_vectors_rank_as_the_server_ranks_the_catalog() {
    let out = tempfile::tempdir().expect("tempdir");
    let (ok, text) = export(&catalog_dir(), &tiny_model(), out.path());
    assert!(ok, "{text}");
    let (meta, entries) = read_export(out.path());
    let mut cfg = serve_config(&tiny_model());
    cfg.catalogs = catalog_dir().parent().expect("catalogs").to_path_buf();
    let (addr, _) = support::serve_forever(cfg);
    let mut c = support::client(addr).await;
    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    assert_eq!(info.models[0].fingerprint, meta.model_fingerprint);

    let plan = &meta.queries["text"];
    let bridge = plan.bridge.expect("bridge options");
    let fused = plan.fused.expect("fused weights");
    for seed in [41, 42] {
        let q = tiny_vector(seed);
        // B(q) as the export says Rank makes it.
        let bq = c
            .bridge(BridgeRequest {
                model: String::new(),
                items: vec![BridgeItem {
                    source_modality: "text".into(),
                    target_modality: "audio".into(),
                    embedding: emb(q.clone()),
                    steps: Some(bridge.steps as u32),
                    guidance: Some(bridge.guidance),
                    samples: Some(bridge.samples as u32),
                    seed: Some(bridge.seed),
                    raw: None,
                }],
            })
            .await
            .expect("bridge")
            .into_inner()
            .embeddings[0]
            .values
            .clone();
        let (q, bq) = (unit(&q), unit(&bq));
        for (mode, w) in [
            (RankMode::Contrastive, [1.0, 0.0, 0.0]),
            (RankMode::Bridged, [0.0, 1.0, 0.0]),
            (RankMode::Reverse, [0.0, 0.0, 1.0]),
            (
                RankMode::Fused,
                [fused.contrastive, fused.bridged, fused.reverse],
            ),
        ] {
            let mut local: Vec<(f64, usize)> = entries
                .iter()
                .map(|e| {
                    let terms = [
                        dot(&q, &e.vectors["raw"]),
                        dot(&bq, &e.vectors["raw"]),
                        dot(&q, &e.vectors["reverse_text"]),
                    ];
                    (w.iter().zip(terms).map(|(w, t)| w * t).sum(), e.index)
                })
                .collect();
            local.sort_by(|a, b| b.0.total_cmp(&a.0));
            let got = c
                .rank(RankRequest {
                    query: emb(tiny_vector(seed)),
                    query_modality: "text".into(),
                    catalog: CATALOG.into(),
                    mode: mode as i32,
                    top_k: 8,
                    seed: Some(meta.seed),
                    ..Default::default()
                })
                .await
                .expect("rank")
                .into_inner()
                .results;
            assert_eq!(got.len(), 8, "{mode:?}");
            for (r, (score, i)) in got.iter().zip(&local) {
                assert_eq!(r.id, entries[*i].id, "{mode:?} query {seed}");
                assert!(
                    (f64::from(r.score) - score).abs() < 1e-5,
                    "{mode:?} query {seed}: {} vs {score}",
                    r.score
                );
            }
        }
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let refused = |catalog: &Path, model: &Path, want: &str| {
        let (ok, text) = export(catalog, model, &out);
        assert!(!ok, "exported: {text}");
        assert!(text.contains(want), "expected {want:?} in: {text}");
        assert!(!text.contains("panicked"), "{text}");
    };
    refused(
        &tmp.path().join("nowhere"),
        &tiny_model(),
        "cannot read catalog.json",
    );
    refused(
        &catalog_dir(),
        &tmp.path().join("nomodel"),
        "reading the model",
    );

    // The same model under another name: the server would refuse the catalog, and so does export.
    let other = tmp.path().join("other");
    support::copy_dir(&tiny_model(), &other);
    refused(
        &catalog_dir(),
        &other,
        "was built for model 'model', not 'other'",
    );

    // A corrupt tensor file.
    let corrupt = tmp.path().join("corrupt");
    support::copy_dir(&catalog_dir(), &corrupt);
    let tensors = corrupt.join(catalog::TENSOR_FILE);
    let mut bytes = std::fs::read(&tensors).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&tensors, bytes).expect("write");
    refused(&corrupt, &tiny_model(), "does not match the sha256");
    std::fs::write(corrupt.join(catalog::META_FILE), "{not json").expect("write");
    refused(&corrupt, &tiny_model(), "is not a catalog description");
    assert!(
        !out.join(EXPORT_META_FILE).exists(),
        "no description of a failed export"
    );
}
