//! The accept loop on real loopback sockets, without a server: what `Incoming` yields, refuses
//! and closes.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_stream::StreamExt;

use super::*;

async fn incoming(limits: ConnectionLimits) -> (Incoming, SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (drain, draining) = watch::channel(false);
    (Incoming::new(listener, limits, draining), addr, drain)
}

async fn next(incoming: &mut Incoming) -> Connection {
    tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .expect("a connection within 5 s")
        .expect("the stream goes on")
        .expect("never an error")
}

/// Reads `client` until the server closes it (at most 10 s): how long that took.
async fn closed_after(client: &mut TcpStream) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after 10 s"),
        }
    }
}

/// Serves `connection` as hyper would, reading until it ends; the read count.
fn read_until_closed(mut connection: Connection) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let mut reads = 0;
        while connection.read(&mut buf).await.is_ok_and(|n| n > 0) {
            reads += 1;
        }
        reads
    })
}

const NO_LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: None,
    idle_timeout: None,
};

#[tokio::test]
async fn accepted_connections_have_nagle_off() {
    let (mut incoming, addr, _drain) = incoming(NO_LIMITS).await;
    let _client = TcpStream::connect(addr).await.expect("connect");
    let accepted = next(&mut incoming).await;
    assert!(accepted.tcp().nodelay().expect("TCP_NODELAY readable"));
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_until_one_ends() {
    let limits = ConnectionLimits {
        max_connections: Some(1),
        ..NO_LIMITS
    };
    let (mut incoming, addr, _drain) = incoming(limits).await;
    let _first_client = TcpStream::connect(addr).await.expect("connect");
    let first = next(&mut incoming).await;
    let mut refused = TcpStream::connect(addr).await.expect("connect");
    let mut third = TcpStream::connect(addr).await.expect("connect");
    // The refused connection is accepted and closed inside `next`, which then waits.
    let waiting = tokio::time::timeout(Duration::from_millis(300), incoming.next()).await;
    assert!(waiting.is_err(), "nothing admitted while at the limit");
    closed_after(&mut refused).await;
    closed_after(&mut third).await;
    drop(first);
    let _fourth_client = TcpStream::connect(addr).await.expect("connect");
    let _fourth = next(&mut incoming).await;
}

#[tokio::test]
async fn a_connection_without_calls_is_closed_after_the_idle_timeout() {
    let timeout = Duration::from_millis(300);
    let limits = ConnectionLimits {
        idle_timeout: Some(timeout),
        ..NO_LIMITS
    };
    let (mut incoming, addr, _drain) = incoming(limits).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let server = read_until_closed(next(&mut incoming).await);
    let took = closed_after(&mut client).await;
    assert!(took >= timeout - Duration::from_millis(50), "{took:?}");
    assert_eq!(server.await.expect("task"), 0);
}

#[tokio::test]
async fn the_drain_closes_connections_without_calls() {
    let (mut incoming, addr, drain) = incoming(NO_LIMITS).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let server = read_until_closed(next(&mut incoming).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.is_finished(), "no idle timeout before the drain");
    drain.send(true).expect("drain");
    let took = closed_after(&mut client).await;
    assert!(took >= DRAIN_IDLE - Duration::from_millis(50), "{took:?}");
}

#[test]
fn zero_in_the_configuration_is_no_limit() {
    let off = ServeConfig {
        max_connections: 0,
        idle_connection_timeout_secs: 0,
        ..ServeConfig::default()
    };
    assert_eq!(ConnectionLimits::of(&off), NO_LIMITS);
    let limits = ConnectionLimits::of(&ServeConfig::default());
    assert_eq!(limits.max_connections, Some(1024));
    assert_eq!(limits.idle_timeout, Some(Duration::from_secs(300)));
}

#[test]
fn the_fd_budget_counts_a_reserve() {
    assert_eq!(fd_budget_shortfall(Some(1024), 4096), None);
    assert_eq!(fd_budget_shortfall(Some(1024), 1024 + FD_RESERVE), None);
    let over = fd_budget_shortfall(Some(1024), 1024).expect("over");
    assert!(over.contains("1088"), "{over}");
    assert!(fd_budget_shortfall(None, 1 << 20).is_some());
}
