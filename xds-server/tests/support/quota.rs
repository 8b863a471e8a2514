//! Clients and requests for the quota tests: what the filter sends to the rate limit service
//! and the control API.

use std::net::SocketAddr;

use envoy_types::pb::{
    envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
        service::ratelimit::v3::{
            RateLimitRequest, RateLimitResponse, rate_limit_response::Code,
            rate_limit_service_client::RateLimitServiceClient,
        },
    },
    google::protobuf::UInt64Value,
};
use gateway_common::proto::{CounterAdjustment, DescriptorEntry, UsageRecord};
use tonic::transport::Channel;
use xds_server::control_api::gateway_control_client::GatewayControlClient;

use super::redis::RedisServer;

pub const OK: i32 = Code::Ok as i32;
pub const OVER: i32 = Code::OverLimit as i32;

/// A gateway with a daily request limit per tenant and a monthly token budget (long windows:
/// a test never sees one end).
pub fn config(per_day: u64, store: &str) -> String {
    format!(
        "upstream:\n  region: us-east-1\nfilter:\n  wasm_path: /opt/gateway/filter.wasm\nauth:\n  mode: none\n\
quotas:
  failure_mode: closed
  store: {store}
  descriptors:
    - key: tenant
      rate_limit: {{unit: day, requests_per_unit: {per_day}, name: daily}}
      descriptors:
        - key: tokens
          value: total
          rate_limit: {{unit: month, requests_per_unit: 1000}}
"
    )
}

pub const MEMORY: &str = "{type: memory}";

pub fn entries(pairs: &[(&str, &str)]) -> Vec<Entry> {
    pairs
        .iter()
        .map(|(key, value)| Entry {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect()
}

/// What the filter sends: one request, and `tokens` reserved, for `tenant`.
pub fn filter_request(tenant: &str, tokens: u64) -> RateLimitRequest {
    RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors: vec![
            RateLimitDescriptor {
                entries: entries(&[("tenant", tenant)]),
                hits_addend: Some(UInt64Value { value: 1 }),
                ..Default::default()
            },
            RateLimitDescriptor {
                entries: entries(&[("tenant", tenant), ("tokens", "total")]),
                hits_addend: Some(UInt64Value { value: tokens }),
                ..Default::default()
            },
        ],
        hits_addend: 0,
    }
}

pub async fn rate_limit_client(grpc: SocketAddr) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap()
}

pub async fn control_client(grpc: SocketAddr) -> GatewayControlClient<Channel> {
    GatewayControlClient::connect(format!("http://{grpc}"))
        .await
        .unwrap()
}

pub async fn ask(
    client: &mut RateLimitServiceClient<Channel>,
    request: RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(request)
        .await
        .unwrap()
        .into_inner()
}

/// (overall code, per descriptor (code, remaining)).
pub fn summary(response: &RateLimitResponse) -> (i32, Vec<(i32, u32)>) {
    (
        response.overall_code,
        response
            .statuses
            .iter()
            .map(|s| (s.code, s.limit_remaining))
            .collect(),
    )
}

pub fn record(tenant: &str, reserved: u64, used_in: u64, used_out: u64) -> UsageRecord {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    UsageRecord {
        tenant: tenant.into(),
        model: "anthropic.claude-3-haiku".into(),
        operation: "Converse".into(),
        service: "bedrock-runtime".into(),
        admitted_at_unix_seconds: now,
        input_tokens: used_in,
        output_tokens: used_out,
        // What the prompt cache adds to the ledger's rows, apart from the token counters.
        cache_read_input_tokens: used_in / 2,
        cache_write_input_tokens: 1,
        cost_nano_usd: 1_000_000 * used_out,
        duration_us: 1_000,
        time_to_first_output_us: 0,
        status_code: 200,
        refused: false,
        adjustments: vec![CounterAdjustment {
            entries: vec![
                DescriptorEntry {
                    key: "tenant".into(),
                    value: tenant.into(),
                },
                DescriptorEntry {
                    key: "tokens".into(),
                    value: "total".into(),
                },
            ],
            delta: (used_in + used_out) as i64 - reserved as i64,
            window: String::new(),
        }],
        refused_by_gateway: false,
    }
}

/// What the filter reads of a decision's `dynamic_metadata`: the window each descriptor was
/// counted in, and when the server decided.
pub fn decision_facts(response: &RateLimitResponse) -> (Vec<Option<String>>, Option<i64>) {
    use prost::Message as _;
    let read =
        gateway_common::ratelimit::RateLimitResponse::decode(response.encode_to_vec().as_slice())
            .unwrap();
    (read.windows(), read.decided_at())
}

/// What `decision_facts` says of a decision of `filter_request` at `decided_at` with `config`:
/// the day and the month (UTC) that contain it.
pub fn filter_request_windows(decided_at: i64) -> Vec<Option<String>> {
    use xds_server::quota::window::{Unit, window, window_label};
    [Unit::Day, Unit::Month]
        .into_iter()
        .map(|unit| {
            Some(window_label(
                unit,
                window(unit, decided_at, chrono_tz::UTC).start,
            ))
        })
        .collect()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Redis store section for `config`.
pub fn redis_store(redis: &RedisServer) -> String {
    format!(
        "{{type: redis, url: \"{}\", key_prefix: \"it:\"}}",
        redis.url()
    )
}
