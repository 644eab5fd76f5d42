//! Transport security and authentication of the gRPC listener.
//!
//! - **TLS** when `tls_cert` and `tls_key` are set (PEM files; rustls with the ring provider),
//!   and **mutual TLS** when `tls_client_ca` is set too: a client must then present a
//!   certificate signed by one of that file's CAs, or its handshake fails.
//! - **Bearer tokens** when `auth_tokens_file` or the environment variable
//!   [`AUTH_TOKENS_ENV`] holds any: every call must carry `authorization: Bearer <token>` with
//!   one of them, else it is answered UNAUTHENTICATED before reaching a service. Tokens are
//!   kept only as SHA-256 digests, compared in constant time against every configured token,
//!   and never logged or printed (`diffgap config print` shows the file's path, not its
//!   content). `grpc.health.v1.Health` stays open, so load balancers and probes need no
//!   token; reflection and `diffgap.v1.Diffgap` need one. Admin tokens (see [`crate::service::api::security::admin`])
//!   are accepted too.
//!
//! Everything is read and checked at start-up ([`Security::load`]); every error names the key
//! (or the variable) it is about.
//!
//! [`check_health`] is the client side of `diffgap health` (the container's HEALTHCHECK).

pub mod admin;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::service::config::ServeConfig;

/// The environment variable that may hold bearer tokens (separated by commas or whitespace).
pub const AUTH_TOKENS_ENV: &str = "DIFFGAP_AUTH_TOKENS";
/// Calls under this path prefix need no token: the standard health service.
pub const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";
/// Counter of calls refused for a missing or wrong token, by `reason` (missing, invalid).
pub const UNAUTHENTICATED: &str = "diffgap_unauthenticated_requests_total";

/// What [`Security::load`] made of the configuration: the TLS settings of the listener (when
/// on) and the authentication layer (a pass-through when no token is configured).
pub struct Security {
    /// The listener's TLS settings, `None` for plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// Whether clients must present a certificate (mutual TLS).
    pub client_auth: bool,
    /// The bearer-token layer for every service of the server.
    pub auth: BearerAuthLayer,
    /// The tokens that may call Reload; `None` refuses it.
    pub admin: Option<Tokens>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("client_auth", &self.client_auth)
            .field("auth", &self.auth)
            .field("admin", &self.admin)
            .finish()
    }
}

impl Security {
    /// Reads the certificate, key and CA files and the tokens named by `cfg` and by the
    /// process environment's [`AUTH_TOKENS_ENV`] and [`crate::service::api::security::admin::ADMIN_TOKENS_ENV`].
    pub fn load(cfg: &ServeConfig) -> Result<Self, String> {
        Self::load_with_env(
            cfg,
            std::env::var(AUTH_TOKENS_ENV).ok(),
            std::env::var(crate::service::api::security::admin::ADMIN_TOKENS_ENV).ok(),
        )
    }

    /// [`Security::load`] with the value of [`AUTH_TOKENS_ENV`] given (and no admin tokens
    /// from the environment).
    pub fn load_with(cfg: &ServeConfig, env_tokens: Option<String>) -> Result<Self, String> {
        Self::load_with_env(cfg, env_tokens, None)
    }

    /// [`Security::load`] with the values of both token variables given.
    pub fn load_with_env(
        cfg: &ServeConfig,
        env_tokens: Option<String>,
        env_admin: Option<String>,
    ) -> Result<Self, String> {
        let set = |p: &Path| !p.as_os_str().is_empty();
        let tls = if set(&cfg.tls_cert) {
            let cert = read_certs("tls_cert", &cfg.tls_cert)?;
            let key = read_key("tls_key", &cfg.tls_key)?;
            let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
            if set(&cfg.tls_client_ca) {
                let ca = read_certs("tls_client_ca", &cfg.tls_client_ca)?;
                tls = tls.client_ca_root(Certificate::from_pem(ca));
            }
            // Builds the rustls configuration once now, so that a key that does not match
            // its certificate fails at start-up.
            tonic::transport::Server::builder()
                .tls_config(tls.clone())
                .map_err(|e| {
                    format!(
                        "tls_cert, tls_key: {} and {} do not make a TLS identity: {}",
                        cfg.tls_cert.display(),
                        cfg.tls_key.display(),
                        error_chain(&e)
                    )
                })?;
            Some(tls)
        } else {
            None
        };
        let tokens = token_sources(
            ("auth_tokens_file", &cfg.auth_tokens_file),
            (AUTH_TOKENS_ENV, env_tokens),
            "turn authentication off",
        )?;
        let admin = crate::service::api::security::admin::load(cfg, env_admin)?;
        let auth = if tokens.is_empty() {
            BearerAuthLayer::open()
        } else {
            let mut accepted = Tokens::new(tokens.iter().map(String::as_str));
            if let Some(a) = &admin {
                accepted.digests.extend_from_slice(&a.digests);
            }
            BearerAuthLayer::new(accepted)
        };
        Ok(Self {
            tls,
            client_auth: set(&cfg.tls_client_ca) && set(&cfg.tls_cert),
            auth,
            admin,
        })
    }

    /// One line for the start-up log (never the tokens).
    pub fn describe(&self) -> String {
        let tls = match (self.tls.is_some(), self.client_auth) {
            (false, _) => "plaintext",
            (true, false) => "TLS",
            (true, true) => "mutual TLS (client certificates required)",
        };
        match &self.auth.tokens {
            None => format!("{tls}, no authentication"),
            Some(t) => format!("{tls}, bearer tokens required ({} configured)", t.len()),
        }
    }
}

/// The error and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    if path.as_os_str().is_empty() {
        return Err(format!("{key}: must be set (a PEM file)"));
    }
    std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))
}

/// The PEM file `path` with at least one certificate.
fn read_certs(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    let pem = read_file(key, path)?;
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(&pem) {
        c.map_err(|e| format!("{key}: {} is not valid PEM: {e}", path.display()))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "{key}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

/// The PEM file `path` with a private key.
fn read_key(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    let pem = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{key}: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        )
    })?;
    Ok(pem)
}

/// A token must be a non-empty run of visible ASCII (what an HTTP header can carry).
fn check_token(t: &str, where_: &str) -> Result<(), String> {
    if t.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        // The token itself is never echoed.
        Err(format!(
            "{where_}: a token may hold only visible ASCII characters"
        ))
    }
}

/// The tokens of a token file (config `key`; an empty path is none, one token a line) and of
/// an environment variable's value (separated by commas or whitespace). A source that is set
/// but holds no token is an error that says how to `unset` it instead; errors name the key or
/// the variable, never a token.
pub fn token_sources(
    (key, file): (&str, &std::path::Path),
    (var, value): (&str, Option<String>),
    unset: &str,
) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    if !file.as_os_str().is_empty() {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{key}: cannot read {}: {e}", file.display()))?;
        let from_file =
            parse_token_file(&text).map_err(|e| format!("{key}: {}: {e}", file.display()))?;
        if from_file.is_empty() {
            return Err(format!(
                "{key}: {} holds no token (one a line; # starts a comment)",
                file.display()
            ));
        }
        tokens.extend(from_file);
    }
    if let Some(v) = value {
        let from_env = parse_token_list(&v).map_err(|e| format!("{var}: {e}"))?;
        if from_env.is_empty() {
            return Err(format!(
                "{var}: set but holds no token (unset it to {unset})"
            ));
        }
        tokens.extend(from_env);
    }
    Ok(tokens)
}

/// Tokens of a file: one a line, surrounding whitespace trimmed; blank lines and lines
/// starting with `#` are skipped.
pub fn parse_token_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        check_token(t, &format!("line {}", i + 1))?;
        out.push(t.to_owned());
    }
    Ok(out)
}

/// Tokens of an environment variable: separated by commas or whitespace.
pub fn parse_token_list(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, t) in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        check_token(t, &format!("token {}", i + 1))?;
        out.push(t.to_owned());
    }
    Ok(out)
}

/// The accepted tokens, as SHA-256 digests (so that every comparison is between two 32-byte
/// strings, in constant time, whatever the presented token's length).
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.digests.len())
    }
}

impl Tokens {
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: tokens
                .into_iter()
                .map(|t| Sha256::digest(t.as_bytes()).into())
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens. Compares against every token, each in
    /// constant time, without stopping at a match.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let d: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0u8);
        for t in &self.digests {
            found |= t.ct_eq(&d);
        }
        found.into()
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization: Bearer ...` header.
    Missing,
    /// A bearer token that is not one of the configured ones.
    Invalid,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
        }
    }

    fn status(self) -> tonic::Status {
        match self {
            Refusal::Missing => tonic::Status::unauthenticated(
                "missing bearer token: send the header 'authorization: Bearer <token>'",
            ),
            Refusal::Invalid => tonic::Status::unauthenticated("invalid bearer token"),
        }
    }
}

/// Checks a request's path and `authorization` header against `tokens`.
pub fn authorize(
    tokens: &Tokens,
    path: &str,
    authorization: Option<&http::HeaderValue>,
) -> Result<(), Refusal> {
    if path.starts_with(OPEN_PREFIX) {
        return Ok(());
    }
    let value = authorization.ok_or(Refusal::Missing)?.as_bytes();
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(Refusal::Missing);
    }
    let token = value[SCHEME.len()..].trim_ascii();
    if tokens.accepts(token) {
        Ok(())
    } else {
        Err(Refusal::Invalid)
    }
}

/// Registers [`UNAUTHENTICATED`] at zero (called when the metrics recorder is installed and
/// authentication is on).
pub fn register_metrics() {
    metrics::describe_counter!(
        UNAUTHENTICATED,
        metrics::Unit::Count,
        "Calls refused with UNAUTHENTICATED, by reason (missing, invalid)."
    );
    for r in [Refusal::Missing, Refusal::Invalid] {
        metrics::counter!(UNAUTHENTICATED, "reason" => r.label()).absolute(0);
    }
}

/// The tower layer that requires a bearer token on every call but health's; a pass-through
/// when built with [`BearerAuthLayer::open`].
#[derive(Clone, Debug)]
pub struct BearerAuthLayer {
    tokens: Option<Arc<Tokens>>,
}

impl BearerAuthLayer {
    pub fn new(tokens: Tokens) -> Self {
        Self {
            tokens: Some(Arc::new(tokens)),
        }
    }

    /// No authentication.
    pub fn open() -> Self {
        Self { tokens: None }
    }

    /// Whether calls need a token.
    pub fn enabled(&self) -> bool {
        self.tokens.is_some()
    }
}

impl<S> tower::Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service of [`BearerAuthLayer`].
#[derive(Clone, Debug)]
pub struct BearerAuth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for BearerAuth<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if let Some(tokens) = &self.tokens {
            let verdict = authorize(
                tokens,
                req.uri().path(),
                req.headers().get(http::header::AUTHORIZATION),
            );
            if let Err(refusal) = verdict {
                metrics::counter!(UNAUTHENTICATED, "reason" => refusal.label()).increment(1);
                tracing::debug!(
                    path = req.uri().path(),
                    reason = refusal.label(),
                    "refused: UNAUTHENTICATED"
                );
                let response = refusal.status().into_http::<ResBody>();
                return Box::pin(std::future::ready(Ok(response)));
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// What `diffgap health` asks: the address, optional TLS settings, the service name.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// The server: host:port, or a URL (http://... or https://...).
    #[arg(long, default_value = "127.0.0.1:50051", env = "DIFFGAP_HEALTH_ADDR")]
    pub addr: String,
    /// The service whose status is asked ("" asks for the server as a whole).
    #[arg(long, default_value = "diffgap.v1.Diffgap")]
    pub service: String,
    /// Seconds to wait for the answer (connection included).
    #[arg(long, default_value_t = 5)]
    pub timeout_secs: u64,
    /// Use TLS, trusting this CA (PEM). An https:// address asks for TLS too (and needs
    /// this CA).
    #[arg(long, value_name = "PEM", env = "DIFFGAP_HEALTH_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// The name the server's certificate must carry (default: the address's host).
    #[arg(long, env = "DIFFGAP_HEALTH_DOMAIN")]
    pub domain: Option<String>,
    /// Client certificate (PEM) for a server that requires mutual TLS; needs --key.
    #[arg(long, value_name = "PEM", env = "DIFFGAP_HEALTH_CERT")]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PEM", env = "DIFFGAP_HEALTH_KEY")]
    pub key: Option<std::path::PathBuf>,
}

/// Asks the server's `grpc.health.v1.Health/Check` for `args.service`: the status's name
/// (SERVING, NOT_SERVING, ...) or why there is none.
pub async fn check_health(args: &HealthArgs) -> Result<String, String> {
    use tonic::transport::{Channel, ClientTlsConfig};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    let tls = args.ca.is_some() || args.cert.is_some() || args.addr.starts_with("https://");
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else if tls {
        format!("https://{}", args.addr)
    } else {
        format!("http://{}", args.addr)
    };
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut endpoint = Channel::from_shared(url.clone())
        .map_err(|e| format!("--addr: '{url}' is not a valid URL: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if tls {
        let mut cfg = ClientTlsConfig::new();
        match &args.ca {
            Some(ca) => {
                cfg = cfg.ca_certificate(Certificate::from_pem(read_certs("--ca", ca)?));
            }
            None => {
                return Err(
                    "--ca: needed for TLS (the CA that signed the server's certificate)".into(),
                )
            }
        }
        if let Some(d) = &args.domain {
            cfg = cfg.domain_name(d.clone());
        }
        match (&args.cert, &args.key) {
            (Some(c), Some(k)) => {
                cfg = cfg.identity(Identity::from_pem(
                    read_certs("--cert", c)?,
                    read_key("--key", k)?,
                ));
            }
            (None, None) => {}
            _ => return Err("--cert and --key: give both or neither".into()),
        }
        endpoint = endpoint
            .tls_config(cfg)
            .map_err(|e| format!("TLS settings: {}", error_chain(&e)))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {}", error_chain(&e)))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|s| format!("health check failed: {:?}: {}", s.code(), s.message()))?;
    let status = ServingStatus::try_from(answer.into_inner().status)
        .map_or("UNKNOWN_VALUE", |s| s.as_str_name());
    Ok(status.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).expect("header")
    }

    #[test]
    fn tokens_accept_only_their_own() {
        let t = Tokens::new(["alpha-1", "beta-2"]);
        assert!(t.accepts(b"alpha-1"));
        assert!(t.accepts(b"beta-2"));
        assert!(!t.accepts(b"alpha-"));
        assert!(!t.accepts(b"alpha-12"));
        assert!(!t.accepts(b""));
        assert_eq!(format!("{t:?}"), "Tokens(2 redacted)");
    }

    #[test]
    fn authorize_paths_and_headers() {
        let t = Tokens::new(["s3cret"]);
        let rpc = "/diffgap.v1.Diffgap/Info";
        assert_eq!(authorize(&t, rpc, None), Err(Refusal::Missing));
        assert_eq!(
            authorize(&t, rpc, Some(&header("Basic s3cret"))),
            Err(Refusal::Missing)
        );
        assert_eq!(
            authorize(&t, rpc, Some(&header("Bearer nope"))),
            Err(Refusal::Invalid)
        );
        assert_eq!(authorize(&t, rpc, Some(&header("Bearer s3cret"))), Ok(()));
        assert_eq!(authorize(&t, rpc, Some(&header("bearer  s3cret "))), Ok(()));
        assert_eq!(authorize(&t, "/grpc.health.v1.Health/Check", None), Ok(()));
        assert_eq!(
            authorize(
                &t,
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None
            ),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn token_sources_parse_and_refuse_without_echoing() {
        assert_eq!(
            parse_token_file("# ops\n\n  tok-a  \ntok-b\n").expect("parse"),
            vec!["tok-a", "tok-b"]
        );
        assert_eq!(
            parse_token_list("a, b c,,").expect("parse"),
            vec!["a", "b", "c"]
        );
        let e = parse_token_file("ok\nbad\u{7f}tok\n").unwrap_err();
        assert_eq!(e, "line 2: a token may hold only visible ASCII characters");
        assert!(!e.contains("bad"));
    }

    #[test]
    fn load_names_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = ServeConfig {
            tls_cert: dir.path().join("missing.pem"),
            tls_key: dir.path().join("key.pem"),
            ..ServeConfig::default()
        };
        let e = Security::load_with(&cfg, None).unwrap_err();
        assert!(e.starts_with("tls_cert: cannot read "), "{e}");
        std::fs::write(dir.path().join("cert.pem"), "not pem").expect("write");
        cfg.tls_cert = dir.path().join("cert.pem");
        let e = Security::load_with(&cfg, None).unwrap_err();
        assert!(
            e.starts_with("tls_cert: ") && e.contains("no PEM certificate"),
            "{e}"
        );

        let file = dir.path().join("tokens");
        std::fs::write(&file, "# none yet\n").expect("write");
        let cfg = ServeConfig {
            auth_tokens_file: file.clone(),
            ..ServeConfig::default()
        };
        let e = Security::load_with(&cfg, None).unwrap_err();
        assert!(
            e.starts_with("auth_tokens_file: ") && e.contains("holds no token"),
            "{e}"
        );
        std::fs::write(&file, "one\n").expect("write");
        let s = Security::load_with(&cfg, Some("two,three".into())).expect("load");
        assert_eq!(
            s.describe(),
            "plaintext, bearer tokens required (3 configured)"
        );
        let e = Security::load_with(&ServeConfig::default(), Some(" ".into())).unwrap_err();
        assert!(
            e.starts_with("DIFFGAP_AUTH_TOKENS: set but holds no token"),
            "{e}"
        );
        let open = Security::load_with(&ServeConfig::default(), None).expect("load");
        assert!(!open.auth.enabled());
        assert_eq!(open.describe(), "plaintext, no authentication");
    }
}
