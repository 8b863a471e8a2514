//! Every bedrock-runtime operation of the walking skeleton through the gateway with the AWS
//! SDK for Rust, and streaming that is not buffered.

use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    ConverseStreamOutput, ConverseTokensRequest, CountTokensInput, ResponseStream,
};
use aws_smithy_types::Document;

use crate::common::{MODEL, runtime_client, start_default, user_message};

fn emulator_knobs(pairs: &[(&str, u64)]) -> Document {
    let knobs = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Document::from(*v)))
        .collect();
    Document::Object([("emulator".to_string(), Document::Object(knobs))].into())
}

#[tokio::test(flavor = "multi_thread")]
async fn converse_through_the_gateway() {
    let stack = start_default();
    let client = runtime_client(&stack);
    let out = client
        .converse()
        .model_id(MODEL)
        .messages(user_message("hello from the rust sdk"))
        .send()
        .await
        .expect("converse");
    let text = out
        .output()
        .and_then(|o| o.as_message().ok())
        .and_then(|m| m.content().first())
        .and_then(|c| c.as_text().ok())
        .cloned();
    assert_eq!(text.as_deref(), Some("Echo: hello from the rust sdk"));
    let usage = out.usage().expect("usage");
    assert_eq!(
        (
            usage.input_tokens(),
            usage.output_tokens(),
            usage.total_tokens()
        ),
        (5, 6, 11)
    );

    // The emulator saw the gateway's signature, not the client's, on the real AWS host.
    let seen = stack.emulator_requests().unwrap();
    let request = seen.last().expect("a request reached the emulator");
    assert!(request.signature_valid, "{request:?}");
    assert_eq!(
        request.access_key_id.as_deref(),
        Some(stack.access_key_id.as_str())
    );
    assert_eq!(
        request.header("host"),
        Some("bedrock-runtime.us-east-1.amazonaws.com")
    );
    assert_eq!(
        request.path,
        "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn converse_stream_events_arrive_as_generated() {
    let stack = start_default();
    let client = runtime_client(&stack);
    let started = Instant::now();
    let mut out = client
        .converse_stream()
        .model_id(MODEL)
        .messages(user_message("stream please"))
        .additional_model_request_fields(emulator_knobs(&[
            ("output_tokens", 6),
            ("chunk_delay_ms", 400),
        ]))
        .send()
        .await
        .expect("converse-stream");
    let mut first_delta = None;
    let mut text = String::new();
    let mut usage = None;
    while let Some(event) = out.stream.recv().await.expect("event") {
        match event {
            ConverseStreamOutput::ContentBlockDelta(delta) => {
                first_delta.get_or_insert_with(|| started.elapsed());
                if let Some(d) = delta.delta().and_then(|d| d.as_text().ok()) {
                    text.push_str(d);
                }
            }
            ConverseStreamOutput::Metadata(meta) => usage = meta.usage().cloned(),
            _ => {}
        }
    }
    let total = started.elapsed();
    let first_delta = first_delta.expect("deltas");
    assert_eq!(text.split_whitespace().count(), 6, "{text:?}");
    let usage = usage.expect("metadata event with usage");
    assert_eq!((usage.input_tokens(), usage.output_tokens()), (2, 6));
    // Seven pauses of 400 ms separate the events after the first: buffering would deliver the
    // first delta only at the end.
    assert!(total >= Duration::from_millis(2400), "total {total:?}");
    assert!(
        first_delta + Duration::from_millis(1500) < total,
        "first delta after {first_delta:?}, stream ended after {total:?}: the response was buffered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_model_and_its_stream() {
    let stack = start_default();
    let client = runtime_client(&stack);
    let body = serde_json::json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 3,
        "messages": [{"role": "user", "content": "one two three four five"}],
    });
    let out = client
        .invoke_model()
        .model_id(MODEL)
        .content_type("application/json")
        .body(Blob::new(serde_json::to_vec(&body).unwrap()))
        .send()
        .await
        .expect("invoke-model");
    let reply: serde_json::Value = serde_json::from_slice(out.body().as_ref()).unwrap();
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(reply["usage"]["input_tokens"], 5);
    assert_eq!(reply["usage"]["output_tokens"], 3);
    assert_eq!(reply["content"][0]["text"], "Echo: one two");

    let mut stream = client
        .invoke_model_with_response_stream()
        .model_id(MODEL)
        .content_type("application/json")
        .body(Blob::new(serde_json::to_vec(&body).unwrap()))
        .send()
        .await
        .expect("invoke-model-with-response-stream");
    let mut text = String::new();
    let mut metrics = None;
    while let Some(event) = stream.body.recv().await.expect("chunk") {
        if let ResponseStream::Chunk(part) = event {
            let json: serde_json::Value =
                serde_json::from_slice(part.bytes().unwrap().as_ref()).unwrap();
            if json["type"] == "content_block_delta" {
                text.push_str(json["delta"]["text"].as_str().unwrap_or_default());
            }
            if json["type"] == "message_stop" {
                metrics = Some(json["amazon-bedrock-invocationMetrics"].clone());
            }
        }
    }
    assert_eq!(text, "Echo: one two");
    let metrics = metrics.expect("invocation metrics on the last chunk");
    assert_eq!(
        (
            metrics["inputTokenCount"].as_u64(),
            metrics["outputTokenCount"].as_u64()
        ),
        (Some(5), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn count_tokens() {
    let stack = start_default();
    let client = runtime_client(&stack);
    let request = ConverseTokensRequest::builder()
        .messages(user_message("count these five words"))
        .build();
    let out = client
        .count_tokens()
        .model_id(MODEL)
        .input(CountTokensInput::Converse(request))
        .send()
        .await
        .expect("count-tokens");
    assert_eq!(out.input_tokens(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn bedrock_errors_reach_the_sdk_as_themselves() {
    let stack = start_default();
    let client = runtime_client(&stack);
    let error = client
        .converse()
        .model_id("emulator-throttle")
        .messages(user_message("x"))
        .customize()
        .config_override(
            aws_sdk_bedrockruntime::Config::builder()
                .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled()),
        )
        .send()
        .await
        .expect_err("throttled");
    let error = error.into_service_error();
    assert!(error.is_throttling_exception(), "{error:?}");
}
