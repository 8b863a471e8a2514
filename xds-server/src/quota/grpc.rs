//! The transport: Envoy's `envoy.service.ratelimit.v3.RateLimitService` on the gRPC port (for
//! the gateway filter and for Envoy's native rate limit filters alike), the control API's
//! `StreamRateLimit` (the same decisions on one long-lived stream), `ReportUsage` and
//! `GetUsage` bodies, and the one mapping of [`QuotaError`] to gRPC codes.

use std::sync::Arc;

use envoy_types::pb::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_response::Code,
    rate_limit_service_server::RateLimitService,
};
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use gateway_common::proto::{
    GetUsageRequest, GetUsageResponse, RateLimitStreamRequest, RateLimitStreamResponse,
    ReportUsageRequest, ReportUsageResponse,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::{engine::QuotaEngine, settings::QuotaError, usage::UsageQuery};

/// The gRPC status for a quota error. A store failure is `UNAVAILABLE`, so the filter applies
/// its failure mode.
pub fn to_status(error: &QuotaError) -> Status {
    match error {
        QuotaError::NotConfigured => Status::failed_precondition(error.to_string()),
        QuotaError::Store(_) => Status::unavailable(error.to_string()),
        QuotaError::InvalidArgument(_) => Status::invalid_argument(error.to_string()),
    }
}

pub struct RateLimitGrpc {
    engine: Arc<QuotaEngine>,
}

impl RateLimitGrpc {
    pub fn new(engine: Arc<QuotaEngine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitGrpc {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let request = request.into_inner();
        let response = self
            .engine
            .should_rate_limit(&request)
            .await
            .map_err(|e| to_status(&e))?;
        if response.overall_code == Code::OverLimit as i32 {
            debug!(
                domain = %request.domain,
                descriptors = request.descriptors.len(),
                "over limit"
            );
        }
        Ok(Response::new(response))
    }
}

/// `GatewayControl/ReportUsage`.
pub async fn report_usage(
    engine: &QuotaEngine,
    request: ReportUsageRequest,
) -> Result<ReportUsageResponse, Status> {
    engine
        .report_usage(&request.report_id, &request.records, &request.returned)
        .await
        .map_err(|e| to_status(&e))?;
    debug!(
        node = %request.node_id,
        report_id = %request.report_id,
        records = request.records.len(),
        returned = request.returned.len(),
        "usage reported"
    );
    Ok(ReportUsageResponse {})
}

/// `GatewayControl/GetUsage`.
pub async fn get_usage(
    engine: &QuotaEngine,
    request: GetUsageRequest,
) -> Result<GetUsageResponse, Status> {
    let query = UsageQuery::new(
        &request.tenant,
        &request.from_day,
        &request.to_day,
        engine.today(),
    )
    .map_err(|message| to_status(&QuotaError::InvalidArgument(message)))?;
    let rows = engine.usage(&query).await.map_err(|e| to_status(&e))?;
    Ok(GetUsageResponse {
        rows: rows.into_iter().map(Into::into).collect(),
    })
}

/// Answers served on one `GatewayControl/StreamRateLimit` stream before a slow reader makes
/// the stream wait (HTTP/2 flow control then pushes back on the caller).
const STREAM_ANSWERS_BUFFERED: usize = 1024;
/// Decisions of one stream waiting for the store at once (Redis); beyond, the stream's
/// requests are not read until some are answered, and flow control pushes back on the caller.
const STREAM_DECISIONS_PENDING: usize = 1024;

/// `GatewayControl/StreamRateLimit`: decides each request of the stream as
/// `ShouldRateLimit` would (granting allowances with it when the request asks for them and
/// `quotas.allowances` is set, see [`QuotaEngine::decide`]), answering as soon as each decision is made (with the in-memory
/// store at once; with Redis, decisions of one stream run concurrently and may answer out of
/// order). Ends (status OK) when the caller ends its side, or when `shutdown` is cancelled,
/// once every request read is answered: a request the caller sent but this server did not
/// read is not decided, so the caller may ask it again elsewhere.
pub fn stream_rate_limit(
    engine: Arc<QuotaEngine>,
    mut inbound: Streaming<RateLimitStreamRequest>,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<RateLimitStreamResponse, Status>> {
    let (answers, receiver) = mpsc::channel(STREAM_ANSWERS_BUFFERED);
    engine.stream_opened();
    tokio::spawn(async move {
        let mut pending = FuturesUnordered::new();
        let mut open = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled(), if open => open = false,
                message = inbound.message(), if open && pending.len() < STREAM_DECISIONS_PENDING => match message {
                    Ok(Some(message)) => {
                        engine.stream_request();
                        let decision = stream_decision(Arc::clone(&engine), message);
                        // The in-memory store decides without waiting: answer at once rather
                        // than queue the decision.
                        let mut decision = Box::pin(decision);
                        match (&mut decision).now_or_never() {
                            Some(answer) => {
                                if answers.send(Ok(answer)).await.is_err() {
                                    return;
                                }
                            }
                            None => pending.push(decision),
                        }
                    }
                    Ok(None) => open = false,
                    Err(status) => {
                        debug!(%status, "rate limit stream ended by the caller");
                        open = false;
                    }
                },
                Some(answer) = pending.next(), if !pending.is_empty() => {
                    if answers.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
                else => return,
            }
        }
    });
    ReceiverStream::new(receiver)
}

async fn stream_decision(
    engine: Arc<QuotaEngine>,
    message: RateLimitStreamRequest,
) -> RateLimitStreamResponse {
    let id = message.id;
    let failed = |status: Status| RateLimitStreamResponse {
        id,
        response: Vec::new(),
        status_code: status.code() as u32,
        status_message: status.message().to_string(),
        allowances: Vec::new(),
    };
    let request = match RateLimitRequest::decode(message.request.as_slice()) {
        Ok(request) => request,
        Err(e) => {
            return failed(to_status(&QuotaError::InvalidArgument(format!(
                "not a RateLimitRequest: {e}"
            ))));
        }
    };
    match engine.decide(&request, message.allowances).await {
        Ok(decided) => RateLimitStreamResponse {
            id,
            response: decided.response.encode_to_vec(),
            status_code: 0,
            status_message: String::new(),
            allowances: decided.allowances,
        },
        Err(e) => failed(to_status(&e)),
    }
}
