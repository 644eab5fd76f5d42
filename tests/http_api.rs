//! The HTTP/JSON listener end to end: the real server (a tiny model, bearer tokens and
//! metrics on) on ephemeral ports, called over HTTP/1.1 and over gRPC, which must agree.
//! The OpenAI-compatible route on the default model (real encoders) is in
//! `tests/integration/http_openai.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use diffgap::service::proto::{
    BridgeItem, BridgeRequest, Candidate, InfoRequest, RankMode, RankRequest, RefineRequest,
};
use serde_json::json;
use support::http::{floats, get, post, request, Reply};
use support::{
    assert_close, bearer, client, emb, serve_config, tiny_model, tiny_vector, with_token, Addrs,
};

const TOL: f32 = 1e-5;
const TOKEN: &str = "http-test-token";
const AUTH: (&str, &str) = ("authorization", "Bearer http-test-token");

/// The tiny model with a token, metrics and the HTTP listener on, for the whole binary.
fn server() -> Addrs {
    static ADDRS: OnceLock<Addrs> = OnceLock::new();
    *ADDRS.get_or_init(|| {
        let mut cfg = with_token(serve_config(&tiny_model()), TOKEN);
        cfg.metrics_listen = "127.0.0.1:0".into();
        cfg.http_listen = "127.0.0.1:0".into();
        cfg.max_message_bytes = Some(64 * 1024);
        support::serve_forever_on(cfg)
    })
}

async fn http() -> SocketAddr {
    support::http::listener(server()).await
}

async fn call(path: &str, body: serde_json::Value) -> Reply {
    post(http().await, path, &[AUTH], &body).await
}

fn item(values: &[f32], seed: u64) -> serde_json::Value {
    json!({"source_modality": "text", "target_modality": "audio", "embedding": values, "seed": seed, "steps": 4})
}

#[tokio::test]
async fn bridge_refine_and_rank_give_the_grpc_numbers() {
    let x = tiny_vector(1);
    let y = tiny_vector(2);
    let addr = server().grpc;
    support::wait_serving(addr).await;
    let mut grpc =
        diffgap::service::proto::diffgap_client::DiffgapClient::new(support::channel(addr).await);

    let h = call("/v1/bridge", json!({"items": [item(&x, 7), item(&y, 8)]})).await;
    assert_eq!(h.status, 200, "{}", h.body);
    let mut items = vec![
        BridgeItem::new("text", "audio", x.clone(), Some(7)),
        BridgeItem::new("text", "audio", y.clone(), Some(8)),
    ];
    items.iter_mut().for_each(|i| i.steps = Some(4));
    let g = grpc
        .bridge(bearer(BridgeRequest::new(items), TOKEN))
        .await
        .expect("gRPC bridge")
        .into_inner();
    // Equal up to the last bits that batching with the other tests' calls may move.
    let body = h.json();
    for (i, e) in g.embeddings.iter().enumerate() {
        assert_close(&floats(&body["embeddings"][i]), &e.values, TOL);
    }
    assert!(body["timings"]["compute_ns"].as_u64().expect("timings") > 0);
    assert!(h.header("x-compute-time-ms").is_some(), "{:?}", h.headers);

    let h = call(
        "/v1/refine",
        json!({"modality": "audio", "embedding": y, "partner": x, "strength": 0.5, "seed": 3}),
    )
    .await;
    assert_eq!(h.status, 200, "{}", h.body);
    let g = grpc
        .refine(bearer(
            RefineRequest {
                modality: "audio".into(),
                embedding: emb(y.clone()),
                partner: emb(x.clone()),
                strength: Some(0.5),
                seed: Some(3),
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .expect("gRPC refine")
        .into_inner();
    assert_close(
        &floats(&h.json()["embedding"]),
        &g.embedding.expect("one").values,
        TOL,
    );

    let cands: Vec<(String, Vec<f32>)> = (10..14)
        .map(|s| (format!("c{s}"), tiny_vector(s)))
        .collect();
    let h = call(
        "/v1/rank",
        json!({
            "query": x, "query_modality": "text", "candidate_modality": "audio", "mode": "bridged",
            "seed": 5,
            "candidates": cands.iter().map(|(id, v)| json!({"id": id, "embedding": v})).collect::<Vec<_>>(),
        }),
    )
    .await;
    assert_eq!(h.status, 200, "{}", h.body);
    let g = grpc
        .rank(bearer(
            RankRequest {
                query: emb(x.clone()),
                query_modality: "text".into(),
                candidate_modality: "audio".into(),
                mode: RankMode::Bridged as i32,
                seed: Some(5),
                candidates: cands
                    .iter()
                    .map(|(id, v)| Candidate {
                        id: id.clone(),
                        embedding: emb(v.clone()),
                        raw: None,
                    })
                    .collect(),
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .expect("gRPC rank")
        .into_inner();
    let results = h.json()["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), g.results.len());
    for j in &results {
        let r = g
            .results
            .iter()
            .find(|r| j["id"] == r.id.as_str())
            .expect("the same ids");
        let score = |k: &str| j[k].as_f64().expect("a score") as f32;
        assert!((score("score") - r.score).abs() < TOL, "{j} vs {r:?}");
        assert!((score("bridged") - r.bridged.expect("bridged")).abs() < TOL);
        assert!(j.get("generative").is_none(), "unset scores are left out");
    }
}

#[tokio::test]
async fn info_is_the_grpc_info() {
    let h = get(http().await, "/v1/info", &[AUTH]).await;
    assert_eq!(h.status, 200, "{}", h.body);
    let mut grpc = client(server().grpc).await;
    let g = grpc
        .info(bearer(InfoRequest {}, TOKEN))
        .await
        .expect("gRPC info")
        .into_inner();
    let j = h.json();
    assert_eq!(j["models"][0]["name"], g.models[0].name.as_str());
    assert_eq!(j["models"][0]["dim"], support::TINY_DIM as u64);
    assert_eq!(
        j["models"][0]["fingerprint"],
        g.models[0].fingerprint.as_str()
    );
    assert_eq!(j["limits"]["max_items_per_request"], 32);
}

#[tokio::test]
async fn tokens_are_needed_but_not_for_the_probes() {
    let addr = http().await;
    let missing = get(addr, "/v1/info", &[]).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(missing.code(), "unauthenticated");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let wrong = get(addr, "/v1/info", &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.json()["error"]["message"]
        .as_str()
        .expect("message")
        .contains("invalid bearer token"));
    assert_eq!(get(addr, "/health/live", &[]).await.status, 200);
    let ready = get(addr, "/health/ready", &[]).await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, json!("SERVING"))
    );
}

#[tokio::test]
async fn bad_requests_are_json_errors_with_their_status() {
    let x = tiny_vector(1);
    let refused = |r: &Reply, status: u16, code: &str, says: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.code(), code, "{}", r.body);
        let message = r.json()["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned();
        assert!(message.contains(says), "{message:?} does not say {says:?}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    };
    let addr = http().await;
    let malformed = request(addr, "POST", "/v1/bridge", &[AUTH], b"{\"items\": [").await;
    refused(&malformed, 400, "invalid_argument", "EOF while parsing");
    let unknown = call("/v1/bridge", json!({"items": [], "colour": 1})).await;
    refused(&unknown, 400, "invalid_argument", "unknown field `colour`");
    let mode = call("/v1/rank", json!({"mode": "loudest"})).await;
    refused(&mode, 400, "invalid_argument", "unknown mode 'loudest'");
    let empty = call("/v1/bridge", json!({"items": []})).await;
    refused(&empty, 400, "invalid_argument", "items");
    let short = call("/v1/bridge", json!({"items": [item(&x[..3], 1)]})).await;
    refused(&short, 400, "invalid_argument", "items[0]");
    // JSON has no NaN: a string is not a number, and a number past f32 is not finite.
    let nan = call("/v1/bridge", json!({"items": [{"source_modality": "text", "target_modality": "audio", "embedding": ["NaN"]}]})).await;
    refused(&nan, 400, "invalid_argument", "invalid type: string");
    let mut huge = x.iter().map(|&v| json!(v)).collect::<Vec<_>>();
    huge[0] = json!(1e39);
    let inf = call("/v1/bridge", json!({"items": [{"source_modality": "text", "target_modality": "audio", "embedding": huge}]})).await;
    refused(&inf, 400, "invalid_argument", "finite");
    let model = call(
        "/v1/bridge",
        json!({"model": "nope", "items": [item(&x, 1)]}),
    )
    .await;
    refused(&model, 404, "not_found", "no model named 'nope'");
    let raw = call("/v1/embed", json!({"inputs": [{"text": "a dog"}]})).await;
    refused(&raw, 400, "failed_precondition", "no encoders");
    let route = get(addr, "/v2/nothing", &[AUTH]).await;
    refused(&route, 404, "not_found", "no route /v2/nothing");
    let method = request(addr, "DELETE", "/v1/bridge", &[AUTH], b"").await;
    refused(&method, 405, "method_not_allowed", "DELETE");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_it_is_read() {
    let addr = http().await;
    // Only the head is sent: the answer comes without the server waiting for the body.
    let declared = [AUTH, ("content-length", "10000000")];
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        request(addr, "POST", "/v1/bridge", &declared, b""),
    )
    .await
    .expect("answered without the body");
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.code(), "resource_exhausted");
    assert!(r.body.contains("65536 bytes"), "{}", r.body);
}

#[tokio::test]
async fn deadlines_and_request_ids() {
    let addr = http().await;
    let x = tiny_vector(3);
    let body = json!({"items": [item(&x, 1)]});
    let expired = [
        AUTH,
        ("x-request-timeout-ms", "0"),
        ("x-request-id", "req-42"),
    ];
    let r = post(addr, "/v1/bridge", &expired, &body).await;
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.code(), "deadline_exceeded");
    assert_eq!(r.header("x-request-id"), Some("req-42"));
    let bad = [AUTH, ("x-request-timeout-ms", "soon")];
    let r = post(addr, "/v1/bridge", &bad, &body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("x-request-timeout-ms"), "{}", r.body);
    let ample = [
        AUTH,
        ("x-request-timeout-ms", "60000"),
        ("x-request-id", "ok-1"),
    ];
    let r = post(addr, "/v1/bridge", &ample, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-request-id"), Some("ok-1"));
    let fresh = post(addr, "/v1/bridge", &[AUTH], &body).await;
    let id = fresh.header("x-request-id").expect("an id is always sent");
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
}

#[tokio::test]
async fn calls_are_counted_under_their_route() {
    let addr = http().await;
    let metrics = server().metrics.expect("metrics on");
    let x = tiny_vector(4);
    let ok = post(
        addr,
        "/v1/bridge",
        &[AUTH],
        &json!({"items": [item(&x, 1)]}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let bad = post(addr, "/v1/refine", &[AUTH], &json!({"modality": "smell"})).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let text = support::settled(metrics).await;
    let count = |rpc: &str, status: &str| {
        support::sample(
            &text,
            "diffgap_requests_total",
            &[("rpc", rpc), ("status", status)],
        )
    };
    assert!(count("http:/v1/bridge", "ok") >= 1.0, "{text}");
    assert!(
        count("http:/v1/refine", "invalid_argument") >= 1.0,
        "{text}"
    );
    let histogram = "diffgap_request_duration_seconds_count";
    assert!(support::sample(&text, histogram, &[("rpc", "http:/v1/bridge")]) >= 1.0);
}

#[tokio::test]
async fn the_drain_finishes_a_request_in_flight_then_stops() {
    let mut cfg = serve_config(&tiny_model());
    cfg.http_listen = "127.0.0.1:0".into();
    let running = support::start(cfg).await;
    let addr = running.http.expect("the HTTP listener is on");
    support::http::wait_ready(addr).await;
    let many: Vec<_> = (0..32u64)
        .map(|s| json!({"source_modality": "text", "target_modality": "audio", "embedding": tiny_vector(s), "steps": 1000, "samples": 8}))
        .collect();
    let slow =
        tokio::spawn(async move { post(addr, "/v1/bridge", &[], &json!({"items": many})).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !slow.is_finished(),
        "the request is still in flight when the drain begins"
    );
    running.stop.send(()).expect("stop");
    let answered = slow.await.expect("the request task");
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(
        answered.json()["embeddings"].as_array().map(Vec::len),
        Some(32)
    );
    support::stops(running.server).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
