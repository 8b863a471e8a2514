//! Converse and ConverseStream: Bedrock's model-independent chat API.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::common::{
    Body, MODEL_STREAM_ERROR, Response, parse_json, planned_latency_ms, reported_usage, schedule,
};
use super::error::ApiError;
use super::reply::{self, Knobs, Reply};
use crate::eventstream;
use crate::prompt_cache::{CacheUsage, Checkpoints, PrefixBuilder, PromptCache};

const KNOBS_AT: &str = "additionalModelRequestFields.emulator";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Role {
    User,
    Assistant,
}

/// A content or system block; only its `text` matters here (images, documents, tool use and
/// cache points are accepted and carry no tokens; cache points are read by [`checkpoints`]).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Block {
    #[serde(default)]
    text: Option<String>,
    /// Set (not null) on a cache point.
    #[serde(default, rename = "cachePoint")]
    cache_point: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Message {
    role: Role,
    #[serde(default)]
    content: Vec<Block>,
}

/// What Converse and CountTokens' `converse` input have in common.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Conversation {
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    system: Vec<Block>,
}

impl Conversation {
    fn texts(blocks: &[Block]) -> impl Iterator<Item = &str> {
        blocks.iter().filter_map(|b| b.text.as_deref())
    }

    /// Tokens of every text in `system` and in every message.
    pub(super) fn input_tokens(&self) -> u32 {
        Self::texts(&self.system)
            .chain(self.messages.iter().flat_map(|m| Self::texts(&m.content)))
            .map(reply::count_tokens)
            .sum()
    }

    /// The text blocks of the last user message, joined with a space.
    fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| Self::texts(&m.content).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// Whether `system` or a message has a cache point (tools are checked apart).
    fn has_cache_point(&self) -> bool {
        let marked = |blocks: &[Block]| blocks.iter().any(|b| b.cache_point.is_some());
        marked(&self.system) || self.messages.iter().any(|m| marked(&m.content))
    }

    pub(super) fn require_messages(&self) -> Result<(), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::validation(
                "A conversation must start with a user message. Try again with a conversation \
                 that starts with a user message.",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig {
    #[serde(default)]
    max_tokens: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseRequest {
    #[serde(flatten)]
    conversation: Conversation,
    #[serde(default)]
    inference_config: Option<InferenceConfig>,
    #[serde(default)]
    additional_model_request_fields: Option<Value>,
    /// Read only for its cache points (any JSON is accepted, as before).
    #[serde(default)]
    tool_config: Option<Value>,
}

struct Prepared {
    /// Every input token of the request, the cached prefix included.
    input_tokens: u32,
    /// What the request read from and wrote to the prompt cache; `None` without cache points.
    cache: Option<CacheUsage>,
    reply: Reply,
    knobs: Knobs,
}

const CACHE_POINT: &str = "cachePoint";

fn is_cache_point(block: &Value) -> bool {
    block.get(CACHE_POINT).is_some_and(|v| !v.is_null())
}

/// `toolConfig.tools`, or nothing.
fn tools(tool_config: Option<&Value>) -> &[Value] {
    tool_config
        .and_then(|c| c.get("tools"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The cache points of a Converse body (`cachePoint` blocks in `toolConfig.tools`, `system`
/// and message contents), with the prefixes they end, in Bedrock's order: tools, system,
/// messages. Tools carry no tokens by the emulator's rule but are part of the prefix.
fn checkpoints(body: &Value) -> Option<Checkpoints> {
    fn items(value: Option<&Value>) -> &[Value] {
        value
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
    let text_tokens = |block: &Value| {
        block
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, reply::count_tokens)
    };
    let mut prefix = PrefixBuilder::default();
    for tool in tools(body.get("toolConfig")) {
        if is_cache_point(tool) {
            prefix.checkpoint();
        } else {
            prefix.content(&json!(["tool", tool]), 0);
        }
    }
    for block in items(body.get("system")) {
        if is_cache_point(block) {
            prefix.checkpoint();
        } else {
            prefix.content(&json!(["system", block]), text_tokens(block));
        }
    }
    for (i, message) in items(body.get("messages")).iter().enumerate() {
        let role = message.get("role").cloned().unwrap_or(Value::Null);
        for block in items(message.get("content")) {
            if is_cache_point(block) {
                prefix.checkpoint();
            } else {
                prefix.content(&json!(["message", i, role, block]), text_tokens(block));
            }
        }
    }
    prefix.finish()
}

fn prepare(model_id: &str, body: &[u8], cache: &PromptCache) -> Result<Prepared, ApiError> {
    let request: ConverseRequest = parse_json(body)?;
    request.conversation.require_messages()?;
    let max_tokens = match request.inference_config.and_then(|c| c.max_tokens) {
        Some(n) if n < 1 => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{n}' at 'inferenceConfig.maxTokens' failed \
                 to satisfy constraint: Member must have value greater than or equal to 1"
            )));
        }
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        None => None,
    };
    let knobs = Knobs::from_value(
        request
            .additional_model_request_fields
            .as_ref()
            .and_then(|fields| fields.get("emulator")),
        KNOBS_AT,
    )?;
    let default_text = reply::echo(&request.conversation.last_user_text());
    let marked = request.conversation.has_cache_point()
        || tools(request.tool_config.as_ref())
            .iter()
            .any(is_cache_point);
    let cache = if marked {
        // The whole prompt is the prefixes' content. The body parsed above, so it is JSON.
        let value: Value = parse_json(body)?;
        checkpoints(&value).map(|c| cache.use_prefixes(model_id, &c))
    } else {
        None
    };
    Ok(Prepared {
        input_tokens: request.conversation.input_tokens(),
        cache,
        reply: reply::generate(&default_text, &knobs, max_tokens),
        knobs,
    })
}

/// Converse's `usage`. With the prompt cache, `inputTokens` is the uncached rest and the two
/// cache counts are added; `totalTokens` is all four (so it is the same as without the cache).
fn usage(input: u32, output: u32, cache: Option<CacheUsage>) -> Value {
    let total = u64::from(input) + u64::from(output);
    match cache {
        None => json!({
            "inputTokens": input,
            "outputTokens": output,
            "totalTokens": total,
        }),
        Some(cache) => json!({
            "inputTokens": cache.uncached(input),
            "outputTokens": output,
            "totalTokens": total,
            "cacheReadInputTokens": cache.read,
            "cacheWriteInputTokens": cache.write,
        }),
    }
}

pub(super) fn converse(
    model_id: &str,
    body: &[u8],
    cache: &PromptCache,
) -> Result<Response, ApiError> {
    let Prepared {
        input_tokens,
        cache,
        reply,
        ..
    } = prepare(model_id, body, cache)?;
    let mut response = Response::json(&json!({
        "output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
        "stopReason": reply.stop.as_str(),
        "usage": usage(input_tokens, reply.output_tokens, cache),
        "metrics": {"latencyMs": 0},
    }));
    response.usage = Some(reported_usage(input_tokens, reply.output_tokens, cache));
    Ok(response)
}

pub(super) fn converse_stream(
    model_id: &str,
    body: &[u8],
    cache: &PromptCache,
) -> Result<Response, ApiError> {
    let Prepared {
        input_tokens,
        cache,
        reply,
        knobs,
    } = prepare(model_id, body, cache)?;
    let chunks = reply::chunks(&reply.text, knobs.words_per_chunk.unwrap_or(1));
    let delay = knobs.chunk_delay();
    let mut frames = vec![eventstream::event(
        "messageStart",
        &json!({"role": "assistant"}),
    )];
    let fail_after = knobs.fail_after_chunks.map(|n| n as usize);
    for chunk in chunks.iter().take(fail_after.unwrap_or(usize::MAX)) {
        frames.push(eventstream::event(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": chunk}}),
        ));
    }
    let mut reported = None;
    if let Some(n) = fail_after {
        frames.push(eventstream::exception(
            MODEL_STREAM_ERROR,
            &json!({"message": format!(
                "The emulator was asked to fail the stream after {n} chunks (fail_after_chunks)."
            )}),
        ));
    } else {
        frames.push(eventstream::event(
            "contentBlockStop",
            &json!({"contentBlockIndex": 0}),
        ));
        frames.push(eventstream::event(
            "messageStop",
            &json!({"stopReason": reply.stop.as_str()}),
        ));
        let latency = planned_latency_ms(delay, frames.len() + 1);
        frames.push(eventstream::event(
            "metadata",
            &json!({
                "usage": usage(input_tokens, reply.output_tokens, cache),
                "metrics": {"latencyMs": latency},
            }),
        ));
        reported = Some(reported_usage(input_tokens, reply.output_tokens, cache));
    }
    Ok(Response {
        content_type: eventstream::CONTENT_TYPE,
        headers: Vec::new(),
        body: Body::Stream(schedule(frames, delay)),
        usage: reported,
    })
}

/// Input tokens of CountTokens' `converse` input.
pub(super) fn count(conversation: &Conversation) -> Result<u32, ApiError> {
    conversation.require_messages()?;
    Ok(conversation.input_tokens())
}
