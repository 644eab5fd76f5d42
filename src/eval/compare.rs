//! `diffgap compare`: several evaluation reports (`diffgap eval --json`) side by side, one row
//! per run: the raw score, the best baseline, DiffGAP's modes and the bridged vectors'
//! generation measures. For ablations (e.g. `scripts/ablation-contrastive.sh`).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

use super::ladder::BASELINE_MODES;
use super::report::{EvalReport, MODES};
use super::retrieval::RetrievalMetrics;

#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// A run as LABEL=PATH to its `diffgap eval --json` file; give one per run.
    #[arg(long = "run", required = true)]
    pub runs: Vec<String>,
}

fn load(spec: &str) -> Result<(String, EvalReport)> {
    let (label, path) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--run takes LABEL=PATH, got '{spec}'"))?;
    let path = PathBuf::from(path);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a `diffgap eval --json` report", path.display()))?;
    Ok((label.to_string(), report))
}

/// The best of `modes` present in `m` by R@1 + mAP@10, with its name.
fn best<'a>(
    m: &'a std::collections::BTreeMap<String, RetrievalMetrics>,
    modes: &[&'a str],
) -> Option<(&'a str, &'a RetrievalMetrics)> {
    modes
        .iter()
        .filter_map(|name| m.get(*name).map(|r| (*name, r)))
        .max_by(|a, b| a.1.objective().total_cmp(&b.1.objective()))
}

pub fn compare(args: &CompareArgs) -> Result<String> {
    let runs = args
        .runs
        .iter()
        .map(|s| load(s))
        .collect::<Result<Vec<_>>>()?;
    let mut s = String::new();
    let directions: Vec<(String, String)> = runs
        .first()
        .map(|(_, r)| {
            r.directions
                .iter()
                .map(|d| (d.query.clone(), d.candidate.clone()))
                .collect()
        })
        .unwrap_or_default();
    let baselines: Vec<&str> = ["contrastive"].into_iter().chain(BASELINE_MODES).collect();
    for (q, c) in directions {
        let _ = writeln!(
            s,
            "\n{q} -> {c}: R@1 / mAP@10; the bridged vectors' shrunk Frechet distance and coverage"
        );
        let _ = writeln!(s, "| run | contrastive | best baseline | bridged | reverse | fused | fused_hub | best DiffGAP | Frechet (shrunk) | coverage |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for (label, rep) in &runs {
            let Some(d) = rep
                .directions
                .iter()
                .find(|d| d.query == q && d.candidate == c)
            else {
                continue;
            };
            let cell = |mode: &str| {
                d.modes
                    .get(mode)
                    .map_or("".to_string(), |m| format!("{:.3} / {:.3}", m.r1, m.map10))
            };
            let named = |b: Option<(&str, &RetrievalMetrics)>| {
                b.map_or("".to_string(), |(n, m)| {
                    format!("{n} {:.3} / {:.3}", m.r1, m.map10)
                })
            };
            let generation = rep
                .generation
                .iter()
                .find(|g| g.source == q && g.target == c && g.method == "bridged");
            let (fd, cov) = generation.map_or((String::new(), String::new()), |g| {
                (
                    format!("{:.4}", g.frechet_shrunk),
                    format!("{:.3}", g.prdc.coverage),
                )
            });
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {fd} | {cov} |",
                cell("contrastive"),
                named(best(&d.modes, &baselines)),
                cell("bridged"),
                cell("reverse"),
                cell("fused"),
                cell("fused_hub"),
                named(best(&d.modes, &MODES[1..])),
            );
        }
    }
    Ok(s)
}
