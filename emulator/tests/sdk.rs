//! The AWS SDK for Rust against the emulator: proves the verifier accepts what a real signer
//! produces (model ids with ':' exercise the double encoding), that the SDK parses every
//! response and event stream, and that its errors carry the codes Bedrock uses.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::primitives::Blob;
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ConversationRole, ConverseStreamOutput,
    ConverseTokensRequest, CountTokensInput, InferenceConfiguration, InvokeModelTokensRequest,
    Message, ResponseStream, StopReason, SystemContentBlock,
};
use aws_sdk_bedrockruntime::{Client, config::Region};
use aws_smithy_types::{Document, Number};
use bedrock_emulator::{Emulator, EmulatorConfig};
use common::*;
use serde_json::json;

fn client(emulator: &Emulator, credentials: Credentials) -> Client {
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(emulator.api_url())
        .credentials_provider(credentials)
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

fn static_credentials() -> Credentials {
    Credentials::new(AKID, SECRET, None, None, "emulator-tests")
}

fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.into()))
        .build()
        .unwrap()
}

fn knobs(pairs: &[(&str, Document)]) -> Document {
    let knobs: HashMap<String, Document> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Document::Object(HashMap::from([(
        "emulator".to_string(),
        Document::Object(knobs),
    )]))
}

fn int(n: u64) -> Document {
    Document::Number(Number::PosInt(n))
}

#[tokio::test]
async fn sdk_operations_are_signed_and_parsed() {
    let emulator = start(config(true)).await;
    let client = client(&emulator, static_credentials());

    let converse = client
        .converse()
        .model_id(MODEL)
        .system(SystemContentBlock::Text("Be brief.".into()))
        .messages(user("Hello emulator"))
        .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
        .send()
        .await
        .expect("Converse succeeds");
    let message = converse.output().unwrap().as_message().unwrap();
    assert_eq!(
        message.content()[0].as_text().unwrap(),
        "Echo: Hello emulator"
    );
    assert_eq!(converse.stop_reason(), &StopReason::EndTurn);
    let usage = converse.usage().unwrap();
    assert_eq!(
        (
            usage.input_tokens(),
            usage.output_tokens(),
            usage.total_tokens()
        ),
        (4, 3, 7)
    );

    let mut stream = client
        .converse_stream()
        .model_id(MODEL)
        .messages(user("stream this"))
        .additional_model_request_fields(knobs(&[("words_per_chunk", int(2))]))
        .send()
        .await
        .expect("ConverseStream succeeds")
        .stream;
    let (mut text, mut kinds, mut usage) = (String::new(), Vec::new(), None);
    while let Some(event) = stream.recv().await.expect("the event stream decodes") {
        kinds.push(match &event {
            ConverseStreamOutput::MessageStart(_) => "messageStart",
            ConverseStreamOutput::ContentBlockDelta(delta) => {
                text.push_str(delta.delta().unwrap().as_text().unwrap());
                "contentBlockDelta"
            }
            ConverseStreamOutput::ContentBlockStop(_) => "contentBlockStop",
            ConverseStreamOutput::MessageStop(stop) => {
                assert_eq!(stop.stop_reason(), &StopReason::EndTurn);
                "messageStop"
            }
            ConverseStreamOutput::Metadata(metadata) => {
                usage = metadata.usage().cloned();
                "metadata"
            }
            other => panic!("unexpected event {other:?}"),
        });
    }
    assert_eq!(text, "Echo: stream this");
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    let usage = usage.expect("usage in metadata");
    assert_eq!((usage.input_tokens(), usage.output_tokens()), (2, 3));

    let anthropic = json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "one two three"}],
    });
    let invoked = client
        .invoke_model()
        .model_id(MODEL)
        .content_type("application/json")
        .body(Blob::new(anthropic.to_string()))
        .send()
        .await
        .expect("InvokeModel succeeds");
    let body: serde_json::Value = serde_json::from_slice(invoked.body().as_ref()).unwrap();
    assert_eq!(body["content"][0]["text"], "Echo: one");
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 3, "output_tokens": 2})
    );

    let mut chunks = client
        .invoke_model_with_response_stream()
        .model_id(MODEL)
        .content_type("application/json")
        .body(Blob::new(json!({"messages": [{"role": "user", "content": "hi"}], "emulator": {"reply": "a b c"}}).to_string()))
        .send()
        .await
        .expect("InvokeModelWithResponseStream succeeds")
        .body;
    let mut types = Vec::new();
    let mut streamed = String::new();
    while let Some(event) = chunks.recv().await.expect("the event stream decodes") {
        let ResponseStream::Chunk(part) = event else {
            panic!("unexpected {event:?}")
        };
        let payload: serde_json::Value =
            serde_json::from_slice(part.bytes().unwrap().as_ref()).unwrap();
        if payload["type"] == "content_block_delta" {
            streamed.push_str(payload["delta"]["text"].as_str().unwrap());
        }
        if payload["type"] == "message_stop" {
            assert_eq!(
                payload["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
                3
            );
        }
        types.push(payload["type"].as_str().unwrap().to_string());
    }
    assert_eq!(streamed, "a b c");
    assert_eq!(types.first().map(String::as_str), Some("message_start"));
    assert_eq!(types.last().map(String::as_str), Some("message_stop"));

    let counted = client
        .count_tokens()
        .model_id(MODEL)
        .input(CountTokensInput::Converse(
            ConverseTokensRequest::builder()
                .messages(user("count these four words"))
                .system(SystemContentBlock::Text("and two".into()))
                .build(),
        ))
        .send()
        .await
        .expect("CountTokens (converse) succeeds");
    assert_eq!(counted.input_tokens(), 6);
    let counted = client
        .count_tokens()
        .model_id(MODEL)
        .input(CountTokensInput::InvokeModel(
            InvokeModelTokensRequest::builder()
                .body(Blob::new(anthropic.to_string()))
                .build()
                .unwrap(),
        ))
        .send()
        .await
        .expect("CountTokens (invokeModel) succeeds");
    assert_eq!(counted.input_tokens(), 3);

    let records = emulator.requests();
    assert_eq!(records.len(), 6);
    for record in &records {
        assert!(record.signature_valid, "{record:?}");
        assert!(
            record.path.starts_with(&format!("/model/{MODEL_IN_PATH}/")),
            "{}",
            record.path
        );
    }
    emulator.stop().await.unwrap();
}

/// The SDK reads the cache counts under the names Bedrock's service model gives them.
#[tokio::test]
async fn sdk_reads_prompt_cache_usage() {
    let emulator = start(config(true)).await;
    let client = client(&emulator, static_credentials());
    let cache_point = || {
        SystemContentBlock::CachePoint(
            CachePointBlock::builder()
                .r#type(CachePointType::Default)
                .build()
                .unwrap(),
        )
    };
    for (read, write) in [(0, 3), (3, 0)] {
        let converse = client
            .converse()
            .model_id(MODEL)
            .system(SystemContentBlock::Text("a system prompt".into()))
            .system(cache_point())
            .messages(user("Hello emulator"))
            .send()
            .await
            .expect("Converse succeeds");
        let usage = converse.usage().unwrap();
        assert_eq!(
            (
                usage.input_tokens(),
                usage.output_tokens(),
                usage.total_tokens(),
                usage.cache_read_input_tokens(),
                usage.cache_write_input_tokens()
            ),
            (2, 3, 8, Some(read), Some(write))
        );
    }
    let mut stream = client
        .converse_stream()
        .model_id(MODEL)
        .system(SystemContentBlock::Text("a system prompt".into()))
        .system(cache_point())
        .messages(user("stream this"))
        .send()
        .await
        .expect("ConverseStream succeeds")
        .stream;
    let mut usage = None;
    while let Some(event) = stream.recv().await.expect("the event stream decodes") {
        if let ConverseStreamOutput::Metadata(metadata) = event {
            usage = metadata.usage().cloned();
        }
    }
    let usage = usage.expect("usage in metadata");
    assert_eq!(
        (
            usage.input_tokens(),
            usage.cache_read_input_tokens(),
            usage.cache_write_input_tokens()
        ),
        (2, Some(3), Some(0))
    );
    // Without a cache point the SDK sees no cache counts at all.
    let plain = client
        .converse()
        .model_id(MODEL)
        .messages(user("Hello emulator"))
        .send()
        .await
        .expect("Converse succeeds");
    let usage = plain.usage().unwrap();
    assert_eq!(
        (
            usage.cache_read_input_tokens(),
            usage.cache_write_input_tokens()
        ),
        (None, None)
    );
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn sdk_sees_bedrock_error_codes() {
    let emulator = start(config(true)).await;
    let wrong = client(
        &emulator,
        Credentials::new(AKID, "wrong-secret", None, None, "tests"),
    );
    let err = wrong
        .converse()
        .model_id(MODEL)
        .messages(user("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"), "{err:?}");

    let unknown = client(
        &emulator,
        Credentials::new("AKIDUNKNOWN", SECRET, None, None, "tests"),
    );
    let err = unknown
        .converse()
        .model_id(MODEL)
        .messages(user("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("UnrecognizedClientException"));

    let good = client(&emulator, static_credentials());
    let err = good
        .converse()
        .model_id("us.emulator-throttle-v1:0")
        .messages(user("x"))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error().unwrap().is_throttling_exception(),
        "{err:?}"
    );
    let err = good
        .converse()
        .model_id("emulator-error")
        .messages(user("x"))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .unwrap()
            .is_internal_server_exception(),
        "{err:?}"
    );
    let err = good.converse().model_id(MODEL).send().await.unwrap_err();
    assert!(
        err.as_service_error().unwrap().is_validation_exception(),
        "{err:?}"
    );

    let mut stream = good
        .converse_stream()
        .model_id(MODEL)
        .messages(user("one two three"))
        .additional_model_request_fields(knobs(&[("fail_after_chunks", int(1))]))
        .send()
        .await
        .unwrap()
        .stream;
    let mut deltas = 0;
    let failure = loop {
        match stream.recv().await {
            Ok(Some(ConverseStreamOutput::ContentBlockDelta(_))) => deltas += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without failing"),
            Err(err) => break err,
        }
    };
    assert_eq!(deltas, 1);
    let failure = failure.into_service_error();
    assert!(failure.is_model_stream_error_exception(), "{failure:?}");
    assert_eq!(
        failure.message(),
        Some("The emulator was asked to fail the stream after 1 chunks (fail_after_chunks).")
    );
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn sdk_receives_stream_events_as_they_are_generated() {
    let emulator = start(config(true)).await;
    let client = client(&emulator, static_credentials());
    let start = Instant::now();
    let mut stream = client
        .converse_stream()
        .model_id(MODEL)
        .messages(user("timing"))
        .additional_model_request_fields(knobs(&[
            ("output_tokens", int(4)),
            ("chunk_delay_ms", int(400)),
        ]))
        .send()
        .await
        .unwrap()
        .stream;
    let mut arrivals = Vec::new();
    while let Some(_event) = stream.recv().await.unwrap() {
        arrivals.push(start.elapsed());
    }
    // messageStart, 4 deltas, contentBlockStop, messageStop, metadata: 7 pauses of 400 ms.
    assert_eq!(arrivals.len(), 8);
    assert!(arrivals[0] < Duration::from_millis(1200), "{arrivals:?}");
    assert!(arrivals[7] >= Duration::from_millis(2800), "{arrivals:?}");
    assert!(
        arrivals[7] - arrivals[0] >= Duration::from_millis(2400),
        "{arrivals:?}"
    );
    emulator.stop().await.unwrap();
}

/// aws-config's default chain reading `AWS_CONTAINER_CREDENTIALS_FULL_URI` (as the gateway's
/// control service might) gets credentials from the control port, and the SDK signs with them.
#[tokio::test]
async fn container_credentials_from_the_control_port() {
    let emulator = start(EmulatorConfig {
        any_host: true,
        ..EmulatorConfig::new(REGION)
    })
    .await;
    let uri = format!("{}/credentials", emulator.control_url().unwrap());
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .env(aws_types::os_shim_internal::Env::from_slice(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            uri.as_str(),
        )]))
        .fs(aws_types::os_shim_internal::Fs::from_slice(&[]))
        .region(Region::new(REGION))
        .endpoint_url(emulator.api_url())
        .load()
        .await;
    let provided = sdk_config
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .expect("the container provider reads the control port");
    assert!(provided.access_key_id().starts_with("ASIA"));
    assert!(provided.session_token().is_some());
    assert!(provided.expiry().is_some());

    let client = Client::new(&sdk_config);
    let reply = client
        .converse()
        .model_id(MODEL)
        .messages(user("via ecs"))
        .send()
        .await
        .expect("Converse with issued credentials");
    assert_eq!(
        reply.output().unwrap().as_message().unwrap().content()[0]
            .as_text()
            .unwrap(),
        "Echo: via ecs"
    );
    let record = emulator.requests().pop().unwrap();
    assert!(record.signature_valid);
    assert!(record.access_key_id.unwrap().starts_with("ASIA"));
    assert!(
        record
            .headers
            .iter()
            .any(|(n, _)| n == "x-amz-security-token")
    );
    emulator.stop().await.unwrap();
}

#[tokio::test]
async fn sdk_sees_expired_temporary_credentials() {
    let emulator = start(EmulatorConfig {
        temp_credentials_ttl: SECOND,
        ..config(true)
    })
    .await;
    let issued = emulator.issue_credentials();
    let credentials = Credentials::new(
        &issued.access_key_id,
        issued.secret_access_key.expose(),
        Some(issued.token.expose().to_string()),
        None,
        "issued",
    );
    let client = client(&emulator, credentials);
    client
        .converse()
        .model_id(MODEL)
        .messages(user("in time"))
        .send()
        .await
        .expect("valid at first");
    tokio::time::sleep(2 * SECOND + Duration::from_millis(100)).await;
    let err = client
        .converse()
        .model_id(MODEL)
        .messages(user("too late"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ExpiredTokenException"), "{err:?}");
    emulator.stop().await.unwrap();
}
