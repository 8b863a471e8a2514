//! Quotas through a rate limit service: the descriptors a request is admitted with (one hit
//! per request descriptor; the estimated tokens reserved on each token descriptor), the verdict,
//! and the settlement once the real token counts are known.

pub mod allowance;
pub mod estimate;
pub mod reports;
pub mod usage;

use gateway_common::proto::{CounterAdjustment, DescriptorEntry, UsageRecord};
use gateway_common::quota_config::{ContextKey, QuotaConfig, TOKENS_KEY, TokenKind, TokenPrices};
use gateway_common::ratelimit::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitResponse, UInt64Value,
};

use super::errors::ErrorReply;
use estimate::{Estimate, MAX_TOKENS};
use usage::Usage;

/// What descriptors can be built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub tenant: Option<String>,
    pub subject: Option<String>,
    pub tier: Option<String>,
    pub issuer: Option<String>,
    pub service: String,
    pub operation: String,
    /// The primary model's key (`gateway_common::model::key`): one counter and one ledger row
    /// per model, however the request spelled it.
    pub model: Option<String>,
    /// The model's prices, when prices are configured.
    pub prices: Option<TokenPrices>,
}

impl Context {
    fn value(&self, key: ContextKey) -> Option<&str> {
        match key {
            ContextKey::Tenant => self.tenant.as_deref(),
            ContextKey::Subject => self.subject.as_deref(),
            ContextKey::Tier => self.tier.as_deref(),
            ContextKey::Issuer => self.issuer.as_deref(),
            ContextKey::Service => Some(self.service.as_str()),
            ContextKey::Operation => Some(self.operation.as_str()),
            ContextKey::Model => self.model.as_deref(),
        }
        .filter(|v| !v.is_empty())
    }

    fn entries(&self, keys: &[ContextKey]) -> Option<Vec<Entry>> {
        keys.iter()
            .map(|key| {
                self.value(*key).map(|value| Entry {
                    key: key.name().to_string(),
                    value: value.to_string(),
                })
            })
            .collect()
    }
}

/// What admission charged on one descriptor: a request hit or reserved tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub entries: Vec<Entry>,
    /// The tokens counted; `None` for a request descriptor (one hit).
    pub kind: Option<TokenKind>,
    pub reserved: u64,
    /// The window the decision says the charge went to (`UNIT/START`), once decided.
    pub window: Option<String>,
}

/// The rate limit request for a request, and what it reserves (one reservation per
/// descriptor, in the same order).
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub request: RateLimitRequest,
    pub reservations: Vec<Reservation>,
}

/// Builds the admission request; `None` when no configured descriptor applies (for instance,
/// per-tenant quotas and no tenant).
pub fn admission(config: &QuotaConfig, context: &Context, estimate: Estimate) -> Option<Admission> {
    let mut descriptors = Vec::new();
    let mut reservations = Vec::new();
    let mut add = |entries: Vec<Entry>, kind: Option<TokenKind>, reserved: u64| {
        descriptors.push(RateLimitDescriptor {
            entries: entries.clone(),
            // 0 is a pre-check: refused once the budget is used up.
            hits_addend: Some(UInt64Value { value: reserved }),
            is_negative_hits: false,
        });
        reservations.push(Reservation {
            entries,
            kind,
            reserved,
            window: None,
        });
    };
    for keys in &config.request_descriptors {
        if let Some(entries) = context.entries(keys) {
            add(entries, None, 1);
        }
    }
    for token in &config.token_descriptors {
        let Some(mut entries) = context.entries(&token.keys) else {
            continue;
        };
        entries.push(Entry {
            key: TOKENS_KEY.to_string(),
            value: token.kind.name().to_string(),
        });
        add(
            entries,
            Some(token.kind),
            reserved_tokens(token.kind, estimate, context.prices),
        );
    }
    (!descriptors.is_empty()).then(|| Admission {
        request: RateLimitRequest {
            domain: config.domain.clone(),
            descriptors,
            hits_addend: 1,
        },
        reservations,
    })
}

/// The request that asks for allowances alone (a refill): the same descriptors, each
/// charging nothing.
pub fn refill(mut request: RateLimitRequest) -> RateLimitRequest {
    for descriptor in &mut request.descriptors {
        descriptor.hits_addend = Some(UInt64Value { value: 0 });
        descriptor.is_negative_hits = false;
    }
    request
}

/// What admission reserves on a token descriptor: the most the request can use of that kind.
/// The estimate's input is the whole prompt, which may turn out uncached, read from the
/// prompt cache or written to it, in any proportion: each prompt kind reserves all of it.
/// `cost` reserves the most the prompt can cost (at the dearest of the three prompt prices)
/// plus the output cap at the output price.
fn reserved_tokens(kind: TokenKind, estimate: Estimate, prices: Option<TokenPrices>) -> u64 {
    match kind {
        TokenKind::Total => estimate.input.saturating_add(estimate.output),
        TokenKind::Input | TokenKind::CacheRead | TokenKind::CacheWrite => estimate.input,
        TokenKind::Output => estimate.output,
        TokenKind::Cost => {
            let prices = prices.unwrap_or_default();
            let prompt = prices.input.max(prices.cache_read).max(prices.cache_write);
            micro_usd(
                estimate
                    .input
                    .saturating_mul(prompt)
                    .saturating_add(estimate.output.saturating_mul(prices.output)),
            )
        }
    }
    .min(MAX_TOKENS)
}

/// What a response used of one kind.
fn used_tokens(kind: TokenKind, usage: &Usage, prices: Option<TokenPrices>) -> u64 {
    match kind {
        TokenKind::Total => usage.total(),
        TokenKind::Input => usage.input,
        TokenKind::Output => usage.output,
        TokenKind::CacheRead => usage.cache_read,
        TokenKind::CacheWrite => usage.cache_write,
        TokenKind::Cost => micro_usd(cost_nano_usd(usage, prices.unwrap_or_default())),
    }
    .min(MAX_TOKENS)
}

/// What a response's tokens cost, in nano-US-dollars (exact: integer prices per token).
pub fn cost_nano_usd(usage: &Usage, prices: TokenPrices) -> u64 {
    usage
        .input
        .saturating_mul(prices.input)
        .saturating_add(usage.output.saturating_mul(prices.output))
        .saturating_add(usage.cache_read.saturating_mul(prices.cache_read))
        .saturating_add(usage.cache_write.saturating_mul(prices.cache_write))
}

/// Nano- to micro-US-dollars, rounded up: a budget counter never counts less than was spent.
fn micro_usd(nano: u64) -> u64 {
    nano.div_ceil(1000)
}

/// The service's answer: admitted, or a 429 carrying the first exceeded limit's state.
pub fn verdict(response: &RateLimitResponse) -> Result<(), ErrorReply> {
    if response.overall_code != Code::OverLimit as i32 {
        return Ok(());
    }
    let over = response
        .statuses
        .iter()
        .find(|s| s.code == Code::OverLimit as i32);
    let limit = over
        .and_then(|s| s.current_limit.as_ref())
        .map_or(0, |l| u64::from(l.requests_per_unit));
    let remaining = over.map_or(0, |s| u64::from(s.limit_remaining));
    let reset = over.and_then(|s| s.duration_until_reset).map_or(1, |d| {
        let seconds = u64::try_from(d.seconds).unwrap_or_default();
        seconds.saturating_add(u64::from(d.nanos > 0))
    });
    Err(ErrorReply::over_quota(limit, remaining, reset))
}

/// Notes, on each reservation, the window the decision charged it in.
pub fn charged(reservations: &mut [Reservation], response: &RateLimitResponse) {
    for (reservation, window) in reservations.iter_mut().zip(response.windows()) {
        reservation.window = window;
    }
}

/// How an admitted request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Forwarded; its usage, when the response reported it.
    Forwarded(Option<Usage>),
    /// Refused by the gateway itself after admission: nothing was used.
    RefusedByGateway,
}

/// Corrections of the reservations once the request ended: actual minus reserved for token
/// descriptors; for a request the gateway refused, every charge given back. None when the
/// usage is unknown: the reservation then stands as the charge.
pub fn settle(
    reservations: &[Reservation],
    ending: Ending,
    prices: Option<TokenPrices>,
) -> Vec<CounterAdjustment> {
    let actual = |r: &Reservation| match (ending, r.kind) {
        (Ending::RefusedByGateway, _) => Some(0),
        (Ending::Forwarded(_), None) => Some(r.reserved),
        (Ending::Forwarded(usage), Some(kind)) => usage.map(|u| used_tokens(kind, &u, prices)),
    };
    reservations
        .iter()
        .filter_map(|r| {
            let delta = i128::from(actual(r)?) - i128::from(r.reserved);
            (delta != 0).then(|| CounterAdjustment {
                entries: r
                    .entries
                    .iter()
                    .map(|e| DescriptorEntry {
                        key: e.key.clone(),
                        value: e.value.clone(),
                    })
                    .collect(),
                delta: i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX }),
                window: r.window.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// How a request that reaches the ledger ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    RefusedByQuota,
    RefusedByGateway,
}

/// How long a request took, as the filter saw it; 0 where not measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// From the request's headers to the end of its response (or its refusal).
    pub duration_us: u64,
    /// From the request's headers to the response's first streamed output.
    pub time_to_first_output_us: u64,
    /// The response's `:status`; 0 when none came.
    pub status: u32,
}

/// The ledger record of a finished (or refused) request.
pub fn record(
    context: &Context,
    admitted_at: u64,
    usage: Option<Usage>,
    adjustments: Vec<CounterAdjustment>,
    outcome: Outcome,
    timing: Timing,
) -> UsageRecord {
    let usage = usage.unwrap_or_default();
    UsageRecord {
        tenant: context.tenant.clone().unwrap_or_default(),
        model: context.model.clone().unwrap_or_default(),
        operation: context.operation.clone(),
        service: context.service.clone(),
        admitted_at_unix_seconds: i64::try_from(admitted_at).unwrap_or_default(),
        input_tokens: usage.input,
        output_tokens: usage.output,
        cache_read_input_tokens: usage.cache_read,
        cache_write_input_tokens: usage.cache_write,
        cost_nano_usd: context
            .prices
            .map_or(0, |prices| cost_nano_usd(&usage, prices)),
        duration_us: timing.duration_us,
        time_to_first_output_us: timing.time_to_first_output_us,
        status_code: timing.status,
        refused: outcome == Outcome::RefusedByQuota,
        adjustments,
        refused_by_gateway: outcome == Outcome::RefusedByGateway,
    }
}

#[cfg(test)]
mod tests;
