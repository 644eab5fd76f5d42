//! The bearer-token layer in front of every service but health's, and its refusal counter.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::tokens::Tokens;

/// Calls under this path prefix need no token: the standard health service.
pub const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";
/// Counter of calls refused for a missing or wrong token, by `reason` (missing, invalid).
pub const UNAUTHENTICATED: &str = "diffgap_unauthenticated_requests_total";

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization: Bearer ...` header.
    Missing,
    /// A bearer token that is not one of the configured ones.
    Invalid,
}

impl Refusal {
    /// The message of the refusal, for either transport.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "missing bearer token: send the header 'authorization: Bearer <token>'"
            }
            Refusal::Invalid => "invalid bearer token",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
        }
    }

    fn status(self) -> tonic::Status {
        tonic::Status::unauthenticated(self.message())
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

/// [`authorize`] when `tokens` are configured, with a refusal counted and logged.
fn check(
    tokens: Option<&Tokens>,
    path: &str,
    authorization: Option<&http::HeaderValue>,
) -> Result<(), Refusal> {
    let Some(tokens) = tokens else {
        return Ok(());
    };
    authorize(tokens, path, authorization).inspect_err(|refusal| {
        metrics::counter!(UNAUTHENTICATED, "reason" => refusal.label()).increment(1);
        tracing::debug!(path, reason = refusal.label(), "refused: UNAUTHENTICATED");
    })
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

    /// Checks a call to `path` with its `authorization` header (any call passes when
    /// authentication is off); a refusal is counted in [`UNAUTHENTICATED`] and logged at
    /// debug. The HTTP listener calls it for every route but its health ones.
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<(), Refusal> {
        check(self.tokens.as_deref(), path, authorization)
    }

    /// How many tokens are accepted (`None`: no authentication).
    pub fn accepted(&self) -> Option<usize> {
        self.tokens.as_ref().map(|t| t.len())
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
        let verdict = check(
            self.tokens.as_deref(),
            req.uri().path(),
            req.headers().get(http::header::AUTHORIZATION),
        );
        if let Err(refusal) = verdict {
            let response = refusal.status().into_http::<ResBody>();
            return Box::pin(std::future::ready(Ok(response)));
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).expect("header")
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
}
