//! What a `quotas` section becomes. Each way it can be wrong has its fixture in
//! `tests/fixtures/invalid/quota_*.yaml`.

use std::path::Path;

use chrono_tz::Europe;
use gateway_common::quota_config::{ContextKey, TokenDescriptor};

use super::*;
use crate::config::{GatewayConfig, Overrides, parse_with_env};

fn load(section: &str, env: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
    let text = format!(
        "upstream: {{region: us-east-1}}\nfilter: {{wasm_path: /f.wasm}}\nauth: {{mode: none}}\n{section}"
    );
    parse_with_env(
        "gateway.yaml",
        &text,
        Path::new("/"),
        &Overrides::default(),
        &|name| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        },
    )
}

const EXAMPLE: &str = "
quotas:
  failure_mode: open
  descriptors:
    - key: tenant
      rate_limit: {unit: minute, requests_per_unit: 60}
      descriptors:
        - key: model
          rate_limit: {unit: minute, requests_per_unit: 20}
        - key: tokens
          value: total
          rate_limit: {unit: month, requests_per_unit: 1000000}
    - key: tenant
      value: team-a
      rate_limit: {unit: minute, requests_per_unit: 600}
      descriptors:
        - key: tokens
          value: output
          rate_limit: {unit: minute, requests_per_unit: 100000}
";

#[test]
fn defaults_and_derived_shapes() {
    let config = load(EXAMPLE, &[]).unwrap();
    let settings = config.quotas.unwrap();
    assert_eq!(settings.domain, "bedrock-gateway");
    assert_eq!(settings.time_zone, chrono_tz::UTC);
    assert_eq!(settings.store, StoreSettings::Memory);
    assert_eq!(settings.ledger_max_rows_per_day, 10_000);
    let filter = config.filter.quota.clone().unwrap();
    assert_eq!(
        filter,
        QuotaConfig {
            cluster: "gateway_quota".into(),
            domain: "bedrock-gateway".into(),
            timeout_ms: 200,
            failure_mode: FailureMode::Open,
            transport: QuotaTransport::Stream,
            stream_max_age_seconds: 60,
            // Values are the service's business: the filter sends every shape that can match.
            request_descriptors: vec![
                vec![ContextKey::Tenant],
                vec![ContextKey::Tenant, ContextKey::Model]
            ],
            token_descriptors: vec![
                TokenDescriptor {
                    keys: vec![ContextKey::Tenant],
                    kind: TokenKind::Output
                },
                TokenDescriptor {
                    keys: vec![ContextKey::Tenant],
                    kind: TokenKind::Total
                },
            ],
            default_max_output_tokens: 4096,
            chars_per_token: 4,
            media_bytes_per_token: 32,
            report_buffer: 10_000,
            prices: None,
        }
    );
    // And the filter's JSON is still valid for the filter.
    let json = serde_json::to_vec(&config.filter).unwrap();
    assert!(gateway_common::filter_config::FilterConfig::from_json(&json).is_ok());
}

#[test]
fn without_the_section_there_are_no_quotas() {
    let config = load("", &[]).unwrap();
    assert_eq!(config.quotas, None);
    assert_eq!(config.filter.quota, None);
    let json = serde_json::to_string(&config.filter).unwrap();
    assert!(!json.contains("quota"), "{json}");
}

#[test]
fn every_key_set() {
    let section = "
quotas:
  domain: gateway-eu
  failure_mode: closed
  timeout_ms: 150
  transport: unary
  stream_max_age_seconds: 600
  time_zone: Europe/Berlin
  store: {type: redis, url: 'rediss://cache.internal:6380/2', password_env: REDIS_PASSWORD, key_prefix: 'eu:'}
  default_max_output_tokens: 1024
  chars_per_token: 3
  media_bytes_per_token: 64
  report_buffer: 500
  ledger_max_rows_per_day: 250
  descriptors:
    - key: tier
      value: 2
      rate_limit: {unit: day, requests_per_unit: 10, name: tier-two}
      shadow_mode: true
    - key: tokens
      value: input
      rate_limit: {unit: year, requests_per_unit: 9007199254740991}
";
    let config = load(section, &[("REDIS_PASSWORD", "s3cret-pass")]).unwrap();
    let settings = config.quotas.unwrap();
    assert_eq!(settings.domain, "gateway-eu");
    assert_eq!(settings.time_zone, Europe::Berlin);
    assert_eq!(settings.ledger_max_rows_per_day, 250);
    let StoreSettings::Redis(redis) = &settings.store else {
        panic!("redis store");
    };
    assert_eq!(redis.display_url, "rediss://cache.internal:6380/2");
    assert_eq!(redis.key_prefix, "eu:");
    assert_eq!(
        redis.password.as_ref().map(Secret::expose),
        Some("s3cret-pass")
    );
    assert!(!format!("{settings:?}").contains("s3cret"));
    let Some(Limit::Rate(tier)) = settings.descriptors.find(&[("tier", "2")]) else {
        panic!("a number as value is its text");
    };
    assert!(tier.shadow_mode);
    assert_eq!(tier.name.as_deref(), Some("tier-two"));
    let filter = config.filter.quota.unwrap();
    assert_eq!(
        (
            filter.failure_mode,
            filter.timeout_ms,
            filter.transport,
            filter.stream_max_age_seconds,
            filter.domain.as_str()
        ),
        (
            FailureMode::Closed,
            150,
            QuotaTransport::Unary,
            600,
            "gateway-eu"
        )
    );
    assert_eq!(
        (
            filter.default_max_output_tokens,
            filter.chars_per_token,
            filter.media_bytes_per_token,
            filter.report_buffer
        ),
        (1024, 3, 64, 500)
    );
    assert_eq!(filter.request_descriptors, vec![vec![ContextKey::Tier]]);
    assert_eq!(
        filter.token_descriptors,
        vec![TokenDescriptor {
            keys: vec![],
            kind: TokenKind::Input
        }]
    );
}

#[test]
fn a_password_in_the_url_is_never_shown() {
    let section = "
quotas:
  failure_mode: open
  store: {type: redis, url: 'redis://user:p%40ss@127.0.0.1:6379'}
  descriptors: [{key: tenant, rate_limit: {unit: second, requests_per_unit: 1}}]
";
    let settings = load(section, &[]).unwrap().quotas.unwrap();
    let StoreSettings::Redis(redis) = &settings.store else {
        panic!("redis store");
    };
    assert_eq!(redis.display_url, "redis://user@127.0.0.1:6379");
    assert_eq!(redis.url.expose(), "redis://user:p%40ss@127.0.0.1:6379");
    assert!(!format!("{settings:?}").contains("p%40ss"));

    // Nor in an error about it.
    let error = load(&section.replace("redis://user", "http://user"), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "gateway.yaml: quotas.store.url: expected a redis:// or rediss:// URL such as redis://127.0.0.1:6379/0, found \"http://user@127.0.0.1:6379/\""
    );
}

#[test]
fn model_values_are_read_as_model_keys() {
    let section = "
quotas:
  failure_mode: open
  descriptors:
    - key: model
      value: us.anthropic.claude-3-haiku-20240307-v1:0
      rate_limit: {unit: minute, requests_per_unit: 10}
    - key: model
      value: arn:aws:bedrock:eu-west-1::foundation-model/Amazon.Titan-Text-Express-v1
      rate_limit: {unit: minute, requests_per_unit: 20}
    - key: model
      rate_limit: {unit: minute, requests_per_unit: 30}
    - key: tenant
      value: US.Team
      rate_limit: {unit: minute, requests_per_unit: 40}
";
    let settings = load(section, &[]).unwrap().quotas.unwrap();
    let per_minute = |entries: &[(&str, &str)]| match settings.descriptors.find(entries) {
        Some(Limit::Rate(limit)) => limit.requests_per_unit,
        other => panic!("{entries:?}: {other:?}"),
    };
    assert_eq!(
        per_minute(&[("model", "anthropic.claude-3-haiku-20240307-v1:0")]),
        10
    );
    assert_eq!(per_minute(&[("model", "amazon.titan-text-express-v1")]), 20);
    // The tree holds keys: a spelling that is not one (the filter never sends it) is another
    // value.
    assert_eq!(
        per_minute(&[("model", "us.anthropic.claude-3-haiku-20240307-v1:0")]),
        30
    );
    // Only model values are read so.
    assert_eq!(per_minute(&[("tenant", "US.Team")]), 40);
    assert_eq!(settings.descriptors.find(&[("tenant", "us.team")]), None);
}

#[test]
fn two_spellings_of_one_model_are_one_sibling() {
    let section = "
quotas:
  failure_mode: open
  descriptors:
    - key: model
      value: Anthropic.Claude-3-Haiku-20240307-v1:0
      rate_limit: {unit: minute, requests_per_unit: 10}
    - key: model
      value: arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0
      rate_limit: {unit: minute, requests_per_unit: 20}
";
    assert_eq!(
        load(section, &[]).unwrap_err().to_string(),
        "gateway.yaml: quotas.descriptors[1]: expected a key and value that no sibling has \
         (quotas.descriptors[0] has them), found key \"model\" with value \
         \"arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0\" \
         (model key \"anthropic.claude-3-haiku-20240307-v1:0\") again"
    );
}

#[test]
fn prices_become_exact_nano_dollars_per_token() {
    let section = "
quotas:
  failure_mode: closed
  prices:
    models:
      - {model: 'Amazon.Nova-Micro*', input: 0.035, output: 0.14}
      - {model: 'anthropic.claude-3-haiku*', input: 0.25, output: 1.25, cache_read: 0.03, cache_write: 0.3}
    unpriced: {input: 3, output: 15}
  descriptors:
    - key: tenant
      descriptors:
        - key: tokens
          value: cost
          rate_limit: {unit: month, requests_per_unit: 500000000}
";
    let config = load(section, &[]).unwrap();
    let quota = config.filter.quota.unwrap();
    let prices = quota.prices.unwrap();
    let nano = |input, output, cache_read, cache_write| TokenPrices {
        input,
        output,
        cache_read,
        cache_write,
    };
    assert_eq!(prices.models[0].model, "amazon.nova-micro*");
    assert_eq!(prices.models[0].nano_usd_per_token, nano(35, 140, 35, 35));
    assert_eq!(
        prices.models[1].nano_usd_per_token,
        nano(250, 1250, 30, 300)
    );
    assert_eq!(prices.unpriced, Some(nano(3000, 15000, 3000, 3000)));
    assert_eq!(
        quota.token_descriptors,
        vec![TokenDescriptor {
            keys: vec![ContextKey::Tenant],
            kind: TokenKind::Cost
        }]
    );
    // Per thousand tokens, six decimals; `refuse` is the default for unpriced models.
    let section = "
quotas:
  failure_mode: closed
  prices:
    per_tokens: 1000
    unpriced: refuse
    models: [{model: 'meta.llama3-8b*', input: 0.000305, output: 0.0006}]
  descriptors:
    - key: tenant
      rate_limit: {unit: minute, requests_per_unit: 10}
";
    let prices = load(section, &[])
        .unwrap()
        .filter
        .quota
        .unwrap()
        .prices
        .unwrap();
    assert_eq!(
        prices.models[0].nano_usd_per_token,
        nano(305, 600, 305, 305)
    );
    assert_eq!(prices.unpriced, None);
}

/// [`EXAMPLE`] with `allowances` (a YAML flow mapping) in its `quotas`.
fn with_allowances(allowances: &str) -> String {
    EXAMPLE.replace(
        "failure_mode: open",
        &format!("failure_mode: open\n  allowances: {allowances}"),
    )
}

#[test]
fn allowances_are_off_unless_configured() {
    let settings = load(EXAMPLE, &[]).unwrap().quotas.unwrap();
    assert_eq!(settings.allowances, None);
    let allowances = |section: &str| {
        load(&with_allowances(section), &[])
            .unwrap()
            .quotas
            .unwrap()
            .allowances
            .map(|a| (a.share_ppm, a.lifetime_ms))
    };
    // An empty section takes the defaults.
    assert_eq!(allowances("{}"), Some((62_500, 1000)));
    assert_eq!(
        allowances("{share: 0.5, lifetime_ms: 60000}"),
        Some((500_000, 60_000))
    );
    assert_eq!(
        allowances("{share: 0.000001, lifetime_ms: 10}"),
        Some((1, 10))
    );
    assert_eq!(allowances("{share: 0.1}"), Some((100_000, 1000)));
    // A server-side setting: the filter's configuration is the same with or without it.
    assert_eq!(
        load(&with_allowances("{}"), &[]).unwrap().filter.quota,
        load(EXAMPLE, &[]).unwrap().filter.quota
    );
}

#[test]
fn allowance_values_out_of_range_are_rejected() {
    let error = |section: &str| {
        load(&with_allowances(section), &[])
            .unwrap_err()
            .to_string()
    };
    let share = |found: &str| {
        format!(
            "gateway.yaml: quotas.allowances.share: expected a fraction of what remains of a limit, above 0 and at most 0.5, with at most 6 decimals (such as 0.0625), found {found}"
        )
    };
    for (written, found) in [
        ("0", "0"),
        ("0.6", "0.6"),
        ("-0.0625", "-0.0625"),
        ("0.0000001", "0.0000001"),
        ("0.1234567", "0.1234567"),
        (".nan", "NaN"),
        (".inf", "inf"),
    ] {
        assert_eq!(
            error(&format!("{{share: {written}}}")),
            share(found),
            "{written}"
        );
    }
    let lifetime = |found: &str| {
        format!(
            "gateway.yaml: quotas.allowances.lifetime_ms: expected a number of milliseconds from 10 to 60000, found {found}"
        )
    };
    for found in ["0", "9", "60001", "4294967306"] {
        assert_eq!(
            error(&format!("{{lifetime_ms: {found}}}")),
            lifetime(found),
            "{found}"
        );
    }
    assert!(
        error("{share: 0.1, lifetime: 100}").contains("unknown field `lifetime`"),
        "{}",
        error("{share: 0.1, lifetime: 100}")
    );
    // Only decision streams carry grants.
    let unary = with_allowances("{}").replace(
        "failure_mode: open",
        "failure_mode: open\n  transport: unary",
    );
    assert_eq!(
        load(&unary, &[]).unwrap_err().to_string(),
        "gateway.yaml: quotas.allowances: expected no value with transport unary (allowances are granted on decision streams only: transport stream)"
    );
}
