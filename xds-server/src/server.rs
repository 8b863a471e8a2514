//! Wires the parts together: one tonic server with ADS, the control API and the rate limit
//! service, the admin port, the configuration watcher, the credentials refresher, the issuers'
//! key manager and the quota engine.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use envoy_types::pb::envoy::service::{
    discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer,
    ratelimit::v3::rate_limit_service_server::RateLimitServiceServer,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::{
    active::ActiveConfig,
    admin,
    config::{ConfigError, Overrides},
    control::ControlService,
    control_api::gateway_control_server::GatewayControlServer,
    credentials::{CredentialSource, CredentialStore, refresher::run_refresher},
    follow::{follow_identity, follow_quotas, warn_on_credentials_change},
    identity::{KeyManager, fetch::HttpClient},
    quota::{QuotaEngine, grpc::RateLimitGrpc},
    snapshot::Snapshot,
    status::ServerStatus,
    util::{Clock, SystemClock},
    watch::{Reloader, watch_config},
    xds::service::AdsService,
};

/// How long open gRPC connections get to close once the server stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keepalive of gRPC connections, so a vanished Envoy's connection is noticed.
const GRPC_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// What `serve` needs besides its listeners.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The YAML configuration file, watched for changes.
    pub config_path: PathBuf,
    pub overrides: Overrides,
    /// How often the file is read to look for changes.
    pub watch_interval: Duration,
    /// How long the server goes on serving once asked to stop, while its health checks
    /// (gRPC `grpc.health.v1.Health` and `/healthz`) say it is not serving, so that Envoy's
    /// health checks take it out of the balancing before its streams end. Zero: stop at once.
    pub drain: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration file is unusable at startup.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The client that fetches issuers' keys cannot be built.
    #[error("identity keys: {0}")]
    Identity(String),
    /// The quota store cannot be set up.
    #[error("quotas: {0}")]
    Quota(String),
}

/// Runs the control service on already bound listeners until `shutdown` completes. Fails at
/// once if the configuration file is bad; later bad edits are rejected while serving.
pub async fn serve(
    options: ServeOptions,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    credential_source: Arc<dyn CredentialSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut reloader = Reloader::new(&options.config_path, options.overrides.clone());
    let config = reloader.load(tokio::fs::read(&options.config_path).await)?;
    let snapshot = Snapshot::build(&config);
    info!(
        file = %options.config_path.display(),
        version = snapshot.version(),
        listener = %config.listener,
        region = %config.upstream.region,
        credentials = config.upstream.credentials.source_name(),
        "configuration loaded"
    );
    let credentials_at_start = config.upstream.credentials.clone();

    let cancel = CancellationToken::new();
    let http = HttpClient::new().map_err(ServeError::Identity)?;
    let keys = Arc::new(KeyManager::new(
        Arc::new(http),
        Arc::clone(&clock),
        cancel.child_token(),
    ));
    keys.apply(&config.identity);
    let quotas = Arc::new(QuotaEngine::new(Arc::clone(&clock)));
    quotas
        .apply(config.quotas.as_ref())
        .map_err(|e| ServeError::Quota(e.to_string()))?;

    let store = Arc::new(CredentialStore::default());
    let status = Arc::new(ServerStatus::new(
        options.config_path.display().to_string(),
        snapshot.version().to_string(),
        clock.now(),
        Arc::clone(&store),
        Arc::clone(&keys),
        Arc::clone(&quotas),
    ));
    let (publish, subscribe) = watch::channel(Arc::new(ActiveConfig { config, snapshot }));

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut tasks = JoinSet::new();
    tasks.spawn({
        let cancel = cancel.clone();
        let status = Arc::clone(&status);
        let drain = options.drain;
        async move {
            shutdown.await;
            if !drain.is_zero() {
                info!(
                    ?drain,
                    "stopping: health checks now fail; serving on while Envoy moves away"
                );
                status.start_draining();
                health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(drain) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            // ADS streams end, decision streams end once their pending decisions are
            // answered, and the gRPC server closes its listener and waits for the rest.
            cancel.cancel();
        }
    });
    tasks.spawn(run_refresher(
        credential_source,
        Arc::clone(&store),
        Arc::clone(&clock),
        cancel.clone(),
    ));
    tasks.spawn(watch_config(
        options.config_path.clone(),
        reloader,
        options.watch_interval,
        publish,
        Arc::clone(&status.reloads),
        Arc::clone(&clock),
        cancel.clone(),
    ));
    tasks.spawn(follow_identity(
        Arc::clone(&keys),
        subscribe.clone(),
        cancel.clone(),
    ));
    tasks.spawn(follow_quotas(
        Arc::clone(&quotas),
        subscribe.clone(),
        cancel.clone(),
    ));
    tasks.spawn(warn_on_credentials_change(
        credentials_at_start,
        subscribe.clone(),
        cancel.clone(),
    ));
    tasks.spawn(admin::serve_admin(
        http_listener,
        Arc::clone(&status),
        Arc::clone(&quotas),
        Arc::clone(&clock),
        cancel.clone(),
    ));

    let ads = AdsService::new(
        subscribe.clone(),
        Arc::clone(&status.streams),
        cancel.clone(),
    );
    let control = ControlService::new(
        store,
        keys,
        Arc::clone(&status.signatures),
        Arc::clone(&quotas),
        clock,
        subscribe,
        cancel.clone(),
    );
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .add_service(GatewayControlServer::new(control))
        .add_service(RateLimitServiceServer::new(RateLimitGrpc::new(quotas)))
        // Nagle's algorithm would hold small replies (rate limit decisions, credentials)
        // until the peer's delayed ACK: tens of milliseconds per call.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc_listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(GRPC_TCP_KEEPALIVE)),
            {
                let cancel = cancel.clone();
                async move { cancel.cancelled().await }
            },
        );
    // A graceful stop waits for clients to close their connections; one that never does
    // must not keep the process alive.
    let grpc = tokio::select! {
        result = grpc => result,
        _ = async {
            cancel.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            warn!("gRPC connections still open {DRAIN_TIMEOUT:?} after shutdown: closing them");
            Ok(())
        }
    };

    cancel.cancel();
    while tasks.join_next().await.is_some() {}
    info!("stopped");
    grpc.map_err(ServeError::from)
}
