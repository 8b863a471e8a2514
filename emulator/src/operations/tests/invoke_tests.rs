//! InvokeModel and InvokeModelWithResponseStream.

use super::*;
use serde_json::{Value, json};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

fn invoke(body: Value) -> Result<Response, ApiError> {
    run(
        Operation::InvokeModel {
            model_id: MODEL.into(),
        },
        &body,
    )
}

#[test]
fn invoke_anthropic() {
    let request = json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "What is up"},
            {"role": "assistant", "content": [{"type": "text", "text": "Not much."}]},
            {"role": "user", "content": [{"type": "text", "text": "Tell me"}, {"type": "image", "source": {}}]},
        ],
    });
    let response = invoke(request.clone()).unwrap();
    let body = json_body(&response);
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("msg_emu_") && id.len() == 32, "{id}");
    assert_eq!(
        body,
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": "Echo: Tell me"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 3},
        })
    );
    assert_eq!(
        response.headers,
        [
            ("x-amzn-bedrock-input-token-count", "10".to_string()),
            ("x-amzn-bedrock-output-token-count", "3".to_string()),
            ("x-amzn-bedrock-invocation-latency", "0".to_string()),
        ]
    );
    // Deterministic: the same request gets the same id.
    assert_eq!(json_body(&invoke(request).unwrap())["id"], id);

    let truncated = json_body(
        &invoke(json!({
            "max_tokens": 2,
            "system": [{"type": "text", "text": "two words"}],
            "messages": [{"role": "user", "content": "hi"}],
            "emulator": {"reply": "one two three"},
        }))
        .unwrap(),
    );
    assert_eq!(truncated["content"][0]["text"], "one two");
    assert_eq!(truncated["stop_reason"], "max_tokens");
    assert_eq!(
        truncated["usage"],
        json!({"input_tokens": 3, "output_tokens": 2})
    );
}

#[test]
fn invoke_titan() {
    let body = json_body(
        &invoke(json!({"inputText": "summarize this text", "textGenerationConfig": {"maxTokenCount": 2}}))
            .unwrap(),
    );
    assert_eq!(
        body,
        json!({
            "inputTextTokenCount": 3,
            "results": [{"tokenCount": 2, "outputText": "Echo: summarize", "completionReason": "LENGTH"}],
        })
    );
    let body = json_body(&invoke(json!({"inputText": "x"})).unwrap());
    assert_eq!(body["results"][0]["completionReason"], "FINISH");
}

#[test]
fn invoke_rejects_what_it_cannot_read() {
    for (body, fragment) in [
        (
            json!({"prompt": "Human: hi"}),
            "the emulator understands Anthropic Messages bodies",
        ),
        (json!([1, 2]), "expected a JSON object"),
        (
            json!({"messages": []}),
            "messages: expected at least 1 message",
        ),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "Malformed input request",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens: expected at least 1, got 0",
        ),
        (
            json!({"inputText": "x", "emulator": {"bogus": 1}}),
            "emulator: unknown field `bogus`",
        ),
    ] {
        let err = invoke(body.clone()).unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (400, ErrorCode::Validation),
            "{body}"
        );
        assert!(err.message.contains(fragment), "{body}: {}", err.message);
    }
}

fn chunk_payloads(response: &Response) -> Vec<Value> {
    events(response)
        .iter()
        .map(|e| {
            if e.message_type == "exception" {
                return json!({"exception": e.event_type, "payload": e.payload});
            }
            assert_eq!(e.event_type, "chunk");
            let bytes = BASE64.decode(e.payload["bytes"].as_str().unwrap()).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect()
}

#[test]
fn invoke_stream_anthropic() {
    let response = run(
        Operation::InvokeModelWithResponseStream { model_id: MODEL.into() },
        &json!({"messages": [{"role": "user", "content": "a b"}], "max_tokens": 50, "emulator": {"chunk_delay_ms": 5}}),
    )
    .unwrap();
    assert_eq!(
        response.headers,
        [(
            "x-amzn-bedrock-content-type",
            "application/json".to_string()
        )]
    );
    let payloads = chunk_payloads(&response);
    let types: Vec<&str> = payloads
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(
        payloads[0]["message"]["usage"],
        json!({"input_tokens": 2, "output_tokens": 0})
    );
    assert_eq!(payloads[0]["message"]["model"], MODEL);
    let text: String = payloads[2..5]
        .iter()
        .map(|p| p["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Echo: a b");
    assert_eq!(
        payloads[2],
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Echo:"}})
    );
    assert_eq!(
        payloads[6],
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 3}})
    );
    assert_eq!(
        payloads[7],
        json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 2, "outputTokenCount": 3, "invocationLatency": 35, "firstByteLatency": 0}})
    );
}

#[test]
fn invoke_stream_failure_and_titan() {
    let failing = run(
        Operation::InvokeModelWithResponseStream { model_id: MODEL.into() },
        &json!({"messages": [{"role": "user", "content": "a b c"}], "emulator": {"fail_after_chunks": 1}}),
    )
    .unwrap();
    let payloads = chunk_payloads(&failing);
    assert_eq!(payloads.len(), 4);
    assert_eq!(payloads[2]["delta"]["text"], "Echo:");
    assert_eq!(payloads[3]["exception"], "modelStreamErrorException");

    let titan = run(
        Operation::InvokeModelWithResponseStream {
            model_id: "amazon.titan-text-express-v1".into(),
        },
        &json!({"inputText": "x y", "emulator": {"words_per_chunk": 2}}),
    )
    .unwrap();
    let payloads = chunk_payloads(&titan);
    assert_eq!(payloads.len(), 2);
    assert_eq!(payloads[0]["outputText"], "Echo: x");
    assert_eq!(payloads[0]["inputTextTokenCount"], 2);
    assert_eq!(payloads[0]["completionReason"], Value::Null);
    assert_eq!(payloads[1]["outputText"], " y");
    assert_eq!(payloads[1]["completionReason"], "FINISH");
    assert_eq!(payloads[1]["totalOutputTextTokenCount"], 3);
    assert_eq!(
        payloads[1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"],
        3
    );
}
