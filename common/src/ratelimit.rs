//! The messages of Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`)
//! that the filter sends and reads, as prost structs: envoy-types cannot be built for
//! wasm32-wasip1. Field numbers follow `envoy/service/ratelimit/v3/rls.proto` and
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto`; a test checks wire compatibility
//! against envoy-types. Fields the gateway does not use are left out (prost skips them).

pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const SHOULD_RATE_LIMIT: &str = "ShouldRateLimit";

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    /// Overrides the request's `hits_addend` for this descriptor (`google.protobuf.UInt64Value`).
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
    #[prost(bool, tag = "4")]
    pub is_negative_hits: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct UInt64Value {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitResponse {
    #[prost(enumeration = "Code", tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    /// xds-server's facts about the decision ([`WINDOWS_KEY`], [`DECIDED_AT_KEY`]).
    #[prost(message, optional, tag = "6")]
    pub dynamic_metadata: Option<prost_types::Struct>,
}

/// `dynamic_metadata` member: for each descriptor, the window its counter was charged in
/// (`UNIT/START`, e.g. `minute/1800000000`), or null when nothing was charged.
pub const WINDOWS_KEY: &str = "bedrock_gateway.windows";
/// `dynamic_metadata` member: the server's Unix time of the decision.
pub const DECIDED_AT_KEY: &str = "bedrock_gateway.decided_at";

impl RateLimitResponse {
    /// The window each descriptor was charged in, by position (`None` where nothing was, or
    /// the server did not say).
    pub fn windows(&self) -> Vec<Option<String>> {
        use prost_types::value::Kind;
        let Some(Kind::ListValue(list)) = self
            .dynamic_metadata
            .as_ref()
            .and_then(|m| m.fields.get(WINDOWS_KEY))
            .and_then(|v| v.kind.as_ref())
        else {
            return Vec::new();
        };
        list.values
            .iter()
            .map(|v| match &v.kind {
                Some(Kind::StringValue(window)) => Some(window.clone()),
                _ => None,
            })
            .collect()
    }

    /// When the server decided (Unix seconds), if it said.
    pub fn decided_at(&self) -> Option<i64> {
        use prost_types::value::Kind;
        match self
            .dynamic_metadata
            .as_ref()?
            .fields
            .get(DECIDED_AT_KEY)?
            .kind
            .as_ref()?
        {
            Kind::NumberValue(n) if n.is_finite() && *n >= 0.0 && *n < 1e15 => Some(*n as i64),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Code {
    Unknown = 0,
    Ok = 1,
    OverLimit = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorStatus {
    #[prost(enumeration = "Code", tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<Duration>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimit {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `RateLimitResponse.RateLimit.Unit`: 1 second, 2 minute, 3 hour, 4 day, 5 month,
    /// 6 year, 7 week.
    #[prost(int32, tag = "2")]
    pub unit: i32,
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[cfg(test)]
mod tests {
    //! Wire compatibility with Envoy's own message definitions (envoy-types).

    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3 as common;
    use envoy_types::pb::envoy::service::ratelimit::v3 as rls;
    use prost::Message;

    #[test]
    fn our_request_is_envoys_request() {
        let ours = RateLimitRequest {
            domain: "bedrock-gateway".into(),
            descriptors: vec![
                RateLimitDescriptor {
                    entries: vec![Entry {
                        key: "tenant".into(),
                        value: "team-a".into(),
                    }],
                    hits_addend: None,
                    is_negative_hits: false,
                },
                RateLimitDescriptor {
                    entries: vec![
                        Entry {
                            key: "tenant".into(),
                            value: "team-a".into(),
                        },
                        Entry {
                            key: "tokens".into(),
                            value: "total".into(),
                        },
                    ],
                    hits_addend: Some(UInt64Value { value: 1234 }),
                    is_negative_hits: true,
                },
            ],
            hits_addend: 1,
        };
        let theirs = rls::RateLimitRequest::decode(ours.encode_to_vec().as_slice()).unwrap();
        assert_eq!(theirs.domain, "bedrock-gateway");
        assert_eq!(theirs.hits_addend, 1);
        let d: &common::RateLimitDescriptor = &theirs.descriptors[1];
        assert_eq!(d.entries[1].key, "tokens");
        assert_eq!(d.entries[1].value, "total");
        assert_eq!(d.hits_addend.as_ref().map(|h| h.value), Some(1234));
        assert!(d.is_negative_hits);
        assert!(theirs.descriptors[0].hits_addend.is_none());
    }

    #[test]
    fn envoys_response_is_our_response() {
        let theirs = rls::RateLimitResponse {
            overall_code: rls::rate_limit_response::Code::OverLimit as i32,
            statuses: vec![rls::rate_limit_response::DescriptorStatus {
                code: rls::rate_limit_response::Code::OverLimit as i32,
                current_limit: Some(rls::rate_limit_response::RateLimit {
                    name: "per-tenant".into(),
                    requests_per_unit: 60,
                    unit: rls::rate_limit_response::rate_limit::Unit::Minute as i32,
                }),
                limit_remaining: 0,
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 17,
                    nanos: 5,
                }),
                quota: None,
            }],
            ..Default::default()
        };
        let ours = RateLimitResponse::decode(theirs.encode_to_vec().as_slice()).unwrap();
        assert_eq!(ours.overall_code, Code::OverLimit as i32);
        let status = &ours.statuses[0];
        assert_eq!(
            status
                .current_limit
                .as_ref()
                .map(|l| (l.requests_per_unit, l.unit, l.name.as_str())),
            Some((60, 2, "per-tenant"))
        );
        assert_eq!(
            status.duration_until_reset,
            Some(Duration {
                seconds: 17,
                nanos: 5
            })
        );
    }
}
