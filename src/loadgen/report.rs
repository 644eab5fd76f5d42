//! The tables `diffgap loadgen` prints as it runs.

use super::summary::LevelSummary;

pub(super) fn header() {
    println!(
        "| {:>10} | {:>8} | {:>6} | {:>9} | {:>9} | {:>8} | {:>8} | {:>8} |",
        "load", "ok", "errors", "req/s", "items/s", "p50 ms", "p95 ms", "p99 ms"
    );
    println!(
        "|{0:->12}|{0:->10}|{0:->8}|{0:->11}|{0:->11}|{0:->10}|{0:->10}|{0:->10}|",
        ""
    );
}

pub(super) fn row(r: &LevelSummary) {
    println!(
        "| {:>10} | {:>8} | {:>6} | {:>9.1} | {:>9.1} | {:>8.2} | {:>8.2} | {:>8.2} |",
        r.load, r.ok, r.errors, r.requests_per_s, r.items_per_s, r.p50_ms, r.p95_ms, r.p99_ms
    );
}
