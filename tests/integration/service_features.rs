//! The service's newer features end to end, against the real server on an ephemeral port and
//! the generated tonic client: Refine, BridgeStream, catalogs and generative Rank. (The model
//! repository is tested in tests/integration/reload.rs, deadlines and batching in
//! tests/service_deadlines.rs.)

use crate::support;

use std::path::PathBuf;
use std::sync::OnceLock;

use diffgap::device::DeviceChoice;
use diffgap::diffusion::sampler::SampleOptions;
use diffgap::model::{artifact, row_seed};
use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{
    BridgeItem, BridgeRequest, BridgeStreamRequest, BridgeStreamResponse, Candidate, InfoRequest,
    RankMode, RankRequest, Ranked, RefineRequest,
};
use diffgap::service::request::catalog::{self, BuildArgs};
use support::{
    assert_close, emb, flat, one_row, serve_config, tiny_model, tiny_vector, SharedServer,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

const DIM: usize = support::TINY_DIM;
/// The catalog served by [`server`].
const CATALOG: &str = "sounds";

/// A catalog of the tiny model's audio, built once into `<tmp>/catalogs/sounds`: the
/// catalogs directory.
fn catalogs_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let pairs = support::synth_file(&dir, "catalog.safetensors", 24, DIM, 9);
        let root = dir.join("catalogs");
        let meta = catalog::build(&BuildArgs {
            model: tiny_model(),
            pairs: Some(pairs),
            audio_dir: None,
            modality: "audio".into(),
            out: root.join(CATALOG),
            ids: None,
            seed: 0,
            device: DeviceChoice::Cpu,
        })
        .expect("building the catalog");
        assert_eq!(meta.model, "model");
        root
    })
    .clone()
}

/// One server of the tiny model with the catalog, for the whole binary.
static SERVER: SharedServer = SharedServer::new(|| {
    let mut cfg = serve_config(&tiny_model());
    cfg.max_items_per_request = 64;
    cfg.catalogs = catalogs_dir();
    // Two instances: every call here also checks that requests, catalogs and reloads
    // work whichever instance takes them.
    cfg.instances = 2;
    cfg
});

/// An INVALID_ARGUMENT whose message starts with `field`.
fn assert_invalid(e: &Status, field: &str) {
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with(&format!("{field}:")),
        "expected a message about {field}: {}",
        e.message()
    );
}

// ---------------------------------------------------------------------------------- Refine

fn refine_request(x: &[f32], partner: &[f32]) -> RefineRequest {
    RefineRequest {
        modality: "audio".into(),
        embedding: emb(x.to_vec()),
        partner: emb(partner.to_vec()),
        ..Default::default()
    }
}

#[tokio::test]
async fn refine_matches_the_in_process_model() {
    let mut c = SERVER.client().await;
    let (x, p) = (tiny_vector(21), tiny_vector(22));
    let mut req = refine_request(&x, &p);
    req.partner_modality = "text".into();
    req.strength = Some(0.5);
    req.steps = Some(8);
    req.samples = Some(2);
    req.seed = Some(5);
    let got = c.refine(req).await.expect("refine").into_inner();
    assert!(got.timings.expect("timings").compute_ns > 0);
    let got = got.embedding.expect("an embedding").values;
    // Defaults: the other modality as partner, the model's strength, steps and samples, and
    // the seed of a one-item Bridge without one.
    let dflt = c
        .refine(refine_request(&x, &p))
        .await
        .expect("refine with defaults")
        .into_inner()
        .embedding
        .expect("an embedding")
        .values;

    let model = artifact::load(&tiny_model(), tch::Device::Cpu).expect("load");
    let (xt, pt) = (one_row(&x), one_row(&p));
    let local = |seed: u64, strength: f64, opts: SampleOptions| -> Vec<f32> {
        let out = model.refine(&xt, "audio", &pt, "text", &[seed], strength, opts);
        flat(&out.expect("refine"))
    };
    let opts = SampleOptions {
        steps: 8,
        guidance: model.card.defaults.guidance,
        samples: 2,
    };
    assert_close(&got, &local(5, 0.5, opts), 1e-5);
    let d = model.card.defaults;
    let defaults = support::default_options(&model);
    assert_close(
        &dflt,
        &local(row_seed(0, 0), d.refine_strength, defaults),
        1e-5,
    );
    let norm: f32 = got.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "output norm {norm}");
    // A refinement stays closer to its input at a small strength than at a full one.
    assert_ne!(got, dflt);
}

#[tokio::test]
async fn refine_refuses_bad_requests_naming_the_field() {
    let mut c = SERVER.client().await;
    let (x, p) = (tiny_vector(23), tiny_vector(24));
    for bad in [0.0, 1.5, f32::NAN, -0.1] {
        let mut req = refine_request(&x, &p);
        req.strength = Some(bad);
        let e = c.refine(req).await.expect_err("bad strength");
        assert_invalid(&e, "strength");
    }
    let mut req = refine_request(&x, &p);
    req.partner = None;
    assert_invalid(&c.refine(req).await.expect_err("no partner"), "partner");
    let mut req = refine_request(&x, &p);
    req.embedding = None;
    assert_invalid(&c.refine(req).await.expect_err("no embedding"), "embedding");
    let e = c
        .refine(refine_request(&x[..DIM - 1], &p))
        .await
        .expect_err("short embedding");
    assert_invalid(&e, "embedding.values");
    let e = c
        .refine(refine_request(&x, &[p.clone(), vec![0.1]].concat()))
        .await
        .expect_err("long partner");
    assert_invalid(&e, "partner.values");
    let mut req = refine_request(&x, &p);
    req.modality = "smell".into();
    assert_invalid(&c.refine(req).await.expect_err("modality"), "modality");
    let mut req = refine_request(&x, &p);
    req.steps = Some(0);
    assert_invalid(&c.refine(req).await.expect_err("steps"), "steps");
}

// ---------------------------------------------------------------------------- BridgeStream

/// Items 0..n, alternating directions, some with a seed and some without.
fn stream_items(n: u64) -> Vec<BridgeItem> {
    (0..n)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                ("text", "audio")
            } else {
                ("audio", "text")
            };
            let seed = (i % 3 == 0).then_some(500 + i);
            let mut it = BridgeItem::new(from, to, tiny_vector(300 + i), seed);
            it.steps = Some(4 + (i % 2) as u32);
            it
        })
        .collect()
}

fn chunk(model: &str, items: Vec<BridgeItem>) -> BridgeStreamRequest {
    BridgeStreamRequest {
        model: model.into(),
        items,
    }
}

/// Streams `chunks`; the answers received, then the status that ended the stream (None: OK).
async fn stream(
    c: &mut DiffgapClient<Channel>,
    chunks: Vec<BridgeStreamRequest>,
) -> (Vec<BridgeStreamResponse>, Option<Status>) {
    let mut answers = Vec::new();
    let mut s = match c.bridge_stream(tokio_stream::iter(chunks)).await {
        Ok(r) => r.into_inner(),
        Err(e) => return (answers, Some(e)),
    };
    loop {
        match s.message().await {
            Ok(Some(r)) => answers.push(r),
            Ok(None) => return (answers, None),
            Err(e) => return (answers, Some(e)),
        }
    }
}

#[tokio::test]
async fn bridge_stream_equals_one_unary_bridge_in_order() {
    let mut c = SERVER.client().await;
    let items = stream_items(7);
    let unary: Vec<Vec<f32>> = c
        .bridge(BridgeRequest::new(items.clone()))
        .await
        .expect("bridge")
        .into_inner()
        .embeddings
        .into_iter()
        .map(|e| e.values)
        .collect();
    let sizes = [2usize, 3, 1, 1];
    let mut chunks = Vec::new();
    let mut rest = items.into_iter();
    for (k, n) in sizes.iter().enumerate() {
        // The model may be repeated on later chunks, or left empty.
        let model = if k == 2 { "model" } else { "" };
        chunks.push(chunk(model, rest.by_ref().take(*n).collect()));
    }
    let (answers, end) = stream(&mut c, chunks).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(answers.len(), sizes.len());
    let mut first = 0;
    let mut streamed = Vec::new();
    for (k, a) in answers.into_iter().enumerate() {
        assert_eq!(a.chunk, k as u64);
        assert_eq!(a.first_item, first as u64);
        assert_eq!(a.embeddings.len(), sizes[k]);
        assert!(a.timings.expect("timings").total_ns > 0);
        first += sizes[k];
        streamed.extend(a.embeddings.into_iter().map(|e| e.values));
    }
    assert_eq!(streamed.len(), unary.len());
    for (i, (s, u)) in streamed.iter().zip(&unary).enumerate() {
        assert_eq!(s.len(), DIM, "item {i}");
        assert_close(s, u, 1e-5);
    }
}

#[tokio::test]
async fn bridge_stream_ends_at_a_bad_chunk_after_answering_the_earlier_ones() {
    let mut c = SERVER.client().await;
    let good = || stream_items(2);
    let mut short = stream_items(1);
    short[0].embedding = emb(vec![0.5; DIM + 1]);
    // A bad item: refused by the chunk's validation.
    let (answers, end) = stream(
        &mut c,
        vec![chunk("", good()), chunk("", good()), chunk("", short)],
    )
    .await;
    assert_eq!(
        answers.len(),
        2,
        "the chunks before the bad one are answered"
    );
    assert_eq!(
        answers.iter().map(|a| a.chunk).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_invalid(
        &end.expect("an error ends the stream"),
        "items[0].embedding.values",
    );

    // An empty chunk.
    let (answers, end) = stream(&mut c, vec![chunk("", good()), chunk("", vec![])]).await;
    assert_eq!(answers.len(), 1, "chunk 0 is answered before the error");
    assert_invalid(&end.expect("an error ends the stream"), "items");

    // A switch of model mid-stream.
    let (answers, end) = stream(
        &mut c,
        vec![chunk("", good()), chunk("other", good()), chunk("", good())],
    )
    .await;
    assert_eq!(answers.len(), 1, "chunk 0 is answered before the error");
    assert_eq!(answers[0].embeddings.len(), 2);
    assert_invalid(&end.expect("an error ends the stream"), "model");
}

// -------------------------------------------------------------------------------- Catalogs

fn rank_request(query: &[f32], mode: RankMode) -> RankRequest {
    RankRequest {
        query: emb(query.to_vec()),
        query_modality: "text".into(),
        candidate_modality: "audio".into(),
        mode: mode as i32,
        ..Default::default()
    }
}

fn assert_same_ranking(a: &[Ranked], b: &[Ranked], what: &str) {
    let ids = |r: &[Ranked]| r.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(a), ids(b), "{what}: the order differs");
    // Relative: the hubness-corrected scores are cosines times an inverse temperature.
    let close = |x: f32, y: f32| (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1.0);
    let opt = |x: Option<f32>, y: Option<f32>| match (x, y) {
        (Some(x), Some(y)) => close(x, y),
        (None, None) => true,
        _ => false,
    };
    for (x, y) in a.iter().zip(b) {
        assert!(close(x.score, y.score), "{what} {}: {x:?} vs {y:?}", x.id);
        assert!(
            close(x.contrastive, y.contrastive),
            "{what}: {x:?} vs {y:?}"
        );
        assert!(opt(x.bridged, y.bridged), "{what}: {x:?} vs {y:?}");
        assert!(opt(x.reverse, y.reverse), "{what}: {x:?} vs {y:?}");
        assert!(opt(x.generative, y.generative), "{what}: {x:?} vs {y:?}");
    }
}

#[tokio::test]
async fn a_catalog_ranks_like_its_candidates_inline() {
    let mut c = SERVER.client().await;
    let data = catalog::read(&catalogs_dir().join(CATALOG)).expect("read the catalog");
    let n = data.entries();
    assert!(n > 2 && n <= 64, "{n} entries");

    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    assert_eq!(info.models[0].instances, 2);
    assert!(info.models[0].threads_per_instance >= 1);
    let cat = &info.models[0].catalogs;
    assert_eq!(cat.len(), 1, "{cat:?}");
    assert_eq!(cat[0].name, CATALOG);
    assert_eq!(cat[0].modality, "audio");
    assert_eq!(cat[0].entries, n as u64);
    assert_eq!(cat[0].reverse_modalities, vec!["text".to_owned()]);

    let inline: Vec<Candidate> = data
        .meta
        .ids
        .iter()
        .zip(data.embeddings.chunks(DIM))
        .map(|(id, e)| Candidate {
            id: id.clone(),
            embedding: emb(e.to_vec()),
            raw: None,
        })
        .collect();
    let query = tiny_vector(41);
    for mode in [
        RankMode::Contrastive,
        RankMode::Bridged,
        RankMode::Reverse,
        RankMode::Fused,
        RankMode::Unspecified,
        RankMode::FusedHub,
        RankMode::ValidatedBest,
        RankMode::Centred,
        RankMode::InvertedSoftmax,
        RankMode::Adapter,
    ] {
        for (seed, top_k) in [(None, 0), (Some(0), 5)] {
            let mut by_catalog = rank_request(&query, mode);
            by_catalog.catalog = CATALOG.into();
            by_catalog.candidate_modality.clear();
            by_catalog.seed = seed;
            by_catalog.top_k = top_k;
            let mut by_inline = rank_request(&query, mode);
            by_inline.candidates = inline.clone();
            by_inline.seed = seed;
            by_inline.top_k = top_k;
            let a = c.rank(by_catalog).await.expect("catalog rank").into_inner();
            let b = c.rank(by_inline).await.expect("inline rank").into_inner();
            let want = if top_k == 0 { n } else { top_k as usize };
            assert_eq!(a.results.len(), want, "{mode:?}");
            assert_same_ranking(&a.results, &b.results, &format!("{mode:?}"));
            match mode {
                RankMode::Reverse => assert!(a.results.iter().all(|r| r.reverse.is_some())),
                RankMode::Bridged => assert!(a.results.iter().all(|r| r.bridged.is_some())),
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn catalog_requests_are_checked() {
    let mut c = SERVER.client().await;
    let mut req = rank_request(&tiny_vector(42), RankMode::Contrastive);
    req.catalog = "nowhere".into();
    let e = c.rank(req).await.expect_err("unknown catalog");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("nowhere"), "{}", e.message());

    let mut req = rank_request(&tiny_vector(42), RankMode::Contrastive);
    req.catalog = CATALOG.into();
    req.candidates = vec![Candidate {
        id: "x".into(),
        embedding: emb(tiny_vector(43)),
        raw: None,
    }];
    assert_invalid(
        &c.rank(req).await.expect_err("catalog and candidates"),
        "candidates",
    );

    let mut req = rank_request(&tiny_vector(42), RankMode::Contrastive);
    req.catalog = CATALOG.into();
    req.candidate_modality = "text".into();
    assert_invalid(
        &c.rank(req).await.expect_err("the catalog holds audio"),
        "candidate_modality",
    );
}

// ------------------------------------------------------------------------ Generative Rank

#[tokio::test]
async fn generative_rank_reorders_the_fused_shortlist() {
    let mut c = SERVER.client().await;
    let query = tiny_vector(60);
    let candidates: Vec<Candidate> = (0..12)
        .map(|i| Candidate {
            id: format!("c{i}"),
            embedding: emb(tiny_vector(61 + i)),
            raw: None,
        })
        .collect();
    let mut fused = rank_request(&query, RankMode::Fused);
    fused.candidates = candidates.clone();
    fused.seed = Some(3);
    let fused = c.rank(fused).await.expect("fused").into_inner().results;
    let k = 4;
    let mut gen = rank_request(&query, RankMode::Generative);
    gen.candidates = candidates.clone();
    gen.seed = Some(3);
    gen.shortlist = Some(k as u32);
    let got = c.rank(gen.clone()).await.expect("generative").into_inner();
    let r = got.results;
    assert_eq!(r.len(), candidates.len());
    // The short list: the k best by the fused score, each scored by its generative score and
    // ordered by it.
    let short: Vec<&Ranked> = r[..k].iter().collect();
    for s in &short {
        let g = s
            .generative
            .expect("a shortlisted candidate carries generative");
        assert_eq!(s.score, g);
        assert!(g.is_finite());
    }
    assert!(short.windows(2).all(|w| w[0].generative >= w[1].generative));
    let mut short_ids: Vec<&str> = short.iter().map(|s| s.id.as_str()).collect();
    let mut fused_top: Vec<&str> = fused[..k].iter().map(|s| s.id.as_str()).collect();
    short_ids.sort_unstable();
    fused_top.sort_unstable();
    assert_eq!(short_ids, fused_top);
    // The rest: in fused order, with their fused scores and no generative one.
    for (x, y) in r[k..].iter().zip(&fused[k..]) {
        assert_eq!(x.id, y.id);
        assert!(x.generative.is_none());
        assert!((x.score - y.score).abs() <= 1e-6, "{x:?} vs {y:?}");
    }
    // Deterministic, and top_k cuts the re-ranked list.
    gen.top_k = 2;
    let again = c.rank(gen.clone()).await.expect("again").into_inner();
    assert_same_ranking(&again.results, &r[..2], "top 2");

    // The default short list (10) re-ranks up to the 10 best.
    gen.top_k = 0;
    gen.shortlist = None;
    let dflt = c.rank(gen.clone()).await.expect("default").into_inner();
    let with = dflt.results.iter().filter(|x| x.generative.is_some());
    assert_eq!(with.count(), 10);

    for bad in [0, 257, 1000] {
        gen.shortlist = Some(bad);
        assert_invalid(
            &c.rank(gen.clone()).await.expect_err("shortlist"),
            "shortlist",
        );
    }
    gen.shortlist = Some(256);
    let all = c
        .rank(gen)
        .await
        .expect("shortlist 256 over 12")
        .into_inner();
    assert!(all.results.iter().all(|x| x.generative.is_some()));
}
