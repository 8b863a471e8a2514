//! Bedrock's operations as pure functions: a routed request and its body in, the response's
//! headers and body (or the list of stream events, with the pause before each) out. The HTTP
//! layer only moves these bytes and applies the pauses.
//!
//! Routing and dispatch are here; each operation is a module of its own, built on `common`
//! (the response and the helpers the operations share), `reply` (the emulated model) and
//! `error` (Bedrock's errors). The one state they touch is the prompt cache, passed in.

mod common;
mod converse;
mod count_tokens;
mod error;
mod invoke;
mod invoke_stream;
pub mod reply;
mod retrieve;

pub use common::{Body, JSON, MODEL_STREAM_ERROR, Response, StreamEvent};
pub use error::{ApiError, ErrorCode};

use crate::prompt_cache::PromptCache;

pub const RUNTIME: &str = "bedrock-runtime";
pub const AGENT_RUNTIME: &str = "bedrock-agent-runtime";

/// A Bedrock operation the emulator implements, with its path parameters decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Converse { model_id: String },
    ConverseStream { model_id: String },
    InvokeModel { model_id: String },
    InvokeModelWithResponseStream { model_id: String },
    CountTokens { model_id: String },
    Retrieve { knowledge_base_id: String },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Converse { .. } => "Converse",
            Self::ConverseStream { .. } => "ConverseStream",
            Self::InvokeModel { .. } => "InvokeModel",
            Self::InvokeModelWithResponseStream { .. } => "InvokeModelWithResponseStream",
            Self::CountTokens { .. } => "CountTokens",
            Self::Retrieve { .. } => "Retrieve",
        }
    }
}

/// Decodes one path segment; `None` when it is not valid UTF-8 once decoded.
fn decode_segment(segment: &str) -> Option<String> {
    String::from_utf8(crate::sigv4::percent_decode(segment)).ok()
}

/// Finds the operation `method raw_path` names on `service` (`None`: any service, when the
/// emulator accepts any host).
pub fn route(service: Option<&str>, method: &str, raw_path: &str) -> Result<Operation, ApiError> {
    let unknown = || {
        ApiError::new(
            ErrorCode::UnknownOperation,
            format!(
                "The operation {method} {raw_path} is not supported by {}.",
                service.unwrap_or("the emulator")
            ),
        )
    };
    let serves = |name: &str| service.is_none_or(|s| s == name);
    let segments: Vec<&str> = raw_path
        .strip_prefix('/')
        .unwrap_or(raw_path)
        .split('/')
        .collect();
    if method != "POST" {
        return Err(unknown());
    }
    let decoded = |segment: &str, what: &str| {
        decode_segment(segment)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "1 validation error detected: Value at '{what}' failed to satisfy constraint: \
                     Member must be a non-empty UTF-8 string"
                ))
            })
    };
    match segments.as_slice() {
        ["model", id, action] if serves(RUNTIME) => {
            let model_id = || decoded(id, "modelId");
            Ok(match *action {
                "converse" => Operation::Converse {
                    model_id: model_id()?,
                },
                "converse-stream" => Operation::ConverseStream {
                    model_id: model_id()?,
                },
                "invoke" => Operation::InvokeModel {
                    model_id: model_id()?,
                },
                "invoke-with-response-stream" => Operation::InvokeModelWithResponseStream {
                    model_id: model_id()?,
                },
                "count-tokens" => Operation::CountTokens {
                    model_id: model_id()?,
                },
                _ => return Err(unknown()),
            })
        }
        ["knowledgebases", id, "retrieve"] if serves(AGENT_RUNTIME) => Ok(Operation::Retrieve {
            knowledge_base_id: decoded(id, "knowledgeBaseId")?,
        }),
        _ => Err(unknown()),
    }
}

/// Model ids that make the emulator fail, so tests can exercise error paths.
fn check_model(model_id: &str) -> Result<(), ApiError> {
    if model_id.contains("emulator-throttle") {
        return Err(ApiError::new(
            ErrorCode::Throttling,
            "Too many requests, please wait before trying again.",
        ));
    }
    if model_id.contains("emulator-error") {
        return Err(ApiError::new(
            ErrorCode::InternalServer,
            "The emulator was asked to fail this request (model id contains 'emulator-error').",
        ));
    }
    Ok(())
}

/// Runs `operation` on `body`. Requests with cache points read and write `cache`.
pub fn handle(
    operation: &Operation,
    body: &[u8],
    cache: &PromptCache,
) -> Result<Response, ApiError> {
    match operation {
        Operation::Converse { model_id } => {
            check_model(model_id)?;
            converse::converse(model_id, body, cache)
        }
        Operation::ConverseStream { model_id } => {
            check_model(model_id)?;
            converse::converse_stream(model_id, body, cache)
        }
        Operation::InvokeModel { model_id } => {
            check_model(model_id)?;
            invoke::invoke(model_id, body, cache)
        }
        Operation::InvokeModelWithResponseStream { model_id } => {
            check_model(model_id)?;
            invoke_stream::invoke_stream(model_id, body, cache)
        }
        Operation::CountTokens { model_id } => {
            check_model(model_id)?;
            count_tokens::count_tokens(body)
        }
        Operation::Retrieve { knowledge_base_id } => retrieve::retrieve(knowledge_base_id, body),
    }
}

#[cfg(test)]
mod tests;
