//! TLS, mutual TLS and bearer-token authentication, against the real server on an ephemeral
//! loopback port with real tonic clients; certificates are made here with rcgen.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diffgap::service::proto::diffgap_client::DiffgapClient;
use diffgap::service::proto::{BridgeItem, BridgeRequest, InfoRequest};
use diffgap::service::{self, ServiceError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::{
    bearer, diffgap_command, scrape, serve_config, serve_forever, serve_with_metrics, tiny_model,
    vector, wait_serving_on, TINY_DIM,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

/// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, all signed
/// by the CA, written as PEM files into a temporary folder.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A second, unrelated CA's self-signed certificate and key.
    other_cert: PathBuf,
    other_key: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, pem: String| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key"))
        .expect("ca certificate");
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("signed");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["client.diffgap.test".into()]);
    let other_key = KeyPair::generate().expect("key");
    let other = CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&other_key)
        .expect("self-signed");
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server_cert),
        server_key: write("server.key", server_key),
        client_cert: write("client.pem", client_cert),
        client_key: write("client.key", client_key),
        other_cert: write("other.pem", other.pem()),
        other_key: write("other.key", other_key.serialize_pem()),
        _dir: dir,
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).expect("read pem")
}

/// A TLS channel to `addr` trusting `ca`, presenting `identity` when given.
async fn tls_channel(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
}

fn bridge_request() -> BridgeRequest {
    BridgeRequest::new(vec![BridgeItem::new(
        "text",
        "audio",
        vector(7, TINY_DIM),
        Some(1),
    )])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_and_the_health_command_checks_it() {
    let pki = pki();
    let mut cfg = serve_config(&tiny_model());
    cfg.tls_cert = pki.server_cert.clone();
    cfg.tls_key = pki.server_key.clone();
    let (addr, _) = serve_forever(cfg);

    let channel = tls_channel(addr, &pki.ca, None).await.expect("TLS connect");
    wait_serving_on(channel.clone()).await;
    let mut client = DiffgapClient::new(channel);
    let info = client
        .info(InfoRequest::default())
        .await
        .expect("Info over TLS");
    assert_eq!(info.get_ref().models[0].dim as usize, TINY_DIM);
    let out = client
        .bridge(bridge_request())
        .await
        .expect("Bridge over TLS");
    assert_eq!(out.get_ref().embeddings[0].values.len(), TINY_DIM);

    // A client that does not trust the server's CA refuses it; a plaintext client gets no
    // answer from a TLS listener.
    let untrusted = tls_channel(addr, &pki.other_cert, None).await;
    let refused = match untrusted {
        Err(_) => true,
        Ok(ch) => DiffgapClient::new(ch)
            .info(InfoRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a client trusting another CA must not get through");
    let plain = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(ch) = plain {
        let e = DiffgapClient::new(ch)
            .info(InfoRequest::default())
            .await
            .expect_err("plaintext against TLS fails");
        assert_ne!(e.code(), Code::Ok);
    }

    // `diffgap health` (the image's HEALTHCHECK) over TLS.
    let out = diffgap_command()
        .args([
            "health",
            "--addr",
            &addr.to_string(),
            "--domain",
            "localhost",
        ])
        .arg("--ca")
        .arg(&pki.ca)
        .output()
        .expect("run diffgap health");
    assert!(
        out.status.success(),
        "diffgap health failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "SERVING");
    // Without --ca it speaks plaintext to a TLS port, and fails with exit code 1.
    let out = diffgap_command()
        .args(["health", "--timeout-secs", "3", "--addr", &addr.to_string()])
        .output()
        .expect("run diffgap health");
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    let mut cfg = serve_config(&tiny_model());
    cfg.tls_cert = pki.server_cert.clone();
    cfg.tls_key = pki.server_key.clone();
    cfg.tls_client_ca = pki.ca.clone();
    let (addr, _) = serve_forever(cfg);

    let with_cert = tls_channel(addr, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .expect("mTLS connect with a client certificate");
    wait_serving_on(with_cert.clone()).await;
    let info = DiffgapClient::new(with_cert)
        .info(InfoRequest::default())
        .await
        .expect("Info with a client certificate");
    assert_eq!(info.get_ref().models[0].dim as usize, TINY_DIM);

    // No client certificate, or one from another CA: the handshake fails, so either the
    // connection or the first call fails, never with an answer.
    for identity in [
        None,
        Some((pki.other_cert.as_path(), pki.other_key.as_path())),
    ] {
        let outcome = match tls_channel(addr, &pki.ca, identity).await {
            Err(e) => Err(e.to_string()),
            Ok(ch) => DiffgapClient::new(ch)
                .info(InfoRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        };
        assert!(
            outcome.is_err(),
            "a client with {:?} got an answer",
            identity.map(|i| i.0)
        );
    }

    let out = diffgap_command()
        .args([
            "health",
            "--addr",
            &addr.to_string(),
            "--domain",
            "localhost",
        ])
        .arg("--ca")
        .arg(&pki.ca)
        .arg("--cert")
        .arg(&pki.client_cert)
        .arg("--key")
        .arg(&pki.client_key)
        .output()
        .expect("run diffgap health");
    assert!(
        out.status.success(),
        "diffgap health with a client certificate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_everything_but_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# operators\nfirst-token-0123\n\nsecond-token-4567\n",
    )
    .expect("write");
    let (addr, metrics) = serve_with_metrics(&tiny_model(), |cfg| cfg.auth_tokens_file = tokens);
    let channel = support::channel(addr).await;
    // Health answers without a token.
    wait_serving_on(channel.clone()).await;
    let mut client = DiffgapClient::new(channel);

    let missing = client
        .info(InfoRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let wrong = client
        .info(bearer(InfoRequest::default(), "first-token-012"))
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    assert!(!wrong.message().contains("first-token"), "{wrong:?}");
    let wrong_bridge = client
        .bridge(bearer(bridge_request(), "nope"))
        .await
        .expect_err("wrong token");
    assert_eq!(wrong_bridge.code(), Code::Unauthenticated);
    let mut basic = tonic::Request::new(InfoRequest::default());
    basic.metadata_mut().insert(
        "authorization",
        "Basic second-token-4567".parse().expect("header"),
    );
    assert_eq!(
        client.info(basic).await.expect_err("not bearer").code(),
        Code::Unauthenticated
    );

    for token in ["first-token-0123", "second-token-4567"] {
        let info = client
            .info(bearer(InfoRequest::default(), token))
            .await
            .expect("Info with a right token");
        assert_eq!(info.get_ref().models[0].dim as usize, TINY_DIM);
    }
    let out = client
        .bridge(bearer(bridge_request(), "second-token-4567"))
        .await
        .expect("Bridge with a right token");
    assert_eq!(out.get_ref().embeddings[0].values.len(), TINY_DIM);

    // Refusals are counted by reason: 2 missing (none, Basic), 2 invalid.
    let body = scrape(metrics).await;
    for (reason, n) in [("missing", 2), ("invalid", 2)] {
        let line = format!("diffgap_unauthenticated_requests_total{{reason=\"{reason}\"}} {n}");
        assert!(body.lines().any(|l| l == line), "no '{line}' in\n{body}");
    }
    // Refused calls never reach the service's own request counter.
    assert!(
        !body.contains("status=\"unauthenticated\""),
        "unexpected unauthenticated status in\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_name_the_key() {
    let pki = pki();
    let model = tiny_model();
    let config_error = |e: ServiceError| match e {
        ServiceError::Config(m) => m,
        other => panic!("expected a configuration error, got {other}"),
    };

    let mut cfg = serve_config(&model);
    cfg.tls_cert = pki.server_cert.clone();
    cfg.tls_key = pki.server_key.with_extension("missing");
    let e = config_error(service::bind(cfg).await.err().expect("refused"));
    assert!(e.starts_with("tls_key: cannot read "), "{e}");

    // A key that is not the certificate's.
    let mut cfg = serve_config(&model);
    cfg.tls_cert = pki.server_cert.clone();
    cfg.tls_key = pki.other_key.clone();
    let e = config_error(service::bind(cfg).await.err().expect("refused"));
    assert!(e.starts_with("tls_cert, tls_key: "), "{e}");

    let mut cfg = serve_config(&model);
    cfg.tls_cert = pki.server_cert.clone();
    cfg.tls_key = pki.server_key.clone();
    cfg.tls_client_ca = pki.server_key.clone(); // a key, not a certificate
    let e = config_error(service::bind(cfg).await.err().expect("refused"));
    assert!(e.starts_with("tls_client_ca: "), "{e}");

    let mut cfg = serve_config(&model);
    cfg.tls_client_ca = pki.ca.clone();
    let e = config_error(service::bind(cfg).await.err().expect("refused"));
    assert!(e.starts_with("tls_client_ca: "), "{e}");

    let mut cfg = serve_config(&model);
    cfg.auth_tokens_file = pki.ca.with_file_name("no-such-tokens");
    let e = config_error(service::bind(cfg).await.err().expect("refused"));
    assert!(e.starts_with("auth_tokens_file: cannot read "), "{e}");
}

/// The listener counts calls on TLS connections too (their connection's info comes through
/// tonic's TLS layer):
/// a quiet Watch keeps its connection past the idle timeout, while a socket that never starts
/// its handshake is closed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_quiet_calls_keep_their_connection_and_silent_sockets_are_closed() {
    let pki = pki();
    let mut cfg = serve_config(&tiny_model());
    cfg.tls_cert = pki.server_cert.clone();
    cfg.tls_key = pki.server_key.clone();
    cfg.idle_connection_timeout_secs = 1;
    let (addr, _) = serve_forever(cfg);
    let channel = tls_channel(addr, &pki.ca, None).await.expect("TLS connect");
    wait_serving_on(channel.clone()).await;
    let mut watch = support::serving_watch(channel).await;

    let mut silent = support::net::raw(addr).await;
    let took = support::net::closed_within(&mut silent, Duration::from_secs(10))
        .await
        .expect("a socket without a handshake is closed");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still_open = tokio::time::timeout(Duration::from_millis(200), watch.message()).await;
    assert!(still_open.is_err(), "the watch's connection was closed");
}
