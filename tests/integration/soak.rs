//! `diffgap soak` run as an operator runs it against a real `diffgap serve` process (the tiny
//! model, no encoders): a few seconds of mixed valid and invalid calls, then reloads with an
//! admin token. Checks what it reports: every call answered or refused as it should be, the
//! reloads done, the server's memory read. Not the memory goals themselves: a soak of seconds
//! is all warm-up (scripts/soak.sh runs the real one).

use crate::support;

use std::time::Duration;

#[test]
fn soak_reports_calls_memory_and_reloads_of_a_real_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin-token");
    std::fs::write(&token, format!("{}\n", support::ADMIN_TOKEN)).expect("write the token");
    let token_arg = token.to_str().expect("a UTF-8 path");
    let mut server = support::process::spawn_serve(
        &support::tiny_model(),
        &["--admin-tokens-file", token_arg],
        None,
    );
    let json = dir.path().join("soak.json");
    let out = support::diffgap_command()
        .args(["soak", "--addr", &format!("http://{}", server.addr)])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--clients", "4", "--connections", "2", "--seconds", "3"])
        .args(["--sample-seconds", "1", "--warmup-seconds", "1"])
        .args(["--reloads", "2", "--reload-seconds", "1"])
        .args(["--admin-token-file", token_arg])
        .arg("--summary-json")
        .arg(&json)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run diffgap soak");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| reload | reloaded | RSS MiB |"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the summary")).expect("JSON");

    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 3, "{report}");
    let reloads = report["reloads"].as_array().expect("reloads");
    assert_eq!(reloads.len(), 2, "{report}");
    let every = samples.iter().chain(reloads);
    let sum = |field: &str| -> u64 {
        every
            .clone()
            .map(|s| s["calls"][field].as_u64().expect("a count"))
            .sum()
    };
    assert!(sum("answered") > 0 && sum("rejected") > 0, "{report}");
    assert_eq!(sum("unexpected"), 0, "{report}");
    for s in every.clone() {
        assert!(s["rss_mib"].as_f64().expect("rss") > 10.0, "{s}");
    }
    assert!(reloads.iter().all(|r| r["reloaded"] == true), "{report}");
    assert!(server.terminate(Duration::from_secs(30)));
}

#[test]
fn soak_refuses_reloads_without_an_admin_token() {
    let out = support::diffgap_command()
        .args(["soak", "--addr", "http://127.0.0.1:9", "--server-pid", "1"])
        .args(["--reloads", "1"])
        .output()
        .expect("run diffgap soak");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--admin-token-file"), "{stderr}");
}
