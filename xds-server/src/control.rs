//! `bedrock_gateway.v1.GatewayControl`, the control API the filter calls: signing
//! credentials ([`crate::credentials::grpc`]), the issuers' verification keys
//! ([`crate::identity::manager`]), signature checks of the callers' tokens on a stream
//! ([`crate::identity::signatures`]), rate limit decisions on a stream, usage reports and the
//! usage ledger ([`crate::quota::grpc`]).

use std::sync::Arc;

use gateway_common::{
    auth_config::JwtAuthentication,
    filter_config::Authentication,
    proto::{
        GetIdentityKeysRequest, GetSigningCredentialsRequest, GetUsageRequest, GetUsageResponse,
        IdentityKeys, RateLimitStreamRequest, RateLimitStreamResponse, ReportUsageRequest,
        ReportUsageResponse, SignatureCheck, SignatureVerdict, SigningCredentials,
    },
};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::{
    active::ActiveConfig,
    config::file::DEFAULT_KEYS_REFRESH_SECONDS,
    control_api::gateway_control_server::GatewayControl,
    credentials::{CredentialStore, grpc::signing_credentials},
    identity::{
        KeyManager,
        signatures::{self, SignatureChecker},
    },
    quota::{QuotaEngine, grpc as quota_grpc},
    util::Clock,
};

pub struct ControlService {
    store: Arc<CredentialStore>,
    keys: Arc<KeyManager>,
    signatures: Arc<SignatureChecker>,
    quotas: Arc<QuotaEngine>,
    clock: Arc<dyn Clock>,
    config: watch::Receiver<Arc<ActiveConfig>>,
    /// Cancelled when the server stops: decision streams then end.
    shutdown: CancellationToken,
}

impl ControlService {
    pub fn new(
        store: Arc<CredentialStore>,
        keys: Arc<KeyManager>,
        signatures: Arc<SignatureChecker>,
        quotas: Arc<QuotaEngine>,
        clock: Arc<dyn Clock>,
        config: watch::Receiver<Arc<ActiveConfig>>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            keys,
            signatures,
            quotas,
            clock,
            config,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl GatewayControl for ControlService {
    async fn get_signing_credentials(
        &self,
        request: Request<GetSigningCredentialsRequest>,
    ) -> Result<Response<SigningCredentials>, Status> {
        let refresh_seconds = self
            .config
            .borrow()
            .config
            .filter
            .control
            .credentials_refresh_seconds;
        signing_credentials(
            &self.store,
            self.clock.now(),
            request.get_ref(),
            refresh_seconds,
        )
        .map(Response::new)
    }

    async fn get_identity_keys(
        &self,
        request: Request<GetIdentityKeysRequest>,
    ) -> Result<Response<IdentityKeys>, Status> {
        let request = request.into_inner();
        let keys_refresh_seconds = match &self.config.borrow().config.filter.authentication {
            Authentication::Jwt(JwtAuthentication {
                keys_refresh_seconds,
                ..
            }) => *keys_refresh_seconds,
            Authentication::None => DEFAULT_KEYS_REFRESH_SECONDS,
        };
        let answer = self
            .keys
            .identity_keys(
                &request.unknown_kid_issuer,
                &request.unknown_kid,
                keys_refresh_seconds,
            )
            .await;
        debug!(
            node = %request.node_id,
            version = answer.version,
            issuers = answer.issuers.len(),
            unknown_kid_issuer = %request.unknown_kid_issuer,
            "identity keys handed out"
        );
        Ok(Response::new(answer))
    }

    async fn report_usage(
        &self,
        request: Request<ReportUsageRequest>,
    ) -> Result<Response<ReportUsageResponse>, Status> {
        // In a task of its own: a caller that gives up (its timeout) does not cut a report
        // off half-way through the store. It sends the batch again, under the same id, and
        // the store recognizes it.
        let quotas = Arc::clone(&self.quotas);
        let request = request.into_inner();
        tokio::spawn(async move { quota_grpc::report_usage(&quotas, request).await })
            .await
            .map_err(|e| Status::internal(format!("usage report task failed: {e}")))?
            .map(Response::new)
    }

    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        quota_grpc::get_usage(&self.quotas, request.into_inner())
            .await
            .map(Response::new)
    }

    type StreamRateLimitStream = ReceiverStream<Result<RateLimitStreamResponse, Status>>;

    async fn stream_rate_limit(
        &self,
        request: Request<Streaming<RateLimitStreamRequest>>,
    ) -> Result<Response<Self::StreamRateLimitStream>, Status> {
        Ok(Response::new(quota_grpc::stream_rate_limit(
            Arc::clone(&self.quotas),
            request.into_inner(),
            self.shutdown.clone(),
        )))
    }

    type CheckSignaturesStream = ReceiverStream<Result<SignatureVerdict, Status>>;

    async fn check_signatures(
        &self,
        request: Request<Streaming<SignatureCheck>>,
    ) -> Result<Response<Self::CheckSignaturesStream>, Status> {
        Ok(Response::new(signatures::check_signatures(
            Arc::clone(&self.signatures),
            request.into_inner(),
            self.shutdown.clone(),
        )))
    }
}
