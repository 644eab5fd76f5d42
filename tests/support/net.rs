//! Raw TCP connections against a server, and waiting for its metrics to show a state.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads `stream` (discarding what the server sends, such as its HTTP/2 SETTINGS) until the
/// server closes it: how long that took, or `None` if it was still open after `limit`.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        let left = limit.checked_sub(t.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// Polls `probe` every 50 ms until it returns true, at most `limit`; whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let t = Instant::now();
    loop {
        if probe().await {
            return true;
        }
        if t.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `name` with `labels` at the metrics listener `metrics`.
pub async fn metric(metrics: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    super::sample(&super::scrape(metrics).await, name, labels)
}

/// Waits (at most 30 s) until the metric `name` (no labels) is `value`; panics otherwise.
pub async fn wait_metric(metrics: SocketAddr, name: &str, value: f64) {
    super::wait_metrics(metrics, &format!("{name} = {value}"), |text| {
        super::sample(text, name, &[]) == value
    })
    .await;
}

/// Opens a TCP connection to `addr` that will never speak HTTP/2.
pub async fn raw(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}
