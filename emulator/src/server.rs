//! The sockets: accepts connections on the API and control ports (HTTP/1.1 and h2c), turns
//! each API request into the pure calls of [`crate::auth`] and [`crate::operations`], records
//! it, and streams event frames out as they are due.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::auth::{self, AuthSettings};
use crate::config::{ConfigError, EmulatorConfig};
use crate::operations::{self, ApiError, Body, ErrorCode, StreamEvent};
use crate::records::RequestRecord;
use crate::sigv4::{self, RequestParts};
use crate::state::State;

/// Larger request bodies are refused with 413 (Bedrock's own limit is about 25 MB).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// How long shutdown waits for open connections (and streams) before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub const REQUEST_ID: &str = "x-amzn-requestid";
pub const ERROR_TYPE: &str = "x-amzn-errortype";

pub type ResponseBody = BoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Serves the API port (and the control port when given) until `shutdown` completes, then
/// lets open connections finish for [`SHUTDOWN_GRACE`].
pub async fn serve(
    config: EmulatorConfig,
    api: TcpListener,
    control: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_state(Arc::new(State::new(config)?), api, control, shutdown).await
}

async fn accept_optional(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy)]
enum Port {
    Api,
    Control,
}

pub(crate) async fn serve_state(
    state: Arc<State>,
    api: TcpListener,
    control: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (accepted, port) = tokio::select! {
            accepted = api.accept() => (accepted, Port::Api),
            accepted = accept_optional(control.as_ref()) => (accepted, Port::Control),
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, ?port, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let state = state.clone();
            async move {
                Ok::<_, Infallible>(match port {
                    Port::Api => handle_api(&state, request).await,
                    Port::Control => crate::control::handle(&state, &request).map(full),
                })
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
    drop(api);
    drop(control);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    connections.shutdown().await;
    Ok(())
}

/// A response body fed by a channel, so each event frame reaches the socket when it is sent.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|frame| frame.map(|data| Ok(Frame::data(data))))
    }
}

fn stream_body(events: Vec<StreamEvent>) -> ResponseBody {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for event in events {
            if !event.delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(event.delay) => {}
                    () = tx.closed() => return,
                }
            }
            if tx.send(event.frame).await.is_err() {
                return;
            }
        }
    });
    ChannelBody(rx).boxed()
}

fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into()).boxed()
}

fn response(
    status: u16,
    content_type: &str,
    headers: &[(&'static str, String)],
    body: ResponseBody,
) -> http::Response<ResponseBody> {
    let mut response = http::Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        map.insert(http::header::CONTENT_TYPE, value);
    }
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.append(*name, value);
        }
    }
    response
}

fn error_response(err: &ApiError, request_id: String) -> http::Response<ResponseBody> {
    response(
        err.status,
        operations::JSON,
        &[
            (REQUEST_ID, request_id),
            (ERROR_TYPE, err.code.as_str().to_string()),
        ],
        full(err.body()),
    )
}

/// The request's headers as received, lowercase names; an HTTP/2 `:authority` appears as
/// `host` (which is what SigV4 signs for it).
fn received_headers(parts: &http::request::Parts) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        headers.insert(0, (auth::HOST.to_string(), authority.as_str().to_string()));
    }
    headers
}

async fn handle_api(state: &State, request: Request<Incoming>) -> http::Response<ResponseBody> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    let headers = received_headers(&parts);
    let method = parts.method.as_str();
    let raw_path = parts.uri.path();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(ApiError::validation(
            format!("The request body exceeds the emulator's limit of {MAX_BODY_BYTES} bytes."),
        )
        .with_status(413)),
        Err(err) => Err(ApiError::validation(format!(
            "Could not read the request body: {err}"
        ))),
    };
    let (body, verdict) = match body {
        Ok(body) => {
            let now = SystemTime::now();
            let outcome = {
                let credentials = state.credentials();
                auth::authenticate(
                    &RequestParts {
                        method,
                        raw_path,
                        raw_query: parts.uri.query(),
                        headers: &headers,
                        body: &body,
                    },
                    &AuthSettings {
                        region: &state.config.region,
                        any_host: state.config.any_host,
                        max_clock_skew: state.config.max_clock_skew,
                    },
                    now,
                    |access_key_id| credentials.lookup(access_key_id, now),
                )
            };
            if let Some(canonical) = &outcome.diagnostic {
                tracing::debug!(%request_id, canonical_request = %canonical, "signature mismatch");
            }
            (body, outcome)
        }
        Err(err) => (
            Bytes::new(),
            auth::AuthOutcome {
                access_key_id: None,
                result: Err(err),
                diagnostic: None,
            },
        ),
    };
    let signature_valid = verdict.result.is_ok();
    let mut operation_name = None;
    let result = verdict.result.and_then(|service| {
        let operation = operations::route(service, method, raw_path)?;
        operation_name = Some(operation.name());
        operations::handle(&operation, &body, state.prompt_cache())
    });

    let usage = result.as_ref().ok().and_then(|ok| ok.usage);
    let (status, error_code, response) = match result {
        Ok(ok) => {
            let mut headers = ok.headers;
            headers.push((REQUEST_ID, request_id.clone()));
            let body = match ok.body {
                Body::Full(bytes) => full(bytes),
                Body::Stream(events) => stream_body(events),
            };
            (200, None, response(200, ok.content_type, &headers, body))
        }
        Err(err) => (
            err.status,
            Some(err.code),
            error_response(&err, request_id.clone()),
        ),
    };
    let host = headers
        .iter()
        .find(|(n, _)| n == auth::HOST)
        .map_or("", |(_, v)| v.as_str());
    tracing::info!(
        %request_id,
        method,
        path = raw_path,
        host,
        operation = operation_name.unwrap_or("-"),
        status,
        error_code = error_code.map_or("-", ErrorCode::as_str),
        "api request"
    );
    state.records().push(RequestRecord {
        method: method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| raw_path.to_string(), |pq| pq.as_str().to_string()),
        headers,
        body_len: body.len(),
        body_sha256: sigv4::sha256_hex(&body),
        access_key_id: verdict.access_key_id,
        signature_valid,
        status,
        error_code: error_code.map(|c| c.as_str().to_string()),
        usage,
    });
    response
}
