//! The OpenAI-compatible `POST /v1/embeddings` on the default model (real text encoder): the
//! answer's shape, float and base64, usage, its agreement with `/v1/embed`, gRPC Embed and
//! `/v1/bridge`, and errors in OpenAI's shape.

use crate::support;

use std::net::SocketAddr;
use std::sync::OnceLock;

use base64::Engine;
use diffgap::service::proto::{raw_input::Input, EmbedRequest, RawInput};
use serde_json::{json, Value};
use support::http::{floats, post, Reply};
use support::{assert_close_for, default_model, serve_config, Addrs};

const TOL: f32 = 1e-5;

fn server() -> Addrs {
    static ADDRS: OnceLock<Addrs> = OnceLock::new();
    *ADDRS.get_or_init(|| {
        let mut cfg = serve_config(&default_model());
        cfg.http_listen = "127.0.0.1:0".into();
        support::serve_forever_on(cfg)
    })
}

async fn http() -> SocketAddr {
    support::http::listener(server()).await
}

async fn embeddings(body: Value) -> Reply {
    post(http().await, "/v1/embeddings", &[], &body).await
}

const TEXTS: [&str; 2] = ["a dog barking in the distance", "rain on a tin roof"];

fn rows(r: &Reply) -> Vec<Vec<f32>> {
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["object"], "list");
    j["data"]
        .as_array()
        .expect("data")
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["object"], "embedding");
            assert_eq!(d["index"], i);
            match &d["embedding"] {
                Value::String(b64) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .expect("base64");
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                }
                v => floats(v),
            }
        })
        .collect()
}

fn tokens(r: &Reply) -> u64 {
    let usage = &r.json()["usage"];
    assert_eq!(usage["prompt_tokens"], usage["total_tokens"]);
    usage["prompt_tokens"].as_u64().expect("prompt_tokens")
}

#[tokio::test]
async fn embeddings_are_the_embed_rpc_in_openai_shape() {
    let float = embeddings(json!({"model": "default", "input": TEXTS})).await;
    let got = rows(&float);
    assert_eq!(got.len(), 2);
    assert_eq!(float.json()["model"], "default");
    let b64 =
        embeddings(json!({"model": "default", "input": TEXTS, "encoding_format": "base64"})).await;
    // Requests batched with other calls may differ in the last bits (padding, batch shapes).
    for (a, b) in rows(&b64).iter().zip(&got) {
        assert_close_for(a, b, TOL, "base64 vs float");
    }
    for row in &got {
        assert_eq!(row.len(), 512);
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    assert!(got[0] != got[1]);

    // The same as /v1/embed and as gRPC Embed.
    let inputs: Vec<Value> = TEXTS.iter().map(|t| json!({"text": t})).collect();
    let embed = post(http().await, "/v1/embed", &[], &json!({"inputs": inputs})).await;
    assert_eq!(embed.status, 200, "{}", embed.body);
    for (i, row) in got.iter().enumerate() {
        let e = floats(&embed.json()["embeddings"][i]["embedding"]);
        assert_close_for(&e, row, TOL, "/v1/embed");
        assert_eq!(embed.json()["embeddings"][i]["modality"], "text");
    }
    let mut grpc = support::client(server().grpc).await;
    let g = grpc
        .embed(EmbedRequest {
            model: String::new(),
            inputs: TEXTS
                .iter()
                .map(|t| RawInput {
                    input: Some(Input::Text((*t).into())),
                })
                .collect(),
        })
        .await
        .expect("gRPC embed")
        .into_inner();
    for (row, e) in got.iter().zip(g.embeddings) {
        assert_close_for(row, &e.embedding.expect("embedding").values, TOL, "gRPC");
    }

    // Usage: the tokenizer's count, per input, summed.
    let one = embeddings(json!({"input": TEXTS[0]})).await;
    let other = embeddings(json!({"input": [TEXTS[1]]})).await;
    assert_close_for(&rows(&one)[0], &got[0], TOL, "a string is a list of one");
    assert!(tokens(&one) > 2, "more than the special tokens");
    assert_eq!(tokens(&float), tokens(&one) + tokens(&other));
}

#[tokio::test]
async fn bridge_to_is_the_bridge_rpc_of_the_text() {
    let bridged =
        embeddings(json!({"input": [TEXTS[0]], "bridge_to": "audio", "seed": 9, "steps": 4})).await;
    let got = rows(&bridged);
    let plain = rows(&embeddings(json!({"input": [TEXTS[0]]})).await);
    assert_ne!(got[0], plain[0], "bridged into the audio side");
    let item = json!({"source_modality": "text", "target_modality": "audio", "raw": {"text": TEXTS[0]}, "seed": 9, "steps": 4});
    let bridge = post(http().await, "/v1/bridge", &[], &json!({"items": [item]})).await;
    assert_eq!(bridge.status, 200, "{}", bridge.body);
    assert_close_for(
        &floats(&bridge.json()["embeddings"][0]),
        &got[0],
        TOL,
        "bridge",
    );
}

#[tokio::test]
async fn errors_are_in_openai_shape() {
    let refused = |r: &Reply, status: u16, code: &str, param: Value| {
        assert_eq!(r.status, status, "{}", r.body);
        let e = &r.json()["error"];
        assert_eq!(e["code"], code, "{}", r.body);
        assert_eq!(e["param"], param, "{}", r.body);
        assert_eq!(e["type"], "invalid_request_error", "{}", r.body);
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    let unknown = embeddings(json!({"model": "gpt-4", "input": "x"})).await;
    refused(&unknown, 404, "model_not_found", json!("model"));
    let token_ids = embeddings(json!({"input": [[101, 2003]]})).await;
    refused(&token_ids, 400, "invalid_argument", json!("input"));
    let empty = embeddings(json!({"input": []})).await;
    refused(&empty, 400, "invalid_argument", json!("input"));
    let blank = embeddings(json!({"input": [" "]})).await;
    assert_eq!(blank.status, 400, "{}", blank.body);
    let format = embeddings(json!({"input": "x", "encoding_format": "hex"})).await;
    refused(&format, 400, "invalid_argument", json!("body"));
    let extra = embeddings(json!({"input": "x", "temperature": 1})).await;
    refused(&extra, 400, "invalid_argument", json!("body"));
    let dims = embeddings(json!({"input": "x", "dimensions": 256})).await;
    refused(&dims, 400, "invalid_argument", json!("dimensions"));
    assert_eq!(
        embeddings(json!({"input": "x", "dimensions": 512}))
            .await
            .status,
        200
    );
    let steps = embeddings(json!({"input": "x", "steps": 4})).await;
    refused(&steps, 400, "invalid_argument", json!("steps"));
    let modality = embeddings(json!({"input": "x", "modality": "smell"})).await;
    refused(&modality, 400, "invalid_argument", json!("modality"));
    let direction = embeddings(json!({"input": "x", "bridge_to": "smell"})).await;
    assert_eq!(direction.status, 400, "{}", direction.body);
}
