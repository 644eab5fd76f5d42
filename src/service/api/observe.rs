//! What every call goes through on either listener, gRPC ([`crate::service::api::service`])
//! or HTTP ([`crate::service::api::http`]): its span (carried into the model worker), its
//! RPC-level metrics (recorded once, `rpc` naming the RPC or the HTTP route), and the log line
//! of a failure. The transports only read their ids and deadlines and shape the answer.

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::service::api::context::Context;
use crate::service::error::ServiceError;
use crate::service::ops::metrics;

/// One call: what its metrics and span are labelled with.
pub struct Call<'a> {
    /// The `rpc` label: "Bridge", or "http:/v1/bridge".
    pub rpc: &'static str,
    pub id: &'a str,
    pub items: usize,
    /// The model the request names ("" = the default).
    pub model: &'a str,
    pub deadline: Option<Instant>,
}

/// Runs `run` as the call `call`: (its outcome, the time it took).
pub async fn observed<Resp>(
    ctx: &Context,
    call: Call<'_>,
    run: impl Future<Output = Result<Resp, ServiceError>>,
) -> (Result<Resp, ServiceError>, Duration) {
    let span = tracing::info_span!(
        "rpc",
        rpc = call.rpc,
        request_id = %call.id,
        items = call.items,
        status = tracing::field::Empty,
        total_ms = tracing::field::Empty,
    );
    let observation = metrics::RpcObservation::start(call.rpc, ctx.model_label(call.model))
        .with_deadline(call.deadline);
    let out = run.instrument(span.clone()).await;
    let total = observation.elapsed();
    let _entered = span.enter();
    span.record("total_ms", total.as_secs_f64() * 1e3);
    match &out {
        Ok(_) => {
            observation.finish("ok", None);
            span.record("status", "ok");
            tracing::debug!("answered");
        }
        Err(e) => {
            let unknown_model = matches!(e, ServiceError::ModelNotFound { .. });
            let code = metrics::code_name(e.code());
            observation.finish(code, unknown_model.then(|| "unknown".to_owned()));
            span.record("status", code);
            // Server faults are logged; refusals (the client's) are counted, and logged only
            // at debug, so that a flood of bad calls cannot flood the log. Client strings in
            // the message are capped and escaped where they are echoed.
            match e.code() {
                tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
                    tracing::error!(message = %e, "failed")
                }
                _ => tracing::debug!(message = %e, "refused"),
            }
        }
    }
    (out, total)
}
