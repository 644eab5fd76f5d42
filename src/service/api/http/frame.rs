//! What every HTTP API call goes through, and only here: its request id, the bearer token,
//! its deadline, its body (under the size limit, then JSON), the shared span and metrics
//! ([`observed`]), and the answer's headers (the id echoed, the timing headers).

use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::HealthService;

use super::body::read_json;
use super::reply::{self, Style};
use crate::service::api::context::Context;
use crate::service::api::deadline::deadline_from_headers;
use crate::service::api::observe::{observed, Call};
use crate::service::api::request_id;
use crate::service::api::security::BearerAuthLayer;
use crate::service::error::ServiceError;
use crate::service::ops::metrics;

/// What the HTTP listener shares with the gRPC one.
pub struct Shared {
    pub ctx: Context,
    pub auth: BearerAuthLayer,
    /// The largest request body, in bytes (`max_message_bytes`).
    pub body_limit: usize,
    /// gRPC health's statuses, which readiness follows.
    pub health: tonic_health::server::HealthReporter,
    /// The service name health reports the API under.
    pub service: &'static str,
}

/// The HTTP API's state: the gRPC handlers' context, and the listener's own settings.
pub struct HttpApi {
    ctx: Context,
    auth: BearerAuthLayer,
    body_limit: usize,
    health: HealthService,
    service: &'static str,
}

/// A route's answer: its JSON, and the worker's (queue, compute) when it got that far.
pub struct Answer<T> {
    pub json: T,
    pub timings: Option<(Duration, Duration)>,
}

impl HttpApi {
    pub fn new(s: Shared) -> Self {
        Self {
            ctx: s.ctx,
            auth: s.auth,
            body_limit: s.body_limit,
            health: HealthService::from_health_reporter(s.health),
            service: s.service,
        }
    }

    pub fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// Whether gRPC health reports the API SERVING (readiness).
    pub async fn serving(&self) -> bool {
        let check = HealthCheckRequest {
            service: self.service.into(),
        };
        self.health
            .check(tonic::Request::new(check))
            .await
            .is_ok_and(|r| {
                r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            })
    }

    /// Runs the route `route` on `request`: the JSON body read into `Req` (an empty body is
    /// `{}`), then `run(req, deadline)` as a call labelled by `meta(&req)` = (items, model).
    /// Errors are answered in `style`.
    pub async fn call<Req, Fut, T>(
        &self,
        (route, style): (&'static str, Style),
        request: axum::extract::Request,
        meta: fn(&Req) -> (usize, &str),
        run: impl FnOnce(Req, Option<Instant>) -> Fut,
    ) -> Response
    where
        Req: DeserializeOwned,
        Fut: Future<Output = Result<Answer<T>, ServiceError>>,
        T: Serialize,
    {
        let t0 = Instant::now();
        let (parts, body) = request.into_parts();
        let (id, admitted) = self.admit(&parts.uri, &parts.headers);
        if let Err(e) = admitted {
            return reply::error(style, &id, t0.elapsed(), &e);
        }
        let (req, deadline) = match self.read::<Req>(&parts.headers, body).await {
            Ok(read) => read,
            Err(e) => {
                // Counted as gRPC counts undecodable messages: no model named yet.
                let code = metrics::code_name(e.code());
                metrics::record_rpc(route, metrics::UNKNOWN_MODEL.into(), code, t0.elapsed());
                return reply::error(style, &id, t0.elapsed(), &e);
            }
        };
        let (items, model) = meta(&req);
        let model = model.to_owned();
        let call = Call {
            rpc: route,
            id: &id,
            items,
            model: &model,
            deadline,
        };
        let (out, total) = observed(&self.ctx, call, within(deadline, run(req, deadline))).await;
        match out {
            Ok(a) => reply::json(&id, a.timings, total, &a.json),
            Err(e) => reply::error(style, &id, total, &e),
        }
    }

    /// Runs the GET route `route` as [`Self::call`] runs a JSON one, for an answer that is not
    /// JSON (a catalog entry's audio): the same token, request id, deadline, span and metrics;
    /// errors are answered in the service's JSON shape.
    pub async fn call_get<Fut>(
        &self,
        route: &'static str,
        request: axum::extract::Request,
        run: impl FnOnce() -> Fut,
    ) -> Response
    where
        Fut: Future<Output = Result<Response, ServiceError>>,
    {
        let t0 = Instant::now();
        let headers = request.headers();
        let (id, admitted) = self.admit(request.uri(), headers);
        if let Err(e) = admitted {
            return reply::error(Style::Service, &id, t0.elapsed(), &e);
        }
        let deadline = match deadline_from_headers(headers) {
            Ok(d) => d,
            Err(e) => return reply::error(Style::Service, &id, t0.elapsed(), &e),
        };
        let call = Call {
            rpc: route,
            id: &id,
            items: 1,
            model: "",
            deadline,
        };
        let (out, total) = observed(&self.ctx, call, within(deadline, run())).await;
        match out {
            Ok(mut r) => {
                request_id::set_http_headers(r.headers_mut(), &id, None, total);
                r
            }
            Err(e) => reply::error(Style::Service, &id, total, &e),
        }
    }

    /// The request id (the client's or a new one), and whether the bearer token is accepted.
    fn admit(
        &self,
        uri: &http::Uri,
        headers: &http::HeaderMap,
    ) -> (String, Result<(), ServiceError>) {
        let id = request_id::from_headers(headers);
        let authorization = headers.get(http::header::AUTHORIZATION);
        let admitted = self
            .auth
            .check(uri.path(), authorization)
            .map(|_| ())
            .map_err(|refusal| ServiceError::Unauthenticated(refusal.message().into()));
        (id, admitted)
    }

    async fn read<Req: DeserializeOwned>(
        &self,
        headers: &http::HeaderMap,
        body: Body,
    ) -> Result<(Req, Option<Instant>), ServiceError> {
        let deadline = deadline_from_headers(headers)?;
        let req = read_json(body, headers, self.body_limit).await?;
        Ok((req, deadline))
    }
}

/// `run`, or DEADLINE_EXCEEDED once `deadline` passes (at once if it already has: the
/// gRPC transport does the same with `grpc-timeout`).
async fn within<T>(
    deadline: Option<Instant>,
    run: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    match deadline {
        None => run.await,
        Some(d) if d <= Instant::now() => Err(ServiceError::DeadlineExceeded),
        Some(d) => tokio::time::timeout_at(d.into(), run)
            .await
            .unwrap_or(Err(ServiceError::DeadlineExceeded)),
    }
}
