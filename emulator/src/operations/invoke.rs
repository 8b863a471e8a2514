//! InvokeModel with the two model body families the emulator understands: Anthropic's
//! Messages API (`messages`) and Amazon Titan Text (`inputText`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::common::{Response, parse_json, reported_usage};
use super::error::ApiError;
use super::reply::{self, Knobs, Reply};
use crate::prompt_cache::{CacheUsage, Checkpoints, PrefixBuilder, PromptCache};
use crate::sigv4::sha256_hex;

pub const INPUT_TOKEN_COUNT: &str = "x-amzn-bedrock-input-token-count";
pub const OUTPUT_TOKEN_COUNT: &str = "x-amzn-bedrock-output-token-count";
pub const INVOCATION_LATENCY: &str = "x-amzn-bedrock-invocation-latency";
/// Sent (both of them) when the request marks a cache point.
pub const CACHE_READ_INPUT_TOKEN_COUNT: &str = "x-amzn-bedrock-cache-read-input-token-count";
pub const CACHE_WRITE_INPUT_TOKEN_COUNT: &str = "x-amzn-bedrock-cache-write-input-token-count";

/// Anthropic's mark of a cache breakpoint on a tool, system block or message block.
const CACHE_CONTROL: &str = "cache_control";

const KNOBS_AT: &str = "emulator";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, Deserialize)]
struct AnthropicBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// `"content": "text"` or `"content": [{"type": "text", "text": "..."}, ...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum AnthropicContent {
    Text(String),
    Blocks(Vec<AnthropicBlock>),
}

impl AnthropicContent {
    fn texts(&self) -> Vec<&str> {
        match self {
            Self::Text(text) => vec![text.as_str()],
            Self::Blocks(blocks) => blocks
                .iter()
                .filter(|b| b.kind == "text")
                .filter_map(|b| b.text.as_deref())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct AnthropicMessage {
    role: Role,
    content: AnthropicContent,
}

#[derive(Debug, Clone, Deserialize)]
struct AnthropicRequest {
    messages: Vec<AnthropicMessage>,
    #[serde(default)]
    system: Option<AnthropicContent>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    emulator: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanConfig {
    #[serde(default)]
    max_token_count: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanRequest {
    input_text: String,
    #[serde(default)]
    text_generation_config: Option<TitanConfig>,
    #[serde(default)]
    emulator: Option<Value>,
}

/// A model body the emulator understands.
#[derive(Debug, Clone)]
enum ModelRequest {
    /// With the prompt's cache points (`None` without any).
    Anthropic(AnthropicRequest, Option<Checkpoints>),
    Titan(TitanRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Anthropic,
    Titan,
}

/// A parsed model body and the emulated model's answer to it.
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub family: Family,
    /// Every input token of the request, the cached prefix included.
    pub input_tokens: u32,
    /// What the request read from and wrote to the prompt cache; `None` without cache points
    /// (and always for Titan).
    pub cache: Option<CacheUsage>,
    pub reply: Reply,
    pub knobs: Knobs,
    /// `msg_emu_` and a hash of the body: the same request gets the same id.
    pub message_id: String,
}

impl Prepared {
    /// The usage the response reports.
    pub fn usage(&self) -> crate::records::Usage {
        reported_usage(self.input_tokens, self.reply.output_tokens, self.cache)
    }

    /// The input tokens the response reports: the request's tokens not read from or written to
    /// the cache.
    pub fn reported_input_tokens(&self) -> u32 {
        self.cache
            .map_or(self.input_tokens, |c| c.uncached(self.input_tokens))
    }
}

/// The cache points of an Anthropic Messages body: every tool, system block and message block
/// carrying `cache_control` ends a cacheable prefix (itself included), in the order tools,
/// system, messages. The marks are left out of the prefix's content; a string `system` or
/// `content` is the same content as one text block. Tools carry no tokens by the emulator's
/// rule but are part of the prefix.
fn anthropic_checkpoints(body: &Value) -> Option<Checkpoints> {
    fn array(value: Option<&Value>) -> &[Value] {
        value
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
    let marked = |item: &Value| item.get(CACHE_CONTROL).is_some_and(|v| !v.is_null());
    let (tools, messages) = (array(body.get("tools")), array(body.get("messages")));
    let uses_cache = tools.iter().any(marked)
        || array(body.get("system")).iter().any(marked)
        || messages
            .iter()
            .any(|m| array(m.get("content")).iter().any(marked));
    if !uses_cache {
        return None;
    }
    let unmarked = |item: &Value| {
        let mut item = item.clone();
        if let Some(object) = item.as_object_mut() {
            object.remove(CACHE_CONTROL);
        }
        item
    };
    // A string is one text block; a block counts its text only when it is a text block.
    let blocks = |content: Option<&Value>| -> Vec<(Value, u32, bool)> {
        match content {
            Some(Value::String(text)) => vec![(
                json!({"type": "text", "text": text}),
                reply::count_tokens(text),
                false,
            )],
            Some(Value::Array(blocks)) => blocks
                .iter()
                .map(|block| {
                    let tokens = match (block.get("type"), block.get("text")) {
                        (Some(Value::String(kind)), Some(Value::String(text)))
                            if kind == "text" =>
                        {
                            reply::count_tokens(text)
                        }
                        _ => 0,
                    };
                    (unmarked(block), tokens, marked(block))
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut prefix = PrefixBuilder::default();
    for tool in tools {
        prefix.content(&json!(["tool", unmarked(tool)]), 0);
        if marked(tool) {
            prefix.checkpoint();
        }
    }
    for (block, tokens, mark) in blocks(body.get("system")) {
        prefix.content(&json!(["system", block]), tokens);
        if mark {
            prefix.checkpoint();
        }
    }
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").cloned().unwrap_or(Value::Null);
        for (block, tokens, mark) in blocks(message.get("content")) {
            prefix.content(&json!(["message", i, role, block]), tokens);
            if mark {
                prefix.checkpoint();
            }
        }
    }
    prefix.finish()
}

fn parse_model_body(body: &[u8]) -> Result<ModelRequest, ApiError> {
    let value: Value = parse_json(body)?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::malformed_input("expected a JSON object"));
    };
    if object.contains_key("messages") {
        let checkpoints = anthropic_checkpoints(&value);
        let request: AnthropicRequest =
            serde_json::from_value(value).map_err(ApiError::malformed_input)?;
        if request.messages.is_empty() {
            return Err(ApiError::malformed_input(
                "messages: expected at least 1 message",
            ));
        }
        Ok(ModelRequest::Anthropic(request, checkpoints))
    } else if object.contains_key("inputText") {
        Ok(ModelRequest::Titan(
            serde_json::from_value(value).map_err(ApiError::malformed_input)?,
        ))
    } else {
        Err(ApiError::malformed_input(
            "the emulator understands Anthropic Messages bodies (with \"messages\") and Amazon \
             Titan Text bodies (with \"inputText\")",
        ))
    }
}

fn non_negative(value: Option<i64>, key: &str, min: i64) -> Result<Option<u32>, ApiError> {
    match value {
        Some(n) if n < min => Err(ApiError::malformed_input(format!(
            "{key}: expected at least {min}, got {n}"
        ))),
        Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        None => Ok(None),
    }
}

impl ModelRequest {
    fn input_tokens(&self) -> u32 {
        match self {
            Self::Anthropic(request, _) => request
                .system
                .iter()
                .flat_map(AnthropicContent::texts)
                .chain(request.messages.iter().flat_map(|m| m.content.texts()))
                .map(reply::count_tokens)
                .sum(),
            Self::Titan(request) => reply::count_tokens(&request.input_text),
        }
    }
}

/// Parses an InvokeModel body, uses the prompt cache of `model_id` as its cache points say and
/// computes the reply.
pub(super) fn prepare(
    model_id: &str,
    body: &[u8],
    cache: &PromptCache,
) -> Result<Prepared, ApiError> {
    let request = parse_model_body(body)?;
    let input_tokens = request.input_tokens();
    let message_id = format!("msg_emu_{}", &sha256_hex(body)[..24]);
    let (family, knobs, default_text, max_tokens) = match &request {
        ModelRequest::Anthropic(r, _) => {
            let last_user = r
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.texts().join(" "))
                .unwrap_or_default();
            (
                Family::Anthropic,
                Knobs::from_value(r.emulator.as_ref(), KNOBS_AT)?,
                reply::echo(&last_user),
                non_negative(r.max_tokens, "max_tokens", 1)?,
            )
        }
        ModelRequest::Titan(r) => (
            Family::Titan,
            Knobs::from_value(r.emulator.as_ref(), KNOBS_AT)?,
            reply::echo(&r.input_text),
            non_negative(
                r.text_generation_config
                    .as_ref()
                    .and_then(|c| c.max_token_count),
                "textGenerationConfig.maxTokenCount",
                0,
            )?,
        ),
    };
    // Only a request that is answered uses the cache.
    let cache = match &request {
        ModelRequest::Anthropic(_, Some(checkpoints)) => {
            Some(cache.use_prefixes(model_id, checkpoints))
        }
        _ => None,
    };
    Ok(Prepared {
        family,
        input_tokens,
        cache,
        reply: reply::generate(&default_text, &knobs, max_tokens),
        knobs,
        message_id,
    })
}

/// Input tokens of an InvokeModel body (for CountTokens).
pub(super) fn count(body: &[u8]) -> Result<u32, ApiError> {
    Ok(parse_model_body(body)?.input_tokens())
}

/// An Anthropic `usage` object: `input_tokens` is the uncached rest; with the prompt cache,
/// `cache_creation_input_tokens` and `cache_read_input_tokens` are added.
pub(super) fn anthropic_usage(prepared: &Prepared, output_tokens: u32) -> Value {
    let mut usage = json!({
        "input_tokens": prepared.reported_input_tokens(),
        "output_tokens": output_tokens,
    });
    if let Some(cache) = prepared.cache {
        usage["cache_creation_input_tokens"] = json!(cache.write);
        usage["cache_read_input_tokens"] = json!(cache.read);
    }
    usage
}

pub(super) fn invoke(
    model_id: &str,
    body: &[u8],
    cache: &PromptCache,
) -> Result<Response, ApiError> {
    let prepared = prepare(model_id, body, cache)?;
    let reply = &prepared.reply;
    let payload = match prepared.family {
        Family::Anthropic => json!({
            "id": prepared.message_id,
            "type": "message",
            "role": "assistant",
            "model": model_id,
            "content": [{"type": "text", "text": reply.text}],
            "stop_reason": reply.stop.as_str(),
            "stop_sequence": null,
            "usage": anthropic_usage(&prepared, reply.output_tokens),
        }),
        Family::Titan => json!({
            "inputTextTokenCount": prepared.input_tokens,
            "results": [{
                "tokenCount": reply.output_tokens,
                "outputText": reply.text,
                "completionReason": reply.stop.titan(),
            }],
        }),
    };
    let mut response = Response::json(&payload);
    response.headers = vec![
        (
            INPUT_TOKEN_COUNT,
            prepared.reported_input_tokens().to_string(),
        ),
        (OUTPUT_TOKEN_COUNT, reply.output_tokens.to_string()),
    ];
    if let Some(cache) = prepared.cache {
        response.headers.extend([
            (CACHE_READ_INPUT_TOKEN_COUNT, cache.read.to_string()),
            (CACHE_WRITE_INPUT_TOKEN_COUNT, cache.write.to_string()),
        ]);
    }
    response.headers.push((INVOCATION_LATENCY, "0".to_string()));
    response.usage = Some(prepared.usage());
    Ok(response)
}
