//! The quota section of the filter configuration: how the filter asks the rate limit service
//! (xds-server, or any service speaking Envoy's rate limit API) before forwarding, which
//! descriptors it sends, and how it estimates the tokens to reserve. The limits themselves
//! live in the service's configuration; xds-server derives the descriptor shapes below from
//! its limit tree so the filter sends exactly what can match.

use serde::{Deserialize, Serialize};

use crate::invalid_key::{InvalidKey, invalid};
use crate::names;

/// Descriptor key of token descriptors; its value is the [`TokenKind`].
pub const TOKENS_KEY: &str = "tokens";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Envoy cluster of the rate limit service.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Rate limit domain.
    pub domain: String,
    /// How long a request waits for the service's decision.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// What happens when the service does not answer in time.
    pub failure_mode: FailureMode,
    /// How decisions are asked for.
    #[serde(default)]
    pub transport: QuotaTransport,
    /// With the `stream` transport, how long a worker keeps one decision stream before it
    /// opens a fresh one (and half-closes the old one once its decisions are in), so that
    /// streams spread again over the rate limit service's replicas, a returning one included.
    #[serde(default = "default_stream_max_age_seconds")]
    pub stream_max_age_seconds: u64,
    /// Descriptors charged one hit per request, as lists of context keys.
    #[serde(default)]
    pub request_descriptors: Vec<Vec<ContextKey>>,
    /// Descriptors charged with tokens: context keys, then `tokens=<kind>`.
    #[serde(default)]
    pub token_descriptors: Vec<TokenDescriptor>,
    /// Output tokens reserved when the request sets no output cap.
    #[serde(default = "default_max_output_tokens")]
    pub default_max_output_tokens: u64,
    /// Characters of prompt text per estimated input token.
    #[serde(default = "default_chars_per_token")]
    pub chars_per_token: u64,
    /// Bytes of media (images, documents, video; decoded from base64) per estimated input
    /// token.
    #[serde(default = "default_media_bytes_per_token")]
    pub media_bytes_per_token: u64,
    /// Usage reports kept for retry while the control service is away; beyond, the oldest
    /// are dropped (and counted).
    #[serde(default = "default_report_buffer")]
    pub report_buffer: usize,
    /// What tokens cost, per model: needed by `cost` descriptors, and the cost of every
    /// request in the usage ledger. Absent: costs are not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<Prices>,
}

/// Prices of the four kinds of tokens Bedrock bills, in nano-US-dollars (10^-9 USD) per
/// token: exact for any price per million tokens with up to three decimals (0.035 USD per
/// million input tokens is 35).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenPrices {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

/// The prices of the models whose key matches `model` (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ModelPrices {
    /// A model key pattern (lower case, as `key: model` values): `anthropic.claude-3-haiku*`.
    pub model: String,
    pub nano_usd_per_token: TokenPrices,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Prices {
    /// The first entry whose pattern matches a request's model prices it.
    pub models: Vec<ModelPrices>,
    /// The prices of a model no entry matches; absent: such a request is refused (403)
    /// rather than counted as free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced: Option<TokenPrices>,
}

impl Prices {
    /// The prices of a model key; `None` when it has none (the request is then refused).
    /// A request that names no model uses no tokens: it costs nothing.
    pub fn of(&self, model: Option<&str>) -> Option<TokenPrices> {
        let Some(model) = model.filter(|m| !m.is_empty()) else {
            return Some(TokenPrices::default());
        };
        self.models
            .iter()
            .find(|entry| crate::auth_config::glob_matches(&entry.model, model))
            .map(|entry| entry.nano_usd_per_token)
            .or(self.unpriced)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Forward the request (counted as a failure).
    Open,
    /// Refuse with 503 `ServiceUnavailableException`.
    Closed,
}

/// How the filter asks the rate limit service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum QuotaTransport {
    /// One long-lived `GatewayControl/StreamRateLimit` stream per Envoy worker, a message per
    /// decision (the unary call while no stream is open).
    #[default]
    Stream,
    /// A `RateLimitService/ShouldRateLimit` call per request.
    Unary,
}

/// The parts of the request context a descriptor can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ContextKey {
    Tenant,
    Subject,
    Tier,
    Issuer,
    Service,
    Operation,
    Model,
}

impl ContextKey {
    pub const ALL: [ContextKey; 7] = [
        ContextKey::Tenant,
        ContextKey::Subject,
        ContextKey::Tier,
        ContextKey::Issuer,
        ContextKey::Service,
        ContextKey::Operation,
        ContextKey::Model,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ContextKey::Tenant => "tenant",
            ContextKey::Subject => "subject",
            ContextKey::Tier => "tier",
            ContextKey::Issuer => "issuer",
            ContextKey::Service => "service",
            ContextKey::Operation => "operation",
            ContextKey::Model => "model",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Which tokens a token descriptor counts. Bedrock reports prompt tokens in three parts: the
/// ones it read from its prompt cache, the ones it wrote to it, and the rest (its "input
/// tokens"); each is billed at its own price. `cost` counts what they cost, in micro-US-dollars
/// (10^-6 USD), from [`Prices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Every token Bedrock bills: input, output, cache read and cache write.
    Total,
    /// Prompt tokens neither read from nor written to the prompt cache.
    Input,
    Output,
    /// Prompt tokens read from the prompt cache.
    CacheRead,
    /// Prompt tokens written to the prompt cache.
    CacheWrite,
    /// What the tokens cost, in micro-US-dollars, at the configured prices.
    Cost,
}

impl TokenKind {
    pub const ALL: [TokenKind; 6] = [
        TokenKind::Total,
        TokenKind::Input,
        TokenKind::Output,
        TokenKind::CacheRead,
        TokenKind::CacheWrite,
        TokenKind::Cost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Total => "total",
            TokenKind::Input => "input",
            TokenKind::Output => "output",
            TokenKind::CacheRead => "cache_read",
            TokenKind::CacheWrite => "cache_write",
            TokenKind::Cost => "cost",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenDescriptor {
    /// Context keys before `tokens=<kind>` (may be empty: a budget for everyone together).
    pub keys: Vec<ContextKey>,
    pub kind: TokenKind,
}

fn default_cluster() -> String {
    names::QUOTA_CLUSTER.to_string()
}

fn default_timeout_ms() -> u64 {
    200
}

/// Default of `stream_max_age_seconds`.
pub const DEFAULT_STREAM_MAX_AGE_SECONDS: u64 = 60;

fn default_stream_max_age_seconds() -> u64 {
    DEFAULT_STREAM_MAX_AGE_SECONDS
}

/// Default of `default_max_output_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

fn default_max_output_tokens() -> u64 {
    DEFAULT_MAX_OUTPUT_TOKENS
}

fn default_chars_per_token() -> u64 {
    4
}

/// Default of `media_bytes_per_token`: on the generous side for photos (a 300 KB JPEG that
/// Bedrock counts as ~1,600 tokens reserves ~9,400), so that reservations rarely fall short.
pub const DEFAULT_MEDIA_BYTES_PER_TOKEN: u64 = 32;

fn default_media_bytes_per_token() -> u64 {
    DEFAULT_MEDIA_BYTES_PER_TOKEN
}

fn default_report_buffer() -> usize {
    10_000
}

impl QuotaConfig {
    /// Semantic checks; keys are relative to `quota`.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        if self.cluster.is_empty() {
            return Err(invalid("cluster", "an Envoy cluster name"));
        }
        if self.domain.is_empty() {
            return Err(invalid("domain", "a rate limit domain"));
        }
        if self.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "a timeout above 0"));
        }
        if self.stream_max_age_seconds == 0 {
            return Err(invalid("stream_max_age_seconds", "at least 1"));
        }
        if let Some(i) = self.request_descriptors.iter().position(Vec::is_empty) {
            return Err(invalid(
                format!("request_descriptors[{i}]"),
                "at least one context key",
            ));
        }
        if self.chars_per_token == 0 {
            return Err(invalid("chars_per_token", "at least 1"));
        }
        if self.media_bytes_per_token == 0 {
            return Err(invalid("media_bytes_per_token", "at least 1"));
        }
        if self.report_buffer == 0 {
            return Err(invalid("report_buffer", "at least 1"));
        }
        if let Some(prices) = &self.prices {
            for (i, entry) in prices.models.iter().enumerate() {
                if entry.model.is_empty() || entry.model != entry.model.to_lowercase() {
                    return Err(invalid(
                        format!("prices.models[{i}].model"),
                        "a lower-case model key pattern",
                    ));
                }
            }
        } else if self
            .token_descriptors
            .iter()
            .any(|d| d.kind == TokenKind::Cost)
        {
            return Err(invalid("prices", "prices for the `cost` token descriptors"));
        }
        Ok(())
    }

    /// Whether any token descriptor is configured (the filter then estimates, reserves and
    /// reads usage).
    pub fn counts_tokens(&self) -> bool {
        !self.token_descriptors.is_empty()
    }
}
