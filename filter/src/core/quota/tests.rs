use super::*;
use gateway_common::quota_config::{FailureMode, TokenDescriptor};
use gateway_common::ratelimit::{DescriptorStatus, Duration, RateLimit};

fn config() -> QuotaConfig {
    QuotaConfig {
        cluster: "gateway_control".into(),
        domain: "bedrock-gateway".into(),
        timeout_ms: 200,
        failure_mode: FailureMode::Open,
        transport: Default::default(),
        stream_max_age_seconds: 60,
        request_descriptors: vec![
            vec![ContextKey::Tenant],
            vec![ContextKey::Tenant, ContextKey::Model],
        ],
        token_descriptors: vec![
            TokenDescriptor {
                keys: vec![ContextKey::Tenant],
                kind: TokenKind::Total,
            },
            TokenDescriptor {
                keys: vec![ContextKey::Tenant, ContextKey::Model],
                kind: TokenKind::Output,
            },
        ],
        default_max_output_tokens: 100,
        chars_per_token: 4,
        media_bytes_per_token: 32,
        report_buffer: 10,
        prices: None,
    }
}

fn context(model: Option<&str>) -> Context {
    Context {
        tenant: Some("team-a".into()),
        service: "bedrock-runtime".into(),
        operation: "Converse".into(),
        model: model.map(str::to_string),
        ..Context::default()
    }
}

fn entries(descriptor: &RateLimitDescriptor) -> Vec<(String, String)> {
    descriptor
        .entries
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

#[test]
fn admission_descriptors_and_reservations() {
    let admission = admission(
        &config(),
        &context(Some("m1")),
        Estimate {
            input: 10,
            output: 30,
        },
    )
    .unwrap();
    assert_eq!(admission.request.domain, "bedrock-gateway");
    let got: Vec<(Vec<(String, String)>, u64)> = admission
        .request
        .descriptors
        .iter()
        .map(|d| (entries(d), d.hits_addend.map(|h| h.value).unwrap()))
        .collect();
    let e = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        got,
        vec![
            (e(&[("tenant", "team-a")]), 1),
            (e(&[("tenant", "team-a"), ("model", "m1")]), 1),
            (e(&[("tenant", "team-a"), ("tokens", "total")]), 40),
            (
                e(&[("tenant", "team-a"), ("model", "m1"), ("tokens", "output")]),
                30
            ),
        ]
    );
    assert_eq!(
        admission
            .reservations
            .iter()
            .map(|r| (r.kind, r.reserved))
            .collect::<Vec<_>>(),
        [
            (None, 1),
            (None, 1),
            (Some(TokenKind::Total), 40),
            (Some(TokenKind::Output), 30)
        ]
    );
}

#[test]
fn descriptors_needing_a_missing_value_are_skipped() {
    let admission = admission(&config(), &context(None), Estimate::default()).unwrap();
    assert_eq!(
        admission.request.descriptors.len(),
        2,
        "no model: the model descriptors are left out"
    );
    let mut anonymous = context(Some("m"));
    anonymous.tenant = None;
    assert!(super::admission(&config(), &anonymous, Estimate::default()).is_none());
}

#[test]
fn verdicts() {
    let ok = RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![],
        dynamic_metadata: None,
    };
    assert!(verdict(&ok).is_ok());
    let over = RateLimitResponse {
        overall_code: Code::OverLimit as i32,
        statuses: vec![
            DescriptorStatus {
                code: Code::Ok as i32,
                current_limit: None,
                limit_remaining: 5,
                duration_until_reset: None,
            },
            DescriptorStatus {
                code: Code::OverLimit as i32,
                current_limit: Some(RateLimit {
                    requests_per_unit: 60,
                    unit: 2,
                    name: String::new(),
                }),
                limit_remaining: 0,
                duration_until_reset: Some(Duration {
                    seconds: 41,
                    nanos: 500,
                }),
            },
        ],
        dynamic_metadata: None,
    };
    let reply = verdict(&over).unwrap_err();
    assert_eq!((reply.status, reply.code), (429, "ThrottlingException"));
    let headers = reply.headers(None);
    for expected in [
        ("retry-after", "42"),
        ("x-ratelimit-limit", "60"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "42"),
    ] {
        assert!(headers.contains(&expected), "{expected:?} in {headers:?}");
    }
}

fn windows(list: &[Option<&str>]) -> RateLimitResponse {
    use prost_types::value::Kind;
    let values = list
        .iter()
        .map(|w| prost_types::Value {
            kind: Some(match w {
                Some(w) => Kind::StringValue(w.to_string()),
                None => Kind::NullValue(0),
            }),
        })
        .collect();
    let fields = [(
        gateway_common::ratelimit::WINDOWS_KEY.to_string(),
        prost_types::Value {
            kind: Some(Kind::ListValue(prost_types::ListValue { values })),
        },
    )];
    RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![],
        dynamic_metadata: Some(prost_types::Struct {
            fields: fields.into_iter().collect(),
        }),
    }
}

#[test]
fn settlement_gives_back_or_charges_the_difference_in_the_charged_window() {
    let mut admission = admission(
        &config(),
        &context(Some("m1")),
        Estimate {
            input: 10,
            output: 30,
        },
    )
    .unwrap();
    charged(
        &mut admission.reservations,
        &windows(&[Some("minute/60"), Some("minute/60"), Some("month/0"), None]),
    );
    let adjustments = settle(
        &admission.reservations,
        Ending::Forwarded(Some(Usage {
            input: 12,
            output: 5,
            ..Default::default()
        })),
        None,
    );
    assert_eq!(
        adjustments
            .iter()
            .map(|a| (a.delta, a.window.as_str()))
            .collect::<Vec<_>>(),
        [(17 - 40, "month/0"), (5 - 30, "")]
    );
    assert_eq!(
        adjustments[0]
            .entries
            .last()
            .map(|e| (e.key.as_str(), e.value.as_str())),
        Some(("tokens", "total"))
    );
    assert!(
        settle(&admission.reservations, Ending::Forwarded(None), None).is_empty(),
        "unknown usage: the reservation stands"
    );
    assert!(
        settle(
            &admission.reservations,
            Ending::Forwarded(Some(Usage {
                input: 10,
                output: 30,
                ..Default::default()
            })),
            None
        )
        .is_empty(),
        "exact estimate"
    );
    let record = record(
        &context(Some("m1")),
        1_800_000_000,
        Some(Usage {
            input: 12,
            output: 5,
            ..Default::default()
        }),
        adjustments,
        Outcome::Forwarded,
        Timing::default(),
    );
    assert_eq!(
        (
            record.tenant.as_str(),
            record.model.as_str(),
            record.input_tokens,
            record.output_tokens,
            record.refused,
            record.refused_by_gateway
        ),
        ("team-a", "m1", 12, 5, false, false)
    );
}

#[test]
fn a_request_refused_by_the_gateway_gives_every_charge_back() {
    let mut admission = admission(
        &config(),
        &context(Some("m1")),
        Estimate {
            input: 10,
            output: 30,
        },
    )
    .unwrap();
    charged(
        &mut admission.reservations,
        &windows(&[
            Some("minute/60"),
            Some("minute/60"),
            Some("month/0"),
            Some("minute/60"),
        ]),
    );
    let adjustments = settle(&admission.reservations, Ending::RefusedByGateway, None);
    assert_eq!(
        adjustments.iter().map(|a| a.delta).collect::<Vec<_>>(),
        [-1, -1, -40, -30]
    );
    assert!(adjustments.iter().all(|a| !a.window.is_empty()));
    let record = record(
        &context(Some("m1")),
        1,
        None,
        adjustments,
        Outcome::RefusedByGateway,
        Timing::default(),
    );
    assert!(record.refused_by_gateway && !record.refused);
    assert_eq!((record.input_tokens, record.output_tokens), (0, 0));
}

#[test]
fn huge_estimates_saturate() {
    let admission = admission(
        &config(),
        &context(Some("m1")),
        Estimate {
            input: u64::MAX,
            output: u64::MAX,
        },
    )
    .unwrap();
    assert!(
        admission
            .reservations
            .iter()
            .all(|r| r.reserved <= MAX_TOKENS)
    );
    let adjustments = settle(
        &admission.reservations,
        Ending::Forwarded(Some(Usage {
            input: u64::MAX,
            output: 0,
            ..Default::default()
        })),
        None,
    );
    assert!(
        adjustments
            .iter()
            .all(|a| a.delta > -(1 << 54) && a.delta < (1 << 54))
    );
}

#[test]
fn cache_kinds_reserve_the_whole_prompt_and_settle_to_what_was_billed() {
    let mut config = config();
    config.request_descriptors.clear();
    config.token_descriptors = TokenKind::ALL
        .into_iter()
        .filter(|kind| *kind != TokenKind::Cost)
        .map(|kind| TokenDescriptor {
            keys: vec![ContextKey::Tenant],
            kind,
        })
        .collect();
    let admission = admission(
        &config,
        &context(Some("m1")),
        Estimate {
            input: 2000,
            output: 100,
        },
    )
    .unwrap();
    let reserved: Vec<_> = admission
        .reservations
        .iter()
        .map(|r| (r.entries.last().unwrap().value.as_str(), r.reserved))
        .collect();
    assert_eq!(
        reserved,
        [
            ("total", 2100),
            ("input", 2000),
            ("output", 100),
            ("cache_read", 2000),
            ("cache_write", 2000)
        ]
    );
    let usage = Usage {
        input: 40,
        output: 60,
        cache_read: 1500,
        cache_write: 200,
    };
    let deltas: Vec<_> = settle(
        &admission.reservations,
        Ending::Forwarded(Some(usage)),
        None,
    )
    .into_iter()
    .map(|a| (a.entries.last().unwrap().value.clone(), a.delta))
    .collect();
    assert_eq!(
        deltas,
        [
            ("total".to_string(), 1800 - 2100),
            ("input".to_string(), 40 - 2000),
            ("output".to_string(), 60 - 100),
            ("cache_read".to_string(), 1500 - 2000),
            ("cache_write".to_string(), 200 - 2000)
        ]
    );
    let record = record(
        &context(Some("m1")),
        1_800_000_000,
        Some(usage),
        Vec::new(),
        Outcome::Forwarded,
        Timing::default(),
    );
    assert_eq!(
        (
            record.input_tokens,
            record.output_tokens,
            record.cache_read_input_tokens,
            record.cache_write_input_tokens
        ),
        (40, 60, 1500, 200)
    );
}

#[test]
fn cost_reserves_the_dearest_prompt_and_settles_to_the_billed_cost() {
    use gateway_common::quota_config::{ModelPrices, Prices};
    let haiku = TokenPrices {
        input: 250,
        output: 1250,
        cache_read: 25,
        cache_write: 300,
    };
    let prices = Prices {
        models: vec![ModelPrices {
            model: "anthropic.claude-3-haiku*".into(),
            nano_usd_per_token: haiku,
        }],
        unpriced: None,
    };
    assert_eq!(
        prices.of(Some("anthropic.claude-3-haiku-20240307-v1:0")),
        Some(haiku)
    );
    assert_eq!(prices.of(Some("amazon.nova-pro-v1:0")), None, "unpriced");
    assert_eq!(
        prices.of(None),
        Some(TokenPrices::default()),
        "no model, no tokens"
    );
    let mut config = config();
    config.request_descriptors.clear();
    config.token_descriptors = vec![TokenDescriptor {
        keys: vec![ContextKey::Tenant],
        kind: TokenKind::Cost,
    }];
    config.prices = Some(prices);
    let mut context = context(Some("anthropic.claude-3-haiku-20240307-v1:0"));
    context.prices = Some(haiku);
    let admission = admission(
        &config,
        &context,
        Estimate {
            input: 1001,
            output: 7,
        },
    )
    .unwrap();
    // 1001 x 300 (cache write, the dearest prompt price) + 7 x 1250 = 309 050 nano: 310 micro.
    assert_eq!(admission.reservations[0].reserved, 310);
    assert_eq!(
        admission.request.descriptors[0]
            .entries
            .last()
            .map(|e| e.value.as_str()),
        Some("cost")
    );
    let usage = Usage {
        input: 3,
        output: 5,
        cache_read: 900,
        cache_write: 1,
    };
    // 3 x 250 + 5 x 1250 + 900 x 25 + 1 x 300 = 29 800 nano: 30 micro (rounded up).
    assert_eq!(cost_nano_usd(&usage, haiku), 29_800);
    let adjustments = settle(
        &admission.reservations,
        Ending::Forwarded(Some(usage)),
        context.prices,
    );
    assert_eq!(adjustments[0].delta, 30 - 310);
    let record = record(
        &context,
        1,
        Some(usage),
        adjustments,
        Outcome::Forwarded,
        Timing::default(),
    );
    assert_eq!(
        record.cost_nano_usd, 29_800,
        "the ledger gets the exact cost"
    );
}
