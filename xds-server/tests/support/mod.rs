//! A running server on 127.0.0.1:0 with a static credential source, plus small clients; a
//! token issuer serving a JWKS ([`issuer`]).
#![allow(dead_code)]

pub mod issuer;
pub mod quota;
pub mod redis;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use envoy_types::pb::envoy::{
    config::core::v3::Node,
    service::discovery::v3::{
        DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use xds_server::{
    ServeError, ServeOptions,
    config::Overrides,
    credentials::{Credentials, StaticCredentialSource},
    util::Secret,
};

pub const WAIT: Duration = Duration::from_secs(10);
pub const WATCH_INTERVAL: Duration = Duration::from_millis(50);

pub fn config_text(extra_upstream: &str) -> String {
    format!(
        "upstream:\n  region: us-east-1\n{extra_upstream}filter:\n  wasm_path: /opt/gateway/filter.wasm\nauth:\n  mode: none\n"
    )
}

pub fn static_credentials() -> Credentials {
    Credentials {
        access_key_id: "AKIDSTATICTEST".into(),
        secret_access_key: Secret::new("static-secret-key"),
        session_token: Some(Secret::new("static-session-token")),
        expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000)),
        provider: "static".into(),
    }
}

pub struct Server {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Server {
    pub async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, config).unwrap();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let http = http_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServeOptions {
            config_path: config_path.clone(),
            overrides: Overrides::default(),
            watch_interval: WATCH_INTERVAL,
            drain: Duration::ZERO,
        };
        let task = tokio::spawn(xds_server::serve(
            options,
            grpc_listener,
            http_listener,
            Arc::new(StaticCredentialSource::new(static_credentials())),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            grpc,
            http,
            config_path,
            _dir: dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Replaces the configuration file the way editors do: write aside, then rename.
    pub fn write_config(&self, text: &str) {
        let aside = self.config_path.with_extension("yaml.tmp");
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &self.config_path).unwrap();
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(WAIT, task)
            .await
            .expect("serve returns promptly after shutdown")
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A bare HTTP/1.1 GET; returns the status code and the body.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// An ADS client stream, as Envoy would drive it.
pub struct Ads {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl Ads {
    pub async fn connect(grpc: SocketAddr) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        let (requests, receiver) = mpsc::channel(16);
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(receiver))
            .await
            .unwrap()
            .into_inner();
        Self {
            requests,
            responses,
        }
    }

    pub async fn send(&self, type_url: &str, version: &str, nonce: &str, names: &[&str]) {
        self.send_request(DiscoveryRequest {
            version_info: version.to_string(),
            node: Some(Node {
                id: "test-envoy".into(),
                cluster: "test".into(),
                ..Default::default()
            }),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        })
        .await;
    }

    pub async fn send_request(&self, request: DiscoveryRequest) {
        self.requests.send(request).await.unwrap();
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("a response in time")
            .unwrap()
            .expect("the stream is open")
    }

    /// Asserts that nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(message) = tokio::time::timeout(wait, self.responses.message()).await {
            panic!("unexpected message: {message:?}");
        }
    }

    /// Subscribes to `type_url` and acknowledges the first response.
    pub async fn subscribe(&mut self, type_url: &str, names: &[&str]) -> DiscoveryResponse {
        self.send(type_url, "", "", names).await;
        let response = self.recv().await;
        assert_eq!(response.type_url, type_url);
        self.ack(&response, names).await;
        response
    }

    pub async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.send(
            &response.type_url,
            &response.version_info,
            &response.nonce,
            names,
        )
        .await;
    }
}

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Polls `condition` until it holds or `WAIT` passes.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
