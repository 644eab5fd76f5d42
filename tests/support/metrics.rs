//! The metrics listener, read as Prometheus does.

use std::net::SocketAddr;
use std::time::Duration;

/// GET `path` from the HTTP listener at `addr` (the metrics one): (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics listener");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The Prometheus text of the metrics listener at `addr`.
pub async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    body
}

/// The sum of the samples `name{...}` whose labels include every `label="value"` of `labels`
/// (0 when there is none).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .expect("a sample value")
        })
        .sum()
}

/// Waits (at most 30 s) until `cond` holds for a scrape of `metrics`; returns that scrape.
pub async fn wait_metrics(metrics: SocketAddr, what: &str, cond: impl Fn(&str) -> bool) -> String {
    for _ in 0..3000 {
        let text = scrape(metrics).await;
        if cond(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = scrape(metrics).await;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
        .collect();
    panic!("timed out waiting for {what}:\n{}", lines.join("\n"));
}

/// A scrape once no RPC is in flight anywhere in the process (the recorder is shared).
pub async fn settled(metrics: SocketAddr) -> String {
    wait_metrics(metrics, "no RPC in flight", |t| {
        sample(t, "diffgap_inflight_requests", &[]) == 0.0
    })
    .await
}
