//! Rank's modes beyond the cosines, against the real server on an ephemeral port: the
//! hubness-corrected fused score and the cheap baselines score inline candidates exactly as the
//! model's fitted objects do in process; "validated best" is the card's choice; Info shows the
//! validation ladder; a model without baselines refuses the modes that need them.

use crate::support;

use diffgap::baselines::hubness::{hub_fused, ModeScores};
use diffgap::baselines::modes::BaselineMode;
use diffgap::diffusion::normalize::l2_normalize;
use diffgap::diffusion::sampler::SampleOptions;
use diffgap::model::{artifact, row_seed, DiffgapModel};
use diffgap::service::proto::{Candidate, InfoRequest, RankMode, RankRequest, Ranked};
use diffgap::service::worker::ranking::BANK_SEED;
use support::{emb, flat, serve_config, serve_forever, tiny_model, tiny_vector, SharedServer};
use tch::{Device, Tensor};
use tonic::Code;

static SERVER: SharedServer = SharedServer::new(|| serve_config(&tiny_model()));

const CANDIDATES: u64 = 12;
const SEED: u64 = 3;

fn request(mode: RankMode, (qm, cm): (&str, &str)) -> RankRequest {
    RankRequest {
        query: emb(tiny_vector(7)),
        query_modality: qm.into(),
        candidate_modality: cm.into(),
        candidates: (0..CANDIDATES)
            .map(|i| Candidate {
                id: format!("c{i}"),
                embedding: emb(tiny_vector(100 + i)),
                raw: None,
            })
            .collect(),
        mode: mode as i32,
        seed: Some(SEED),
        ..Default::default()
    }
}

fn rows(seeds: impl Iterator<Item = u64>) -> Tensor {
    let v: Vec<Tensor> = seeds.map(|s| Tensor::from_slice(&tiny_vector(s))).collect();
    l2_normalize(&Tensor::stack(&v, 0))
}

fn rank_options(model: &DiffgapModel) -> SampleOptions {
    let d = model.card.defaults;
    SampleOptions {
        steps: d.rank_steps,
        guidance: d.guidance,
        samples: d.rank_samples,
    }
}

/// What `mode` scores each candidate of [`request`], computed in process from the model's files.
fn expected(model: &DiffgapModel, mode: RankMode, (qm, cm): (&str, &str)) -> Vec<f32> {
    let b = artifact::load_baselines(&tiny_model(), &model.card, Device::Cpu)
        .expect("baselines")
        .expect("the tiny model has baselines");
    let q = rows([7].into_iter());
    let c = rows(100..100 + CANDIDATES);
    let key = format!("{qm}->{cm}");
    let scores = if mode == RankMode::FusedHub {
        let opts = rank_options(model);
        let bridge = |x: &Tensor, from: &str, to: &str, seeds: &[u64]| {
            l2_normalize(&model.bridge(x, from, to, seeds, opts).expect("bridge"))
        };
        let cand_seeds: Vec<u64> = (0..CANDIDATES as usize)
            .map(|i| row_seed(SEED, i + 1))
            .collect();
        let (bq, bc) = (
            bridge(&q, qm, cm, &[row_seed(SEED, 0)]),
            bridge(&c, cm, qm, &cand_seeds),
        );
        let bank = b.bank(qm).expect("bank");
        let bank_seeds: Vec<u64> = (0..bank.size()[0] as usize)
            .map(|i| row_seed(BANK_SEED, i))
            .collect();
        let bb = bridge(bank, qm, cm, &bank_seeds);
        let of = |x: &Tensor, bx: &Tensor| ModeScores {
            contrastive: x.matmul(&c.tr()),
            bridged: bx.matmul(&c.tr()),
            reverse: x.matmul(&bc.tr()),
        };
        hub_fused(&of(&q, &bq), &of(bank, &bb), &model.card.hub_fusion[&key])
    } else {
        let name = mode.as_str_name().trim_start_matches("RANK_MODE_");
        let baseline = BaselineMode::parse(&name.to_ascii_lowercase()).expect("a baseline");
        b.scores(baseline, (&q, qm), (&c, cm)).expect("scores")
    };
    flat(&scores)
}

fn assert_scores(results: &[Ranked], want: &[f32], what: &str) {
    assert_eq!(results.len(), want.len(), "{what}");
    for pair in results.windows(2) {
        assert!(pair[0].score >= pair[1].score, "{what}: not best first");
    }
    for r in results {
        let i: usize = r.id[1..].parse().expect("an id c<i>");
        let tol = 1e-4 * want[i].abs().max(1.0);
        assert!(
            (r.score - want[i]).abs() <= tol,
            "{what} {}: served {} vs in process {}",
            r.id,
            r.score,
            want[i]
        );
    }
}

#[tokio::test]
async fn corrected_and_baseline_modes_score_like_the_fitted_objects() {
    let model = artifact::load(&tiny_model(), Device::Cpu).expect("load");
    let mut c = SERVER.client().await;
    for dir in [("text", "audio"), ("audio", "text")] {
        for mode in [
            RankMode::FusedHub,
            RankMode::Centred,
            RankMode::InvertedSoftmax,
            RankMode::Ridge,
            RankMode::Procrustes,
            RankMode::Adapter,
        ] {
            let r = c.rank(request(mode, dir)).await.expect("rank").into_inner();
            let what = format!("{mode:?} {}->{}", dir.0, dir.1);
            assert_scores(&r.results, &expected(&model, mode, dir), &what);
            if mode == RankMode::FusedHub {
                let w = model.card.hub_fusion[&format!("{}->{}", dir.0, dir.1)].weights;
                let all = |f: fn(&Ranked) -> bool| r.results.iter().all(f);
                assert_eq!(all(|x| x.bridged.is_some()), w.bridged != 0.0, "{what}");
                assert_eq!(all(|x| x.reverse.is_some()), w.reverse != 0.0, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn validated_best_is_the_cards_choice_and_info_shows_the_ladder() {
    let model = artifact::load(&tiny_model(), Device::Cpu).expect("load");
    let mut c = SERVER.client().await;
    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    let ladders = &info.models[0].ladders;
    let mut directions: Vec<&str> = ladders.iter().map(|l| l.direction.as_str()).collect();
    directions.sort_unstable();
    assert_eq!(directions, vec!["audio->text", "text->audio"]);
    for l in ladders {
        let card = &model.card.validated_best[&l.direction];
        assert_eq!(l.validated_best, card.mode);
        assert_eq!(l.best_baseline, card.best_baseline);
        let modes: Vec<&str> = l.rungs.iter().map(|r| r.mode.as_str()).collect();
        for m in [
            "contrastive",
            "inverted_softmax",
            "adapter",
            "fused",
            "fused_hub",
        ] {
            assert!(modes.contains(&m), "{}: {modes:?}", l.direction);
        }
        assert!(l.rungs.iter().all(|r| r.baseline
            == !matches!(
                r.mode.as_str(),
                "bridged" | "reverse" | "fused" | "fused_hub" | "generative"
            )));
        // The validated best is the rung with the best R@1 + mAP@10, and the best baseline
        // the best of the baseline rungs.
        let objective = |r: &diffgap::service::proto::LadderRung| r.r1 + r.map10;
        let best = |baseline_only: bool| {
            l.rungs
                .iter()
                .filter(|r| r.baseline || !baseline_only)
                .map(objective)
                .fold(f32::MIN, f32::max)
        };
        let rung = |m: &str| l.rungs.iter().find(|r| r.mode == m).expect("a rung");
        assert!((objective(rung(&l.validated_best)) - best(false)).abs() < 1e-5);
        assert!((objective(rung(&l.best_baseline)) - best(true)).abs() < 1e-5);

        let (qm, cm) = l.direction.split_once("->").expect("a direction");
        let named = RankMode::from_str_name(&format!(
            "RANK_MODE_{}",
            l.validated_best.to_ascii_uppercase()
        ))
        .expect("the validated best is a Rank mode");
        let best = c.rank(request(RankMode::ValidatedBest, (qm, cm))).await;
        let by_name = c.rank(request(named, (qm, cm))).await;
        let ids = |r: Result<tonic::Response<diffgap::service::proto::RankResponse>, _>| {
            let r: Vec<Ranked> = r.expect("rank").into_inner().results;
            r.into_iter()
                .map(|x| (x.id, x.score.to_bits()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(best), ids(by_name), "{}", l.direction);
    }
}

#[tokio::test]
async fn a_model_without_baselines_refuses_the_modes_that_need_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("bare");
    support::copy_dir(&tiny_model(), &model);
    let card_path = model.join("card.json");
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&card_path).expect("card")).expect("json");
    for key in ["baselines", "hub_fusion", "validated_best"] {
        card.as_object_mut().expect("an object").remove(key);
    }
    std::fs::write(&card_path, card.to_string()).expect("write the card");
    let (addr, _) = serve_forever(serve_config(&model));
    let mut c = support::client(addr).await;
    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    assert!(info.models[0].ladders.is_empty());
    for mode in [
        RankMode::FusedHub,
        RankMode::ValidatedBest,
        RankMode::InvertedSoftmax,
        RankMode::Adapter,
    ] {
        let e = c
            .rank(request(mode, ("text", "audio")))
            .await
            .expect_err("needs the baselines");
        assert_eq!(e.code(), Code::FailedPrecondition, "{mode:?}: {e:?}");
        assert!(e.message().contains("use another mode"), "{e:?}");
    }
    c.rank(request(RankMode::Fused, ("text", "audio")))
        .await
        .expect("the fused mode needs no baselines");
}

#[tokio::test]
async fn an_unknown_mode_lists_the_known_ones() {
    let mut c = SERVER.client().await;
    let mut req = request(RankMode::Fused, ("text", "audio"));
    req.mode = 99;
    let e = c.rank(req).await.expect_err("unknown mode");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("mode:"), "{e:?}");
    for name in ["RANK_MODE_FUSED_HUB (6)", "RANK_MODE_ADAPTER (12)"] {
        assert!(e.message().contains(name), "{e:?}");
    }
}
