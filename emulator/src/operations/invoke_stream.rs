//! InvokeModelWithResponseStream: the model's own streaming events, each wrapped as
//! `chunk {"bytes": base64(JSON)}`; the last carries `amazon-bedrock-invocationMetrics`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::{Value, json};

use super::common::{Body, JSON, MODEL_STREAM_ERROR, Response, planned_latency_ms, schedule};
use super::error::ApiError;
use super::invoke::{self, Family, Prepared};
use super::reply;
use crate::eventstream;
use crate::prompt_cache::PromptCache;

/// Header naming the content type of the model's chunks.
pub const BEDROCK_CONTENT_TYPE: &str = "x-amzn-bedrock-content-type";

fn chunk(payload: &Value) -> Bytes {
    eventstream::event(
        "chunk",
        &json!({"bytes": BASE64.encode(payload.to_string())}),
    )
}

/// `amazon-bedrock-invocationMetrics`: `inputTokenCount` is the uncached rest; with the prompt
/// cache, `cacheReadInputTokenCount` and `cacheWriteInputTokenCount` are added.
fn metrics(prepared: &Prepared, latency_ms: u64) -> Value {
    let mut metrics = json!({
        "inputTokenCount": prepared.reported_input_tokens(),
        "outputTokenCount": prepared.reply.output_tokens,
        "invocationLatency": latency_ms,
        "firstByteLatency": 0,
    });
    if let Some(cache) = prepared.cache {
        metrics["cacheReadInputTokenCount"] = json!(cache.read);
        metrics["cacheWriteInputTokenCount"] = json!(cache.write);
    }
    metrics
}

fn failure(n: usize) -> Bytes {
    eventstream::exception(
        MODEL_STREAM_ERROR,
        &json!({"message": format!(
            "The emulator was asked to fail the stream after {n} chunks (fail_after_chunks)."
        )}),
    )
}

fn anthropic_frames(model_id: &str, prepared: &Prepared, texts: &[String]) -> Vec<Bytes> {
    let delay = prepared.knobs.chunk_delay();
    let mut frames = vec![
        chunk(&json!({
            "type": "message_start",
            "message": {
                "id": prepared.message_id,
                "type": "message",
                "role": "assistant",
                "model": model_id,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": invoke::anthropic_usage(prepared, 0),
            },
        })),
        chunk(&json!({
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        })),
    ];
    let fail_after = prepared.knobs.fail_after_chunks.map(|n| n as usize);
    for text in texts.iter().take(fail_after.unwrap_or(usize::MAX)) {
        frames.push(chunk(&json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        })));
    }
    if let Some(n) = fail_after {
        frames.push(failure(n));
        return frames;
    }
    frames.push(chunk(&json!({"type": "content_block_stop", "index": 0})));
    frames.push(chunk(&json!({
        "type": "message_delta",
        "delta": {"stop_reason": prepared.reply.stop.as_str(), "stop_sequence": null},
        "usage": {"output_tokens": prepared.reply.output_tokens},
    })));
    let latency = planned_latency_ms(delay, frames.len() + 1);
    frames.push(chunk(&json!({
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": metrics(prepared, latency),
    })));
    frames
}

/// Titan Text streams one chunk per piece of text; the last also says why it stopped.
fn titan_frames(prepared: &Prepared, texts: &[String]) -> Vec<Bytes> {
    let delay = prepared.knobs.chunk_delay();
    let fail_after = prepared.knobs.fail_after_chunks.map(|n| n as usize);
    let sent = texts.len().min(fail_after.unwrap_or(usize::MAX));
    let mut frames = Vec::with_capacity(sent + 1);
    for (i, text) in texts[..sent].iter().enumerate() {
        let mut payload = json!({
            "outputText": text,
            "index": 0,
            "totalOutputTextTokenCount": null,
            "completionReason": null,
            "inputTextTokenCount": if i == 0 { json!(prepared.input_tokens) } else { Value::Null },
        });
        if fail_after.is_none() && i + 1 == texts.len() {
            payload["totalOutputTextTokenCount"] = json!(prepared.reply.output_tokens);
            payload["completionReason"] = json!(prepared.reply.stop.titan());
            payload["amazon-bedrock-invocationMetrics"] =
                metrics(prepared, planned_latency_ms(delay, texts.len()));
        }
        frames.push(chunk(&payload));
    }
    if let Some(n) = fail_after {
        frames.push(failure(n));
    }
    frames
}

pub(super) fn invoke_stream(
    model_id: &str,
    body: &[u8],
    cache: &PromptCache,
) -> Result<Response, ApiError> {
    let prepared = invoke::prepare(model_id, body, cache)?;
    let texts = reply::chunks(
        &prepared.reply.text,
        prepared.knobs.words_per_chunk.unwrap_or(1),
    );
    let frames = match prepared.family {
        Family::Anthropic => anthropic_frames(model_id, &prepared, &texts),
        Family::Titan => titan_frames(&prepared, &texts),
    };
    // The usage is reported by the last chunk, which a failing stream never sends.
    let usage = prepared
        .knobs
        .fail_after_chunks
        .is_none()
        .then(|| prepared.usage());
    Ok(Response {
        content_type: eventstream::CONTENT_TYPE,
        headers: vec![(BEDROCK_CONTENT_TYPE, JSON.to_string())],
        body: Body::Stream(schedule(frames, prepared.knobs.chunk_delay())),
        usage,
    })
}
