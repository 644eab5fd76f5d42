//! The gRPC service end to end: a tiny model trained here, the real server on an ephemeral
//! port, and the generated tonic client.

use crate::support;

use diffgap::device::Dtype;
use diffgap::diffusion::sampler::SampleOptions;
use diffgap::model::{artifact, row_seed};
use diffgap::service;
use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{
    BridgeItem, BridgeRequest, BridgeResponse, Candidate, InfoRequest, RankMode, RankRequest,
    RankResponse,
};
use support::{
    assert_close, channel, cosine, emb, flat, one_row, serve_config, serve_until_stopped,
    tiny_model, tiny_vector, wait_serving, SharedServer,
};
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const DIM: usize = support::TINY_DIM;

/// One server for the whole binary, on its own runtime and thread so that it outlives each
/// test's runtime.
static SERVER: SharedServer = SharedServer::new(|| serve_config(&tiny_model()));

fn values(r: BridgeResponse) -> Vec<Vec<f32>> {
    r.embeddings.into_iter().map(|e| e.values).collect()
}

#[tokio::test]
async fn bridge_matches_the_in_process_model() {
    let mut c = SERVER.client().await;
    let x = tiny_vector(1);
    let y = tiny_vector(2);
    let mut guided = BridgeItem::new("audio", "text", y.clone(), Some(11));
    guided.steps = Some(8);
    guided.guidance = Some(1.5);
    guided.samples = Some(3);
    let r = c
        .bridge(BridgeRequest::new(vec![
            BridgeItem::new("text", "audio", x.clone(), Some(7)),
            BridgeItem::new("text", "audio", x.clone(), None),
            guided,
        ]))
        .await
        .expect("bridge")
        .into_inner();
    let t = r.timings.expect("timings");
    assert!(t.total_ns >= t.compute_ns && t.compute_ns > 0);
    let got = values(r);
    assert_eq!(got.len(), 3);

    let model = artifact::load(&tiny_model(), tch::Device::Cpu).expect("load");
    let defaults = support::default_options(&model);
    let local = |v: &[f32], from: &str, to: &str, seed: u64, opts: SampleOptions| -> Vec<f32> {
        let out = model.bridge(&one_row(v), from, to, &[seed], opts);
        flat(&out.expect("bridge"))
    };
    assert_close(&got[0], &local(&x, "text", "audio", 7, defaults), 1e-5);
    // No seed: row_seed(0, index in the request).
    assert_close(
        &got[1],
        &local(&x, "text", "audio", row_seed(0, 1), defaults),
        1e-5,
    );
    let opts = SampleOptions {
        steps: 8,
        guidance: 1.5,
        samples: 3,
    };
    assert_close(&got[2], &local(&y, "audio", "text", 11, opts), 1e-5);
    let norm: f32 = got[0].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "output norm {norm}");
}

#[tokio::test]
async fn results_do_not_depend_on_batching() {
    let mut c = SERVER.client().await;
    let items: Vec<BridgeItem> = (0..6)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                ("text", "audio")
            } else {
                ("audio", "text")
            };
            let mut it = BridgeItem::new(from, to, tiny_vector(100 + i), Some(1000 + i));
            if i % 3 == 0 {
                it.steps = Some(3);
            }
            it
        })
        .collect();
    let together = values(
        c.bridge(BridgeRequest::new(items.clone()))
            .await
            .expect("bridge")
            .into_inner(),
    );
    // Concurrent single-item requests: the worker merges whatever is waiting.
    let singles = futures_join(items.iter().map(|it| {
        let mut c = c.clone();
        let req = BridgeRequest::new(vec![it.clone()]);
        async move { values(c.bridge(req).await.expect("bridge").into_inner()) }
    }))
    .await;
    assert_eq!(together.len(), singles.len());
    for (a, b) in together.iter().zip(&singles) {
        assert_eq!(b.len(), 1);
        assert_close(a, &b[0], 1e-5);
    }
}

/// Runs the futures concurrently on the runtime and returns their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

fn rank_request(mode: i32, top_k: u32) -> RankRequest {
    RankRequest {
        model: String::new(),
        query: emb(tiny_vector(5)),
        query_modality: "text".into(),
        candidate_modality: "audio".into(),
        candidates: (0..6)
            .map(|i| Candidate {
                id: format!("c{i}"),
                embedding: emb(tiny_vector(200 + i)),
                raw: None,
            })
            .collect(),
        mode,
        top_k,
        seed: Some(3),
        ..Default::default()
    }
}

async fn rank(c: &mut DiffgapClient<Channel>, mode: RankMode, top_k: u32) -> RankResponse {
    c.rank(rank_request(mode as i32, top_k))
        .await
        .expect("rank")
        .into_inner()
}

#[tokio::test]
async fn rank_sorts_and_reports_components() {
    let mut c = SERVER.client().await;
    let card = artifact::read_card(&tiny_model()).expect("card");

    let r = rank(&mut c, RankMode::Contrastive, 3).await;
    assert_eq!(r.results.len(), 3);
    let q = tiny_vector(5);
    for res in &r.results {
        let i: u64 = res.id[1..].parse().expect("id");
        let expected = cosine(&q, &tiny_vector(200 + i)) as f32;
        assert!((res.contrastive - expected).abs() < 1e-5);
        assert_eq!(res.score, res.contrastive);
        assert!(res.bridged.is_none() && res.reverse.is_none());
    }
    assert!(r.results.windows(2).all(|w| w[0].score >= w[1].score));

    let r = rank(&mut c, RankMode::Bridged, 0).await;
    assert_eq!(r.results.len(), 6);
    assert!(r.results.windows(2).all(|w| w[0].score >= w[1].score));
    for res in &r.results {
        assert_eq!(Some(res.score), res.bridged);
    }

    let r = rank(&mut c, RankMode::Reverse, 2).await;
    assert_eq!(r.results.len(), 2);
    for res in &r.results {
        assert_eq!(Some(res.score), res.reverse);
    }

    // Unspecified = fused with the card's weights for text->audio.
    let w = card.fusion["text->audio"];
    let r = rank(&mut c, RankMode::Unspecified, 6).await;
    assert_eq!(r.results.len(), 6);
    assert!(r.results.windows(2).all(|w| w[0].score >= w[1].score));
    for res in &r.results {
        assert_eq!(res.bridged.is_some(), w.bridged != 0.0);
        assert_eq!(res.reverse.is_some(), w.reverse != 0.0);
        let fused = w.contrastive as f32 * res.contrastive
            + w.bridged as f32 * res.bridged.unwrap_or(0.0)
            + w.reverse as f32 * res.reverse.unwrap_or(0.0);
        assert!((res.score - fused).abs() < 1e-4);
    }
    let again = rank(&mut c, RankMode::Fused, 6).await;
    assert_eq!(again.results, r.results, "same seed, same ranking");
}

#[tokio::test]
async fn info_and_health() {
    let mut c = SERVER.client().await;
    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    assert_eq!(info.models.len(), 1);
    let m = &info.models[0];
    assert_eq!(m.dim, DIM as u32);
    assert_eq!(m.name, "model");
    assert_eq!(m.space, "synthetic");
    assert_eq!(m.modalities, vec!["text".to_string(), "audio".to_string()]);
    assert_eq!(m.default_steps, 5);
    assert_eq!(m.default_samples, 2);
    assert_eq!(m.max_steps, 1000);
    assert!(m.parameters > 0);
    assert!(m.directions.contains(&"text->audio".to_string()));
    assert_eq!(info.device, "cpu");
    let limits = info.limits.expect("limits");
    assert_eq!(limits.max_items_per_request, 32);

    let mut health = HealthClient::new(channel(SERVER.addr()).await);
    for service in ["", "diffgap.v1.Diffgap"] {
        let s = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            s.status,
            ServingStatus::Serving as i32,
            "service '{service}'"
        );
    }
}

async fn expect_code<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    mention: &str,
) {
    let status = r.expect_err("the request should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(mention),
        "'{}' should mention '{mention}'",
        status.message()
    );
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments() {
    let mut c = SERVER.client().await;
    let ok = || BridgeItem::new("text", "audio", tiny_vector(9), Some(1));
    let with = |f: &dyn Fn(&mut BridgeItem)| {
        let mut it = ok();
        f(&mut it);
        BridgeRequest::new(vec![ok(), it])
    };
    let cases: Vec<(BridgeRequest, &str)> = vec![
        (BridgeRequest::new(vec![]), "items"),
        (BridgeRequest::new(vec![ok(); 33]), "limit is 32"),
        (
            with(&|it| it.embedding = emb(vec![0.1; DIM + 1])),
            "items[1].embedding.values",
        ),
        (with(&|it| it.embedding = None), "items[1].embedding"),
        (
            with(&|it| {
                if let Some(e) = it.embedding.as_mut() {
                    e.values[3] = f32::NAN;
                }
            }),
            "items[1].embedding.values[3]",
        ),
        (
            with(&|it| {
                if let Some(e) = it.embedding.as_mut() {
                    e.values[0] = f32::INFINITY;
                }
            }),
            "items[1].embedding.values[0]",
        ),
        (
            with(&|it| it.embedding = emb(vec![0.0; DIM])),
            "zero vector",
        ),
        (
            with(&|it| it.source_modality = "video".into()),
            "items[1].source_modality",
        ),
        (
            with(&|it| it.target_modality = "text".into()),
            "items[1].target_modality",
        ),
        (with(&|it| it.steps = Some(0)), "items[1].steps"),
        (with(&|it| it.steps = Some(1001)), "items[1].steps"),
        (with(&|it| it.samples = Some(0)), "items[1].samples"),
        (
            with(&|it| it.guidance = Some(f32::NAN)),
            "items[1].guidance",
        ),
    ];
    for (req, mention) in cases {
        expect_code(c.bridge(req).await, Code::InvalidArgument, mention).await;
    }

    let mut unknown_mode = rank_request(99, 3);
    expect_code(
        c.rank(unknown_mode.clone()).await,
        Code::InvalidArgument,
        "mode",
    )
    .await;
    unknown_mode.mode = RankMode::Contrastive as i32;
    unknown_mode.candidates.clear();
    expect_code(
        c.rank(unknown_mode).await,
        Code::InvalidArgument,
        "candidates",
    )
    .await;
    let mut same = rank_request(RankMode::Fused as i32, 3);
    same.candidate_modality = "text".into();
    expect_code(
        c.rank(same).await,
        Code::InvalidArgument,
        "candidate_modality",
    )
    .await;
    let mut bad_query = rank_request(RankMode::Fused as i32, 3);
    bad_query.query = emb(vec![1.0; 3]);
    expect_code(
        c.rank(bad_query).await,
        Code::InvalidArgument,
        "query.values",
    )
    .await;
    let mut bad_cand = rank_request(RankMode::Fused as i32, 3);
    bad_cand.candidates[2].embedding = emb(vec![f32::NEG_INFINITY; DIM]);
    expect_code(
        c.rank(bad_cand).await,
        Code::InvalidArgument,
        "candidates[2].embedding.values[0]",
    )
    .await;
}

#[tokio::test]
async fn unknown_model_is_not_found() {
    let mut c = SERVER.client().await;
    let mut req = BridgeRequest::new(vec![BridgeItem::new("text", "audio", tiny_vector(1), None)]);
    req.model = "nope".into();
    expect_code(c.bridge(req).await, Code::NotFound, "nope").await;
    let mut req = rank_request(RankMode::Contrastive as i32, 1);
    req.model = "nope".into();
    expect_code(c.rank(req).await, Code::NotFound, "nope").await;
    // The model's own name works as well as the empty default.
    let mut req = BridgeRequest::new(vec![BridgeItem::new("text", "audio", tiny_vector(1), None)]);
    req.model = "model".into();
    c.bridge(req).await.expect("bridge by name");
}

#[tokio::test]
async fn shuts_down_gracefully() {
    let (addr, stop, server) = serve_until_stopped(serve_config(&tiny_model())).await;
    assert_ne!(addr.port(), 0);
    let mut c = DiffgapClient::new(channel(addr).await);
    c.bridge(BridgeRequest::new(vec![BridgeItem::new(
        "text",
        "audio",
        tiny_vector(1),
        None,
    )]))
    .await
    .expect("bridge");
    drop(c);
    stop.send(()).expect("stop");
    support::stops(server).await;
}

#[tokio::test]
async fn a_missing_model_fails_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listening = service::bind(serve_config(dir.path())).await.expect("bind");
    let err = listening
        .serve(std::future::pending())
        .await
        .expect_err("no model there");
    assert!(err.to_string().contains("card.json"), "{err}");
}

#[tokio::test]
async fn a_full_queue_is_resource_exhausted() {
    let mut cfg = serve_config(&tiny_model());
    cfg.queue_capacity = 1;
    cfg.max_batch_rows = 1;
    let (addr, stop, server) = serve_until_stopped(cfg).await;
    let c = DiffgapClient::new(channel(addr).await);
    // One slow request runs, one waits, the rest find the queue full.
    let mut slow = BridgeItem::new("text", "audio", tiny_vector(1), Some(1));
    slow.steps = Some(1000);
    slow.samples = Some(4);
    let answers = futures_join((0..12).map(|_| {
        let mut c = c.clone();
        let req = BridgeRequest::new(vec![slow.clone()]);
        async move { c.bridge(req).await.map(|r| values(r.into_inner())) }
    }))
    .await;
    let ok: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    let full = answers
        .iter()
        .filter(|a| matches!(a, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert!(!ok.is_empty(), "some requests are served");
    assert!(full > 0, "some requests find the queue full");
    assert_eq!(ok.len() + full, answers.len(), "{answers:?}");
    for v in &ok {
        assert_close(&v[0], &ok[0][0], 1e-5);
    }
    stop.send(()).expect("stop");
    server.await.expect("task").expect("serve");
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let addr = SERVER.addr();
    wait_serving(addr).await;
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    grpc.ready().await.expect("ready");
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let codec =
        tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    );
    let mut answers = grpc
        .streaming(
            tonic::Request::new(tokio_stream::once(request)),
            path,
            codec,
        )
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["diffgap.v1.Diffgap", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
}

#[tokio::test]
async fn a_bfloat16_server_says_so_and_answers_as_the_bfloat16_model_does() {
    let mut cfg = serve_config(&tiny_model());
    cfg.dtype = Dtype::Bfloat16;
    let (addr, _) = support::serve_forever(cfg);
    let mut c = support::client(addr).await;
    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    assert_eq!(info.models[0].dtype, "bfloat16");
    let f32_info = SERVER.client().await.info(InfoRequest {}).await;
    assert_eq!(
        f32_info.expect("info").into_inner().models[0].dtype,
        "float32"
    );

    let x = tiny_vector(3);
    let r = c
        .bridge(BridgeRequest::new(vec![BridgeItem::new(
            "text",
            "audio",
            x.clone(),
            Some(5),
        )]))
        .await
        .expect("bridge")
        .into_inner();
    let model = artifact::load_as(&tiny_model(), tch::Device::Cpu, Dtype::Bfloat16).expect("load");
    let opts = support::default_options(&model);
    let local = model
        .bridge(&one_row(&x), "text", "audio", &[5], opts)
        .expect("in-process bridge");
    assert_close(&values(r)[0], &flat(&local), 1e-5);
}
