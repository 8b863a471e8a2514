//! The tonic ADS service. Each stream runs one task that moves requests and snapshot changes
//! through a [`StreamState`] and sends what it returns; all decisions are made there.

use std::{pin::Pin, sync::Arc};

use envoy_types::pb::envoy::{
    config::core::v3::ControlPlane,
    service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_server::AggregatedDiscoveryService,
    },
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::{
    stream_state::{self, RequestEvent, StreamState},
    type_url,
};
use crate::{active::ActiveConfig, xds::streams::StreamCounters};

/// Responses waiting to be written to one stream; the stream task waits when it is full.
const OUTBOUND_BUFFER: usize = 8;

/// Identifies this server in every response (Envoy shows it in `/config_dump`).
fn control_plane() -> ControlPlane {
    ControlPlane {
        identifier: format!("xds-server/{}", env!("CARGO_PKG_VERSION")),
    }
}

pub struct AdsService {
    config: watch::Receiver<Arc<ActiveConfig>>,
    streams: Arc<StreamCounters>,
    shutdown: CancellationToken,
}

impl AdsService {
    pub fn new(
        config: watch::Receiver<Arc<ActiveConfig>>,
        streams: Arc<StreamCounters>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            config,
            streams,
            shutdown,
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let (outbound, receiver) = mpsc::channel(OUTBOUND_BUFFER);
        let stream = AdsStream {
            peer,
            inbound: request.into_inner(),
            outbound,
            config: self.config.clone(),
            streams: Arc::clone(&self.streams),
            state: StreamState::new(),
            node: None,
        };
        tokio::spawn(stream.run(self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "incremental (delta) xDS is not supported: use state-of-the-world ADS",
        ))
    }
}

struct AdsStream {
    peer: String,
    inbound: Streaming<DiscoveryRequest>,
    outbound: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    config: watch::Receiver<Arc<ActiveConfig>>,
    streams: Arc<StreamCounters>,
    state: StreamState,
    /// `id/cluster` of the Envoy node, once it said.
    node: Option<String>,
}

impl AdsStream {
    async fn run(mut self, shutdown: CancellationToken) {
        let _open = self.streams.stream_opened();
        debug!(peer = %self.peer, "ADS stream opened");
        // Snapshots older than this stream are answered through requests, not pushed.
        self.config.mark_unchanged();
        loop {
            let keep_going = tokio::select! {
                _ = shutdown.cancelled() => false,
                message = self.inbound.message() => match message {
                    Ok(Some(request)) => self.on_request(request).await,
                    Ok(None) => false,
                    Err(status) => {
                        debug!(peer = %self.peer, node = self.node(), %status, "ADS stream failed");
                        false
                    }
                },
                changed = self.config.changed() => match changed {
                    Ok(()) => self.on_snapshot().await,
                    Err(_) => false,
                },
            };
            if !keep_going {
                break;
            }
        }
        info!(peer = %self.peer, node = self.node(), "ADS stream closed");
    }

    fn node(&self) -> &str {
        self.node.as_deref().unwrap_or("unknown")
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> bool {
        if self.node.is_none()
            && let Some(node) = &request.node
        {
            info!(peer = %self.peer, node.id = %node.id, node.cluster = %node.cluster, "ADS stream from Envoy node");
            self.node = Some(format!("{}/{}", node.id, node.cluster));
        }
        let request = stream_state::Request {
            type_url: request.type_url,
            version_info: request.version_info,
            resource_names: request.resource_names,
            response_nonce: request.response_nonce,
            error: request.error_detail.map(|status| status.message),
        };
        // Not marking the snapshot as seen: a change that arrives meanwhile is still pushed
        // for the other types by `on_snapshot`.
        let active = Arc::clone(&self.config.borrow());
        let outcome = self.state.on_request(&request, &active.snapshot);
        let xds = type_url::short_name(&request.type_url);
        match &outcome.event {
            RequestEvent::Subscribed => {
                debug!(node = self.node(), xds, names = ?request.resource_names, "subscribed")
            }
            RequestEvent::Ack { version } => debug!(node = self.node(), xds, version, "ACK"),
            RequestEvent::Nack { version, message } => {
                self.streams.nack_received();
                warn!(node = self.node(), xds, version, error = %message, "Envoy rejected the resources (NACK)");
            }
            RequestEvent::Stale { nonce } => {
                debug!(node = self.node(), xds, nonce, "stale request ignored")
            }
            RequestEvent::Unsupported => {
                debug!(node = self.node(), type_url = %request.type_url, "request for a type this server does not serve")
            }
        }
        match outcome.response {
            Some(response) => self.send(response).await,
            None => true,
        }
    }

    async fn on_snapshot(&mut self) -> bool {
        let active = Arc::clone(&self.config.borrow_and_update());
        for response in self.state.on_snapshot(&active.snapshot) {
            if !self.send(response).await {
                return false;
            }
        }
        true
    }

    /// Sends a response; false when the client is gone.
    async fn send(&mut self, response: stream_state::Response) -> bool {
        debug!(
            node = self.node(),
            xds = type_url::short_name(&response.type_url),
            version = %response.version,
            nonce = %response.nonce,
            resources = response.resources.len(),
            "sending resources"
        );
        let message = DiscoveryResponse {
            version_info: response.version,
            resources: response.resources,
            type_url: response.type_url,
            nonce: response.nonce,
            control_plane: Some(control_plane()),
            ..Default::default()
        };
        self.outbound.send(Ok(message)).await.is_ok()
    }
}
