//! Reload that cannot serve the wrong model, against the real server on an ephemeral port with
//! real tonic clients: a broken model directory keeps its old version under load with no
//! failed call, the default model never moves to another one, Reload needs an admin token, and
//! what a client reads names no path.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use diffgap::model::artifact;
use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{
    BridgeItem, BridgeRequest, InfoRequest, ModelInfo, ReloadRequest, ReloadResponse,
};
use support::{assert_close, serve_config, tiny_model, tiny_vector, TINY_DIM};
use tonic::transport::Channel;
use tonic::Code;

/// The dimension of [`other_model`], unlike the default's, as in the incident: a request for
/// the default that reaches the other model fails.
const OTHER_DIM: usize = 12;

/// A second tiny model, of dimension [`OTHER_DIM`].
fn other_model() -> PathBuf {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir").keep();
            support::train_tiny(&dir, 300, OTHER_DIM)
        })
        .clone()
}

fn item(model: &str, dim: usize, seed: u64) -> BridgeRequest {
    let mut it = BridgeItem::new("text", "audio", support::vector(seed, dim), Some(seed));
    it.steps = Some(3);
    BridgeRequest {
        model: model.into(),
        items: vec![it],
    }
}

/// The default model's request ("" names no model) and the other's.
fn default_item(seed: u64) -> BridgeRequest {
    item("", TINY_DIM, seed)
}

fn alpha_item(seed: u64) -> BridgeRequest {
    item("alpha", OTHER_DIM, seed)
}

async fn reload(c: &mut DiffgapClient<Channel>) -> ReloadResponse {
    c.reload(support::admin(ReloadRequest {}))
        .await
        .expect("reload")
        .into_inner()
}

async fn infos(c: &mut DiffgapClient<Channel>) -> Vec<ModelInfo> {
    c.info(InfoRequest {})
        .await
        .expect("info")
        .into_inner()
        .models
}

/// Clients looping on both models until stopped, counting their failed calls.
struct Load {
    done: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    async fn start(addr: std::net::SocketAddr, clients: u64) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(Mutex::new(None));
        let mut tasks = Vec::new();
        for k in 0..clients {
            let mut c = support::client(addr).await;
            let (done, failed, first_error) = (done.clone(), failed.clone(), first_error.clone());
            tasks.push(tokio::spawn(async move {
                let mut calls = 0u64;
                while !done.load(Ordering::SeqCst) {
                    let i = calls;
                    let (what, r) = if (k + i) % 2 == 0 {
                        ("default", c.bridge(default_item(100 + i)).await)
                    } else {
                        ("alpha", c.bridge(alpha_item(100 + i)).await)
                    };
                    let ok = r.as_ref().is_ok_and(|r| r.get_ref().embeddings.len() == 1);
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut e) = first_error.lock() {
                            e.get_or_insert(format!("client {k} call {i} on {what}: {r:?}"));
                        }
                    }
                    calls += 1;
                }
                calls
            }));
        }
        Self {
            done,
            failed,
            first_error,
            tasks,
        }
    }

    /// Stops the clients: (calls, failed calls, the first failure).
    async fn stop(self) -> (u64, u64, Option<String>) {
        self.done.store(true, Ordering::SeqCst);
        let mut calls = 0;
        for t in self.tasks {
            calls += t.await.expect("a load client");
        }
        let first = self.first_error.lock().ok().and_then(|e| e.clone());
        (calls, self.failed.load(Ordering::SeqCst), first)
    }
}

fn remove_card(dir: &Path) {
    std::fs::remove_file(dir.join(artifact::CARD_FILE)).expect("rm card");
}

fn corrupt_card(dir: &Path) {
    std::fs::write(dir.join(artifact::CARD_FILE), "{ not a card").expect("write card");
}

fn truncate_denoiser(dir: &Path) {
    let path = dir.join(artifact::SCRIPT_FILE);
    let len = std::fs::metadata(&path).expect("denoiser").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open denoiser");
    f.set_len(len / 2).expect("truncate");
}

fn empty_dir(dir: &Path) {
    std::fs::remove_dir_all(dir).expect("rm dir");
    std::fs::create_dir(dir).expect("mkdir");
}

fn remove_dir(dir: &Path) {
    std::fs::remove_dir_all(dir).expect("rm dir");
}

fn restore(from: &Path, dir: &Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("rm dir");
    }
    support::copy_dir(from, dir);
}

fn assert_no_path(text: &str, root: &Path) {
    assert!(
        !text.contains('/') && !text.contains(&*root.to_string_lossy()),
        "a path in {text:?}"
    );
}

#[tokio::test]
async fn a_broken_directory_keeps_its_model_and_the_default_under_load() {
    let root = tempfile::tempdir().expect("tempdir");
    let repo = root.path().join("models");
    let (alpha_src, beta_src) = (other_model(), tiny_model());
    let (alpha, beta) = (repo.join("alpha"), repo.join("beta"));
    support::copy_dir(&alpha_src, &alpha);
    support::copy_dir(&beta_src, &beta);
    let mut cfg = support::with_admin_token(serve_config(Path::new("beta")));
    cfg.model_repository = repo.clone();
    let (addr, stop, server) = support::serve_until_stopped(cfg).await;
    let mut c = support::client(addr).await;

    let before = infos(&mut c).await;
    let names: Vec<&str> = before.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["beta", "alpha"], "the default first");
    assert_eq!(before[0].dim as usize, TINY_DIM);
    assert_eq!(before[1].dim as usize, OTHER_DIM);
    let answer = |r: tonic::Response<diffgap::service::proto::BridgeResponse>| {
        r.into_inner().embeddings[0].values.clone()
    };
    let default_answer = answer(c.bridge(default_item(7)).await.expect("bridge"));
    let alpha_answer = answer(c.bridge(alpha_item(7)).await.expect("bridge alpha"));

    let load = Load::start(addr, 4).await;
    type Break = fn(&Path);
    let cases: [(&str, Break, bool); 5] = [
        ("card missing", remove_card, true),
        ("card corrupt", corrupt_card, true),
        ("denoiser truncated", truncate_denoiser, true),
        ("empty directory", empty_dir, true),
        // Only the default's: another model's directory gone is a removal (service_features).
        ("directory gone", remove_dir, false),
    ];
    for (case, break_dir, both) in cases {
        break_dir(&beta);
        if both {
            break_dir(&alpha);
        }
        let r = reload(&mut c).await;
        assert!(r.removed_models.is_empty(), "{case}: {r:?}");
        for m in &r.models {
            let broken = m.name == "beta" || both;
            assert_eq!(m.reloaded, !broken, "{case}: {r:?}");
            assert_eq!(m.error.is_empty(), !broken, "{case}: {r:?}");
            assert_no_path(&m.error, root.path());
        }
        let names: Vec<&str> = r.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, vec!["alpha", "beta"], "{case}: every model reported");
        let now = infos(&mut c).await;
        assert_eq!(
            now, before,
            "{case}: the same models, default first, old versions"
        );
        // The same answers from the same models and seeds (up to the batch's rounding, as
        // other requests share the batch).
        let got = answer(c.bridge(default_item(7)).await.expect("default after"));
        support::assert_close_for(&got, &default_answer, 1e-4, case);
        let got = answer(c.bridge(alpha_item(7)).await.expect("alpha after"));
        support::assert_close_for(&got, &alpha_answer, 1e-4, case);

        restore(&beta_src, &beta);
        restore(&alpha_src, &alpha);
        let r = reload(&mut c).await;
        assert!(
            r.models.iter().all(|m| m.reloaded),
            "{case}, restored: {r:?}"
        );
        assert_eq!(infos(&mut c).await, before, "{case}, restored");
    }

    // The repository itself unreadable (moved away): nothing changes, and the client reads
    // no path.
    let moved = root.path().join("moved");
    std::fs::rename(&repo, &moved).expect("move the repository");
    let e = c
        .reload(support::admin(ReloadRequest {}))
        .await
        .expect_err("no repository");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_no_path(e.message(), root.path());
    std::fs::rename(&moved, &repo).expect("move it back");
    assert_eq!(infos(&mut c).await, before);

    let (calls, failed, first) = load.stop().await;
    assert_eq!(
        failed, 0,
        "{failed} of {calls} calls failed; the first: {first:?}"
    );
    assert!(calls >= 20, "only {calls} calls under load");
    let _ = stop.send(());
    support::stops(server).await;
}

#[tokio::test]
async fn a_single_model_without_its_card_keeps_serving() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("solo");
    support::copy_dir(&tiny_model(), &dir);
    let cfg = support::with_admin_token(serve_config(&dir));
    let (addr, stop, server) = support::serve_until_stopped(cfg).await;
    let mut c = support::client(addr).await;
    let before = infos(&mut c).await;
    for break_dir in [remove_card as fn(&Path), remove_dir] {
        break_dir(&dir);
        let r = reload(&mut c).await;
        assert_eq!(r.models.len(), 1, "{r:?}");
        assert!(
            !r.models[0].reloaded && !r.models[0].error.is_empty(),
            "{r:?}"
        );
        assert_no_path(&r.models[0].error, root.path());
        assert!(r.removed_models.is_empty());
        assert_eq!(infos(&mut c).await, before);
        c.bridge(default_item(7)).await.expect("still served");
        restore(&tiny_model(), &dir);
    }
    let _ = stop.send(());
    support::stops(server).await;
}

#[tokio::test]
async fn reload_needs_an_admin_token() {
    let root = tempfile::tempdir().expect("tempdir");
    // No admin token configured: refused, whatever the call carries.
    let (addr, stop, server) = support::serve_until_stopped(serve_config(&tiny_model())).await;
    let mut c = support::client(addr).await;
    for e in [
        c.reload(ReloadRequest {}).await.expect_err("disabled"),
        c.reload(support::admin(ReloadRequest {}))
            .await
            .expect_err("disabled, with a token"),
    ] {
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("admin token"), "{e:?}");
        assert_no_path(e.message(), root.path());
    }
    c.info(InfoRequest {}).await.expect("the rest is open");
    let _ = stop.send(());
    support::stops(server).await;

    // An admin token configured, bearer tokens off.
    let cfg = support::with_admin_token(serve_config(&tiny_model()));
    let (addr, stop, server) = support::serve_until_stopped(cfg).await;
    let mut c = support::client(addr).await;
    let e = c.reload(ReloadRequest {}).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c
        .reload(support::bearer(ReloadRequest {}, "not-the-admin"))
        .await
        .expect_err("wrong token");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(reload(&mut c).await.models[0].reloaded);
    let _ = stop.send(());
    support::stops(server).await;

    // Bearer tokens on too: a client's token does not reload; the admin token alone does.
    let tokens = root.path().join("tokens");
    std::fs::write(&tokens, "client-token\n").expect("write tokens");
    let mut cfg = support::with_admin_token(serve_config(&tiny_model()));
    cfg.auth_tokens_file = tokens;
    let (addr, stop, server) = support::serve_until_stopped(cfg).await;
    let mut c = DiffgapClient::new(support::channel(addr).await);
    c.info(support::bearer(InfoRequest {}, "client-token"))
        .await
        .expect("a client's call");
    let e = c
        .reload(support::bearer(ReloadRequest {}, "client-token"))
        .await
        .expect_err("a client's token");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = c.reload(ReloadRequest {}).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(reload(&mut c).await.models[0].reloaded);
    let _ = stop.send(());
    support::stops(server).await;
}

// ---------------------------------------------------------- A repository of models

fn repository_item(model: &str, seed: u64) -> BridgeRequest {
    let mut it = BridgeItem::new("text", "audio", tiny_vector(seed), Some(seed));
    it.steps = Some(3);
    BridgeRequest {
        model: model.into(),
        items: vec![it],
    }
}

#[tokio::test]
async fn a_model_repository_reloads_under_load_and_keeps_a_broken_model() {
    let root = tempfile::tempdir().expect("tempdir");
    let repo = root.path().join("models");
    for name in ["alpha", "beta"] {
        support::copy_dir(&tiny_model(), &repo.join(name));
    }
    // Reload needs an admin token.
    let mut cfg = support::with_admin_token(serve_config(Path::new("beta")));
    cfg.model_repository = repo.clone();
    cfg.max_batch_rows = 16;
    let (addr, stop, server) = support::serve_until_stopped(cfg).await;
    let mut c = support::client(addr).await;

    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    let names: Vec<&str> = info.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["beta", "alpha"], "the default first");
    let mut before = Vec::new();
    for name in ["alpha", "beta", ""] {
        let r = c.bridge(repository_item(name, 7)).await.expect("bridge");
        before.push(r.into_inner().embeddings[0].values.clone());
    }
    // Same files, same seed: the same answer from either model.
    assert_close(&before[0], &before[1], 1e-6);
    let e = c
        .bridge(repository_item("gamma", 7))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);

    // 8 clients loop on both models while Reload runs twice.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for k in 0..8u64 {
        let done = done.clone();
        let mut c = support::client(addr).await;
        load.push(tokio::spawn(async move {
            let mut answered = 0u32;
            let mut i = 0u64;
            while answered < 3 || !done.load(std::sync::atomic::Ordering::SeqCst) {
                let model = if (k + i) % 2 == 0 { "alpha" } else { "beta" };
                let r = c.bridge(repository_item(model, 100 + i)).await;
                let r = r.unwrap_or_else(|e| panic!("client {k} request {i} on {model}: {e:?}"));
                assert_eq!(r.into_inner().embeddings.len(), 1);
                answered += 1;
                i += 1;
            }
            answered
        }));
    }
    for _ in 0..2 {
        let r = c
            .reload(support::admin(ReloadRequest {}))
            .await
            .expect("reload")
            .into_inner();
        let ok: Vec<(&str, bool)> = r
            .models
            .iter()
            .map(|m| (m.name.as_str(), m.reloaded))
            .collect();
        assert_eq!(ok, vec![("alpha", true), ("beta", true)], "{r:?}");
        assert!(r.removed_models.is_empty());
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for h in load {
        total += h.await.expect("a load client");
    }
    assert!(total >= 24, "{total} requests");

    // A broken card: the reload reports it and the old version goes on serving.
    std::fs::write(repo.join("beta").join("card.json"), "{ not a card").expect("write");
    let r = c
        .reload(support::admin(ReloadRequest {}))
        .await
        .expect("reload")
        .into_inner();
    let beta = r.models.iter().find(|m| m.name == "beta").expect("beta");
    assert!(!beta.reloaded, "{r:?}");
    assert!(!beta.error.is_empty());
    let alpha = r.models.iter().find(|m| m.name == "alpha").expect("alpha");
    assert!(alpha.reloaded && alpha.error.is_empty(), "{r:?}");
    let info = c.info(InfoRequest {}).await.expect("info").into_inner();
    let names: Vec<&str> = info.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["beta", "alpha"]);
    for (k, name) in ["alpha", "beta", ""].into_iter().enumerate() {
        let r = c
            .bridge(repository_item(name, 7))
            .await
            .expect("bridge after");
        assert_close(&r.into_inner().embeddings[0].values, &before[k], 1e-6);
    }

    // A model gone from the repository stops being served.
    std::fs::remove_dir_all(repo.join("alpha")).expect("rm alpha");
    let r = c
        .reload(support::admin(ReloadRequest {}))
        .await
        .expect("reload")
        .into_inner();
    assert_eq!(r.removed_models, vec!["alpha".to_owned()]);
    let e = c
        .bridge(repository_item("alpha", 7))
        .await
        .expect_err("gone");
    assert_eq!(e.code(), Code::NotFound);
    c.bridge(repository_item("beta", 7))
        .await
        .expect("beta stays");

    let _ = stop.send(());
    support::stops(server).await;
}
