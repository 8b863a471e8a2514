//! The request headers that go upstream: everything the client sent except what belongs to the
//! client's own hop or its own signature, with the Bedrock host and the cluster the route
//! reads. Values stay bytes: a header we do not sign is passed on exactly as received.

use gateway_common::filter_config::UpstreamService;
use gateway_common::names::{CLUSTER_HEADER, ENDPOINT_PREFIX_HEADER};

pub type HeaderList = Vec<(String, Vec<u8>)>;

pub const AUTHORITY: &str = ":authority";
pub const METHOD: &str = ":method";
pub const PATH: &str = ":path";
pub const CONTENT_LENGTH: &str = "content-length";
pub const REQUEST_ID: &str = "x-request-id";
pub const ENDPOINT_PREFIX: &str = ENDPOINT_PREFIX_HEADER;

/// Never forwarded: the client's credentials and signature (we sign again), our routing
/// inputs, and hop-by-hop headers (RFC 9110 §7.6.1).
const DROPPED: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    ENDPOINT_PREFIX_HEADER,
    CLUSTER_HEADER,
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
];

/// First value of a header (names in Envoy's maps are already lower case).
pub fn find<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// First value of a header as text, when it is valid UTF-8.
pub fn find_str<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h str> {
    find(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// The header map to send upstream (without the signature, which is added once the body is
/// known). `also_stripped`: more header names to remove (lower case).
pub fn upstream_headers(
    incoming: HeaderList,
    service: &UpstreamService,
    also_stripped: &[String],
) -> HeaderList {
    let nominated: Vec<String> = incoming
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut headers: HeaderList = incoming
        .into_iter()
        .filter(|(name, _)| {
            name != AUTHORITY
                && !DROPPED.contains(&name.as_str())
                && !nominated.contains(name)
                && !also_stripped.contains(name)
        })
        .collect();
    headers.push((AUTHORITY.to_string(), service.host.as_bytes().to_vec()));
    headers.push((
        CLUSTER_HEADER.to_string(),
        service.cluster.as_bytes().to_vec(),
    ));
    headers
}

/// Whether a forwarded header is covered by the signature: the host, the content type and the
/// AWS headers that carry request semantics. Headers Envoy may add or rewrite on the way out
/// (x-request-id, x-forwarded-*, content-length) are left unsigned, as AWS allows.
pub fn is_signed(name: &str) -> bool {
    name == "content-type"
        || (name.starts_with("x-amz-") || name.starts_with("x-amzn-")) && name != "x-amzn-trace-id"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderList {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn service() -> UpstreamService {
        UpstreamService {
            name: "bedrock-runtime".into(),
            host: "bedrock-runtime.us-east-1.amazonaws.com".into(),
            cluster: "bedrock-runtime.us-east-1".into(),
            signing_name: "bedrock".into(),
        }
    }

    #[test]
    fn strips_client_signature_routing_and_hop_by_hop() {
        let incoming = h(&[
            (":method", "POST"),
            (":path", "/model/m/converse"),
            (":authority", "localhost:8080"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDCLIENT/...",
            ),
            ("x-amz-date", "20261122T000000Z"),
            ("x-amz-security-token", "client-token"),
            ("x-amz-content-sha256", "abc"),
            ("aws-endpoint-prefix", "bedrock-runtime"),
            ("x-bedrock-gateway-cluster", "attacker-chosen"),
            ("connection", "keep-alive, X-Custom-Hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("content-type", "application/json"),
            ("x-amzn-bedrock-guardrailidentifier", "g1"),
            ("user-agent", "Boto3/1.40"),
            ("x-bedrock-gateway-tenant", "spoofed"),
        ]);
        let out = upstream_headers(
            incoming,
            &service(),
            &["x-bedrock-gateway-tenant".to_string()],
        );
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                ":method",
                ":path",
                "content-type",
                "x-amzn-bedrock-guardrailidentifier",
                "user-agent",
                ":authority",
                "x-bedrock-gateway-cluster"
            ]
        );
        assert_eq!(
            find_str(&out, ":authority"),
            Some("bedrock-runtime.us-east-1.amazonaws.com")
        );
        assert_eq!(
            find_str(&out, "x-bedrock-gateway-cluster"),
            Some("bedrock-runtime.us-east-1")
        );
    }

    #[test]
    fn keeps_non_utf8_values_untouched() {
        let mut incoming = h(&[(":method", "POST"), (":path", "/model/m/invoke")]);
        incoming.push(("x-opaque".into(), vec![0xff, 0xfe]));
        let out = upstream_headers(incoming, &service(), &[]);
        assert_eq!(find(&out, "x-opaque"), Some(&[0xff, 0xfe][..]));
    }

    #[test]
    fn signed_header_selection() {
        for name in [
            "content-type",
            "x-amz-target",
            "x-amzn-bedrock-accept",
            "x-amz-user-agent",
        ] {
            assert!(is_signed(name), "{name}");
        }
        for name in [
            "user-agent",
            "accept",
            "x-amzn-trace-id",
            "x-request-id",
            "content-length",
            ":path",
        ] {
            assert!(!is_signed(name), "{name}");
        }
    }
}
