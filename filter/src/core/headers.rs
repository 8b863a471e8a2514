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

/// The upstream header map (without the signature, which is added once the body is known) and
/// the names of the client's headers it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub headers: HeaderList,
    /// Each name once; `:authority` is not among them (it is replaced).
    pub removed: Vec<String>,
    /// Where the headers the gateway writes begin in `headers` (the client's kept ones come
    /// first).
    pub written_from: usize,
}

/// What turns the request's header map into the upstream one: every value of the `remove`
/// names goes, then each `write` header is set (replacing a value of its name). The host makes
/// these few changes instead of rewriting the whole map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    pub remove: Vec<String>,
    pub write: HeaderList,
}

impl HeaderEdits {
    /// The map `incoming` becomes (what Envoy makes of it; for tests).
    pub fn apply(&self, incoming: &[(String, Vec<u8>)]) -> HeaderList {
        let mut out: HeaderList = incoming
            .iter()
            .filter(|(name, _)| !self.remove.contains(name))
            .cloned()
            .collect();
        for (name, value) in &self.write {
            match out.iter().position(|(n, _)| n == name) {
                Some(first) => {
                    out[first].1.clone_from(value);
                    let mut i = 0;
                    out.retain(|(n, _)| {
                        i += 1;
                        n != name || i - 1 == first
                    });
                }
                None => out.push((name.clone(), value.clone())),
            }
        }
        out
    }
}

/// The header map to send upstream (without the signature, which is added once the body is
/// known). `also_stripped`: more header names to remove (lower case).
pub fn upstream_headers(
    incoming: HeaderList,
    service: &UpstreamService,
    also_stripped: &[String],
) -> Upstream {
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
    let mut removed: Vec<String> = Vec::new();
    let mut headers: HeaderList = Vec::with_capacity(incoming.len() + 8);
    for (name, value) in incoming {
        if name == AUTHORITY {
            continue;
        }
        let dropped = DROPPED.contains(&name.as_str())
            || nominated.contains(&name)
            || also_stripped.contains(&name);
        if !dropped {
            headers.push((name, value));
        } else if !removed.contains(&name) {
            removed.push(name);
        }
    }
    let written_from = headers.len();
    headers.push((AUTHORITY.to_string(), service.host.as_bytes().to_vec()));
    headers.push((
        CLUSTER_HEADER.to_string(),
        service.cluster.as_bytes().to_vec(),
    ));
    Upstream {
        headers,
        removed,
        written_from,
    }
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
        let upstream = upstream_headers(
            incoming.clone(),
            &service(),
            &["x-bedrock-gateway-tenant".to_string()],
        );
        // The edits make the same map of the client's (the order of names aside).
        let edits = HeaderEdits {
            remove: upstream.removed.clone(),
            write: upstream.headers[upstream.written_from..].to_vec(),
        };
        let mut applied = edits.apply(&incoming);
        let mut expected = upstream.headers.clone();
        applied.sort();
        expected.sort();
        assert_eq!(applied, expected);
        assert!(!upstream.removed.contains(&":authority".to_string()));
        let out = upstream.headers;
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
    fn edits_remove_every_value_of_a_dropped_header_before_writing() {
        let incoming = h(&[
            (":method", "POST"),
            (":authority", "gw"),
            ("authorization", "Bearer one"),
            ("accept", "a"),
            ("authorization", "Bearer two"),
            ("accept", "b"),
        ]);
        let upstream = upstream_headers(incoming.clone(), &service(), &[]);
        assert_eq!(upstream.removed, ["authorization"]);
        let mut write = upstream.headers[upstream.written_from..].to_vec();
        write.push(("authorization".into(), b"AWS4-HMAC-SHA256 ...".to_vec()));
        let out = HeaderEdits {
            remove: upstream.removed,
            write,
        }
        .apply(&incoming);
        let all = |name: &str| {
            out.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("authorization"), ["AWS4-HMAC-SHA256 ..."]);
        assert_eq!(
            all(":authority"),
            ["bedrock-runtime.us-east-1.amazonaws.com"]
        );
        assert_eq!(all("accept"), ["a", "b"], "kept headers keep every value");
    }

    #[test]
    fn keeps_non_utf8_values_untouched() {
        let mut incoming = h(&[(":method", "POST"), (":path", "/model/m/invoke")]);
        incoming.push(("x-opaque".into(), vec![0xff, 0xfe]));
        let out = upstream_headers(incoming, &service(), &[]).headers;
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
