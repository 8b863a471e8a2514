//! Converse and ConverseStream: Bedrock's model-independent chat API.

use serde::Deserialize;
use serde_json::{Value, json};

use super::common::{Body, MODEL_STREAM_ERROR, Response, parse_json, planned_latency_ms, schedule};
use super::error::ApiError;
use super::reply::{self, Knobs, Reply};
use crate::eventstream;

const KNOBS_AT: &str = "additionalModelRequestFields.emulator";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Role {
    User,
    Assistant,
}

/// A content or system block; only its `text` matters here (images, documents, tool use and
/// cache points are accepted and carry no tokens).
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Block {
    #[serde(default)]
    text: Option<String>,
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
}

struct Prepared {
    input_tokens: u32,
    reply: Reply,
    knobs: Knobs,
}

fn prepare(body: &[u8]) -> Result<Prepared, ApiError> {
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
    Ok(Prepared {
        input_tokens: request.conversation.input_tokens(),
        reply: reply::generate(&default_text, &knobs, max_tokens),
        knobs,
    })
}

fn usage(input: u32, output: u32) -> Value {
    json!({
        "inputTokens": input,
        "outputTokens": output,
        "totalTokens": u64::from(input) + u64::from(output),
    })
}

pub(super) fn converse(body: &[u8]) -> Result<Response, ApiError> {
    let Prepared {
        input_tokens,
        reply,
        ..
    } = prepare(body)?;
    Ok(Response::json(&json!({
        "output": {"message": {"role": "assistant", "content": [{"text": reply.text}]}},
        "stopReason": reply.stop.as_str(),
        "usage": usage(input_tokens, reply.output_tokens),
        "metrics": {"latencyMs": 0},
    })))
}

pub(super) fn converse_stream(body: &[u8]) -> Result<Response, ApiError> {
    let Prepared {
        input_tokens,
        reply,
        knobs,
    } = prepare(body)?;
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
                "usage": usage(input_tokens, reply.output_tokens),
                "metrics": {"latencyMs": latency},
            }),
        ));
    }
    Ok(Response {
        content_type: eventstream::CONTENT_TYPE,
        headers: Vec::new(),
        body: Body::Stream(schedule(frames, delay)),
    })
}

/// Input tokens of CountTokens' `converse` input.
pub(super) fn count(conversation: &Conversation) -> Result<u32, ApiError> {
    conversation.require_messages()?;
    Ok(conversation.input_tokens())
}
