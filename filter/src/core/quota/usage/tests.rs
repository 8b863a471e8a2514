use super::*;
use crate::core::testing::frame;

fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

const STREAM: &[(&str, &str)] = &[("content-type", "application/vnd.amazon.eventstream")];

#[test]
fn invoke_model_headers() {
    let parser = UsageParser::new(
        200,
        &h(&[
            ("content-type", "application/json"),
            ("x-amzn-bedrock-input-token-count", "12"),
            ("x-amzn-bedrock-output-token-count", "34"),
        ]),
    );
    assert_eq!(
        parser.finish(),
        Some(Usage {
            input: 12,
            output: 34,
            ..Default::default()
        })
    );
}

#[test]
fn converse_body_in_pieces() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":6,"totalTokens":11}}"#;
    let mut parser = UsageParser::new(200, &h(&[("content-type", "application/json")]));
    for piece in body.chunks(7) {
        parser.feed(piece);
    }
    assert_eq!(
        parser.finish(),
        Some(Usage {
            input: 5,
            output: 6,
            ..Default::default()
        })
    );
}

#[test]
fn converse_stream_metadata_across_chunk_boundaries() {
    let mut bytes = Vec::new();
    bytes.extend(frame("messageStart", r#"{"role":"assistant"}"#));
    bytes.extend(frame(
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":"hello"}}"#,
    ));
    bytes.extend(frame("metadata", r#"{"usage":{"inputTokens":3,"outputTokens":7,"totalTokens":10},"metrics":{"latencyMs":1}}"#));
    for size in [1, 5, 13, 64, bytes.len()] {
        let mut parser = UsageParser::new(200, &h(STREAM));
        for piece in bytes.chunks(size) {
            parser.feed(piece);
        }
        assert_eq!(
            parser.finish(),
            Some(Usage {
                input: 3,
                output: 7,
                ..Default::default()
            }),
            "pieces of {size}"
        );
    }
}

#[test]
fn invoke_model_with_response_stream_metrics() {
    let chunk = |json: &str| {
        frame(
            "chunk",
            &format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode(json)),
        )
    };
    let mut bytes =
        chunk(r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#);
    bytes.extend(chunk(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":21,"outputTokenCount":8,"invocationLatency":1,"firstByteLatency":1}}"#));
    let mut parser = UsageParser::new(200, &h(STREAM));
    parser.feed(&bytes);
    assert_eq!(
        parser.finish(),
        Some(Usage {
            input: 21,
            output: 8,
            ..Default::default()
        })
    );
}

#[test]
fn unknown_and_failed() {
    let mut parser = UsageParser::new(200, &h(STREAM));
    parser.feed(&frame("messageStart", "{}"));
    assert_eq!(parser.finish(), None, "stream ended without usage");
    let mut parser = UsageParser::new(200, &h(STREAM));
    parser.feed(b"\x00\x00\x00\x10garbage-garbage-garbage");
    assert_eq!(parser.finish(), None, "corrupt stream");
    let mut parser = UsageParser::new(429, &h(&[("content-type", "application/json")]));
    parser.feed(br#"{"message":"slow down"}"#);
    assert_eq!(
        parser.finish(),
        Some(Usage::default()),
        "errors use nothing"
    );
    assert_eq!(
        UsageParser::new(200, &h(&[("content-type", "text/plain")])).finish(),
        None
    );
}

const CACHED: Usage = Usage {
    input: 11,
    output: 22,
    cache_read: 1000,
    cache_write: 300,
};

#[test]
fn prompt_cache_counts_in_every_form() {
    // InvokeModel: headers.
    let parser = UsageParser::new(
        200,
        &h(&[
            ("content-type", "application/json"),
            ("x-amzn-bedrock-input-token-count", "11"),
            ("x-amzn-bedrock-output-token-count", "22"),
            ("x-amzn-bedrock-cache-read-input-token-count", "1000"),
            ("x-amzn-bedrock-cache-write-input-token-count", "300"),
        ]),
    );
    assert_eq!(parser.finish(), Some(CACHED), "InvokeModel headers");

    // Converse: Bedrock's names.
    let mut parser = UsageParser::new(200, &h(&[("content-type", "application/json")]));
    parser.feed(br#"{"stopReason":"end_turn","usage":{"inputTokens":11,"outputTokens":22,"totalTokens":1333,"cacheReadInputTokens":1000,"cacheWriteInputTokens":300}}"#);
    assert_eq!(parser.finish(), Some(CACHED), "Converse body");

    // InvokeModel without the headers: Anthropic's names in the model's body.
    let mut parser = UsageParser::new(200, &h(&[("content-type", "application/json")]));
    parser.feed(br#"{"type":"message","usage":{"input_tokens":11,"output_tokens":22,"cache_read_input_tokens":1000,"cache_creation_input_tokens":300}}"#);
    assert_eq!(parser.finish(), Some(CACHED), "Anthropic body");

    // ConverseStream: the metadata event.
    let mut parser = UsageParser::new(200, &h(STREAM));
    parser.feed(&frame("metadata", r#"{"usage":{"inputTokens":11,"outputTokens":22,"totalTokens":1333,"cacheReadInputTokens":1000,"cacheWriteInputTokens":300},"metrics":{"latencyMs":1}}"#));
    assert_eq!(parser.finish(), Some(CACHED), "ConverseStream metadata");

    // InvokeModelWithResponseStream: the last chunk's metrics.
    let metrics = r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":11,"outputTokenCount":22,"invocationLatency":1,"firstByteLatency":1,"cacheReadInputTokenCount":1000,"cacheWriteInputTokenCount":300}}"#;
    let mut parser = UsageParser::new(200, &h(STREAM));
    parser.feed(&frame(
        "chunk",
        &format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode(metrics)),
    ));
    assert_eq!(parser.finish(), Some(CACHED), "invocation metrics");
    assert_eq!(CACHED.total(), 1333);
}

#[test]
fn the_first_streamed_output_is_noticed() {
    let mut parser = UsageParser::new(200, &h(STREAM));
    parser.feed(&frame("messageStart", r#"{"role":"assistant"}"#));
    assert!(!parser.output_started(), "messageStart carries no output");
    let delta = frame(
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#,
    );
    parser.feed(&delta[..5]);
    assert!(!parser.output_started(), "half a frame");
    parser.feed(&delta[5..]);
    assert!(parser.output_started());
    let mut parser = UsageParser::new(200, &h(&[("content-type", "application/json")]));
    parser.feed(br#"{"output":{}}"#);
    assert!(!parser.output_started(), "not a stream");
}
