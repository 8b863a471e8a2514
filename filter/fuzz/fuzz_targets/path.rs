//! `:path` as a client sends it: `path::canonical`, the operation table for every service and
//! a few methods, and a gateway reading and routing the request. A path is read one way only:
//! what `canonical` accepts has no dot segments, no empty segment but a final one, and no `/`
//! inside a segment except in a clean ARN.

#![no_main]

use std::sync::LazyLock;

use bedrock_gateway_filter::core::Gateway;
use bedrock_gateway_filter::core::operations::{self, UNKNOWN};
use bedrock_gateway_filter::core::path::{self, RequestPath};
use bedrock_gateway_filter_fuzz::{GATEWAY_CONFIG, METHODS, SERVICES};
use gateway_common::model;
use libfuzzer_sys::fuzz_target;

static GATEWAY: LazyLock<Gateway> = LazyLock::new(|| {
    Gateway::from_json(GATEWAY_CONFIG.as_bytes())
        .unwrap_or_else(|e| panic!("fuzz gateway configuration: {e}"))
});

fn check_canonical(raw: &str, read: &RequestPath) {
    let segments = &read.segments;
    assert!(!segments.is_empty(), "{raw:?}: no segment");
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        assert!(
            segment != "." && segment != "..",
            "{raw:?}: dot segment {i}"
        );
        assert!(
            i == last || !segment.is_empty(),
            "{raw:?}: empty segment {i} before the last"
        );
        assert!(
            !segment
                .bytes()
                .any(|b| b < 0x20 || matches!(b, 0x7f | b'%' | b'\\' | b';')),
            "{raw:?}: segment {i} decodes to a forbidden byte: {segment:?}"
        );
        if segment.contains('/') {
            assert!(
                segment.starts_with("arn:"),
                "{raw:?}: segment {i} holds a / outside an ARN: {segment:?}"
            );
            assert!(
                segment
                    .split('/')
                    .all(|part| !part.is_empty() && part != "." && part != ".."),
                "{raw:?}: ARN segment {i} has an empty or dot part: {segment:?}"
            );
        }
    }
    // Reading is a function of the path: the query does not change the segments.
    let without_query = path::without_query(raw);
    if without_query.len() < raw.len() {
        assert_eq!(
            path::canonical(without_query).as_ref(),
            Ok(read),
            "{raw:?}: the query changed the segments"
        );
    }
}

fn check_operations(segments: &[String]) {
    for service in SERVICES {
        for method in METHODS {
            let operation = operations::identify(service, method, segments);
            if let Some(model) = &operation.path_model {
                assert!(
                    segments.contains(model),
                    "{service} {method} {segments:?}: path model {model:?} is no segment"
                );
            }
            assert!(operation.known || operation.name == UNKNOWN);
            assert!(operation.known || operation.body_models.is_empty());
        }
    }
}

fn check_gateway(data: &[u8], read: Option<&RequestPath>) {
    let gateway = &*GATEWAY;
    for method in ["GET", "POST", "PUT"] {
        for prefix in [None, Some("bedrock-agent-runtime")] {
            let mut headers = vec![
                (":method".to_string(), method.as_bytes().to_vec()),
                (":path".to_string(), data.to_vec()),
                ("content-length".to_string(), b"42".to_vec()),
            ];
            if let Some(prefix) = prefix {
                headers.push((
                    "aws-endpoint-prefix".to_string(),
                    prefix.as_bytes().to_vec(),
                ));
            }
            let incoming = match (gateway.read(&headers), read) {
                (Ok(incoming), Some(read)) => {
                    assert_eq!(incoming.segments, read.segments);
                    assert_eq!(incoming.path.as_bytes(), data, "the path is kept as sent");
                    incoming
                }
                (Err(_), None) => continue,
                (Ok(incoming), None) => {
                    panic!("the gateway read a path canonical refuses: {incoming:?}")
                }
                (Err(e), Some(_)) => panic!("the gateway refused a canonical path: {e:?}"),
            };
            let segments = incoming.segments.clone();
            let Ok(route) = gateway.route(incoming, &headers) else {
                continue;
            };
            let service = gateway.service_name(&route).to_string();
            assert_eq!(
                route.operation,
                operations::identify(&service, method, &segments),
                "{service} {method} {segments:?}"
            );
            if let Some(model) = &route.operation.path_model {
                assert!(
                    model::is_valid(model),
                    "routed with an invalid model {model:?}"
                );
            }
            assert_eq!(route.path.as_bytes(), data);
            let plan = gateway.forward(headers, route, None);
            let forwarded: Vec<&[u8]> = plan
                .headers
                .iter()
                .filter(|(n, _)| n == ":path")
                .map(|(_, v)| v.as_slice())
                .collect();
            assert_eq!(forwarded, [data], "the forwarded path is the one read");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let read = std::str::from_utf8(data).ok().and_then(|raw| {
        let read = path::canonical(raw).ok()?;
        check_canonical(raw, &read);
        check_operations(&read.segments);
        Some(read)
    });
    check_gateway(data, read.as_ref());
});
