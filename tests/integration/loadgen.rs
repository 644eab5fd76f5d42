//! `diffgap loadgen`, the service benchmark's load generator, run as a user runs it against a
//! real server: a closed-loop sweep, an open loop at a fraction of the saturation it found, the
//! in-process comparison and the JSON summary with the goal ratios. Checks what it reports,
//! not how fast anything is (speed is measured by scripts/bench-service.sh, not by tests).

use crate::support;

use std::path::PathBuf;
use std::process::Command;

/// A server on the tiny model, and where loadgen's summary goes.
struct Server {
    model: PathBuf,
    addr: String,
    json: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// A server whose configuration `edit` changes.
    fn with(edit: impl FnOnce(&mut diffgap::service::ServeConfig)) -> Self {
        let model = support::tiny_model();
        let mut cfg = support::serve_config(&model);
        edit(&mut cfg);
        let (addr, _) = support::serve_forever(cfg);
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            json: dir.path().join("summary.json"),
            addr: format!("http://{addr}"),
            model,
            _dir: dir,
        }
    }

    /// `diffgap loadgen` at this server, with the in-process engine on the same model (CPU),
    /// its summary to `json`.
    fn loadgen(&self) -> Command {
        let mut cmd = support::diffgap_command();
        cmd.args(["loadgen", "--addr", &self.addr, "--device", "cpu"])
            .arg("--model")
            .arg(&self.model)
            .arg("--summary-json")
            .arg(&self.json)
            .env("RUST_LOG", "warn");
        cmd
    }

    fn summary(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.json).expect("the summary");
        serde_json::from_str(&text).expect("JSON")
    }
}

/// The standard output of a run that must have succeeded (else its output is the failure).
fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn loadgen_reports_the_sweep_the_open_loop_and_the_ratios() {
    let server = Server::new();
    let out = server
        .loadgen()
        .args(["--steps", "1,5", "--concurrency", "1,4"])
        .args(["--requests", "40", "--max-seconds", "20"])
        .args(["--open-fraction", "0.5", "--open-seconds", "1"])
        .args(["--in-process-batches", "1,8", "--label", "test"])
        .args(["--in-process-instances", "1,2"])
        .args(["--ratio-rounds", "2"])
        .output()
        .expect("run loadgen");
    let stdout = succeeded(&out);
    assert!(
        stdout.contains("service/in-process (test): median of 2 rounds"),
        "{stdout}"
    );

    let s = server.summary();
    let closed = s["closed"].as_array().expect("closed levels");
    assert_eq!(closed.len(), 2);
    for level in closed {
        assert_eq!(level["ok"], 40, "{level}");
        assert_eq!(level["errors"], 0, "{level}");
        let (p50, p99) = (level["p50_ms"].as_f64(), level["p99_ms"].as_f64());
        assert!(p50.is_some_and(|v| v > 0.0) && p99 >= p50, "{level}");
    }
    let best = closed
        .iter()
        .filter_map(|l| l["requests_per_s"].as_f64())
        .fold(0.0, f64::max);
    let rate = s["open_rate"].as_f64().expect("an open-loop rate");
    assert!((rate - 0.5 * best).abs() < 1e-6 * best, "{rate} vs {best}");
    let open = &s["open"];
    assert_eq!(open["errors"], 0, "{open}");
    assert_eq!(
        open["ok"].as_f64(),
        Some((rate * 1.0).round().max(1.0)),
        "every scheduled request answered: {open}"
    );
    let ip = &s["in_process"];
    let per_steps = ip["per_steps"].as_array().expect("per step count");
    assert_eq!(per_steps.len(), 2);
    for p in per_steps {
        assert!(p["items_per_s"].as_f64().is_some_and(|v| v > 0.0), "{p}");
        assert!(p["one_item_seconds"].as_f64().is_some(), "{p}");
    }
    // Both layouts were timed, and the best one is the figure compared with.
    let layouts = ip["layouts"].as_array().expect("layouts");
    let counts: Vec<u64> = layouts
        .iter()
        .filter_map(|l| l["instances"].as_u64())
        .collect();
    assert_eq!(counts, [1, 2], "{layouts:?}");
    let best_layout = layouts
        .iter()
        .max_by(|a, b| {
            let m = |l: &serde_json::Value| l["mix_items_per_s"].as_f64().unwrap_or(0.0);
            m(a).total_cmp(&m(b))
        })
        .expect("a layout");
    assert_eq!(ip["instances"], best_layout["instances"], "{ip}");
    assert_eq!(ip["threads"], best_layout["threads"], "{ip}");
    assert_eq!(
        ip["mix_items_per_s"], best_layout["mix_items_per_s"],
        "{ip}"
    );
    assert!(
        layouts[1]["threads"].as_u64().is_some_and(|t| t >= 1),
        "{layouts:?}"
    );
    // The ratios are the quotients of the figures measured: the throughput ratio is the median
    // of the interleaved rounds (service at the saturating concurrency, then in-process).
    assert!(ip["mix_items_per_s"].as_f64().is_some_and(|v| v > 0.0));
    let rounds = s["ratio_rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2);
    let mut ratios: Vec<f64> = rounds
        .iter()
        .map(|r| {
            let (svc, eng) = (
                r["service_items_per_s"].as_f64().expect("service"),
                r["in_process_items_per_s"].as_f64().expect("in-process"),
            );
            assert!(svc > 0.0 && eng > 0.0, "{r}");
            let ratio = r["ratio"].as_f64().expect("ratio");
            assert!((ratio - svc / eng).abs() < 1e-9, "{r}");
            // The client's own CPU share: some, and no more than the machine has.
            if cfg!(unix) {
                let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
                let client = r["client_cores"].as_f64().expect("client cores");
                assert!(client > 0.0 && client <= cores * 1.05, "{r}");
            }
            ratio
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let median = (ratios[0] + ratios[1]) / 2.0;
    let ratio = s["throughput_ratio"].as_f64().expect("throughput ratio");
    assert!((ratio - median).abs() < 1e-9, "{ratio} vs {median}");
    let batch_longest = per_steps
        .iter()
        .find(|p| p["steps"] == 5)
        .and_then(|p| p["batch_seconds"].as_f64())
        .expect("the longest step count's batch time");
    let p99 = open["p99_ms"].as_f64().expect("open p99");
    let r = s["p99_over_twice_batch"].as_f64().expect("p99 ratio");
    assert!((r - p99 / (2.0 * batch_longest * 1e3)).abs() < 1e-9);
}

/// `--in-process-cpus` (what `SERVER_CPUS` of scripts/bench-service.sh passes): the engine's
/// layouts are those of a machine of that many cores, and the pinning is reported; CPUs this
/// process cannot have are an error naming the flag.
#[cfg(target_os = "linux")]
#[test]
fn loadgen_pins_the_in_process_engine_to_the_cpus_it_is_given() {
    let server = Server::new();
    let first = diffgap::service::ops::threads::current_cpus().expect("CPUs")[0];
    let run = |cpus: &str| {
        server
            .loadgen()
            .args(["--steps", "1,5", "--concurrency", "2"])
            .args([
                "--requests",
                "20",
                "--max-seconds",
                "20",
                "--open-seconds",
                "0",
            ])
            .args([
                "--in-process-batches",
                "1,8",
                "--in-process-instances",
                "1,0",
            ])
            .args(["--ratio-rounds", "1", "--in-process-cpus", cpus])
            .output()
            .expect("run loadgen")
    };
    let out = run(&first.to_string());
    let stdout = succeeded(&out);
    assert!(stdout.contains(&format!("on CPUs [{first}]")), "{stdout}");
    let s = server.summary();
    let ip = &s["in_process"];
    assert_eq!(ip["cpus"], serde_json::json!([first]), "{ip}");
    // One CPU: "0" (one instance per core) is one instance, on one thread.
    assert_eq!(
        ip["layouts"],
        serde_json::json!([{"instances": 1, "threads": 1, "mix_items_per_s": ip["mix_items_per_s"]}]),
        "{ip}"
    );
    assert!(
        ip["mix_items_per_s"].as_f64().is_some_and(|v| v > 0.0),
        "{ip}"
    );

    let out = run("100000");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--in-process-cpus [100000]"), "{stderr}");
}

/// An overloaded server (one row at a time, one request waiting): loadgen counts the refusals
/// apart from other failures, spreads its clients over several connections, reads the
/// server's memory, and `loadgen-summary overload` judges the two levels.
#[test]
fn loadgen_counts_refusals_apart_and_judges_an_overload() {
    let server = Server::with(|cfg| {
        cfg.queue_capacity = 1;
        cfg.max_batch_rows = 1;
    });
    let out = server
        .loadgen()
        .args([
            "--steps",
            "20",
            "--concurrency",
            "1,8",
            "--connections",
            "3",
        ])
        .args([
            "--requests",
            "100000",
            "--max-seconds",
            "3",
            "--warmup-seconds",
            "0.5",
        ])
        .args(["--no-in-process", "--ratio-rounds", "0", "--honor-pushback"])
        .args(["--server-pid", &std::process::id().to_string()])
        .output()
        .expect("run loadgen");
    let stdout = succeeded(&out);
    assert!(stdout.contains("3 connection(s)"), "{stdout}");
    let s = server.summary();
    let over = &s["closed"][1];
    assert_eq!(over["load"], "conc 8", "{over}");
    let refused = over["refused"].as_u64().expect("refused");
    assert!(
        refused > 0,
        "one row at a time refuses some of 8 clients: {over}"
    );
    assert_eq!(
        over["errors"].as_u64(),
        Some(refused),
        "only refusals: {over}"
    );
    assert_eq!(over["other_errors"], serde_json::json!({}), "{over}");
    assert!(
        over["refusal_p99_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{over}"
    );
    assert!(
        over["server_rss_mib"].as_f64().is_some_and(|m| m > 1.0),
        "{over}"
    );
    let table = support::diffgap_command()
        .args(["loadgen-summary", "overload"])
        .arg(&server.json)
        .args(["--saturating", "1", "--overloaded", "8"])
        .output()
        .expect("loadgen-summary");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    assert!(
        text.contains("| failures other than RESOURCE_EXHAUSTED | 0.000 | 0 | yes |"),
        "{text}"
    );
    assert!(text.contains("| conc 8 |"), "{text}");
}

/// `--peer-addr` (scripts/bench-peer.sh runs it against the Python peer) against a second
/// server of the same model: the output check finds the answers of requests sent alone equal,
/// the rounds alternate which server goes first with the same load on both, the open-loop
/// rate is the fraction of diffgap's saturation, and the ratios and medians are the
/// quotients of what was measured.
#[test]
fn loadgen_compares_against_a_peer_in_interleaved_rounds() {
    let (server, peer) = (Server::new(), Server::new());
    let out = server
        .loadgen()
        .args(["--peer-addr", &peer.addr, "--steps", "1,5"])
        .args([
            "--concurrency",
            "2",
            "--requests",
            "20",
            "--max-seconds",
            "20",
        ])
        .args(["--open-fraction", "0.5", "--open-seconds", "0.5"])
        .args(["--ratio-rounds", "2", "--label", "peer test"])
        .output()
        .expect("run loadgen");
    let stdout = succeeded(&out);
    assert!(stdout.contains("output check: 25 requests"), "{stdout}");
    let s = server.summary();
    assert_eq!(s["check"]["max_abs_diff_alone"], 0.0, "{}", s["check"]);
    let closed = s["closed"].as_array().expect("closed rounds");
    let firsts: Vec<&str> = closed.iter().filter_map(|r| r["first"].as_str()).collect();
    assert_eq!(firsts, ["diffgap", "peer"]);
    let mut ratios = Vec::new();
    for r in closed {
        let (d, p) = (&r["diffgap"], &r["peer"]);
        assert!(d["ok"] == 20 && p["ok"] == 20, "{r}");
        let rate = |l: &serde_json::Value| l["requests_per_s"].as_f64().expect("rate");
        let ratio = r["throughput_ratio"].as_f64().expect("a ratio");
        assert!((ratio - rate(d) / rate(p)).abs() < 1e-9, "{r}");
        ratios.push(ratio);
    }
    let medians = s["medians"].as_array().expect("medians");
    let loads: Vec<&str> = medians.iter().filter_map(|m| m["load"].as_str()).collect();
    assert_eq!(loads.len(), 2, "{medians:?}");
    assert_eq!(loads[0], "conc 2");
    let median = medians[0]["throughput_ratio"].as_f64().expect("median");
    assert!((median - (ratios[0] + ratios[1]) / 2.0).abs() < 1e-9);
    let saturation = medians[0]["diffgap_requests_per_s"].as_f64().expect("rate");
    let open_rate = s["open_rate"].as_f64().expect("an open-loop rate");
    assert!((open_rate - 0.5 * saturation).abs() < 1e-9 * saturation);
    let open = s["open"].as_array().expect("open rounds");
    assert_eq!(open.len(), 2);
    assert!(
        open.iter().all(|r| r["p99_ratio"].as_f64().is_some()),
        "{open:?}"
    );
}
