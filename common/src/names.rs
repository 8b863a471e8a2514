//! Names the filter, the control service and the Envoy configuration must agree on.

/// Wasm VM id: listener updates that keep it reuse the running VM (and its caches).
pub const VM_ID: &str = "bedrock_gateway";
/// Root id of the filter's plugin.
pub const ROOT_ID: &str = "bedrock_gateway";
/// Name of the Envoy cluster that reaches xds-server (ADS and the control API); defined in
/// the bootstrap, so it exists before any xDS resource arrives.
pub const CONTROL_CLUSTER: &str = "gateway_control";
/// The same xds-server for rate limit decisions, as a cluster of its own so that its circuit
/// breakers are its own: decisions (one per request) cannot starve ADS, credentials and keys.
pub const QUOTA_CLUSTER: &str = "gateway_quota";
/// Request header the filter sets to the upstream cluster; the route reads it with
/// `cluster_header` and removes it before the request leaves Envoy.
pub const CLUSTER_HEADER: &str = "x-bedrock-gateway-cluster";
/// Header the reference design's clients use to name the Bedrock service.
pub const ENDPOINT_PREFIX_HEADER: &str = "aws-endpoint-prefix";
/// SigV4 signing name of every Bedrock service (not its endpoint prefix).
pub const SIGNING_NAME: &str = "bedrock";

/// gRPC service and methods of the control API.
pub const CONTROL_SERVICE: &str = "bedrock_gateway.v1.GatewayControl";
pub const GET_SIGNING_CREDENTIALS: &str = "GetSigningCredentials";
pub const GET_IDENTITY_KEYS: &str = "GetIdentityKeys";
pub const REPORT_USAGE: &str = "ReportUsage";
pub const STREAM_RATE_LIMIT: &str = "StreamRateLimit";
/// Its method for signature checks (a bidirectional stream per Envoy worker).
pub const CHECK_SIGNATURES: &str = "CheckSignatures";

/// Request headers through which the filter tells later filters in the same Envoy who the
/// caller is. A client-sent header of the same name is always removed first, and the route
/// removes them before the request leaves Envoy.
pub const IDENTITY_HEADERS: [&str; 5] = [
    "x-bedrock-gateway-tenant",
    "x-bedrock-gateway-subject",
    "x-bedrock-gateway-role",
    "x-bedrock-gateway-tier",
    "x-bedrock-gateway-issuer",
];

/// Filter state keys (`%FILTER_STATE(<key>:PLAIN)%` in access logs). Envoy prefixes what a
/// Wasm filter sets with `wasm.`.
pub const AUDIT_PROPERTY: &str = "bedrock_gateway.audit";
pub const TENANT_PROPERTY: &str = "bedrock_gateway.tenant";

/// The Bedrock services the gateway knows how to route to by default, by endpoint prefix.
pub const BEDROCK_SERVICES: [&str; 4] = [
    "bedrock-runtime",
    "bedrock-agent-runtime",
    "bedrock",
    "bedrock-agent",
];

/// Hostname of a Bedrock service endpoint in a region (the standard, non-FIPS endpoint).
pub fn aws_host(service: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("{service}.{region}.{suffix}")
}

/// Whether `region` looks like an AWS region name (`us-east-1`, `us-gov-west-1`, `eu-central-2`).
pub fn is_region_name(region: &str) -> bool {
    let mut parts = region.split('-');
    let Some(area) = parts.next() else {
        return false;
    };
    let rest: Vec<&str> = parts.collect();
    area.len() == 2
        && area.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() >= 2
        && rest[..rest.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && rest
            .last()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in [
            "us-east-1",
            "us-gov-west-1",
            "eu-central-2",
            "ap-southeast-3",
            "cn-north-1",
        ] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "useast-1",
            "US-EAST-1",
            "us-east-1a",
            "us--1",
            "moon",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            aws_host("bedrock-runtime", "us-east-1"),
            "bedrock-runtime.us-east-1.amazonaws.com"
        );
        assert_eq!(
            aws_host("bedrock", "cn-north-1"),
            "bedrock.cn-north-1.amazonaws.com.cn"
        );
    }
}
