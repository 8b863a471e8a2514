//! Converse and ConverseStream.

use super::*;
use serde_json::json;

#[test]
fn converse_echoes_the_last_user_message() {
    let response = converse(json!({
        "system": [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}],
        "messages": [
            user("first question"),
            {"role": "assistant", "content": [{"text": "an answer"}]},
            {"role": "user", "content": [{"text": "hello there"}, {"image": {"format": "png"}}, {"text": "again"}]},
        ],
    }))
    .unwrap();
    assert_eq!(response.content_type, "application/json");
    assert_eq!(
        json_body(&response),
        json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "Echo: hello there again"}]}},
            "stopReason": "end_turn",
            // The cache point makes the system prompt's 2 tokens a cache write.
            "usage": {"inputTokens": 7, "outputTokens": 4, "totalTokens": 13,
                      "cacheReadInputTokens": 0, "cacheWriteInputTokens": 2},
            "metrics": {"latencyMs": 0},
        })
    );
}

#[test]
fn converse_knobs_and_limits() {
    let body = json_body(
        &converse(json!({
            "messages": [user("hi")],
            "inferenceConfig": {"maxTokens": 3},
            "additionalModelRequestFields": {"emulator": {"output_tokens": 10}},
        }))
        .unwrap(),
    );
    assert_eq!(
        body["output"]["message"]["content"][0]["text"],
        "alpha bravo charlie"
    );
    assert_eq!(body["stopReason"], "max_tokens");
    assert_eq!(
        body["usage"],
        json!({"inputTokens": 1, "outputTokens": 3, "totalTokens": 4})
    );

    let body = json_body(
        &converse(json!({
            "messages": [user("hi")],
            "additionalModelRequestFields": {"emulator": {"reply": "Exactly this."}, "top_k": 5},
        }))
        .unwrap(),
    );
    assert_eq!(
        body["output"]["message"]["content"][0]["text"],
        "Exactly this."
    );

    let failures = [
        (
            json!({"messages": []}),
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ),
        (
            json!({}),
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ),
        (
            json!({"messages": [user("x")], "inferenceConfig": {"maxTokens": 0}}),
            "1 validation error detected: Value '0' at 'inferenceConfig.maxTokens' failed to satisfy constraint: Member must have value greater than or equal to 1",
        ),
        (
            json!({"messages": [user("x")], "additionalModelRequestFields": {"emulator": {"words_per_chunk": 0}}}),
            "additionalModelRequestFields.emulator.words_per_chunk: expected at least 1",
        ),
    ];
    for (body, message) in failures {
        let err = converse(body.clone()).unwrap_err();
        assert_eq!(
            (err.status, err.code, err.message.as_str()),
            (400, ErrorCode::Validation, message),
            "{body}"
        );
    }
    let err = handle(
        &Operation::Converse {
            model_id: MODEL.into(),
        },
        b"{not json",
        &PromptCache::default(),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Validation);
    assert!(
        err.message.starts_with("Malformed input request: "),
        "{}",
        err.message
    );
    let err = converse(json!({"messages": [{"role": "system", "content": []}]})).unwrap_err();
    assert_eq!(err.code, ErrorCode::Validation);
}

#[test]
fn converse_stream_events() {
    let response = run(
        Operation::ConverseStream { model_id: MODEL.into() },
        &json!({
            "system": [{"text": "sys"}],
            "messages": [user("stream me please")],
            "additionalModelRequestFields": {"emulator": {"chunk_delay_ms": 10, "words_per_chunk": 2}},
        }),
    )
    .unwrap();
    let events = events(&response);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert!(events.iter().all(|e| e.message_type == "event"));
    assert_eq!(events[0].payload, json!({"role": "assistant"}));
    assert_eq!(events[0].delay, Duration::ZERO);
    assert!(
        events[1..]
            .iter()
            .all(|e| e.delay == Duration::from_millis(10))
    );
    assert_eq!(
        events[1].payload,
        json!({"contentBlockIndex": 0, "delta": {"text": "Echo: stream"}})
    );
    assert_eq!(
        events[2].payload,
        json!({"contentBlockIndex": 0, "delta": {"text": " me please"}})
    );
    assert_eq!(events[3].payload, json!({"contentBlockIndex": 0}));
    assert_eq!(events[4].payload, json!({"stopReason": "end_turn"}));
    assert_eq!(
        events[5].payload,
        json!({"usage": {"inputTokens": 4, "outputTokens": 4, "totalTokens": 8}, "metrics": {"latencyMs": 50}})
    );
}

#[test]
fn converse_stream_failure() {
    let response = run(
        Operation::ConverseStream {
            model_id: MODEL.into(),
        },
        &json!({
            "messages": [user("one two three four")],
            "additionalModelRequestFields": {"emulator": {"fail_after_chunks": 2}},
        }),
    )
    .unwrap();
    let events = events(&response);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "modelStreamErrorException"
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last.message_type, "exception");
    assert_eq!(
        last.payload,
        json!({"message": "The emulator was asked to fail the stream after 2 chunks (fail_after_chunks)."})
    );
}
