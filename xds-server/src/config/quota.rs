//! Semantic checks of the `quotas` section: the service's [`QuotaSettings`] (the compiled
//! descriptor tree, time zone and store) and the filter's [`QuotaConfig`], whose descriptor
//! shapes are derived from the tree so the filter sends exactly what can match. The first
//! problem found is reported, with the file, the YAML key and what was expected there.

use chrono_tz::Tz;
use gateway_common::{
    model, names,
    quota_config::{
        ContextKey, FailureMode, ModelPrices, Prices, QuotaConfig, QuotaTransport, TOKENS_KEY,
        TokenKind, TokenPrices,
    },
};
use redis::IntoConnectionInfo as _;

use super::{
    check::{Checker, quoted},
    file::{
        AllowancesSection, DescriptorSection, PricesSection, QuotaSection, RateLimitSection,
        StoreSection, TokenPricesSection,
    },
    model::{ConfigError, Env},
};
use crate::{
    quota::{
        AllowanceSettings, QuotaSettings, RedisSettings, StoreSettings,
        keys::DEFAULT_KEY_PREFIX,
        settings::{
            MAX_ALLOWANCE_LIFETIME_MS, MAX_ALLOWANCE_SHARE_PPM, MIN_ALLOWANCE_LIFETIME_MS, PPM,
        },
        store::MAX_COUNT,
        tree::{Descriptors, Limit, Node, RateLimit},
        window::Unit,
    },
    util::Secret,
};

const KEY_NAMES: &str = "one of tenant, subject, tier, issuer, service, operation, model, tokens";
const UNIT_NAMES: &str = "one of second, minute, hour, day, week, month, year";
const REDIS_URL: &str = "a redis:// or rediss:// URL such as redis://127.0.0.1:6379/0";
const MAX_TIMEOUT_MS: u64 = 60_000;
/// Longest `quotas.stream_max_age_seconds`: a day.
const MAX_STREAM_MAX_AGE_SECONDS: u64 = 86_400;

/// What the `quotas` section yields.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CheckedQuotas {
    pub settings: QuotaSettings,
    pub filter: QuotaConfig,
}

pub(super) fn check_quotas(
    check: &Checker<'_>,
    raw: &QuotaSection,
    env: Env<'_>,
) -> Result<CheckedQuotas, ConfigError> {
    if raw.domain.is_empty() || raw.domain.chars().any(char::is_control) {
        return Err(check.invalid(
            "quotas.domain",
            "a rate limit domain such as bedrock-gateway",
            Some(quoted(&raw.domain)),
        ));
    }
    let failure_mode = match raw.failure_mode.as_str() {
        "open" => FailureMode::Open,
        "closed" => FailureMode::Closed,
        other => {
            return Err(check.invalid(
                "quotas.failure_mode",
                "open or closed",
                Some(quoted(other)),
            ));
        }
    };
    if raw.timeout_ms == 0 || raw.timeout_ms > MAX_TIMEOUT_MS {
        return Err(check.invalid(
            "quotas.timeout_ms",
            "a number of milliseconds from 1 to 60000",
            Some(raw.timeout_ms.to_string()),
        ));
    }
    let transport = match raw.transport.as_str() {
        "stream" => QuotaTransport::Stream,
        "unary" => QuotaTransport::Unary,
        other => {
            return Err(check.invalid("quotas.transport", "stream or unary", Some(quoted(other))));
        }
    };
    if raw.stream_max_age_seconds == 0 || raw.stream_max_age_seconds > MAX_STREAM_MAX_AGE_SECONDS {
        return Err(check.invalid(
            "quotas.stream_max_age_seconds",
            "a number of seconds from 1 to 86400",
            Some(raw.stream_max_age_seconds.to_string()),
        ));
    }
    let allowances = raw
        .allowances
        .as_ref()
        .map(|allowances| check_allowances(check, allowances, transport))
        .transpose()?;
    let time_zone: Tz = raw.time_zone.parse().map_err(|_| {
        check.invalid(
            "quotas.time_zone",
            "an IANA time zone name such as UTC or Europe/Berlin",
            Some(quoted(&raw.time_zone)),
        )
    })?;
    let store = check_store(check, &raw.store, env)?;
    for (key, value) in [
        ("quotas.chars_per_token", raw.chars_per_token),
        ("quotas.media_bytes_per_token", raw.media_bytes_per_token),
        ("quotas.report_buffer", raw.report_buffer as u64),
        (
            "quotas.ledger_max_rows_per_day",
            raw.ledger_max_rows_per_day,
        ),
    ] {
        if value == 0 {
            return Err(check.invalid(key, "a whole number from 1 up", Some("0".into())));
        }
    }
    if raw.descriptors.is_empty() {
        return Err(check.invalid(
            "quotas.descriptors",
            "at least one descriptor",
            Some("[]".into()),
        ));
    }
    let descriptors = check_level(check, "quotas", &raw.descriptors, &mut Vec::new())?;
    let shapes = descriptors.shapes();
    if shapes.request_descriptors.is_empty() && shapes.token_descriptors.is_empty() {
        return Err(check.invalid(
            "quotas.descriptors",
            "at least one rate_limit in the tree",
            None,
        ));
    }
    let prices = raw
        .prices
        .as_ref()
        .map(|prices| check_prices(check, prices))
        .transpose()?;
    if prices.is_none()
        && shapes
            .token_descriptors
            .iter()
            .any(|d| d.kind == TokenKind::Cost)
    {
        return Err(check.invalid(
            "quotas.prices",
            "prices for the limits on `key: tokens, value: cost` (what tokens cost is counted from them)",
            None,
        ));
    }
    Ok(CheckedQuotas {
        settings: QuotaSettings {
            domain: raw.domain.clone(),
            time_zone,
            store,
            descriptors,
            ledger_max_rows_per_day: raw.ledger_max_rows_per_day,
            allowances,
        },
        filter: QuotaConfig {
            cluster: names::QUOTA_CLUSTER.to_string(),
            domain: raw.domain.clone(),
            timeout_ms: raw.timeout_ms,
            failure_mode,
            transport,
            stream_max_age_seconds: raw.stream_max_age_seconds,
            request_descriptors: shapes.request_descriptors,
            token_descriptors: shapes.token_descriptors,
            default_max_output_tokens: raw.default_max_output_tokens,
            chars_per_token: raw.chars_per_token,
            media_bytes_per_token: raw.media_bytes_per_token,
            report_buffer: raw.report_buffer,
            prices,
        },
    })
}

/// `quotas.allowances`: the share to whole millionths, the lifetime in range, and a transport
/// that can carry grants (only decision streams do).
fn check_allowances(
    check: &Checker<'_>,
    raw: &AllowancesSection,
    transport: QuotaTransport,
) -> Result<AllowanceSettings, ConfigError> {
    if transport == QuotaTransport::Unary {
        return Err(check.invalid(
            "quotas.allowances",
            "no value with transport unary (allowances are granted on decision streams only: transport stream)",
            None,
        ));
    }
    let ppm = raw.share * f64::from(PPM);
    let whole = ppm.round();
    if !raw.share.is_finite()
        || whole < 1.0
        || whole > f64::from(MAX_ALLOWANCE_SHARE_PPM)
        || (ppm - whole).abs() > 1e-6
    {
        return Err(check.invalid(
            "quotas.allowances.share",
            "a fraction of what remains of a limit, above 0 and at most 0.5, with at most 6 decimals (such as 0.0625)",
            Some(raw.share.to_string()),
        ));
    }
    let lifetime_ms = u32::try_from(raw.lifetime_ms)
        .ok()
        .filter(|ms| (MIN_ALLOWANCE_LIFETIME_MS..=MAX_ALLOWANCE_LIFETIME_MS).contains(ms));
    let Some(lifetime_ms) = lifetime_ms else {
        return Err(check.invalid(
            "quotas.allowances.lifetime_ms",
            "a number of milliseconds from 10 to 60000",
            Some(raw.lifetime_ms.to_string()),
        ));
    };
    Ok(AllowanceSettings {
        share_ppm: whole as u32,
        lifetime_ms,
    })
}

/// `quotas.prices`: US dollars per `per_tokens` tokens, to exact nano-dollars per token.
fn check_prices(check: &Checker<'_>, raw: &PricesSection) -> Result<Prices, ConfigError> {
    let decimals = match raw.per_tokens {
        1_000 => 6,
        1_000_000 => 3,
        other => {
            return Err(check.invalid(
                "quotas.prices.per_tokens",
                "1000 or 1000000: the number of tokens the prices are for",
                Some(other.to_string()),
            ));
        }
    };
    let price = |key: String, usd: f64| -> Result<u64, ConfigError> {
        // USD per `per_tokens` tokens to nano-USD per token: exact when the price has no
        // more decimals than a nano-dollar per token allows.
        let nano = usd * 1e9 / raw.per_tokens as f64;
        let whole = nano.round();
        if !usd.is_finite() || usd < 0.0 || (nano - whole).abs() > 1e-6 || whole > 1e12 {
            return Err(check.invalid(
                &key,
                &format!(
                    "US dollars per {} tokens, from 0 with at most {decimals} decimals",
                    raw.per_tokens
                ),
                Some(usd.to_string()),
            ));
        }
        Ok(whole as u64)
    };
    let prices = |at: &str, p: &TokenPricesSection| -> Result<TokenPrices, ConfigError> {
        let input = price(format!("{at}.input"), p.input)?;
        Ok(TokenPrices {
            input,
            output: price(format!("{at}.output"), p.output)?,
            cache_read: p
                .cache_read
                .map_or(Ok(input), |usd| price(format!("{at}.cache_read"), usd))?,
            cache_write: p
                .cache_write
                .map_or(Ok(input), |usd| price(format!("{at}.cache_write"), usd))?,
        })
    };
    let mut models = Vec::new();
    for (i, entry) in raw.models.iter().enumerate() {
        let at = format!("quotas.prices.models[{i}]");
        let pattern = entry.model.trim().to_lowercase();
        if pattern.is_empty() || pattern.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(check.invalid(
                &format!("{at}.model"),
                "a model key pattern such as anthropic.claude-3-haiku* (`*` for any run of characters)",
                Some(quoted(&entry.model)),
            ));
        }
        let nano_usd_per_token = prices(
            &at,
            &TokenPricesSection {
                input: entry.input,
                output: entry.output,
                cache_read: entry.cache_read,
                cache_write: entry.cache_write,
            },
        )?;
        models.push(ModelPrices {
            model: pattern,
            nano_usd_per_token,
        });
    }
    let unpriced = match &raw.unpriced {
        None => None,
        Some(serde_norway::Value::String(s)) if s == "refuse" => None,
        Some(value @ serde_norway::Value::Mapping(_)) => {
            let section: TokenPricesSection =
                serde_norway::from_value(value.clone()).map_err(|error| {
                    check.invalid(
                        "quotas.prices.unpriced",
                        &format!("`refuse` or prices {{input, output, cache_read, cache_write}} ({error})"),
                        None,
                    )
                })?;
            Some(prices("quotas.prices.unpriced", &section)?)
        }
        Some(_) => {
            return Err(check.invalid(
                "quotas.prices.unpriced",
                "`refuse` or prices {input, output, cache_read, cache_write}",
                None,
            ));
        }
    };
    Ok(Prices { models, unpriced })
}

fn check_store(
    check: &Checker<'_>,
    raw: &StoreSection,
    env: Env<'_>,
) -> Result<StoreSettings, ConfigError> {
    let kind = raw.kind.as_deref().unwrap_or("memory");
    match kind {
        "memory" => {
            let redis_only = [
                ("url", raw.url.is_some()),
                ("password_env", raw.password_env.is_some()),
                ("key_prefix", raw.key_prefix.is_some()),
            ];
            if let Some((key, _)) = redis_only.iter().find(|(_, set)| *set) {
                return Err(check.invalid(
                    &format!("quotas.store.{key}"),
                    "no value with store type memory (it only applies to type redis)",
                    None,
                ));
            }
            Ok(StoreSettings::Memory)
        }
        "redis" => check_redis(check, raw, env).map(StoreSettings::Redis),
        other => Err(check.invalid("quotas.store.type", "memory or redis", Some(quoted(other)))),
    }
}

fn check_redis(
    check: &Checker<'_>,
    raw: &StoreSection,
    env: Env<'_>,
) -> Result<RedisSettings, ConfigError> {
    let Some(text) = &raw.url else {
        return Err(check.invalid("quotas.store.url", REDIS_URL, None));
    };
    let parsed = url::Url::parse(text).ok().filter(|url| {
        matches!(url.scheme(), "redis" | "rediss") && url.host_str().is_some_and(|h| !h.is_empty())
    });
    let Some(parsed) = parsed else {
        return Err(check.invalid("quotas.store.url", REDIS_URL, Some(quoted(&redacted(text)))));
    };
    let mut display = parsed.clone();
    let _ = display.set_password(None);
    let display_url = display.to_string();
    if text.as_str().into_connection_info().is_err() {
        return Err(check.invalid("quotas.store.url", REDIS_URL, Some(quoted(&display_url))));
    }
    let password = match &raw.password_env {
        None => None,
        Some(_) if parsed.password().is_some() => {
            return Err(check.invalid(
                "quotas.store.password_env",
                "no value when quotas.store.url holds a password (one password source only)",
                None,
            ));
        }
        Some(name) => match env(name) {
            Some(password) if !password.is_empty() => Some(Secret::new(password)),
            _ => {
                return Err(check.invalid(
                    "quotas.store.password_env",
                    "the name of an environment variable that holds the Redis password",
                    Some(format!("{} (unset or empty)", quoted(name))),
                ));
            }
        },
    };
    Ok(RedisSettings {
        url: Secret::new(text.clone()),
        display_url,
        password,
        key_prefix: raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string()),
    })
}

/// A URL as it may be shown: without its password, or not at all when the password cannot
/// be taken out of it.
fn redacted(text: &str) -> String {
    if let Ok(mut url) = url::Url::parse(text)
        && url.set_password(None).is_ok()
    {
        return url.to_string();
    }
    if text.contains('@') {
        "(a URL with credentials that does not parse)".to_string()
    } else {
        text.to_string()
    }
}

/// Checks and compiles one level of the tree; `above` holds the keys on the path to it.
fn check_level(
    check: &Checker<'_>,
    parent: &str,
    raw: &[DescriptorSection],
    above: &mut Vec<String>,
) -> Result<Descriptors, ConfigError> {
    let mut level = Descriptors::default();
    for (i, node) in raw.iter().enumerate() {
        let at = format!("{parent}.descriptors[{i}]");
        let key = |field: &str| format!("{at}.{field}");
        let is_tokens = node.key == TOKENS_KEY;
        if !is_tokens && ContextKey::from_name(&node.key).is_none() {
            return Err(check.invalid(&key("key"), KEY_NAMES, Some(quoted(&node.key))));
        }
        if above.contains(&node.key) {
            return Err(check.invalid(
                &key("key"),
                &format!(
                    "a key not already on the path to this node ({})",
                    above.join(", ")
                ),
                Some(quoted(&node.key)),
            ));
        }
        if node.value.as_deref() == Some("") {
            return Err(check.invalid(
                &key("value"),
                "a value (or no `value` key, to match any value)",
                Some(quoted("")),
            ));
        }
        if is_tokens {
            if node
                .value
                .as_deref()
                .and_then(TokenKind::from_name)
                .is_none()
            {
                return Err(check.invalid(
                    &key("value"),
                    "total, input, output, cache_read, cache_write or cost: the tokens a `tokens` descriptor counts",
                    node.value.as_deref().map(quoted),
                ));
            }
            if !node.descriptors.is_empty() {
                return Err(check.invalid(
                    &key("descriptors"),
                    "no children under `key: tokens` (tokens is always the last key)",
                    None,
                ));
            }
        }
        if node.unlimited && node.rate_limit.is_some() {
            return Err(check.invalid(
                &key("unlimited"),
                "either `unlimited: true` or a rate_limit on one node, not both",
                None,
            ));
        }
        if node.shadow_mode && node.rate_limit.is_none() {
            return Err(check.invalid(
                &key("shadow_mode"),
                "a rate_limit on the node to run in shadow mode",
                None,
            ));
        }
        if !node.unlimited && node.rate_limit.is_none() && node.descriptors.is_empty() {
            return Err(check.invalid(
                &at,
                "a rate_limit, `unlimited: true` or descriptors (this node limits nothing)",
                None,
            ));
        }
        let limit = match &node.rate_limit {
            Some(rate) => Some(Limit::Rate(check_rate_limit(
                check,
                &key("rate_limit"),
                rate,
                node.shadow_mode,
            )?)),
            None if node.unlimited => Some(Limit::Unlimited),
            None => None,
        };
        above.push(node.key.clone());
        let children = check_level(check, &at, &node.descriptors, above)?;
        above.pop();
        let compiled = Node {
            limit,
            descriptors: children,
        };
        let value = node_value(node);
        if level.insert(&node.key, value.as_deref(), compiled).is_err() {
            let first = raw[..i]
                .iter()
                .position(|other| other.key == node.key && node_value(other) == value)
                .unwrap_or(0);
            let found = match (&node.value, &value) {
                (Some(written), Some(value)) if written != value => format!(
                    "key {} with value {} (model key {}) again",
                    quoted(&node.key),
                    quoted(written),
                    quoted(value)
                ),
                (Some(written), _) => format!(
                    "key {} with value {} again",
                    quoted(&node.key),
                    quoted(written)
                ),
                (None, _) => format!("key {} without value again", quoted(&node.key)),
            };
            return Err(check.invalid(
                &at,
                &format!(
                    "a key and value that no sibling has ({parent}.descriptors[{first}] has them)"
                ),
                Some(found),
            ));
        }
    }
    Ok(level)
}

/// The value a node matches: as written, except under `key: model`, where it is the model's
/// key (the form the filter sends), so every spelling of one model is one node.
fn node_value(node: &DescriptorSection) -> Option<String> {
    let value = node.value.as_deref()?;
    Some(if node.key == ContextKey::Model.name() {
        model::key(value)
    } else {
        value.to_string()
    })
}

fn check_rate_limit(
    check: &Checker<'_>,
    at: &str,
    raw: &RateLimitSection,
    shadow_mode: bool,
) -> Result<RateLimit, ConfigError> {
    let unit = Unit::from_name(&raw.unit)
        .ok_or_else(|| check.invalid(&format!("{at}.unit"), UNIT_NAMES, Some(quoted(&raw.unit))))?;
    if raw.requests_per_unit > MAX_COUNT {
        return Err(check.invalid(
            &format!("{at}.requests_per_unit"),
            "a whole number from 0 to 9007199254740991",
            Some(raw.requests_per_unit.to_string()),
        ));
    }
    if let Some(name) = &raw.name
        && (name.is_empty() || name.chars().any(char::is_control))
    {
        return Err(check.invalid(
            &format!("{at}.name"),
            "a name without control characters (or no `name` key)",
            Some(quoted(name)),
        ));
    }
    Ok(RateLimit {
        unit,
        requests_per_unit: raw.requests_per_unit,
        name: raw.name.clone(),
        shadow_mode,
    })
}

#[cfg(test)]
mod tests;
