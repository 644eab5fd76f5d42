//! The `diffgap` subcommands the scripts call instead of carrying their own logic:
//! `corpus packages` (scripts/build-corpus.sh) and `loadgen-summary` (scripts/bench-service.sh),
//! run as the scripts run them.

use crate::support;

use std::path::Path;

use diffgap::loadgen::{LevelSummary, Summary};

fn diffgap(args: &[&str]) -> (bool, String, String) {
    let out = support::diffgap_command()
        .args(args)
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running diffgap");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn corpus_packages_lists_the_pinned_packages_for_the_fetch_loop() {
    let (ok, all, err) = diffgap(&["corpus", "packages"]);
    assert!(ok, "{err}");
    let sources: Vec<&str> = all.lines().filter_map(|l| l.split(' ').next()).collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/corpus-sources.toml");
    let (file, _) = diffgap::corpus::sources::SourcesFile::load(&path).expect("sources file");
    let pinned: Vec<&str> = file.packages.iter().map(|p| p.source.as_str()).collect();
    assert_eq!(sources, pinned, "one line per package, in the file's order");
    assert_eq!(
        &sources[..4],
        ["tuxpaint", "wesnoth", "freedesktop", "timgm6mb"]
    );
    for line in all.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 5, "{line}");
        assert!(fields[3].ends_with(".deb"), "{line}");
        assert_eq!(fields[4].len(), 64, "{line}");
    }
    let (ok, some, err) = diffgap(&["corpus", "packages", "--only", "timgm6mb,freedesktop"]);
    assert!(ok, "{err}");
    // In the file's order, whatever the order asked.
    let wanted: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("freedesktop ") || l.starts_with("timgm6mb "))
        .collect();
    assert_eq!(some.lines().collect::<Vec<_>>(), wanted);
    let (ok, _, err) = diffgap(&["corpus", "packages", "--only", "tuxpaint,nope"]);
    assert!(!ok);
    assert!(err.contains("unknown source \"nope\""), "{err}");
}

fn level(load: &str, requests_per_s: f64, p99_ms: f64) -> LevelSummary {
    LevelSummary {
        load: load.into(),
        ok: 100,
        errors: 0,
        requests_per_s,
        items_per_s: requests_per_s,
        p50_ms: 5.0,
        p95_ms: 8.0,
        p99_ms,
        ..LevelSummary::default()
    }
}

fn write(path: &Path, closed: Vec<LevelSummary>, open: Option<LevelSummary>) {
    let s = Summary {
        label: "test".into(),
        steps: vec![10],
        items: 1,
        samples: 1,
        saturation_items_per_s: closed.iter().map(|r| r.items_per_s).fold(0.0, f64::max),
        closed,
        open_rate: open.as_ref().map(|_| 37.5),
        open,
        in_process: None,
        ratio_rounds: Vec::new(),
        throughput_ratio: Some(0.95),
        p99_over_twice_batch: Some(0.5),
    };
    std::fs::write(path, serde_json::to_string_pretty(&s).expect("json")).expect("written");
}

#[test]
fn loadgen_summary_prints_the_goal_tables_and_the_open_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (step, request) = (
        dir.path().join("step.json"),
        dir.path().join("request.json"),
    );
    write(
        &step,
        vec![level("conc 1", 20.0, 9.0), level("conc 64", 75.0, 40.0)],
        Some(level("38 rps", 37.4, 12.0)),
    );
    write(
        &request,
        vec![level("conc 1", 19.0, 9.5), level("conc 64", 70.0, 60.0)],
        Some(level("38 rps", 37.3, 24.0)),
    );
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let (ok, rate, err) = diffgap(&["loadgen-summary", "open-rate", &s(&step)]);
    assert!(ok, "{err}");
    assert_eq!(rate.trim().parse::<f64>().expect("a rate"), 37.5);
    let (ok, text, err) = diffgap(&[
        "loadgen-summary",
        "goals",
        "--step",
        &s(&step),
        "--request",
        &s(&request),
    ]);
    assert!(ok, "{err}");
    for line in [
        "| conc 64 | 75.0 | 5 / 8 / 40 | 70.0 | 5 / 8 / 60 |",
        "| open loop 38 rps | 37.4 | 5 / 8 / 12 | 37.3 | 5 / 8 / 24 |",
        "goal 1, saturation / in-process (>= 0.9): step 0.950, request 0.950",
        "goal 3, step vs request p99 at 38 rps (step < request): 12 ms vs 24 ms, ratio 0.500",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from\n{text}"
        );
    }

    // A run without an open loop has no rate to pass on; a file that is no summary is named.
    write(&step, vec![level("conc 1", 20.0, 9.0)], None);
    let (ok, _, err) = diffgap(&["loadgen-summary", "open-rate", &s(&step)]);
    assert!(!ok);
    assert!(err.contains("has no open loop"), "{err}");
    std::fs::write(&request, "{}").expect("written");
    let (ok, _, err) = diffgap(&["loadgen-summary", "open-rate", &s(&request)]);
    assert!(!ok);
    assert!(
        err.contains("is not a `diffgap loadgen --summary-json` summary"),
        "{err}"
    );
}
