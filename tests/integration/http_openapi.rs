//! The HTTP API's OpenAPI document (`GET /openapi.json`) on the real server (a tiny model,
//! bearer tokens on): it parses as OpenAPI 3.1 with an independent parser (oas3) and every
//! `$ref` resolves; it documents exactly the routes and methods the router serves (read from
//! the router's source, and probed on the live listener), so the two cannot drift; and each
//! API route asks for the bearer scheme and documents its errors in the shape it sends.
//! schemathesis fuzzes every operation against the document in `scripts/ops-check.sh`.

use crate::support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::OnceLock;

use oas3::spec::{SecurityScheme, Spec};
use serde_json::Value;
use support::http::{get, request};
use support::{serve_config, tiny_model, with_token, Addrs};

const TOKEN: &str = "openapi-test-token";

fn server() -> Addrs {
    static ADDRS: OnceLock<Addrs> = OnceLock::new();
    *ADDRS.get_or_init(|| {
        let mut cfg = with_token(serve_config(&tiny_model()), TOKEN);
        cfg.http_listen = "127.0.0.1:0".into();
        support::serve_forever_on(cfg)
    })
}

async fn http() -> SocketAddr {
    support::http::listener(server()).await
}

/// The served document, fetched without a token, as JSON and as oas3 parsed it.
async fn document() -> (Value, Spec) {
    let r = get(http().await, "/openapi.json", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let spec = oas3::from_json(&r.body).expect("the document parses as OpenAPI 3.1 (oas3)");
    (r.json(), spec)
}

/// (METHOD, path) of every documented operation.
fn documented(spec: &Spec) -> BTreeSet<(String, String)> {
    spec.operations()
        .map(|(path, method, _)| (method.to_string(), path))
        .collect()
}

/// (METHOD, path) of every `.route(...)` call in the HTTP listener's sources.
fn routed() -> BTreeSet<(String, String)> {
    let dir = support::root().join("src/service/api/http");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("read the HTTP sources") {
        let file = entry.expect("entry").path();
        if file.extension().is_none_or(|e| e != "rs") {
            continue; // the playground's page files
        }
        let source = std::fs::read_to_string(&file).expect("read a source file");
        for call in [".nest(", ".merge(", ".nest_service(", ".route_service("] {
            assert!(
                !source.contains(call),
                "{}: the router uses {call}, whose routes this test cannot read",
                file.display()
            );
        }
        for route in source.split(".route(").skip(1) {
            let call = &route[..closing_paren(route)];
            let (path, methods) = call
                .trim_start()
                .strip_prefix('"')
                .and_then(|c| c.split_once('"'))
                .unwrap_or_else(|| {
                    panic!("{}: a route without a path literal: {call}", file.display())
                });
            let methods: Vec<&str> = ["get", "post", "put", "delete", "patch"]
                .into_iter()
                .filter(|m| methods.contains(&format!("{m}(")))
                .collect();
            assert!(!methods.is_empty(), "no method in the route {path}");
            for m in methods {
                out.insert((m.to_ascii_uppercase(), path.to_owned()));
            }
        }
    }
    out
}

/// `path` with a value for each of its parameters: one the route serves when it needs no token.
fn probe(path: &str) -> String {
    path.replace("{name}", "app.js")
        .replace("{catalog}", "sounds")
        .replace("{id}", "0")
}

/// Where the call whose arguments `text` starts with ends (its closing parenthesis).
fn closing_paren(text: &str) -> usize {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth == 0 {
            return i;
        }
    }
    panic!("an unclosed call: {text}")
}

#[tokio::test]
async fn the_document_parses_and_every_reference_resolves() {
    let (doc, spec) = document().await;
    let version = spec.validate_version().expect("an OpenAPI 3.1 version");
    assert_eq!((version.major, version.minor), (3, 1));
    assert_eq!(spec.info.version, env!("CARGO_PKG_VERSION"));
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "{refs:?}");
    for r in refs {
        let pointer = r.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    for (path, method, op) in spec.operations() {
        let responses = op.responses.as_ref().expect("responses");
        let success = if path == "/" { "303" } else { "200" };
        assert!(responses.contains_key(success), "{method} {path}");
        for (status, response) in responses {
            let response = response.resolve(&spec).expect("a response");
            let media: BTreeSet<&str> = response.content.keys().map(String::as_str).collect();
            let expected = match (path.as_str(), status.as_str()) {
                ("/", _) => BTreeSet::new(), // the redirect to the playground page
                ("/playground", "200") => BTreeSet::from(["text/html"]),
                ("/playground/{name}", "200") => BTreeSet::from(["text/javascript", "text/css"]),
                (p, "200") if p.ends_with("/audio") => {
                    BTreeSet::from(["audio/wav", "audio/flac", "audio/ogg", "audio/mpeg"])
                }
                _ => BTreeSet::from(["application/json"]),
            };
            assert_eq!(media, expected, "{method} {path} {status}");
        }
        if let Some(body) = &op.request_body {
            let body = body.resolve(&spec).expect("a request body");
            assert!(body.content.contains_key("application/json"), "{path}");
        }
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_and_the_router_have_the_same_routes() {
    let (_, spec) = document().await;
    let documented = documented(&spec);
    assert_eq!(documented, routed(), "documented vs routed");
    // The live router agrees: each documented method is served, each other method of the
    // path is 405 (an unknown path would be the fallback's 404).
    let addr = http().await;
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let r = request(addr, method, &probe(path), &[], b"").await;
            let is_documented = documented.contains(&(method.to_owned(), path.clone()));
            if is_documented {
                assert!(
                    ![404, 405].contains(&r.status),
                    "{method} {path}: {}",
                    r.body
                );
            } else {
                assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
            }
        }
    }
}

#[tokio::test]
async fn api_routes_need_the_bearer_and_document_their_errors() {
    let (doc, spec) = document().await;
    let components = spec.components.as_ref().expect("components");
    let scheme = components.security_schemes.get("bearer").expect("bearer");
    match scheme.resolve(&spec).expect("the bearer scheme") {
        SecurityScheme::Http { scheme, .. } => assert_eq!(scheme, "bearer"),
        other => panic!("not HTTP bearer: {other:?}"),
    }
    let addr = http().await;
    for (path, method, op) in spec.operations() {
        let r = request(addr, method.as_str(), &probe(&path), &[], b"").await;
        let responses = op.responses.as_ref().expect("responses");
        if !path.starts_with("/v1/") {
            assert!(op.security.is_empty(), "{path} asks for a token");
            assert!(responses.contains_key(&r.status.to_string()), "{path}");
            continue;
        }
        let security: Vec<_> = op.security.iter().flat_map(|s| s.0.keys()).collect();
        assert_eq!(security, ["bearer"], "{method} {path}");
        for status in ["400", "401", "408", "413", "503"] {
            assert!(
                responses.contains_key(status),
                "{method} {path}: no {status}"
            );
        }
        // The refusal without a token is documented, and its body has the fields of the
        // documented error schema.
        assert_eq!(r.status, 401, "{method} {path}: {}", r.body);
        let at = format!(
            "/paths/{}/{}/responses/401/content/application~1json/schema",
            path.replace('/', "~1"),
            method.as_str().to_ascii_lowercase()
        );
        let schema = doc.pointer(&at).unwrap_or_else(|| panic!("no {at}"));
        let error = resolve(&doc, schema).expect("the error schema");
        let detail = resolve(&doc, &error["properties"]["error"]).expect("the error's detail");
        let documented: BTreeSet<&str> = keys(&detail["properties"]);
        assert_eq!(keys(&r.json()["error"]), documented, "{path}: {}", r.body);
    }
}

/// The schema `v` refers to (or `v` itself).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> Option<&'a Value> {
    match v["$ref"].as_str() {
        Some(r) => doc.pointer(r.strip_prefix('#')?),
        None => Some(v),
    }
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}
