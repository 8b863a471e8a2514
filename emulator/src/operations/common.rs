//! What the operations share: the response they answer with ([`Response`], its [`Body`] and
//! [`StreamEvent`]s), reading a JSON request body, and pacing a stream's events.

use std::time::Duration;

use bytes::Bytes;

use super::error::ApiError;
use crate::prompt_cache::CacheUsage;
use crate::records::Usage;

pub const JSON: &str = "application/json";
/// Exception type of a stream that fails after it started (Converse and InvokeModel alike).
pub const MODEL_STREAM_ERROR: &str = "modelStreamErrorException";

/// One event-stream frame and how long to wait before sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub delay: Duration,
    pub frame: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Full(Bytes),
    Stream(Vec<StreamEvent>),
}

/// A successful (200) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// The tokens the response reports (for the request log); `None` when it reports none.
    pub usage: Option<Usage>,
}

impl Response {
    pub(super) fn json(value: &serde_json::Value) -> Self {
        Self {
            content_type: JSON,
            headers: Vec::new(),
            body: Body::Full(Bytes::from(value.to_string())),
            usage: None,
        }
    }
}

/// The usage a response reports: `input_tokens` of the request (cached prefix included) split
/// into the uncached rest and what the cache read or wrote.
pub(super) fn reported_usage(
    input_tokens: u32,
    output_tokens: u32,
    cache: Option<CacheUsage>,
) -> Usage {
    let cache = cache.unwrap_or_default();
    Usage {
        input_tokens: cache.uncached(input_tokens),
        output_tokens,
        cache_read_tokens: cache.read,
        cache_write_tokens: cache.write,
    }
}

/// Parses a JSON request body, or answers ValidationException.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::malformed_input)
}

/// Pauses `delay` before every frame but the first.
pub(super) fn schedule(frames: Vec<Bytes>, delay: Duration) -> Vec<StreamEvent> {
    frames
        .into_iter()
        .enumerate()
        .map(|(i, frame)| StreamEvent {
            delay: if i == 0 { Duration::ZERO } else { delay },
            frame,
        })
        .collect()
}

/// The latency the emulator reports for a stream of `events` events: the pauses it applies.
pub(super) fn planned_latency_ms(delay: Duration, events: usize) -> u64 {
    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    millis.saturating_mul(events.saturating_sub(1) as u64)
}
