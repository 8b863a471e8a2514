//! The tokens a response reports, read as it passes and never held back: the token-count
//! headers of InvokeModel, the `usage` object of a Converse body (or of a model's own body, in
//! Bedrock's and Anthropic's spellings), the `metadata` event of ConverseStream, and the
//! `amazon-bedrock-invocationMetrics` of InvokeModelWithResponseStream's last chunk; with the
//! prompt-cache counts each of them carries. Event-stream frames are decoded (CRCs checked)
//! with aws-smithy-eventstream.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::HeaderValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use serde_json::Value;

/// The tokens of a response, as Bedrock bills them: `input` excludes the prompt tokens read
/// from (`cache_read`) or written to (`cache_write`) the prompt cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    /// Every token billed.
    pub fn total(&self) -> u64 {
        self.input
            .saturating_add(self.output)
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }
}

/// A JSON body larger than this is not kept for parsing (its usage is then unknown).
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;
const METRICS_KEY: &[u8] = b"amazon-bedrock-invocationMetrics";

enum Body {
    Json(Vec<u8>),
    EventStream {
        pending: BytesMut,
        decoder: MessageFrameDecoder,
    },
    Ignored,
}

pub struct UsageParser {
    failed: bool,
    from_headers: Option<Usage>,
    found: Option<Usage>,
    body: Body,
    /// A streamed event carrying output passed (ConverseStream `contentBlockDelta`,
    /// InvokeModelWithResponseStream `chunk`).
    output_started: bool,
}

impl UsageParser {
    /// Starts reading a response with this status and these headers.
    pub fn new(status: u32, headers: &[(String, Vec<u8>)]) -> Self {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        let count = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        let from_headers = match (
            count("x-amzn-bedrock-input-token-count"),
            count("x-amzn-bedrock-output-token-count"),
        ) {
            (Some(input), Some(output)) => Some(Usage {
                input,
                output,
                // Sent only when the prompt cache was used.
                cache_read: count("x-amzn-bedrock-cache-read-input-token-count").unwrap_or(0),
                cache_write: count("x-amzn-bedrock-cache-write-input-token-count").unwrap_or(0),
            }),
            _ => None,
        };
        let content_type = header("content-type").unwrap_or_default();
        let body = if from_headers.is_some() {
            Body::Ignored
        } else if content_type.starts_with("application/vnd.amazon.eventstream") {
            Body::EventStream {
                pending: BytesMut::new(),
                decoder: MessageFrameDecoder::new(),
            }
        } else if content_type.starts_with("application/json") {
            Body::Json(Vec::new())
        } else {
            Body::Ignored
        };
        Self {
            failed: status >= 400,
            from_headers,
            found: None,
            body,
            output_started: false,
        }
    }

    /// A piece of the response body, as it passes.
    pub fn feed(&mut self, piece: &[u8]) {
        if self.failed {
            return;
        }
        match &mut self.body {
            Body::Ignored => {}
            Body::Json(buffer) => {
                if buffer.len() + piece.len() > MAX_JSON_BODY {
                    self.body = Body::Ignored;
                } else {
                    buffer.extend_from_slice(piece);
                }
            }
            Body::EventStream { pending, decoder } => {
                pending.extend_from_slice(piece);
                loop {
                    match decoder.decode_frame(&mut *pending) {
                        Ok(DecodedFrame::Complete(message)) => {
                            let event_type = message
                                .headers()
                                .iter()
                                .find(|h| h.name().as_str() == ":event-type")
                                .and_then(|h| match h.value() {
                                    HeaderValue::String(s) => Some(s.as_str().to_string()),
                                    _ => None,
                                });
                            if matches!(event_type.as_deref(), Some("contentBlockDelta" | "chunk"))
                            {
                                self.output_started = true;
                            }
                            if let Some(usage) =
                                event_usage(event_type.as_deref(), message.payload())
                            {
                                self.found = Some(usage);
                            }
                        }
                        Ok(DecodedFrame::Incomplete) => break,
                        Err(_) => {
                            // Not a valid stream: stop reading it; usage stays unknown.
                            self.body = Body::Ignored;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Whether a streamed event carrying output has passed: the first one marks the time to
    /// first token.
    pub fn output_started(&self) -> bool {
        self.output_started
    }

    /// The response is complete: its usage, if it reported one. Failed responses used nothing.
    pub fn finish(self) -> Option<Usage> {
        if self.failed {
            return Some(Usage::default());
        }
        if let Some(usage) = self.from_headers {
            return Some(usage);
        }
        match self.body {
            Body::Json(buffer) => serde_json::from_slice::<Value>(&buffer)
                .ok()
                .and_then(|json| json_usage(&json)),
            _ => self.found,
        }
    }
}

/// `usage` of a Converse answer or a ConverseStream `metadata` event (Bedrock's names), or of
/// an Anthropic Messages body (Anthropic's). The cache counts are absent when the prompt
/// cache was not used.
fn json_usage(json: &Value) -> Option<Usage> {
    let usage = json.get("usage")?;
    let field = |names: [&str; 2]| names.iter().find_map(|n| usage.get(*n)?.as_u64());
    Some(Usage {
        input: field(["inputTokens", "input_tokens"])?,
        output: field(["outputTokens", "output_tokens"])?,
        cache_read: field(["cacheReadInputTokens", "cache_read_input_tokens"]).unwrap_or(0),
        cache_write: field(["cacheWriteInputTokens", "cache_creation_input_tokens"]).unwrap_or(0),
    })
}

fn event_usage(event_type: Option<&str>, payload: &[u8]) -> Option<Usage> {
    match event_type? {
        "metadata" => json_usage(&serde_json::from_slice(payload).ok()?),
        "chunk" => {
            #[derive(serde::Deserialize)]
            struct Chunk {
                bytes: String,
            }
            let chunk: Chunk = serde_json::from_slice(payload).ok()?;
            let inner = STANDARD.decode(chunk.bytes).ok()?;
            // Only the last chunk carries the metrics: skip the JSON parse of the others.
            if !inner.windows(METRICS_KEY.len()).any(|w| w == METRICS_KEY) {
                return None;
            }
            let json: Value = serde_json::from_slice(&inner).ok()?;
            let metrics = json.get("amazon-bedrock-invocationMetrics")?;
            let optional = |name: &str| metrics.get(name).and_then(Value::as_u64).unwrap_or(0);
            Some(Usage {
                input: metrics.get("inputTokenCount")?.as_u64()?,
                output: metrics.get("outputTokenCount")?.as_u64()?,
                cache_read: optional("cacheReadInputTokenCount"),
                cache_write: optional("cacheWriteInputTokenCount"),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
