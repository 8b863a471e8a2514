//! Transparent forwarding: what reaches Bedrock, what the gateway refuses, and proof that the
//! emulator's signature check is real (so the positive tests mean something).

use gateway_e2e::{Credentials, StackOptions};

use crate::common::{
    MODEL, http, post, runtime_client, sha256_hex, start, start_default, user_message,
};

const CONVERSE: &str = "/model/m/converse";
const CONVERSE_BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_runtime_path_is_forwarded_signed() {
    let stack = start_default();
    let path = "/model/some.model-v1%3A0/a-future-operation?mode=fast&x=%2F";
    let (status, error_type, _) =
        post(&stack, path, &[("content-type", "application/json")], "{}").await;
    // The emulator, not the gateway, answers: it verified the signature and knows no such operation.
    assert_eq!(
        (status, error_type.as_deref()),
        (404, Some("UnknownOperationException"))
    );
    let seen = stack.emulator_requests().unwrap();
    let request = seen.last().unwrap();
    assert_eq!(request.path, path);
    assert!(request.signature_valid);
    assert_eq!(
        request.header("host"),
        Some("bedrock-runtime.us-east-1.amazonaws.com")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_reaches_bedrock_unchanged_but_for_the_signature() {
    let stack = start_default();
    let body =
        br#"{"messages":[{"role":"user","content":[{"text":"exact bytes \u00e9"}]}]}"#.to_vec();
    let headers = [
        ("content-type", "application/json"),
        ("aws-endpoint-prefix", "bedrock-runtime"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDCLIENT/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00",
        ),
        ("x-amz-security-token", "client-session-token"),
        ("x-amz-date", "20200101T000000Z"),
        ("x-bedrock-gateway-cluster", "gateway_control"),
        ("connection", "x-hop"),
        ("x-hop", "dropped"),
        ("x-amzn-bedrock-trace", "ENABLED"),
        ("x-custom-header", "kept"),
    ];
    let (status, _, reply) = post(&stack, "/model/m/converse?q=1", &headers, body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let seen = stack.emulator_requests().unwrap();
    let request = seen.last().unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/model/m/converse?q=1");
    assert_eq!(request.body_sha256, sha256_hex(&body));
    assert_eq!(request.body_len, body.len() as u64);
    assert_eq!(request.header("x-amzn-bedrock-trace"), Some("ENABLED"));
    assert_eq!(request.header("x-custom-header"), Some("kept"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    for absent in [
        "aws-endpoint-prefix",
        "x-bedrock-gateway-cluster",
        "x-hop",
        "x-forwarded-proto",
        "x-request-id",
    ] {
        assert_eq!(
            request.header(absent),
            None,
            "{absent} reached the upstream"
        );
    }
    assert_eq!(
        request.header("x-amz-security-token"),
        None,
        "client token forwarded"
    );
    let authorization = request.header("authorization").unwrap();
    assert!(
        authorization.contains(&stack.access_key_id),
        "{authorization}"
    );
    assert!(
        authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amzn-bedrock-trace,"),
        "{authorization}"
    );
    assert_ne!(request.header("x-amz-date"), Some("20200101T000000Z"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_refuses_what_it_cannot_route() {
    let stack = start_default();
    let cases = [
        (
            "/model/m/converse",
            vec![("aws-endpoint-prefix", "s3")],
            400,
            "ValidationException",
            "not served by this gateway",
        ),
        (
            "/nowhere",
            vec![],
            400,
            "ValidationException",
            "aws-endpoint-prefix",
        ),
    ];
    for (path, headers, status, code, message) in cases {
        let (got_status, error_type, body) = post(&stack, path, &headers, "{}").await;
        assert_eq!(
            (got_status, error_type.as_deref()),
            (status, Some(code)),
            "{path}: {body}"
        );
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        assert!(
            json["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }
    assert!(
        stack.emulator_requests().unwrap().is_empty(),
        "refused requests reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_are_signed_and_oversized_ones_refused() {
    let stack = start(StackOptions {
        configure: Box::new(|c| c["upstream"]["max_request_body_bytes"] = (8 * 1024 * 1024).into()),
        ..StackOptions::default()
    });
    // 6 MiB: far beyond Envoy's default 1 MiB buffer, in many body callbacks.
    let text = "word ".repeat(6 * 1024 * 1024 / 5);
    let body = serde_json::json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
        .to_string();
    let (status, _, reply) = post(
        &stack,
        CONVERSE,
        &[("content-type", "application/json")],
        body.clone(),
    )
    .await;
    assert_eq!(status, 200, "{}", &reply[..reply.len().min(300)]);
    let seen = stack.emulator_requests().unwrap();
    assert_eq!(
        seen.last().unwrap().body_sha256,
        sha256_hex(body.as_bytes())
    );

    let too_big = vec![b' '; 8 * 1024 * 1024 + 1];
    let (status, error_type, _) = post(
        &stack,
        CONVERSE,
        &[("content-type", "application/json")],
        too_big,
    )
    .await;
    assert_eq!(
        (status, error_type.as_deref()),
        (413, Some("ValidationException"))
    );

    // Without content-length (chunked), the limit is enforced while buffering.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..9).map(|_| Ok(vec![b' '; 1024 * 1024])).collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, error_type, _) = post(
        &stack,
        CONVERSE,
        &[("content-type", "application/json")],
        streamed,
    )
    .await;
    assert_eq!(
        (status, error_type.as_deref()),
        (413, Some("ValidationException"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_rejects_wrong_signatures() {
    // Through the gateway, signing with a secret the emulator does not know.
    let stack = start(StackOptions {
        credentials: Credentials::WrongSecret,
        ..StackOptions::default()
    });
    let error = runtime_client(&stack)
        .converse()
        .model_id(MODEL)
        .messages(user_message("x"))
        .send()
        .await
        .expect_err("a wrong secret must not pass");
    assert_eq!(
        error.into_service_error().meta().code(),
        Some("InvalidSignatureException")
    );
    drop(stack);

    // A request the gateway signed correctly, replayed straight to the emulator: accepted as is,
    // refused with one body byte changed or with another host.
    let stack = start_default();
    let (status, _, _) = post(
        &stack,
        CONVERSE,
        &[("content-type", "application/json")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(status, 200);
    let signed = stack.emulator_requests().unwrap().pop().unwrap();
    let replay = |body: &'static str, host: &'static str| {
        let mut request = http()
            .post(format!("http://{}{}", stack.emulator_api, signed.path))
            .body(body);
        for (name, value) in &signed.headers {
            if !matches!(name.as_str(), "host" | "content-length") {
                request = request.header(name, value);
            }
        }
        request.header("host", host)
    };
    let host = "bedrock-runtime.us-east-1.amazonaws.com";
    let accepted = replay(CONVERSE_BODY, host).send().await.unwrap();
    assert_eq!(accepted.status(), 200);
    for (body, host) in [
        (
            r#"{"messages":[{"role":"user","content":[{"text":"hj"}]}]}"#,
            host,
        ),
        (
            CONVERSE_BODY,
            "bedrock-agent-runtime.us-east-1.amazonaws.com",
        ),
    ] {
        let refused = replay(body, host).send().await.unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(
            refused.headers()["x-amzn-errortype"],
            "InvalidSignatureException"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_upstream_is_a_bedrock_shaped_503() {
    let closed = gateway_e2e::stack::free_port().unwrap();
    let stack = start(StackOptions {
        configure: Box::new(move |c| {
            c["upstream"]["endpoint_url"] = format!("http://{closed}").into()
        }),
        ..StackOptions::default()
    });
    let (status, error_type, body) = post(
        &stack,
        CONVERSE,
        &[("content-type", "application/json")],
        CONVERSE_BODY,
    )
    .await;
    assert_eq!(
        (status, error_type.as_deref()),
        (503, Some("ServiceUnavailableException")),
        "{body}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("upstream connect error"),
        "{body}"
    );
    // And the SDK raises the modeled exception.
    let error = runtime_client(&stack)
        .converse()
        .model_id(MODEL)
        .messages(user_message("x"))
        .customize()
        .config_override(
            aws_sdk_bedrockruntime::Config::builder()
                .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled()),
        )
        .send()
        .await
        .expect_err("no upstream");
    assert!(
        error
            .into_service_error()
            .is_service_unavailable_exception()
    );
}
