use super::*;
use gateway_common::proto::SigningCredentials;
use std::time::{Duration, UNIX_EPOCH};

fn gateway() -> Gateway {
    let json = serde_json::json!({
        "region": "us-west-2",
        "services": [
            {"name": "bedrock-runtime", "host": "bedrock-runtime.us-west-2.amazonaws.com", "cluster": "rt"},
            {"name": "bedrock-agent-runtime", "host": "bedrock-agent-runtime.us-west-2.amazonaws.com", "cluster": "art"}
        ],
        "authentication": {"mode": "none"},
        "max_request_body_bytes": 100
    });
    Gateway::from_json(json.to_string().as_bytes()).unwrap()
}

fn h(pairs: &[(&str, &str)]) -> HeaderList {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn credentials() -> SigningIdentity {
    let message = SigningCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "secret".into(),
        session_token: "tok".into(),
        expires_at_unix_seconds: 0,
        refresh_after_seconds: 0,
    };
    SigningIdentity::from_proto(message, 0).unwrap()
}

#[test]
fn plans_and_signs_a_converse_call() {
    let gw = gateway();
    let plan = gw
        .plan(h(&[
            (":method", "POST"),
            (":path", "/model/m/converse"),
            (":authority", "gateway:8080"),
            ("content-length", "2"),
            ("content-type", "application/json"),
            ("authorization", "Bearer client"),
        ]))
        .unwrap();
    assert_eq!(plan.service, 0);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let headers = gw
        .sign(plan, signing::EMPTY_SHA256, &credentials(), now)
        .unwrap();
    let get = |n: &str| find_str(&headers, n).map(str::to_string);
    assert_eq!(
        get(":authority").as_deref(),
        Some("bedrock-runtime.us-west-2.amazonaws.com")
    );
    assert_eq!(get("x-bedrock-gateway-cluster").as_deref(), Some("rt"));
    assert_eq!(get("x-amz-security-token").as_deref(), Some("tok"));
    let auth = get("authorization").unwrap();
    assert!(
        auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/us-west-2/bedrock/aws4_request"
        ),
        "{auth}"
    );
    assert_eq!(
        headers.iter().filter(|(n, _)| n == "authorization").count(),
        1
    );
}

#[test]
fn refusals() {
    let gw = gateway();
    let cases = [
        (
            h(&[(":path", "/model/m/converse")]),
            400,
            "malformed_request",
        ),
        (
            h(&[
                (":method", "POST"),
                (":path", "/model/m/converse"),
                ("content-length", "101"),
            ]),
            413,
            "body_too_large",
        ),
        (
            h(&[
                (":method", "POST"),
                (":path", "/model/m/converse"),
                ("content-length", "ten"),
            ]),
            400,
            "malformed_request",
        ),
        (
            h(&[
                (":method", "POST"),
                (":path", "/model/m/converse"),
                ("aws-endpoint-prefix", "s3"),
            ]),
            400,
            "unknown_service",
        ),
        (
            h(&[(":method", "GET"), (":path", "/foundation-models")]),
            400,
            "service_not_enabled",
        ),
        (
            h(&[(":method", "GET"), (":path", "/")]),
            400,
            "unknown_path",
        ),
    ];
    for (headers, status, reason) in cases {
        let error = gw.plan(headers).unwrap_err();
        assert_eq!((error.status, error.reason), (status, reason));
    }
    assert!(
        gw.plan(h(&[
            (":method", "POST"),
            (":path", "/model/m/converse"),
            ("content-length", "100")
        ]))
        .is_ok()
    );
}

#[test]
fn header_routes_to_agent_runtime() {
    let gw = gateway();
    let plan = gw
        .plan(h(&[
            (":method", "POST"),
            (":path", "/x/y"),
            ("aws-endpoint-prefix", "bedrock-agent-runtime"),
        ]))
        .unwrap();
    assert_eq!(plan.service, 1);
    assert_eq!(find_str(&plan.headers, "aws-endpoint-prefix"), None);
}
