//! The tonic implementation of `diffgap.v1.Diffgap`: finds the model a request names, resolves
//! its raw inputs through the model's encoders, validates it against the model and the server's
//! limits, hands the rows to the model worker and shapes the answer. Every unary RPC goes
//! through [`DiffgapService::handle`] (ids, spans, metrics, response headers).

use std::future::Future;
use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use crate::service::api::context::{Context, Limits};
use crate::service::api::deadline::deadline_from_metadata;
use crate::service::api::faults::Reached;
use crate::service::api::observe::{observed, Call};
use crate::service::api::request_id::{self, Timed};
use crate::service::api::security::Tokens;
use crate::service::api::stream::ChunkStream;
use crate::service::api::{bridge, embed, info, rank, stream};
use crate::service::error::ServiceError;
use crate::service::proto::{self, diffgap_server::Diffgap};
use crate::service::request::repository::Repository;

/// `diffgap.v1.Diffgap` over the served models.
pub struct DiffgapService {
    ctx: Context,
    /// The tokens that may call Reload (`None`: Reload is refused).
    admin: Option<Tokens>,
}

impl DiffgapService {
    pub fn new(repo: Arc<Repository>, limits: Limits) -> Self {
        Self::of(Context { repo, limits })
    }

    /// The service over `ctx` (shared with the HTTP listener).
    pub fn of(ctx: Context) -> Self {
        Self { ctx, admin: None }
    }

    /// Lets the holders of `admin` tokens call Reload (see [`crate::service::api::security::admin`]).
    pub fn with_admin(mut self, admin: Option<Tokens>) -> Self {
        self.admin = admin;
        self
    }

    /// Every unary RPC goes through here, and only here: the request id, the call's span and
    /// metrics ([`observed`], shared with the HTTP listener) and the response metadata (the id
    /// echoed, the timing headers).
    async fn handle<Req, Resp, Fut>(
        &self,
        rpc: &'static str,
        request: Request<Req>,
        meta: fn(&Req) -> (usize, &str),
        run: impl FnOnce(Req) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Fut: Future<Output = Result<Resp, ServiceError>>,
        Resp: Timed,
    {
        Reached::mark(request.extensions());
        let id = request_id::from_metadata(request.metadata());
        let deadline = deadline_from_metadata(request.metadata());
        let req = request.into_inner();
        let (items, model) = meta(&req);
        let model = model.to_owned();
        let call = Call {
            rpc,
            id: &id,
            items,
            model: &model,
            deadline,
        };
        let (out, total) = observed(&self.ctx, call, run(req)).await;
        match out {
            Ok(resp) => {
                let (queue, compute) = resp.timings().unzip();
                let mut response = Response::new(resp);
                request_id::set_id(response.metadata_mut(), &id);
                request_id::set_timings(response.metadata_mut(), queue, compute, total);
                Ok(response)
            }
            Err(e) => {
                let mut status = Status::from(e);
                request_id::set_id(status.metadata_mut(), &id);
                request_id::set_timings(status.metadata_mut(), None, None, total);
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl Diffgap for DiffgapService {
    async fn bridge(
        &self,
        request: Request<proto::BridgeRequest>,
    ) -> Result<Response<proto::BridgeResponse>, Status> {
        let deadline = deadline_from_metadata(request.metadata());
        self.handle(
            "Bridge",
            request,
            |r| (r.items.len(), &r.model),
            |r| bridge::bridge(&self.ctx, r, deadline),
        )
        .await
    }

    async fn rank(
        &self,
        request: Request<proto::RankRequest>,
    ) -> Result<Response<proto::RankResponse>, Status> {
        let deadline = deadline_from_metadata(request.metadata());
        self.handle(
            "Rank",
            request,
            |r| (r.candidates.len(), &r.model),
            |r| rank::rank(&self.ctx, r, deadline),
        )
        .await
    }

    async fn info(
        &self,
        request: Request<proto::InfoRequest>,
    ) -> Result<Response<proto::InfoResponse>, Status> {
        self.handle(
            "Info",
            request,
            |_| (0, ""),
            |_| async { info::info(&self.ctx) },
        )
        .await
    }

    async fn refine(
        &self,
        request: Request<proto::RefineRequest>,
    ) -> Result<Response<proto::RefineResponse>, Status> {
        let deadline = deadline_from_metadata(request.metadata());
        self.handle(
            "Refine",
            request,
            |r| (1, &r.model),
            |r| bridge::refine(&self.ctx, r, deadline),
        )
        .await
    }

    async fn embed(
        &self,
        request: Request<proto::EmbedRequest>,
    ) -> Result<Response<proto::EmbedResponse>, Status> {
        let deadline = deadline_from_metadata(request.metadata());
        self.handle(
            "Embed",
            request,
            |r| (r.inputs.len(), &r.model),
            |r| embed::embed(&self.ctx, r, deadline),
        )
        .await
    }

    async fn reload(
        &self,
        request: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        self.handle(
            "Reload",
            request,
            |_| (0, ""),
            |_| async move {
                crate::service::api::security::admin::check(
                    self.admin.as_ref(),
                    authorization.as_deref(),
                )?;
                info::reload(&self.ctx).await
            },
        )
        .await
    }

    type BridgeStreamStream = ChunkStream;

    /// Each chunk is validated and sent to the worker as soon as it arrives (up to
    /// [`stream::STREAM_CHUNKS_IN_FLIGHT`] at once), and answered in order. The first bad
    /// chunk ends the stream with its status; chunks already answered stay answered.
    async fn bridge_stream(
        &self,
        request: Request<Streaming<proto::BridgeStreamRequest>>,
    ) -> Result<Response<Self::BridgeStreamStream>, Status> {
        Ok(Response::new(stream::bridge_stream(&self.ctx, request)))
    }
}
