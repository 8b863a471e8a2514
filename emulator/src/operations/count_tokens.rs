//! CountTokens: the input tokens a Converse or InvokeModel request would be billed for.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::json;

use super::common::{Response, parse_json};
use super::converse::{self, Conversation};
use super::error::ApiError;
use super::invoke;

#[derive(Debug, Deserialize)]
struct InvokeModelInput {
    /// The model body, base64-encoded (a smithy blob).
    body: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CountInput {
    #[serde(default)]
    converse: Option<Conversation>,
    #[serde(default)]
    invoke_model: Option<InvokeModelInput>,
}

#[derive(Debug, Deserialize)]
struct CountTokensRequest {
    input: CountInput,
}

pub(super) fn count_tokens(body: &[u8]) -> Result<Response, ApiError> {
    let request: CountTokensRequest = parse_json(body)?;
    let tokens = match (request.input.converse, request.input.invoke_model) {
        (Some(conversation), None) => converse::count(&conversation)?,
        (None, Some(invoke_model)) => {
            let model_body = BASE64.decode(invoke_model.body.as_bytes()).map_err(|err| {
                ApiError::validation(format!("input.invokeModel.body: expected base64, {err}"))
            })?;
            invoke::count(&model_body)?
        }
        _ => {
            return Err(ApiError::validation(
                "input: expected exactly one of converse or invokeModel",
            ));
        }
    };
    Ok(Response::json(&json!({ "inputTokens": tokens })))
}
