//! Load drivers: a fixed-rate (open-loop) HTTP client that measures latency without
//! coordinated omission, and closed-loop drivers of the rate limit service's gRPC APIs (a
//! `ShouldRateLimit` call per decision, and the `StreamRateLimit` decision stream).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use gateway_common::proto::{RateLimitStreamRequest, RateLimitStreamResponse};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

const STREAM_RATE_LIMIT_PATH: &str = "/bedrock_gateway.v1.GatewayControl/StreamRateLimit";

/// Latency percentiles of a fixed-rate run, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Sends `rate` POSTs per second for `seconds`, each measured from the moment it was due (so a
/// stalled server shows in the percentiles instead of silently lowering the rate).
pub async fn fixed_rate(
    url: &str,
    headers: &[(String, String)],
    body: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Latency> {
    fixed_rate_rotating(
        url,
        std::slice::from_ref(&headers.to_vec()),
        body,
        rate,
        seconds,
    )
    .await
}

/// [`fixed_rate`], the requests taking their headers from `header_sets` in turn (tokens
/// round-robin).
pub async fn fixed_rate_rotating(
    url: &str,
    header_sets: &[Vec<(String, String)>],
    body: &str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Latency> {
    anyhow::ensure!(!header_sets.is_empty(), "no headers to send");
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http::<Full<Bytes>>();
    let histogram = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let errors = Arc::new(AtomicU64::new(0));
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let mut request = hyper::Request::post(url);
        for (name, value) in &header_sets[i as usize % header_sets.len()] {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_string())))?;
        let (client, histogram, errors) = (client.clone(), histogram.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let ok = match client.request(request).await {
                Ok(response) => {
                    let status = response.status();
                    response.into_body().collect().await.is_ok() && status.is_success()
                }
                Err(_) => false,
            };
            if ok {
                let micros = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                if let Ok(mut h) = histogram.lock() {
                    let _ = h.record(micros.max(1));
                }
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let histogram = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock"))?;
    if histogram.is_empty() {
        bail!("no request to {url} succeeded");
    }
    Ok(Latency {
        p50_ms: histogram.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Decisions answered in a closed-loop run.
#[derive(Debug, Clone, Copy)]
pub struct Decisions {
    pub count: u64,
    pub seconds: f64,
}

/// Calls ShouldRateLimit as fast as `concurrency` callers on `connections` HTTP/2 connections
/// can for `seconds`.
pub async fn decisions(
    address: &str,
    request: RateLimitRequest,
    concurrency: usize,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Decisions> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(RateLimitServiceClient::new(channel(address).await?));
    }
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = clients[i % clients.len()].clone();
        let (request, done) = (request.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if client.should_rate_limit(request.clone()).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await?;
    }
    Ok(Decisions {
        count: done.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Asks for decisions on `GatewayControl/StreamRateLimit` as the gateway filter does: `streams`
/// streams (one per Envoy worker in the gateway), each keeping `in_flight` requests
/// unanswered, for `seconds`.
pub async fn stream_decisions(
    address: &str,
    request: RateLimitRequest,
    streams: usize,
    in_flight: usize,
    seconds: u64,
) -> anyhow::Result<Decisions> {
    let request = request.encode_to_vec();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let channel = channel(address).await?;
        let (request, done) = (request.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await?;
            let (sender, receiver) = tokio::sync::mpsc::channel(in_flight * 2);
            let mut next_id = 0u64;
            let message = |id: u64| RateLimitStreamRequest {
                id,
                request: request.clone(),
                allowances: false,
            };
            for _ in 0..in_flight {
                sender.send(message(next_id)).await?;
                next_id += 1;
            }
            let path = PathAndQuery::from_static(STREAM_RATE_LIMIT_PATH);
            let codec = ProstCodec::<RateLimitStreamRequest, RateLimitStreamResponse>::default();
            let mut answers = grpc
                .streaming(
                    tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver)),
                    path,
                    codec,
                )
                .await?
                .into_inner();
            while let Some(answer) = answers.message().await? {
                if answer.status_code == 0 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                if Instant::now() >= deadline {
                    break;
                }
                sender.send(message(next_id)).await?;
                next_id += 1;
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(Decisions {
        count: done.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// An HTTP/2 connection to the rate limit service.
async fn channel(address: &str) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await
        .context("connecting to the rate limit service")
}
