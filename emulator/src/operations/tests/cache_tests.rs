//! The prompt cache's token counts on every API: Converse and ConverseStream (`cachePoint`
//! blocks), InvokeModel and InvokeModelWithResponseStream with Anthropic bodies
//! (`cache_control`).

use super::*;
use crate::records::Usage;
use serde_json::{Value, json};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

const CACHE_POINT: &str = r#"{"cachePoint": {"type": "default"}}"#;

fn cache_point() -> Value {
    serde_json::from_str(CACHE_POINT).unwrap()
}

fn converse_op() -> Operation {
    Operation::Converse {
        model_id: MODEL.into(),
    }
}

fn converse_usage(cache: &PromptCache, body: &Value) -> Value {
    json_body(&run_with(cache, converse_op(), body).unwrap())["usage"].clone()
}

/// CountTokens of the same conversation: every input token, the cached prefix included.
fn count_converse(body: &Value) -> u64 {
    let input =
        json!({"input": {"converse": {"system": body["system"], "messages": body["messages"]}}});
    let counted = run(
        Operation::CountTokens {
            model_id: MODEL.into(),
        },
        &input,
    )
    .unwrap();
    json_body(&counted)["inputTokens"].as_u64().unwrap()
}

fn n(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

/// The Converse sums: prefix + rest is what the request counts without the cache, and
/// totalTokens is input + output + cache read + cache write.
fn assert_converse_sums(usage: &Value, counted: u64) {
    let cached = n(usage, "cacheReadInputTokens") + n(usage, "cacheWriteInputTokens");
    assert_eq!(n(usage, "inputTokens") + cached, counted, "{usage}");
    assert_eq!(
        n(usage, "totalTokens"),
        n(usage, "inputTokens") + n(usage, "outputTokens") + cached,
        "{usage}"
    );
}

fn system_and_question(system: &str, question: &str) -> Value {
    json!({
        "system": [{"text": system}, cache_point()],
        "messages": [user(question)],
    })
}

#[test]
fn converse_writes_then_reads_the_prefix() {
    let cache = PromptCache::default();
    // 5 system tokens are the prefix, 2 question tokens the rest.
    let body = system_and_question("You are a careful assistant.", "hello there");
    let first = converse_usage(&cache, &body);
    assert_eq!(
        first,
        json!({"inputTokens": 2, "outputTokens": 3, "totalTokens": 10,
               "cacheReadInputTokens": 0, "cacheWriteInputTokens": 5})
    );
    let second = converse_usage(&cache, &body);
    assert_eq!(
        second,
        json!({"inputTokens": 2, "outputTokens": 3, "totalTokens": 10,
               "cacheReadInputTokens": 5, "cacheWriteInputTokens": 0})
    );
    // Another question after the same prefix reads it too.
    let other_question = system_and_question("You are a careful assistant.", "and now what");
    let third = converse_usage(&cache, &other_question);
    assert_eq!(
        (n(&third, "cacheReadInputTokens"), n(&third, "inputTokens")),
        (5, 3)
    );
    // A different prefix is written again.
    let other_prefix = system_and_question("You are a sloppy assistant.", "hello there");
    let fourth = converse_usage(&cache, &other_prefix);
    assert_eq!(
        (
            n(&fourth, "cacheReadInputTokens"),
            n(&fourth, "cacheWriteInputTokens")
        ),
        (0, 5)
    );
    // Another model has a cache of its own.
    let elsewhere = run_with(
        &cache,
        Operation::Converse {
            model_id: "amazon.nova-pro-v1:0".into(),
        },
        &body,
    )
    .unwrap();
    assert_eq!(json_body(&elsewhere)["usage"], first);
    for (usage, request) in [
        (&first, &body),
        (&second, &body),
        (&third, &other_question),
        (&fourth, &other_prefix),
    ] {
        assert_converse_sums(usage, count_converse(request));
    }
    // Forgetting the cache makes the next request a write again.
    assert_eq!(cache.clear(), 3);
    assert_eq!(converse_usage(&cache, &body), first);
}

#[test]
fn converse_without_a_cache_point_is_unchanged() {
    let cache = PromptCache::default();
    // A null cachePoint marks nothing.
    let body = json!({
        "system": [{"text": "You are a careful assistant."}, {"cachePoint": null}],
        "toolConfig": {"tools": [{"toolSpec": {"name": "t", "inputSchema": {"json": {}}}}]},
        "messages": [user("hello there")],
    });
    for _ in 0..2 {
        let response = run_with(&cache, converse_op(), &body).unwrap();
        let Body::Full(bytes) = &response.body else {
            panic!("expected JSON");
        };
        assert_eq!(
            std::str::from_utf8(bytes).unwrap(),
            r#"{"metrics":{"latencyMs":0},"output":{"message":{"content":[{"text":"Echo: hello there"}],"role":"assistant"}},"stopReason":"end_turn","usage":{"inputTokens":7,"outputTokens":3,"totalTokens":10}}"#
        );
        assert_eq!(
            response.usage,
            Some(Usage {
                input_tokens: 7,
                output_tokens: 3,
                cache_read_tokens: 0,
                cache_write_tokens: 0
            })
        );
    }
    assert!(cache.is_empty());
}

#[test]
fn converse_cache_points_in_tools_system_and_messages() {
    let cache = PromptCache::default();
    let tool = |name: &str| json!({"toolSpec": {"name": name, "inputSchema": {"json": {}}}});
    let body = |tool_name: &str, messages: Value| {
        json!({
            "toolConfig": {"tools": [tool(tool_name), cache_point()]},
            "system": [{"text": "one two three"}, cache_point()],
            "messages": messages,
        })
    };
    let turn_one = json!([
        {"role": "user", "content": [{"text": "first question here"}, cache_point()]},
    ]);
    // Tools carry no tokens by the emulator's rule: the prefix is the system's 3 and the
    // question's 3.
    let usage = converse_usage(&cache, &body("lookup", turn_one.clone()));
    assert_eq!(
        (
            n(&usage, "inputTokens"),
            n(&usage, "cacheReadInputTokens"),
            n(&usage, "cacheWriteInputTokens")
        ),
        (0, 0, 6)
    );
    // The next turn reads the earlier turn's prefix and writes what it adds.
    let turn_two = json!([
        {"role": "user", "content": [{"text": "first question here"}, cache_point()]},
        {"role": "assistant", "content": [{"text": "an answer"}]},
        {"role": "user", "content": [{"text": "second one"}, cache_point(), {"text": "not cached"}]},
    ]);
    let request = body("lookup", turn_two);
    let usage = converse_usage(&cache, &request);
    assert_eq!(
        (
            n(&usage, "inputTokens"),
            n(&usage, "cacheReadInputTokens"),
            n(&usage, "cacheWriteInputTokens")
        ),
        (2, 6, 4)
    );
    assert_converse_sums(&usage, count_converse(&request));
    // Other tools change every prefix after them: all written again.
    let usage = converse_usage(&cache, &body("search", turn_one));
    assert_eq!(
        (
            n(&usage, "cacheReadInputTokens"),
            n(&usage, "cacheWriteInputTokens")
        ),
        (0, 6)
    );
    // A cache point after the tools only: a prefix without tokens.
    let tools_only = json!({
        "toolConfig": {"tools": [tool("lookup"), cache_point()]},
        "messages": [user("hi")],
    });
    let usage = converse_usage(&cache, &tools_only);
    assert_eq!(
        usage,
        json!({"inputTokens": 1, "outputTokens": 2, "totalTokens": 3,
               "cacheReadInputTokens": 0, "cacheWriteInputTokens": 0})
    );
}

#[test]
fn converse_stream_reports_the_cache_in_metadata() {
    let cache = PromptCache::default();
    let op = || Operation::ConverseStream {
        model_id: MODEL.into(),
    };
    let body = system_and_question("sys prompt words", "stream me");
    for (read, write) in [(0, 3), (3, 0)] {
        let response = run_with(&cache, op(), &body).unwrap();
        let metadata = events(&response).pop().unwrap();
        assert_eq!(metadata.event_type, "metadata");
        assert_eq!(
            metadata.payload["usage"],
            json!({"inputTokens": 2, "outputTokens": 3, "totalTokens": 8,
                   "cacheReadInputTokens": read, "cacheWriteInputTokens": write})
        );
        assert_eq!(
            response.usage,
            Some(Usage {
                input_tokens: 2,
                output_tokens: 3,
                cache_read_tokens: read,
                cache_write_tokens: write
            })
        );
    }
    // A stream that fails never reports its usage (the prefix was still cached).
    let failing = json!({
        "system": [{"text": "other prompt"}, cache_point()],
        "messages": [user("x y")],
        "additionalModelRequestFields": {"emulator": {"fail_after_chunks": 1}},
    });
    assert_eq!(run_with(&cache, op(), &failing).unwrap().usage, None);
    assert_eq!(cache.len(), 2);
}

fn invoke_with(cache: &PromptCache, body: &Value) -> Response {
    run_with(
        cache,
        Operation::InvokeModel {
            model_id: MODEL.into(),
        },
        body,
    )
    .unwrap()
}

fn anthropic(system: Value, question: &str) -> Value {
    json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "system": system,
        "messages": [{"role": "user", "content": question}],
    })
}

fn headers(response: &Response) -> Vec<(&str, &str)> {
    response
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect()
}

#[test]
fn invoke_writes_then_reads_with_headers_and_usage() {
    let cache = PromptCache::default();
    let marked = json!([
        {"type": "text", "text": "You are a careful assistant.", "cache_control": {"type": "ephemeral"}},
    ]);
    let body = anthropic(marked, "hello there");
    let first = invoke_with(&cache, &body);
    assert_eq!(
        json_body(&first)["usage"],
        json!({"input_tokens": 2, "output_tokens": 3,
               "cache_creation_input_tokens": 5, "cache_read_input_tokens": 0})
    );
    assert_eq!(
        headers(&first),
        [
            ("x-amzn-bedrock-input-token-count", "2"),
            ("x-amzn-bedrock-output-token-count", "3"),
            ("x-amzn-bedrock-cache-read-input-token-count", "0"),
            ("x-amzn-bedrock-cache-write-input-token-count", "5"),
            ("x-amzn-bedrock-invocation-latency", "0"),
        ]
    );
    let second = invoke_with(&cache, &body);
    assert_eq!(
        json_body(&second)["usage"],
        json!({"input_tokens": 2, "output_tokens": 3,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5})
    );
    assert_eq!(
        headers(&second)[2..4],
        [
            ("x-amzn-bedrock-cache-read-input-token-count", "5"),
            ("x-amzn-bedrock-cache-write-input-token-count", "0"),
        ]
    );
    assert_eq!(
        second.usage,
        Some(Usage {
            input_tokens: 2,
            output_tokens: 3,
            cache_read_tokens: 5,
            cache_write_tokens: 0
        })
    );
    // Prefix + rest is what CountTokens (and the request without the cache) counts.
    let counted = run(
        Operation::CountTokens {
            model_id: MODEL.into(),
        },
        &json!({"input": {"invokeModel": {"body": BASE64.encode(body.to_string())}}}),
    )
    .unwrap();
    assert_eq!(json_body(&counted)["inputTokens"], 7);
    // A different prefix is written again.
    let other = anthropic(
        json!([{"type": "text", "text": "You are a sloppy assistant.", "cache_control": {"type": "ephemeral"}}]),
        "hello there",
    );
    assert_eq!(
        json_body(&invoke_with(&cache, &other))["usage"]["cache_creation_input_tokens"],
        5
    );
}

#[test]
fn invoke_without_cache_control_is_unchanged() {
    let cache = PromptCache::default();
    // A null cache_control marks nothing.
    let body = anthropic(
        json!([{"type": "text", "text": "You are terse.", "cache_control": null}]),
        "hi",
    );
    for _ in 0..2 {
        let response = invoke_with(&cache, &body);
        let usage = &json_body(&response)["usage"];
        assert_eq!(usage, &json!({"input_tokens": 4, "output_tokens": 2}));
        assert_eq!(
            headers(&response),
            [
                ("x-amzn-bedrock-input-token-count", "4"),
                ("x-amzn-bedrock-output-token-count", "2"),
                ("x-amzn-bedrock-invocation-latency", "0"),
            ]
        );
    }
    let titan = invoke_with(&cache, &json!({"inputText": "x y"}));
    assert_eq!(
        titan.usage,
        Some(Usage {
            input_tokens: 2,
            output_tokens: 3,
            cache_read_tokens: 0,
            cache_write_tokens: 0
        })
    );
    assert!(cache.is_empty());
}

#[test]
fn invoke_cache_control_on_tools_and_messages() {
    let cache = PromptCache::default();
    let body = |question: &str| {
        json!({
            "max_tokens": 10,
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
            "system": "three word system",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "a long document"},
                    {"type": "text", "text": "marked", "cache_control": {"type": "ephemeral"}},
                ]},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": question},
            ],
        })
    };
    // Prefix: tools (0) + system (3) + the first message (4, the marked block included).
    let usage = json_body(&invoke_with(&cache, &body("what now")))["usage"].clone();
    assert_eq!(
        usage,
        json!({"input_tokens": 3, "output_tokens": 3,
               "cache_creation_input_tokens": 7, "cache_read_input_tokens": 0})
    );
    let usage = json_body(&invoke_with(&cache, &body("and then what")))["usage"].clone();
    assert_eq!(
        usage,
        json!({"input_tokens": 4, "output_tokens": 4,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 7})
    );
    // The same content with the system as a block: the same prefix.
    let mut as_blocks = body("what now");
    as_blocks["system"] = json!([{"type": "text", "text": "three word system"}]);
    assert_eq!(
        json_body(&invoke_with(&cache, &as_blocks))["usage"]["cache_read_input_tokens"],
        7
    );
}

#[test]
fn invoke_stream_reports_the_cache_in_message_start_and_metrics() {
    let cache = PromptCache::default();
    let op = || Operation::InvokeModelWithResponseStream {
        model_id: MODEL.into(),
    };
    let body = anthropic(
        json!([{"type": "text", "text": "cached system prompt", "cache_control": {"type": "ephemeral"}}]),
        "a b",
    );
    for (read, write) in [(0, 3), (3, 0)] {
        let response = run_with(&cache, op(), &body).unwrap();
        let payloads = chunk_payloads(&response);
        assert_eq!(
            payloads[0]["message"]["usage"],
            json!({"input_tokens": 2, "output_tokens": 0,
                   "cache_creation_input_tokens": write, "cache_read_input_tokens": read})
        );
        assert_eq!(
            payloads.last().unwrap(),
            &json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": 2, "outputTokenCount": 3, "invocationLatency": 0,
                "firstByteLatency": 0, "cacheReadInputTokenCount": read,
                "cacheWriteInputTokenCount": write}})
        );
        assert_eq!(
            response.usage,
            Some(Usage {
                input_tokens: 2,
                output_tokens: 3,
                cache_read_tokens: read,
                cache_write_tokens: write
            })
        );
    }
    // Without cache_control: the metrics as before.
    let plain = anthropic(json!("cached system prompt"), "a b");
    let payloads = chunk_payloads(&run_with(&cache, op(), &plain).unwrap());
    assert_eq!(
        payloads[0]["message"]["usage"],
        json!({"input_tokens": 5, "output_tokens": 0})
    );
    assert_eq!(
        payloads.last().unwrap()["amazon-bedrock-invocationMetrics"],
        json!({"inputTokenCount": 5, "outputTokenCount": 3, "invocationLatency": 0, "firstByteLatency": 0})
    );
    // A failing stream reports no usage.
    let mut failing = body.clone();
    failing["emulator"] = json!({"fail_after_chunks": 1});
    assert_eq!(run_with(&cache, op(), &failing).unwrap().usage, None);
}

fn chunk_payloads(response: &Response) -> Vec<Value> {
    events(response)
        .iter()
        .filter(|e| e.message_type == "event")
        .map(|e| {
            let bytes = BASE64.decode(e.payload["bytes"].as_str().unwrap()).unwrap();
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect()
}

#[test]
fn operations_without_token_usage_report_none() {
    let counted = run(
        Operation::CountTokens {
            model_id: MODEL.into(),
        },
        &json!({"input": {"converse": {"messages": [user("a b")]}}}),
    )
    .unwrap();
    assert_eq!(counted.usage, None);
    let retrieved = run(
        Operation::Retrieve {
            knowledge_base_id: "KB".into(),
        },
        &json!({"retrievalQuery": {"text": "q"}}),
    )
    .unwrap();
    assert_eq!(retrieved.usage, None);
}
