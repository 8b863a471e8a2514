//! The `quotas` section as written by the operator. The doc comment of each field is its
//! reference documentation: meaning, default and unit.

use gateway_common::quota_config::DEFAULT_MAX_OUTPUT_TOKENS;
use serde::Deserialize;

/// Request and token quotas. The filter asks this server's rate limit service (on the gRPC
/// port: Envoy's `ShouldRateLimit`, or the same request on a decision stream) before forwarding
/// each request, and reports what the request used when it ends; the server keeps the counters and a usage ledger. Without this
/// section there are no quotas.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSection {
    /// Rate limit domain the filter sends and this server answers for; requests for other
    /// domains are always allowed (as envoyproxy/ratelimit does). Counter keys include it, so
    /// changing it starts every counter afresh. Default `bedrock-gateway`.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// What the filter does when this server gives no decision within `timeout_ms` or fails
    /// (for instance, Redis is down): `open` forwards the request, `closed` refuses it with 503
    /// `ServiceUnavailableException`. Required: the choice between availability and
    /// enforcement is the operator's.
    pub failure_mode: String,
    /// Milliseconds the filter waits for a decision, 1 to 60000. Default `200`.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How the filter asks for decisions: `stream` (each Envoy worker keeps one
    /// `GatewayControl/StreamRateLimit` stream open and sends every decision on it: about a
    /// quarter of the Envoy CPU and a third of the xds-server CPU of a call) or `unary` (a `ShouldRateLimit` call per request, Envoy's
    /// rate limit API as is). With `stream`, a request that finds no stream open (at start-up,
    /// or while it is re-opened after a failure) makes the unary call. Default `stream`.
    #[serde(default = "default_transport")]
    pub transport: String,
    /// With `transport: stream`, seconds an Envoy worker keeps one decision stream before it
    /// opens a fresh one (the old one is closed once its decisions are in), so that streams
    /// spread again over xds-server replicas, one that comes back included. 1 to 86400.
    /// Default `60`.
    #[serde(default = "default_stream_max_age_seconds")]
    pub stream_max_age_seconds: u64,
    /// With `transport: stream`, lets this server grant allowances with its decisions: units
    /// of a descriptor's counter charged ahead, which the Envoy worker spends on later
    /// requests with the same descriptor without asking, and gives back unspent when they
    /// expire. Default: none (every request is decided here).
    #[serde(default)]
    pub allowances: Option<AllowancesSection>,
    /// IANA time zone (`UTC`, `Europe/Berlin`, `America/New_York`) of the calendar windows
    /// (`day`, `week` from Monday, `month`, `year`: a monthly budget resets at local midnight
    /// on the 1st) and of the usage ledger's days. `second`, `minute` and `hour` windows are
    /// aligned to Unix time whatever the zone. Default `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Where the counters and the usage ledger are kept. Default `{type: memory}`.
    #[serde(default)]
    pub store: StoreSection,
    /// Output tokens the filter reserves for a request that sets no output cap
    /// (`maxTokens`, `max_tokens`...), on top of its estimated input tokens. Default `4096`.
    #[serde(default = "default_max_output_tokens")]
    pub default_max_output_tokens: u64,
    /// Characters of prompt text per token when the filter estimates a request's input
    /// tokens; at least 1. Default `4`.
    #[serde(default = "default_chars_per_token")]
    pub chars_per_token: u64,
    /// Bytes of media (images, documents, video, counted from their base64 size) per token
    /// when the filter estimates a request's input tokens; at least 1. Default `32`.
    #[serde(default = "default_media_bytes_per_token")]
    pub media_bytes_per_token: u64,
    /// Usage reports each Envoy worker keeps for retry while this server cannot be reached;
    /// beyond that the oldest are dropped (and counted). At least 1. Default `10000`.
    #[serde(default = "default_report_buffer")]
    pub report_buffer: usize,
    /// Rows (distinct tenant and model) the usage ledger keeps per day; a record that would
    /// add one more is counted under model `(other)` of its tenant instead (counted in
    /// `xds_server_quota_ledger_rows_collapsed_total`). At least 1. Default `10000`.
    #[serde(default = "default_ledger_max_rows_per_day")]
    pub ledger_max_rows_per_day: u64,
    /// The limits, as a tree in the manner of envoyproxy/ratelimit. Required, at least one
    /// node, and at least one `rate_limit` somewhere.
    pub descriptors: Vec<DescriptorSection>,
    /// What tokens cost, per model, in US dollars: needed by `key: tokens, value: cost`
    /// limits, and gives every usage ledger row its cost. Without it nothing is priced.
    #[serde(default)]
    pub prices: Option<PricesSection>,
}

/// `quotas.allowances`. Counters never exceed their limits: a grant is charged to its counter
/// like a request, all or nothing. While it is outstanding its units are held by one worker,
/// so others may be refused up to that many units early, for at most `lifetime_ms`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowancesSection {
    /// The fraction of what remains of a limit that one grant takes, above 0 and at most 0.5,
    /// with at most 6 decimals. No grant is made when it comes to less than twice the
    /// request's charge (near the limit every request is decided here). Default `0.0625`.
    #[serde(default = "default_allowance_share")]
    pub share: f64,
    /// Milliseconds a grant lasts at most (never past its window's end), 10 to 60000: how
    /// long units may be held by one worker, and how long a changed limit may take to reach
    /// requests spent from allowances. Default `1000`.
    #[serde(default = "default_allowance_lifetime_ms")]
    pub lifetime_ms: u64,
}

/// Default of `quotas.allowances.share`.
pub const DEFAULT_ALLOWANCE_SHARE: f64 = 0.0625;

/// Default of `quotas.allowances.lifetime_ms`.
pub const DEFAULT_ALLOWANCE_LIFETIME_MS: u64 = 1_000;

fn default_allowance_share() -> f64 {
    DEFAULT_ALLOWANCE_SHARE
}

fn default_allowance_lifetime_ms() -> u64 {
    DEFAULT_ALLOWANCE_LIFETIME_MS
}

/// `quotas.prices`. Check every price against the AWS price list of your region: the
/// shipped examples are not a price list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesSection {
    /// The number of tokens the prices are for: `1000` or `1000000`. Default `1000000`.
    #[serde(default = "default_per_tokens")]
    pub per_tokens: u64,
    /// Prices by model key pattern (lower case, `*` for any run of characters; the first
    /// pattern that matches a request's model key prices it).
    pub models: Vec<ModelPriceSection>,
    /// `refuse` (default): a request for a model no pattern matches is refused (403
    /// `AccessDeniedException`) rather than counted as free; or prices (`{input: ..., ...}`)
    /// to count such requests at.
    #[serde(default)]
    pub unpriced: Option<serde_norway::Value>,
}

/// One `quotas.prices.models` entry: a model key pattern and US dollars per `per_tokens`
/// tokens of each kind: `input` (prompt tokens not in the prompt cache), `output`,
/// `cache_read`, `cache_write`. `input` and `output` are required; the cache prices default
/// to `input`'s.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPriceSection {
    pub model: String,
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

/// Prices without a model, for `quotas.prices.unpriced`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPricesSection {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

fn default_per_tokens() -> u64 {
    1_000_000
}

/// `quotas.store`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `memory`: counters and ledger live in this process (lost when it stops; each
    /// xds-server counts on its own). `redis`: in Redis, shared by every xds-server using it
    /// and kept across restarts. Counters survive configuration reloads unless this section
    /// changes. Default `memory`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// `redis` only, required: `redis://[user[:password]@]host[:port][/db]`, or `rediss://`
    /// for TLS (the system's trusted roots). Standalone Redis or a primary (not Redis Cluster).
    #[serde(default)]
    pub url: Option<String>,
    /// `redis` only: name of an environment variable of xds-server holding the Redis password
    /// (instead of putting it in `url`). Default: none.
    #[serde(default)]
    pub password_env: Option<String>,
    /// `redis` only: what every key this server writes starts with, so several gateways can
    /// share one Redis. Default `bedrock-gateway:`.
    #[serde(default)]
    pub key_prefix: Option<String>,
}

/// One node of the limit tree. A request's descriptor, a list of `(key, value)` entries,
/// walks the tree from the top: at each level its entry first matches the node with that
/// `key` and `value`, else the node with that `key` and no `value`. The `rate_limit` of the
/// node the whole descriptor reaches applies.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorSection {
    /// What the entry names: `tenant`, `subject`, `tier`, `issuer`, `service`, `operation`,
    /// `model` (from the request and the caller's token), or `tokens`, which counts tokens
    /// instead of requests and is always last on its path. Required; each key at most once on
    /// a path.
    pub key: String,
    /// Matches only this value (`team-a`; for `tokens`: `total`, `input` or `output`, which is
    /// then required). Under `key: model`, the value is read as its model key (lower case, the
    /// id inside a foundation-model or inference-profile ARN, no cross-region prefix such as
    /// `us.`), as the filter sends models: `us.anthropic.claude-3-haiku-20240307-v1:0` matches
    /// `anthropic.claude-3-haiku-20240307-v1:0`. Default: any value (a node with the same key
    /// and a value takes precedence). Siblings must differ in key or value (model values in
    /// their model key).
    #[serde(default)]
    pub value: Option<String>,
    /// The limit of descriptors that end at this node. Default: none (only the children
    /// limit).
    #[serde(default)]
    pub rate_limit: Option<RateLimitSection>,
    /// `true`: descriptors ending here are never limited nor counted (exempts one value from
    /// a default's limit). Not together with `rate_limit`. Default `false`.
    #[serde(default)]
    pub unlimited: bool,
    /// `true`: the `rate_limit` is counted and reported (metrics, statuses) but never refuses;
    /// to try a limit out. Default `false`.
    #[serde(default)]
    pub shadow_mode: bool,
    /// Nodes for descriptors with more entries. Default: none.
    #[serde(default)]
    pub descriptors: Vec<DescriptorSection>,
}

/// `rate_limit` of a node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Length of the counting window: `second`, `minute`, `hour` (fixed windows aligned to
    /// Unix time), `day`, `week` (from Monday), `month` or `year` (calendar periods in
    /// `quotas.time_zone`). Required.
    pub unit: String,
    /// Requests allowed per window or, under `key: tokens`, tokens (the filter reserves an
    /// estimate when the request starts and settles the difference when it ends). 0 refuses
    /// everything. At most 9007199254740991. Required.
    pub requests_per_unit: u64,
    /// A label returned to the caller with the limit (and in Envoy's rate limit headers).
    /// Default: none.
    #[serde(default)]
    pub name: Option<String>,
}

/// Default of `quotas.domain`.
pub const DEFAULT_QUOTA_DOMAIN: &str = "bedrock-gateway";

fn default_domain() -> String {
    DEFAULT_QUOTA_DOMAIN.to_string()
}

fn default_timeout_ms() -> u64 {
    200
}

fn default_stream_max_age_seconds() -> u64 {
    gateway_common::quota_config::DEFAULT_STREAM_MAX_AGE_SECONDS
}

fn default_transport() -> String {
    "stream".to_string()
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

fn default_max_output_tokens() -> u64 {
    DEFAULT_MAX_OUTPUT_TOKENS
}

fn default_media_bytes_per_token() -> u64 {
    gateway_common::quota_config::DEFAULT_MEDIA_BYTES_PER_TOKEN
}

fn default_chars_per_token() -> u64 {
    4
}

fn default_report_buffer() -> usize {
    10_000
}

fn default_ledger_max_rows_per_day() -> u64 {
    10_000
}
