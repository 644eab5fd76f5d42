//! The evaluation report as Markdown tables, for the terminal and docs/results.

use std::fmt::Write as _;

use super::ladder::BASELINE_MODES;
use super::report::{EvalReport, MODES};

/// The tables as text: per direction the ladder (baselines, then DiffGAP's modes) with each
/// mode's cost per query, then the gap measures, then the generation measures.
pub fn render(report: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "data {} ({}), {} rows, {} items; steps {} (gap measures: {}), samples {}, guidance {}, seed {}; fusion: {}",
        report.data_file,
        short(&report.data_fingerprint),
        report.rows,
        report.items,
        report.options.steps,
        report.options.gap_steps,
        report.options.samples,
        report.options.guidance,
        report.options.seed,
        report.fusion_source
    );
    for d in &report.directions {
        let _ = write!(
            s,
            "\n{} -> {} ({} queries, {} candidates; fusion c/b/r = {:.1}/{:.1}/{:.1}",
            d.query,
            d.candidate,
            d.queries,
            d.candidates,
            d.fusion.contrastive,
            d.fusion.bridged,
            d.fusion.reverse
        );
        if let Some(h) = &d.hub_fusion {
            let w = &h.weights;
            let _ = write!(
                s,
                "; fused_hub c/b/r = {:.1}/{:.1}/{:.1}, beta {}, 5-fold CV objective {:.3} vs {:.3} contrastive-only",
                w.contrastive, w.bridged, w.reverse, h.beta, h.cv_objective, h.cv_objective_contrastive
            );
        }
        let _ = writeln!(s, ")");
        let key = crate::model::card::direction_key(&d.query, &d.candidate);
        if let Some(v) = report.validated_best.get(&key) {
            let _ = writeln!(
                s,
                "On the training run's validation split the best mode was {} (R@1 + mAP@10 {:.3}), the best baseline {} ({:.3}).",
                v.mode, v.objective, v.best_baseline, v.best_baseline_objective
            );
        }
        let _ = writeln!(
            s,
            "| kind | mode | R@1 | R@5 | R@10 | mAP@10 | median rank | us/query |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let rows = ["contrastive"]
            .iter()
            .chain(BASELINE_MODES.iter())
            .map(|m| ("baseline", *m))
            .chain(MODES.iter().skip(1).map(|m| ("DiffGAP", *m)));
        for (kind, mode) in rows {
            if let Some(m) = d.modes.get(mode) {
                let cost = d.cost_us.get(mode).map_or("".into(), |c| format!("{c:.1}"));
                let _ = writeln!(
                    s,
                    "| {kind} | {mode} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {cost} |",
                    m.r1, m.r5, m.r10, m.map10, m.median_rank
                );
            }
        }
    }
    let _ = writeln!(s, "\n| gap measure | before | after bridging |");
    let _ = writeln!(s, "|---|---|---|");
    for g in &report.gap {
        let dir = format!("{} -> {}", g.source, g.target);
        for (what, before, after) in [
            (
                "distance of means",
                g.mean_distance_before,
                g.mean_distance_after,
            ),
            ("Frechet distance", g.frechet_before, g.frechet_after),
            (
                "cosine to true partner",
                g.paired_cosine_before,
                g.paired_cosine_after,
            ),
        ] {
            let _ = writeln!(s, "| {dir}: {what} | {before:.4} | {after:.4} |");
        }
    }
    if !report.generation.is_empty() {
        let _ = writeln!(
            s,
            "\n| mapped set | method | distance of means | Frechet | Frechet (shrunk cov.) | cosine to partner | precision | recall | density | coverage |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for g in &report.generation {
            let p = &g.prdc;
            let _ = writeln!(
                s,
                "| {} -> {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {:.3} | {:.3} | {:.3} |",
                g.source,
                g.target,
                g.method,
                g.mean_distance,
                g.frechet,
                g.frechet_shrunk,
                g.paired_cosine,
                p.precision,
                p.recall,
                p.density,
                p.coverage
            );
        }
    }
    s
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(19)]
}
