//! Out of file descriptors: `diffgap serve` in a child process (the limit is a process's) with
//! `RLIMIT_NOFILE` at 64, flooded with 200 connections that never speak. While `accept` fails
//! with EMFILE the server pauses (10 ms doubling to 1 s) rather than retrying in a tight loop,
//! which took a whole core in the abuse run: its CPU time over a second at the limit stays far
//! below a core's; a call on a connection opened before still succeeds; once the flood is gone
//! new connections are accepted again; and SIGTERM still stops it cleanly.

mod support;

use std::time::Duration;

use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use support::net::{eventually, metric};
use support::process::{cpu_seconds, fds_below, spawn_serve};
use tokio::net::TcpStream;

const FD_LIMIT: u64 = 64;
/// More connections than the server has descriptors left, and fewer than it has descriptors
/// and backlog (128, tokio's) together: the rest wait in the backlog, not in SYN retries.
const FLOOD: usize = 100;
/// CPU seconds the server may use over one second at the limit: a bound on spinning (a tight
/// accept loop uses a whole second), not a speed measurement.
const CPU_BOUND: f64 = 0.3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_file_limit_the_server_backs_off_and_keeps_serving() {
    let model = support::tiny_model();
    let mut server = spawn_serve(&model, &["--max-connections", "0"], Some(FD_LIMIT));
    let pid = server.pid();
    let mut client = support::client(server.addr).await;
    client.info(InfoRequest::default()).await.expect("info");

    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        // The kernel completes the handshake from its backlog, accepted or not.
        let connect = TcpStream::connect(server.addr);
        let c = tokio::time::timeout(Duration::from_secs(10), connect).await;
        flood.push(c.expect("connected within 10 s").expect("connect"));
    }
    let at_limit = eventually(Duration::from_secs(10), || async {
        fds_below(pid, FD_LIMIT) >= FD_LIMIT
    })
    .await;
    assert!(at_limit, "the server never ran out of descriptors");
    // Past the first short pauses.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_seconds(pid) - before;
    eprintln!("CPU time over one second at the file limit: {used:.2} s");
    assert!(
        used < CPU_BOUND,
        "{used:.2} s of CPU in one second at the limit"
    );
    assert_eq!(fds_below(pid, FD_LIMIT), FD_LIMIT, "still at the limit");

    let item = BridgeItem::new("text", "audio", support::vector(1, support::TINY_DIM), None);
    let answer = client
        .bridge(BridgeRequest::new(vec![item]))
        .await
        .expect("a call on a connection opened before the flood");
    assert_eq!(answer.get_ref().embeddings.len(), 1);

    drop(flood);
    let accepting = eventually(Duration::from_secs(15), || async {
        let fresh = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
            .expect("uri")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await;
        match fresh {
            Ok(ch) => DiffgapClient::new(ch)
                .info(InfoRequest::default())
                .await
                .is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(accepting, "no new connection accepted after the flood");
    let emfile = metric(
        server.metrics,
        "diffgap_accept_errors_total",
        &[("kind", "emfile")],
    )
    .await;
    assert!(emfile >= 1.0, "no EMFILE counted");
    drop(client);
    assert!(server.terminate(Duration::from_secs(30)), "exit status 0");
}
