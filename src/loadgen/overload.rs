//! The overload goals (issue 17, item 1): at ten times the saturating concurrency the service
//! keeps at least 0.8 of its saturation throughput, the accepted calls' p99 stays within twice
//! the saturating level's, every call it cannot take is refused with RESOURCE_EXHAUSTED (no
//! other failure) within 10 ms at p99, and its resident memory stays within 1.2 times the
//! saturating level's.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::summary::{LevelSummary, Summary};

/// One goal: what was measured against its bound.
struct Goal {
    name: &'static str,
    value: Option<f64>,
    bound: &'static str,
    met: bool,
}

/// The goal table of `summary`'s `conc saturating` and `conc overloaded` levels.
pub fn goals(summary: &Summary, saturating: usize, overloaded: usize) -> Result<String> {
    let level = |c: usize| {
        summary
            .closed
            .iter()
            .rev()
            .find(|l| l.load == format!("conc {c}"))
            .with_context(|| format!("the summary has no level at concurrency {c}"))
    };
    let (base, over) = (level(saturating)?, level(overloaded)?);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n| level | accepted req/s | p50 / p99 ms | refused | refusal p50 / p99 ms | other failures | server RSS MiB |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    for l in [base, over] {
        let _ = writeln!(o, "{}", level_row(l));
    }
    let _ = writeln!(o, "\n| goal | measured | bound | met |\n|---|---|---|---|");
    for g in measured(base, over) {
        let value = g
            .value
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let met = if g.met { "yes" } else { "no" };
        let _ = writeln!(o, "| {} | {value} | {} | {met} |", g.name, g.bound);
    }
    Ok(o)
}

fn level_row(l: &LevelSummary) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let other = match l.other_errors.is_empty() {
        true => "0".to_owned(),
        false => format!("{:?}", l.other_errors),
    };
    format!(
        "| {} | {:.1} | {:.0} / {:.0} | {} | {} / {} | {other} | {} |",
        l.load,
        l.requests_per_s,
        l.p50_ms,
        l.p99_ms,
        l.refused,
        opt(l.refusal_p50_ms),
        opt(l.refusal_p99_ms),
        opt(l.server_rss_mib)
    )
}

fn measured(base: &LevelSummary, over: &LevelSummary) -> Vec<Goal> {
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let goodput = ratio(over.requests_per_s, base.requests_per_s);
    let p99 = ratio(over.p99_ms, base.p99_ms);
    let rss = over
        .server_rss_mib
        .zip(base.server_rss_mib)
        .and_then(|(o, b)| ratio(o, b));
    let other: u64 = over.other_errors.values().sum();
    vec![
        Goal {
            name: "accepted throughput / saturation",
            value: goodput,
            bound: ">= 0.8",
            met: goodput.is_some_and(|g| g >= 0.8),
        },
        Goal {
            name: "accepted p99 / saturating p99",
            value: p99,
            bound: "<= 2",
            met: p99.is_some_and(|r| r <= 2.0),
        },
        Goal {
            name: "refusal p99 (ms)",
            value: over.refusal_p99_ms,
            bound: "<= 10",
            // No refusal at all also meets it.
            met: over.refusal_p99_ms.is_none_or(|ms| ms <= 10.0),
        },
        Goal {
            name: "failures other than RESOURCE_EXHAUSTED",
            value: Some(other as f64),
            bound: "0",
            met: other == 0,
        },
        Goal {
            name: "server RSS / saturating level's",
            value: rss,
            bound: "<= 1.2",
            met: rss.is_some_and(|r| r <= 1.2),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(c: usize, rps: f64, p99: f64, rss: f64) -> LevelSummary {
        LevelSummary {
            load: format!("conc {c}"),
            requests_per_s: rps,
            p99_ms: p99,
            server_rss_mib: Some(rss),
            ..LevelSummary::default()
        }
    }

    fn summary(closed: Vec<LevelSummary>) -> Summary {
        Summary {
            label: String::new(),
            steps: vec![10],
            items: 1,
            samples: 1,
            closed,
            open_rate: None,
            open: None,
            saturation_items_per_s: 0.0,
            in_process: None,
            ratio_rounds: vec![],
            throughput_ratio: None,
            p99_over_twice_batch: None,
        }
    }

    #[test]
    fn each_goal_is_judged_against_its_bound() {
        let mut over = level(2560, 320.0, 1500.0, 600.0);
        over.refused = 1000;
        over.refusal_p99_ms = Some(4.0);
        let s = summary(vec![level(256, 400.0, 1000.0, 550.0), over.clone()]);
        let table = goals(&s, 256, 2560).expect("levels");
        assert!(table.contains("| accepted throughput / saturation | 0.800 | >= 0.8 | yes |"));
        assert!(table.contains("| accepted p99 / saturating p99 | 1.500 | <= 2 | yes |"));
        assert!(table.contains("| refusal p99 (ms) | 4.000 | <= 10 | yes |"));
        assert!(table.contains("| server RSS / saturating level's | 1.091 | <= 1.2 | yes |"));
        over.other_errors.insert("Unavailable".into(), 3);
        over.requests_per_s = 200.0;
        let s = summary(vec![level(256, 400.0, 1000.0, 550.0), over]);
        let table = goals(&s, 256, 2560).expect("levels");
        assert!(table.contains("| accepted throughput / saturation | 0.500 | >= 0.8 | no |"));
        assert!(table.contains("| failures other than RESOURCE_EXHAUSTED | 3.000 | 0 | no |"));
        assert!(goals(&s, 256, 512).is_err());
    }
}
