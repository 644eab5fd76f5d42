//! The tables `diffgap loadgen` prints as it runs, and `diffgap loadgen-summary`'s tables of
//! the service benchmark from its runs' summaries.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::summary::{InProcess, LevelSummary, Summary};

pub(super) fn header() {
    println!(
        "| {:>10} | {:>8} | {:>8} | {:>9} | {:>6} | {:>9} | {:>9} | {:>8} | {:>8} | {:>8} |",
        "load",
        "ok",
        "refused",
        "refusal99",
        "other",
        "req/s",
        "items/s",
        "p50 ms",
        "p95 ms",
        "p99 ms"
    );
    println!(
        "|{0:->12}|{0:->10}|{0:->10}|{0:->11}|{0:->8}|{0:->11}|{0:->11}|{0:->10}|{0:->10}|{0:->10}|",
        ""
    );
}

pub(super) fn row(r: &LevelSummary) {
    let refusal = r
        .refusal_p99_ms
        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2}"));
    let other: u64 = r.other_errors.values().sum();
    println!(
        "| {:>10} | {:>8} | {:>8} | {:>9} | {:>6} | {:>9.1} | {:>9.1} | {:>8.2} | {:>8.2} | {:>8.2} |",
        r.load,
        r.ok,
        r.refused,
        refusal,
        other,
        r.requests_per_s,
        r.items_per_s,
        r.p50_ms,
        r.p95_ms,
        r.p99_ms
    );
    if !r.other_errors.is_empty() {
        println!(
            "  failures other than RESOURCE_EXHAUSTED: {:?}",
            r.other_errors
        );
    }
}

/// `diffgap loadgen-summary ...`: the service benchmark's tables, from the `--summary-json`
/// files of its runs (`scripts/bench-service.sh`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LoadgenSummaryCommand {
    /// Step-level and request-level batching side by side: the loads, the in-process engine,
    /// the throughput rounds and the three goal ratios.
    Goals {
        /// The step-level run's summary.
        #[arg(long)]
        step: PathBuf,
        /// The request-level run's summary.
        #[arg(long)]
        request: PathBuf,
    },
    /// The overload goals of one run: its level at the saturating concurrency against its
    /// level at a multiple of it (`scripts/bench-overload.sh`).
    Overload {
        /// The run's summary.
        summary: PathBuf,
        /// The saturating concurrency (its level is `conc N`).
        #[arg(long)]
        saturating: usize,
        /// The overloading concurrency.
        #[arg(long)]
        overloaded: usize,
    },
    /// A run's open-loop rate in requests per second (to give the next run the same rate).
    OpenRate {
        /// The run's summary.
        summary: PathBuf,
    },
}

impl LoadgenSummaryCommand {
    pub fn run(&self) -> Result<()> {
        match self {
            Self::Goals { step, request } => {
                print!("{}", goals(&Summary::load(step)?, &Summary::load(request)?));
            }
            Self::Overload {
                summary,
                saturating,
                overloaded,
            } => {
                let s = Summary::load(summary)?;
                print!("{}", super::overload::goals(&s, *saturating, *overloaded)?);
            }
            Self::OpenRate { summary } => {
                let rate = Summary::load(summary)?
                    .open_rate
                    .with_context(|| format!("{} has no open loop (no rate)", summary.display()))?;
                println!("{rate}");
            }
        }
        Ok(())
    }
}

/// A run's loads (closed-loop levels, then the open loop) in order, by name.
fn loads(s: &Summary) -> Vec<&LevelSummary> {
    let mut out: Vec<&LevelSummary> = Vec::new();
    for r in s.closed.iter().chain(&s.open) {
        match out.iter_mut().find(|o| o.load == r.load) {
            // A repeated name keeps its place and takes the later figures.
            Some(o) => *o = r,
            None => out.push(r),
        }
    }
    out
}

fn rate_and_latency(r: &LevelSummary) -> String {
    format!(
        "{:.1} | {:.0} / {:.0} / {:.0}",
        r.requests_per_s, r.p50_ms, r.p95_ms, r.p99_ms
    )
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"))
}

/// The goal tables of a step-level run and a request-level run (same load, same machine).
pub fn goals(step: &Summary, request: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n| load | step-level req/s | p50 / p95 / p99 ms | request-level req/s | p50 / p95 / p99 ms |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|");
    let theirs = loads(request);
    for a in loads(step) {
        let b = theirs.iter().find(|b| b.load == a.load);
        let name = match a.load.ends_with("rps") {
            true => format!("open loop {}", a.load),
            false => a.load.clone(),
        };
        let b = b.map_or_else(|| "-".to_owned(), |b| rate_and_latency(b));
        let _ = writeln!(o, "| {name} | {} | {b} |", rate_and_latency(a));
    }
    let _ = writeln!(o);
    if let Some(ip) = &step.in_process {
        in_process_lines(&mut o, ip);
    }
    for (name, s) in [("step", step), ("request", request)] {
        let rounds: Vec<String> = s
            .ratio_rounds
            .iter()
            .map(|r| {
                format!(
                    "{:.0}/{:.0} = {:.3}",
                    r.service_items_per_s, r.in_process_items_per_s, r.ratio
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "throughput rounds, {name}-level (service/in-process items/s): {}",
            rounds.join(", ")
        );
        let mut client: Vec<f64> = s
            .ratio_rounds
            .iter()
            .filter_map(|r| r.client_cores)
            .collect();
        client.sort_by(f64::total_cmp);
        if let Some(upper_median) = client.get(client.len() / 2) {
            let _ = writeln!(
                o,
                "  the load generator's own CPU during the service rounds: median {upper_median:.3} cores"
            );
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "goal 1, saturation / in-process (>= 0.9): step {}, request {}",
        ratio(step.throughput_ratio),
        ratio(request.throughput_ratio)
    );
    let _ = writeln!(
        o,
        "goal 2, p99 at half saturation / (2 x single-batch compute) (< 1): step {}, request {}",
        ratio(step.p99_over_twice_batch),
        ratio(request.p99_over_twice_batch)
    );
    if let (Some(s), Some(r)) = (&step.open, &request.open) {
        let _ = writeln!(
            o,
            "goal 3, step vs request p99 at {} (step < request): {:.0} ms vs {:.0} ms, ratio {:.3}",
            s.load,
            s.p99_ms,
            r.p99_ms,
            s.p99_ms / r.p99_ms
        );
    }
    o
}

/// The in-process engine's lines: per step count, per layout, and its best.
fn in_process_lines(o: &mut String, ip: &InProcess) {
    for p in &ip.per_steps {
        let one = match p.one_item_seconds {
            Some(one) if one != 0.0 => format!(", {:.1} ms for one item)", one * 1e3),
            _ => ")".to_owned(),
        };
        let _ = writeln!(
            o,
            "in-process, {} steps: {:.0} items/s at batch {} per instance ({:.1} ms per batch{one}",
            p.steps,
            p.items_per_s,
            p.batch,
            p.batch_seconds * 1e3
        );
    }
    for l in &ip.layouts {
        let _ = writeln!(
            o,
            "in-process mix, {} instance(s) x {} thread(s): {:.0} items/s",
            l.instances, l.threads, l.mix_items_per_s
        );
    }
    let pinned = match ip.cpus.as_slice() {
        [] => String::new(),
        cpus => format!(", on CPUs {cpus:?}"),
    };
    let _ = writeln!(
        o,
        "in-process best: {:.0} items/s ({}{pinned}, {} instance(s) x {} thread(s))",
        ip.mix_items_per_s, ip.device, ip.instances, ip.threads
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::summary::{InProcessSteps, LayoutMix, RatioRound};

    fn level(load: &str, rps: f64, p99: f64) -> LevelSummary {
        LevelSummary {
            load: load.into(),
            ok: 10,
            errors: 0,
            requests_per_s: rps,
            items_per_s: rps,
            p50_ms: 10.4,
            p95_ms: 20.6,
            p99_ms: p99,
            ..LevelSummary::default()
        }
    }

    fn summary(closed: Vec<LevelSummary>, open: Option<LevelSummary>) -> Summary {
        Summary {
            label: String::new(),
            steps: vec![1, 50],
            items: 1,
            samples: 1,
            closed,
            open_rate: open.as_ref().map(|o| o.requests_per_s),
            open,
            saturation_items_per_s: 0.0,
            in_process: None,
            ratio_rounds: Vec::new(),
            throughput_ratio: Some(0.91234),
            p99_over_twice_batch: None,
        }
    }

    #[test]
    fn the_goal_tables_put_the_two_modes_side_by_side() {
        let mut step = summary(
            vec![level("conc 1", 12.34, 30.0), level("conc 16", 150.05, 40.0)],
            Some(level("75 rps", 74.9, 60.0)),
        );
        step.in_process = Some(InProcess {
            device: "cpu".into(),
            cpus: vec![0],
            instances: 2,
            threads: 1,
            per_steps: vec![
                InProcessSteps {
                    steps: 1,
                    batch: 256,
                    items_per_s: 5000.4,
                    batch_seconds: 0.0512,
                    one_item_seconds: Some(0.00123),
                },
                InProcessSteps {
                    steps: 50,
                    batch: 64,
                    items_per_s: 100.6,
                    batch_seconds: 0.64,
                    one_item_seconds: None,
                },
            ],
            mix_items_per_s: 250.5,
            layouts: vec![LayoutMix {
                instances: 2,
                threads: 1,
                mix_items_per_s: 250.5,
            }],
        });
        step.ratio_rounds = [(0.3, Some(0.25)), (0.5, None), (0.4, Some(0.2))]
            .into_iter()
            .map(|(ratio, client_cores)| RatioRound {
                service_items_per_s: 100.0 * ratio,
                in_process_items_per_s: 100.0,
                ratio,
                client_cores,
            })
            .collect();
        let request = summary(
            vec![level("conc 1", 11.0, 31.0)],
            Some(level("75 rps", 74.1, 90.0)),
        );
        let text = goals(&step, &request);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "");
        assert_eq!(
            lines[3],
            "| conc 1 | 12.3 | 10 / 21 / 30 | 11.0 | 10 / 21 / 31 |"
        );
        assert_eq!(lines[4], "| conc 16 | 150.1 | 10 / 21 / 40 | - |");
        assert_eq!(
            lines[5],
            "| open loop 75 rps | 74.9 | 10 / 21 / 60 | 74.1 | 10 / 21 / 90 |"
        );
        for line in [
            "in-process, 1 steps: 5000 items/s at batch 256 per instance (51.2 ms per batch, 1.2 ms for one item)",
            "in-process, 50 steps: 101 items/s at batch 64 per instance (640.0 ms per batch)",
            "in-process mix, 2 instance(s) x 1 thread(s): 250 items/s",
            "in-process best: 250 items/s (cpu, on CPUs [0], 2 instance(s) x 1 thread(s))",
            "throughput rounds, step-level (service/in-process items/s): 30/100 = 0.300, 50/100 = 0.500, 40/100 = 0.400",
            // The upper median of the rounds that know the client's CPU.
            "  the load generator's own CPU during the service rounds: median 0.250 cores",
            "throughput rounds, request-level (service/in-process items/s): ",
            "goal 1, saturation / in-process (>= 0.9): step 0.912, request 0.912",
            "goal 2, p99 at half saturation / (2 x single-batch compute) (< 1): step -, request -",
            "goal 3, step vs request p99 at 75 rps (step < request): 60 ms vs 90 ms, ratio 0.667",
        ] {
            assert!(lines.contains(&line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn a_repeated_load_keeps_its_place_and_its_later_figures() {
        let s = summary(
            vec![level("conc 1", 1.0, 1.0), level("conc 4", 2.0, 2.0)],
            Some(level("conc 1", 3.0, 3.0)),
        );
        let names: Vec<(&str, f64)> = loads(&s)
            .iter()
            .map(|r| (r.load.as_str(), r.requests_per_s))
            .collect();
        assert_eq!(names, [("conc 1", 3.0), ("conc 4", 2.0)]);
    }
}
