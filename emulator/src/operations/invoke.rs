//! InvokeModel with the two model body families the emulator understands: Anthropic's
//! Messages API (`messages`) and Amazon Titan Text (`inputText`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::common::{Response, parse_json};
use super::error::ApiError;
use super::reply::{self, Knobs, Reply};
use crate::sigv4::sha256_hex;

pub const INPUT_TOKEN_COUNT: &str = "x-amzn-bedrock-input-token-count";
pub const OUTPUT_TOKEN_COUNT: &str = "x-amzn-bedrock-output-token-count";
pub const INVOCATION_LATENCY: &str = "x-amzn-bedrock-invocation-latency";

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
    Anthropic(AnthropicRequest),
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
    pub input_tokens: u32,
    pub reply: Reply,
    pub knobs: Knobs,
    /// `msg_emu_` and a hash of the body: the same request gets the same id.
    pub message_id: String,
}

fn parse_model_body(body: &[u8]) -> Result<ModelRequest, ApiError> {
    let value: Value = parse_json(body)?;
    let Some(object) = value.as_object() else {
        return Err(ApiError::malformed_input("expected a JSON object"));
    };
    if object.contains_key("messages") {
        let request: AnthropicRequest =
            serde_json::from_value(value).map_err(ApiError::malformed_input)?;
        if request.messages.is_empty() {
            return Err(ApiError::malformed_input(
                "messages: expected at least 1 message",
            ));
        }
        Ok(ModelRequest::Anthropic(request))
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
            Self::Anthropic(request) => request
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

/// Parses an InvokeModel body and computes the reply.
pub(super) fn prepare(body: &[u8]) -> Result<Prepared, ApiError> {
    let request = parse_model_body(body)?;
    let input_tokens = request.input_tokens();
    let message_id = format!("msg_emu_{}", &sha256_hex(body)[..24]);
    let (family, knobs, default_text, max_tokens) = match &request {
        ModelRequest::Anthropic(r) => {
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
    Ok(Prepared {
        family,
        input_tokens,
        reply: reply::generate(&default_text, &knobs, max_tokens),
        knobs,
        message_id,
    })
}

/// Input tokens of an InvokeModel body (for CountTokens).
pub(super) fn count(body: &[u8]) -> Result<u32, ApiError> {
    Ok(parse_model_body(body)?.input_tokens())
}

pub(super) fn invoke(model_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let prepared = prepare(body)?;
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
            "usage": {"input_tokens": prepared.input_tokens, "output_tokens": reply.output_tokens},
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
        (INPUT_TOKEN_COUNT, prepared.input_tokens.to_string()),
        (OUTPUT_TOKEN_COUNT, reply.output_tokens.to_string()),
        (INVOCATION_LATENCY, "0".to_string()),
    ];
    Ok(response)
}
