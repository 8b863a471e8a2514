//! The transport: Envoy's `envoy.service.ratelimit.v3.RateLimitService` on the gRPC port (for
//! the gateway filter and for Envoy's native rate limit filters alike), the control API's
//! `ReportUsage` and `GetUsage` bodies, and the one mapping of [`QuotaError`] to gRPC codes.

use std::sync::Arc;

use envoy_types::pb::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_response::Code,
    rate_limit_service_server::RateLimitService,
};
use gateway_common::proto::{
    GetUsageRequest, GetUsageResponse, ReportUsageRequest, ReportUsageResponse,
};
use tonic::{Request, Response, Status};
use tracing::debug;

use super::{QuotaEngine, QuotaError, usage::UsageQuery};

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
        .report_usage(&request.records)
        .await
        .map_err(|e| to_status(&e))?;
    debug!(node = %request.node_id, records = request.records.len(), "usage reported");
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
