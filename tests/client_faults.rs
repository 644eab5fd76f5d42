//! Client faults on the wire: bodies that are not protobuf, oversized metadata and client
//! strings echoed in messages, against the real server on an ephemeral port. Each must get a
//! client code (INVALID_ARGUMENT), and be counted in `diffgap_requests_total` under it.

mod support;

use std::net::SocketAddr;
use std::sync::OnceLock;

use diffgap::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use prost::bytes::{Buf, BufMut};
use prost::Message;
use support::sample;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// One server with metrics for the whole binary: (gRPC address, metrics address).
fn server() -> (SocketAddr, SocketAddr) {
    static ADDRS: OnceLock<(SocketAddr, SocketAddr)> = OnceLock::new();
    *ADDRS.get_or_init(|| support::serve_with_metrics(&support::tiny_model(), |_| {}))
}

/// The metrics recorder is one per process: the tests that move the counters take turns.
static COUNTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A codec that sends its bytes as the message body, unchanged, and reads answers raw.
#[derive(Default, Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

async fn raw_client() -> tonic::client::Grpc<tonic::transport::Channel> {
    support::wait_serving(server().0).await;
    tonic::client::Grpc::new(support::channel(server().0).await)
}

/// Sends `body` as the one message of a unary call to `rpc`.
async fn send_unary(rpc: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = raw_client().await;
    grpc.ready().await.expect("ready");
    let path = format!("/diffgap.v1.Diffgap/{rpc}").parse().expect("path");
    grpc.unary(tonic::Request::new(body), path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

/// Sends `body` as the first chunk of a BridgeStream call; the status of its first answer.
async fn send_stream(body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = raw_client().await;
    grpc.ready().await.expect("ready");
    let path = "/diffgap.v1.Diffgap/BridgeStream".parse().expect("path");
    let chunks = tokio_stream::iter(vec![body]);
    let mut answers = grpc
        .streaming(tonic::Request::new(chunks), path, Raw)
        .await?
        .into_inner();
    answers
        .message()
        .await?
        .ok_or_else(|| Status::ok("no answer"))
}

/// Deterministic bytes that are not a valid `M` (checked here, so that the case is garbage).
fn random_garbage<M: Message + Default>(seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..)
        .map(|_| {
            (0..64)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect::<Vec<u8>>()
        })
        .find(|b| M::decode(b.as_slice()).is_err())
        .expect("some bytes do not decode")
}

/// The kinds of garbage, as bodies of a `BridgeRequest` (named, for the failure messages).
fn bridge_garbage() -> Vec<(&'static str, Vec<u8>)> {
    // items[0].embedding.values packed with 3 bytes: not a whole float.
    let embedding = [0x0a, 0x03, 0, 0, 0];
    let mut item = vec![0x1a, embedding.len() as u8];
    item.extend_from_slice(&embedding);
    let mut odd_floats = vec![0x12, item.len() as u8];
    odd_floats.extend_from_slice(&item);
    vec![
        ("truncated varint", vec![0x78, 0xff, 0xff]),
        ("wire type 7", vec![0x0f]),
        ("length past the end", vec![0x0a, 0x7f, b'a']),
        ("field number 0", vec![0x00, 0x01]),
        ("invalid UTF-8 in a string", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("packed floats of odd length", odd_floats),
        ("random bytes", random_garbage::<BridgeRequest>(1)),
        ("more random bytes", random_garbage::<BridgeRequest>(2)),
    ]
}

fn counted(text: &str, rpc: &str, status: &str) -> f64 {
    sample(
        text,
        "diffgap_requests_total",
        &[("rpc", rpc), ("status", status)],
    )
}

#[tokio::test]
async fn undecodable_bodies_are_invalid_argument_and_counted() {
    let _turn = COUNTERS.lock().await;
    let before = support::scrape(server().1).await;
    let garbage = bridge_garbage();
    for (what, body) in &garbage {
        assert!(BridgeRequest::decode(body.as_slice()).is_err(), "{what}");
        let e = send_unary("Bridge", body.clone()).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(
            e.message().starts_with("the message is not valid protobuf"),
            "{what}: {}",
            e.message()
        );
    }
    // Every other RPC, unary and streaming, the same. Bytes that are not even an empty
    // message (every field unknown) are malformed for any message.
    let others = ["Rank", "Refine", "Embed", "Info", "Reload"];
    for rpc in others {
        for body in [vec![0x0f], random_garbage::<InfoRequest>(3)] {
            let e = send_unary(rpc, body).await.expect_err(rpc);
            assert_eq!(e.code(), Code::InvalidArgument, "{rpc}: {e:?}");
        }
    }
    let e = send_stream(vec![0x0a, 0x7f]).await.expect_err("stream");
    assert_eq!(e.code(), Code::InvalidArgument, "BridgeStream: {e:?}");

    let after = support::scrape(server().1).await;
    let grew = |rpc: &str| {
        counted(&after, rpc, "invalid_argument") - counted(&before, rpc, "invalid_argument")
    };
    assert_eq!(grew("Bridge"), garbage.len() as f64);
    for rpc in others {
        assert_eq!(grew(rpc), 2.0, "{rpc}");
    }
    assert_eq!(grew("BridgeStream"), 1.0);
    for rpc in ["Bridge", "Info", "BridgeStream"] {
        assert_eq!(
            counted(&after, rpc, "internal"),
            counted(&before, rpc, "internal"),
            "{rpc}: nothing is a server fault"
        );
    }
}

#[tokio::test]
async fn oversized_metadata_is_invalid_argument_and_counted() {
    let _turn = COUNTERS.lock().await;
    let before = support::scrape(server().1).await;
    let mut client = support::client(server().0).await;
    // 500 headers, about 41 KB as HTTP/2 counts them: over max_metadata_bytes (16 KiB).
    let mut request = tonic::Request::new(InfoRequest {});
    for i in 0..500 {
        let key: tonic::metadata::MetadataKey<_> = format!("x-junk-{i:03}").parse().expect("key");
        request
            .metadata_mut()
            .insert(key, "v".repeat(40).parse().expect("value"));
    }
    let e = client.info(request).await.expect_err("too much metadata");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("metadata"), "{}", e.message());
    // The same connection still serves.
    client.info(InfoRequest {}).await.expect("a plain call");
    let after = support::scrape(server().1).await;
    assert_eq!(
        counted(&after, "Info", "invalid_argument") - counted(&before, "Info", "invalid_argument"),
        1.0
    );
}

#[tokio::test]
async fn echoed_client_strings_are_capped_and_escaped() {
    // Its refused Bridge counts as invalid_argument too: not while another test counts.
    let _turn = COUNTERS.lock().await;
    let mut client = support::client(server().0).await;
    let forged = format!("x\nINFO forged line\r\0{}", "y".repeat(100_000));
    let item = BridgeItem::new(
        &forged,
        "audio",
        support::vector(1, support::TINY_DIM),
        None,
    );
    let e = client
        .bridge(BridgeRequest::new(vec![item]))
        .await
        .expect_err("unknown modality");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let m = e.message();
    assert!(m.len() < 1024, "{} bytes", m.len());
    assert!(!m.chars().any(char::is_control), "{m:?}");
    assert!(m.contains("x\\nINFO forged line\\r\\0yyy"), "{m}");
    assert!(m.contains('…'), "{m}");

    let e = client
        .bridge(BridgeRequest {
            model: forged.clone(),
            items: vec![],
        })
        .await
        .expect_err("unknown model");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().len() < 1024 && !e.message().chars().any(char::is_control));
}
