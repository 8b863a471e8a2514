//! The emulator over real sockets, driven by a plain HTTP client and requests signed with the
//! `aws-sigv4` crate: hosts and routing, authentication failures, error shapes, h2c,
//! streaming without buffering, and the control port.

mod common;

use std::time::{Duration, Instant, SystemTime};

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use bedrock_emulator::EmulatorConfig;
use common::*;
use http_body_util::BodyExt;
use serde_json::json;

const RUNTIME_HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";
const AGENT_HOST: &str = "bedrock-agent-runtime.us-east-1.amazonaws.com";

fn assert_error(reply: &Reply, status: u16, code: &str) -> String {
    assert_eq!(
        reply.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("x-amzn-errortype"), Some(code));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let request_id = reply.header("x-amzn-requestid").expect("x-amzn-requestid");
    assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{request_id}");
    reply.json()["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

#[tokio::test]
async fn strict_hosts_pick_the_service_and_unknown_paths_are_signed_404s() {
    let emulator = start(config(false)).await;
    let addr = emulator.api_addr();
    let signing = Signing::default();
    let body = converse_body("strict host");

    let path = format!("/model/{MODEL_IN_PATH}/converse");
    let reply = send(
        request(addr, Some(RUNTIME_HOST), &path, &body, Some(&signing)),
        false,
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.json()["output"]["message"]["content"][0]["text"],
        "Echo: strict host"
    );
    assert!(uuid::Uuid::parse_str(reply.header("x-amzn-requestid").unwrap()).is_ok());

    let retrieve = json!({"retrievalQuery": {"text": "q"}})
        .to_string()
        .into_bytes();
    let reply = send(
        request(
            addr,
            Some(AGENT_HOST),
            "/knowledgebases/KB1/retrieve",
            &retrieve,
            Some(&signing),
        ),
        false,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["retrievalResults"].as_array().unwrap().len(),
        3
    );

    // The right signature on the wrong service's host, and a path from the future.
    for (host, path) in [
        (RUNTIME_HOST, "/knowledgebases/KB1/retrieve"),
        (RUNTIME_HOST, "/model/m/some-future-operation?x=1"),
        ("bedrock.us-east-1.amazonaws.com", "/foundation-models"),
        (AGENT_HOST, "/model/m/converse"),
    ] {
        let reply = send(
            request(addr, Some(host), path, &retrieve, Some(&signing)),
            false,
        )
        .await;
        assert_error(&reply, 404, "UnknownOperationException");
        let record = emulator.requests().pop().unwrap();
        assert_eq!(record.path, path);
        assert!(record.signature_valid, "{host}{path}");
        assert_eq!(
            record.error_code.as_deref(),
            Some("UnknownOperationException")
        );
    }

    let reply = send(request(addr, None, &path, &body, Some(&signing)), false).await;
    let message = assert_error(&reply, 403, "InvalidSignatureException");
    assert!(
        message.starts_with(&format!("Host '{addr}' is not an endpoint of this service")),
        "{message}"
    );
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn authentication_failures() {
    let emulator = start(config(true)).await;
    let addr = emulator.api_addr();
    let path = format!("/model/{MODEL_IN_PATH}/converse");
    let body = converse_body("auth");

    let reply = send(request(addr, None, &path, &body, None), false).await;
    assert_eq!(
        assert_error(&reply, 403, "MissingAuthenticationTokenException"),
        "Missing Authentication Token"
    );

    let cases: Vec<(Signing, &str, &str)> = vec![
        (
            Signing {
                access_key_id: "AKIDNOBODY".into(),
                ..Signing::default()
            },
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        (
            Signing {
                service: "bedrock-runtime".into(),
                ..Signing::default()
            },
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'bedrock'.",
        ),
        (
            Signing {
                region: "eu-west-1".into(),
                ..Signing::default()
            },
            "InvalidSignatureException",
            "Credential should be scoped to a valid region, not 'eu-west-1'. Expected 'us-east-1'.",
        ),
        (
            Signing {
                secret: "not-the-secret".into(),
                ..Signing::default()
            },
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check \
             your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ),
    ];
    for (signing, code, message) in cases {
        let reply = send(request(addr, None, &path, &body, Some(&signing)), false).await;
        assert_eq!(assert_error(&reply, 403, code), message);
    }

    let old = Signing {
        time: SystemTime::now() - Duration::from_secs(600),
        ..Signing::default()
    };
    let reply = send(request(addr, None, &path, &body, Some(&old)), false).await;
    let message = assert_error(&reply, 403, "InvalidSignatureException");
    assert!(message.starts_with("Signature expired: "), "{message}");

    // Signed, then changed in flight.
    let mut tampered = request(addr, None, &path, &body, Some(&Signing::default()));
    *tampered.body_mut() = http_body_util::Full::new(bytes::Bytes::from(converse_body("AUTH")));
    let reply = send(tampered, false).await;
    assert_error(&reply, 403, "InvalidSignatureException");

    let records = emulator.requests();
    assert_eq!(records.len(), 7);
    assert_eq!(records[0].access_key_id, None);
    assert_eq!(records[1].access_key_id.as_deref(), Some("AKIDNOBODY"));
    assert!(
        records
            .iter()
            .all(|r| !r.signature_valid && r.status == 403)
    );
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn h2c_requests_are_verified_with_their_authority() {
    let emulator = start(config(true)).await;
    let addr = emulator.api_addr();
    let body = json!({"messages": [{"role": "user", "content": "over h2"}], "max_tokens": 10})
        .to_string()
        .into_bytes();
    let path = format!("/model/{MODEL_IN_PATH}/invoke");
    let reply = send(
        request(addr, None, &path, &body, Some(&Signing::default())),
        true,
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["content"][0]["text"], "Echo: over h2");
    assert_eq!(reply.header("x-amzn-bedrock-input-token-count"), Some("2"));
    assert_eq!(reply.header("x-amzn-bedrock-output-token-count"), Some("3"));
    let record = emulator.requests().pop().unwrap();
    assert!(record.signature_valid);
    assert!(
        record
            .headers
            .iter()
            .any(|(n, v)| n == "host" && *v == addr.to_string())
    );
    emulator.stop().await.unwrap();
}

/// Reads an event stream frame by frame, noting when each arrived.
async fn timed_frames(
    response: hyper::Response<hyper::body::Incoming>,
    start: Instant,
) -> Vec<(Duration, String)> {
    let mut body = response.into_body();
    let mut decoder = MessageFrameDecoder::new();
    let mut buffer = bytes::BytesMut::new();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let DecodedFrame::Complete(message) = decoder.decode_frame(&mut buffer).unwrap() {
            let kind = message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == ":event-type")
                .map(|h| h.value().as_string().unwrap().as_str().to_string())
                .unwrap();
            frames.push((start.elapsed(), kind));
        }
    }
    frames
}

#[tokio::test]
async fn stream_frames_leave_as_they_are_generated() {
    let emulator = start(config(true)).await;
    let body = json!({
        "messages": [{"role": "user", "content": "go"}],
        "emulator": {"output_tokens": 3, "chunk_delay_ms": 300},
    })
    .to_string()
    .into_bytes();
    let path = format!("/model/{MODEL_IN_PATH}/invoke-with-response-stream");
    for http2 in [false, true] {
        let start = Instant::now();
        let req = request(
            emulator.api_addr(),
            None,
            &path,
            &body,
            Some(&Signing::default()),
        );
        let response = client(http2).request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/vnd.amazon.eventstream"
        );
        let frames = timed_frames(response, start).await;
        // message_start, content_block_start, 3 deltas, content_block_stop, message_delta,
        // message_stop: 7 pauses of 300 ms.
        assert_eq!(frames.len(), 8, "{frames:?}");
        assert!(frames.iter().all(|(_, kind)| kind == "chunk"));
        let (first, last) = (frames[0].0, frames[7].0);
        assert!(
            first < Duration::from_millis(1000),
            "http2={http2}: first frame after {first:?}"
        );
        assert!(
            last >= Duration::from_millis(2100),
            "http2={http2}: last frame after {last:?}"
        );
        assert!(
            last - first >= Duration::from_millis(1900),
            "http2={http2}: {frames:?}"
        );
    }
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn control_port_lists_clears_and_counts() {
    let emulator = start(config(true)).await;
    let health = control(&emulator, "GET", "/health").await;
    assert_eq!((health.status, &health.body[..]), (200, &b"ok"[..]));

    let path = format!("/model/{MODEL_IN_PATH}/converse?trace=1");
    let body = converse_body("recorded");
    send(
        request(
            emulator.api_addr(),
            None,
            &path,
            &body,
            Some(&Signing::default()),
        ),
        false,
    )
    .await;
    let listed = control(&emulator, "GET", "/requests").await.json();
    let record = &listed[0];
    assert_eq!(record["method"], "POST");
    assert_eq!(record["path"], path);
    assert_eq!(record["body_len"], body.len());
    assert_eq!(
        record["body_sha256"],
        bedrock_emulator::sigv4::sha256_hex(&body)
    );
    assert_eq!(record["access_key_id"], AKID);
    assert_eq!(record["signature_valid"], true);
    assert_eq!(record["status"], 200);
    assert_eq!(record["error_code"], serde_json::Value::Null);
    let headers = record["headers"].as_array().unwrap();
    assert!(headers.iter().any(|h| {
        h[0] == "authorization"
            && h[1]
                .as_str()
                .unwrap()
                .starts_with("AWS4-HMAC-SHA256 Credential=AKIDEMULATORTEST/")
    }));
    assert!(headers.iter().any(|h| h[0] == "x-amz-date"));

    assert_eq!(
        control(&emulator, "DELETE", "/requests").await.json(),
        json!({"cleared": 1})
    );
    assert_eq!(
        control(&emulator, "GET", "/requests").await.json(),
        json!([])
    );
    assert_eq!(
        control(&emulator, "GET", "/stats").await.json(),
        json!({"requests": 1, "issued_credentials": 0})
    );
    assert_eq!(control(&emulator, "GET", "/nothing").await.status, 404);
    assert_eq!(control(&emulator, "POST", "/credentials").await.status, 405);
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn records_carry_usage_and_the_prompt_cache_outlives_them() {
    let emulator = start(config(true)).await;
    let signing = Signing::default();
    let call = |path: String, body: Vec<u8>| {
        let request = request(emulator.api_addr(), None, &path, &body, Some(&signing));
        send(request, false)
    };
    let last_usage =
        || async { control(&emulator, "GET", "/requests").await.json()[0]["usage"].clone() };
    let converse = format!("/model/{MODEL_IN_PATH}/converse");
    let cached = json!({
        "system": [{"text": "a cached system prompt"}, {"cachePoint": {"type": "default"}}],
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
    })
    .to_string()
    .into_bytes();

    let reply = call(converse.clone(), cached.clone()).await;
    assert_eq!(reply.json()["usage"]["cacheWriteInputTokens"], 4);
    let usage = json!({"input_tokens": 1, "output_tokens": 2, "cache_read_tokens": 0, "cache_write_tokens": 4});
    assert_eq!(last_usage().await, usage);
    assert_eq!(emulator.requests()[0].usage.unwrap().cache_write_tokens, 4);

    // Clearing the records keeps the cache: the same prefix is read.
    control(&emulator, "DELETE", "/requests").await;
    call(converse.clone(), cached.clone()).await;
    let usage = json!({"input_tokens": 1, "output_tokens": 2, "cache_read_tokens": 4, "cache_write_tokens": 0});
    assert_eq!(last_usage().await, usage);

    // DELETE /cache forgets it: written again.
    assert_eq!(
        control(&emulator, "DELETE", "/cache").await.json(),
        json!({"cleared": 1})
    );
    assert_eq!(control(&emulator, "GET", "/cache").await.status, 405);
    control(&emulator, "DELETE", "/requests").await;
    call(converse.clone(), cached).await;
    assert_eq!(last_usage().await["cache_write_tokens"], 4);

    // InvokeModel with cache_control reports the cache in headers too.
    let invoke = format!("/model/{MODEL_IN_PATH}/invoke");
    let anthropic = json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "two words", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hello"}],
    })
    .to_string()
    .into_bytes();
    for (read, write) in [("0", "2"), ("2", "0")] {
        let reply = call(invoke.clone(), anthropic.clone()).await;
        assert_eq!(reply.header("x-amzn-bedrock-input-token-count"), Some("1"));
        assert_eq!(
            reply.header("x-amzn-bedrock-cache-read-input-token-count"),
            Some(read)
        );
        assert_eq!(
            reply.header("x-amzn-bedrock-cache-write-input-token-count"),
            Some(write)
        );
    }
    control(&emulator, "DELETE", "/requests").await;

    // Without a cache point the counts are zero; errors carry no usage.
    call(converse.clone(), converse_body("plain request")).await;
    call(
        "/model/emulator-error/converse".to_string(),
        converse_body("fails"),
    )
    .await;
    let records = control(&emulator, "GET", "/requests").await.json();
    assert_eq!(
        records[0]["usage"],
        json!({"input_tokens": 2, "output_tokens": 3, "cache_read_tokens": 0, "cache_write_tokens": 0})
    );
    assert_eq!(records[1]["status"], 500);
    assert_eq!(records[1]["usage"], serde_json::Value::Null);
    emulator.stop().await.unwrap();
}

fn temporary_signing(credentials: &serde_json::Value) -> Signing {
    Signing {
        access_key_id: credentials["AccessKeyId"].as_str().unwrap().into(),
        secret: credentials["SecretAccessKey"].as_str().unwrap().into(),
        token: Some(credentials["Token"].as_str().unwrap().into()),
        ..Signing::default()
    }
}

#[tokio::test]
async fn issued_credentials_work_until_they_expire() {
    let emulator = start(EmulatorConfig {
        temp_credentials_ttl: SECOND,
        ..config(true)
    })
    .await;
    let path = format!("/model/{MODEL_IN_PATH}/converse");
    let body = converse_body("temporary");
    let issued = control(&emulator, "GET", "/credentials").await;
    assert_eq!(issued.status, 200);
    let credentials = issued.json();
    assert!(
        credentials["AccessKeyId"]
            .as_str()
            .unwrap()
            .starts_with("ASIA")
    );
    assert_eq!(
        credentials["RoleArn"],
        "arn:aws:iam::000000000000:role/bedrock-emulator"
    );
    let signing = temporary_signing(&credentials);

    let reply = send(
        request(emulator.api_addr(), None, &path, &body, Some(&signing)),
        false,
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);

    let wrong_token = Signing {
        token: Some("not-the-token".into()),
        ..signing.clone()
    };
    let reply = send(
        request(emulator.api_addr(), None, &path, &body, Some(&wrong_token)),
        false,
    )
    .await;
    assert_eq!(
        assert_error(&reply, 403, "UnrecognizedClientException"),
        "The security token included in the request is invalid."
    );

    tokio::time::sleep(2 * SECOND + Duration::from_millis(100)).await;
    let late = Signing {
        time: SystemTime::now(),
        ..signing
    };
    let reply = send(
        request(emulator.api_addr(), None, &path, &body, Some(&late)),
        false,
    )
    .await;
    assert_eq!(
        assert_error(&reply, 403, "ExpiredTokenException"),
        "The security token included in the request is expired"
    );
    let other = control(&emulator, "GET", "/credentials").await.json();
    assert_ne!(other["AccessKeyId"], credentials["AccessKeyId"]);
    assert_eq!(
        control(&emulator, "GET", "/stats").await.json()["issued_credentials"],
        2
    );
    emulator.stop().await.unwrap();
}
