//! `diffgap corpus build` on the two small sources (freedesktop's event sounds, decoded; the GM
//! SoundFont, rendered): fetched on demand by scripts/build-corpus.sh (apt-get download, cached
//! under .cache/debs), then built twice: the split is by identity, the output is byte-identical
//! (compared by hash, one build on disk at a time) and the second run of the same build is a
//! no-op.

use crate::support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use support::{diffgap_command, root};

fn fetch() {
    let status = Command::new("bash")
        .arg(root().join("scripts/build-corpus.sh"))
        .args(["--fetch-only", "freedesktop,timgm6mb"])
        // The script lists the packages with the binary under test.
        .env("DIFFGAP_BIN", env!("CARGO_BIN_EXE_diffgap"))
        .current_dir(root())
        .status()
        .expect("run scripts/build-corpus.sh");
    assert!(status.success(), "fetching the packages failed");
}

fn build(out: &Path, extra: &[&str]) -> String {
    let output = diffgap_command()
        .args(["corpus", "build", "--only", "freedesktop,timgm6mb", "--out"])
        .arg(out)
        .args(extra)
        .current_dir(root())
        .output()
        .expect("run diffgap corpus build");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// (relative path, sha256) of every file under `dir`, sorted: the two builds are compared by
/// hash so that the first can be deleted before the second is written (each is 1.1 GB).
fn file_hashes(dir: &Path) -> Vec<(String, String)> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
                let hash = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
                out.push((rel, hash));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn corpus_build_on_the_small_sources() {
    fetch();
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let first = build(&a, &["--threads", "2"]);
    assert!(first.contains("corpus built"), "{first}");
    assert!(
        first.contains("freedesktop") && first.contains("timgm6mb"),
        "{first}"
    );
    assert!(
        first.contains("alias (symbolic link): freedesktop 8"),
        "{first}"
    );
    let again = build(&a, &[]);
    assert!(again.contains("up to date"), "{again}");
    let manifest = std::fs::read_to_string(a.join("manifest.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut split_of: HashMap<String, String> = HashMap::new();
    let mut per_source: HashMap<String, usize> = HashMap::new();
    for r in &records {
        let id = r["identity"].as_str().unwrap().to_string();
        let split = r["split"].as_str().unwrap().to_string();
        let prev = split_of.entry(id.clone()).or_insert(split.clone());
        assert_eq!(*prev, split, "{id} is in two splits");
        *per_source
            .entry(r["source"].as_str().unwrap().into())
            .or_default() += 1;
        assert!(!r["caption"].as_str().unwrap().is_empty());
        assert!(!r["licence"].as_str().unwrap().is_empty());
        let wav = hound::WavReader::open(a.join(r["file"].as_str().unwrap())).unwrap();
        let spec = wav.spec();
        assert_eq!((spec.channels, spec.sample_rate), (1, 44_100));
        assert_eq!(spec.sample_format, hound::SampleFormat::Float);
        let samples: Vec<f32> = wav.into_samples::<f32>().map(|s| s.unwrap()).collect();
        assert_eq!(samples.len(), r["samples"].as_u64().unwrap() as usize);
        let peak = samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((peak - 1.0).abs() < 1e-5, "{}: peak {peak}", r["clip_id"]);
    }
    // 128 GM presets x 40 renders + 47 drum keys x 4, less the renders left out as silent or
    // empty (the very low and high keys of a few presets, counted in the summary); 35
    // freedesktop files less 8 aliases and the one file debian/copyright gives no licence.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap();
    let dropped: u64 = ["silent", "empty (under 50 ms of sound)"]
        .iter()
        .filter_map(|reason| summary["dropped"][reason]["timgm6mb"].as_u64())
        .sum();
    assert_eq!(per_source["timgm6mb"] as u64 + dropped, 128 * 40 + 47 * 4);
    assert!(dropped < 50, "{dropped} renders left out");
    assert_eq!(per_source["freedesktop"], 26);
    let cello: Vec<_> = records
        .iter()
        .filter(|r| r["identity"] == "gm:melodic/042")
        .collect();
    assert_eq!(cello.len(), 40);
    assert_eq!(cello[0]["caption"], "the sound of a Cello");
    let splits: std::collections::HashSet<_> = split_of.values().collect();
    assert_eq!(splits.len(), 3, "train, val and test all occur");

    let first_hashes = file_hashes(&a);
    std::fs::remove_dir_all(&a).unwrap();
    build(&b, &["--threads", "1", "--force"]);
    assert_eq!(first_hashes, file_hashes(&b), "two builds differ");
}
