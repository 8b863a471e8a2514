use super::*;
use crate::quota::testing::{decision_time, descriptor, quotas};

const QUOTAS: &str = "
quotas:
  failure_mode: open
  descriptors:
    - key: tenant
      rate_limit: {unit: minute, requests_per_unit: 3, name: per-tenant}
      descriptors:
        - key: tokens
          value: total
          rate_limit: {unit: month, requests_per_unit: 1000}
    - key: tenant
      value: vip
      unlimited: true
    - key: tier
      value: trial
      shadow_mode: true
      rate_limit: {unit: hour, requests_per_unit: 1}
    - key: model
      rate_limit: {unit: second, requests_per_unit: 5000000000}
";

fn settings() -> QuotaSettings {
    quotas(QUOTAS).0
}

fn now() -> SystemTime {
    decision_time()
}

fn now_seconds() -> i64 {
    crate::util::unix_seconds(now())
}

fn request(descriptors: Vec<RateLimitDescriptor>, hits_addend: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors,
        hits_addend,
    }
}

/// The windows and decision time `response` carries, as the filter reads them.
fn metadata_of(response: &RateLimitResponse) -> (Vec<Option<String>>, Option<i64>) {
    use prost::Message as _;
    let read =
        gateway_common::ratelimit::RateLimitResponse::decode(response.encode_to_vec().as_slice())
            .unwrap();
    (read.windows(), read.decided_at())
}

#[test]
fn hits_addend_rules() {
    let cases = [
        // (descriptor's own, request's, hits)
        (None, 0, 1),
        (None, 1, 1),
        (None, 5, 5),
        (Some(0), 5, 0),
        (Some(7), 0, 7),
        (Some(7), 3, 7),
        (Some(u64::MAX), 0, MAX_COUNT),
    ];
    for (own, request_hits, expected) in cases {
        assert_eq!(
            descriptor_hits(&descriptor(&[], own, false), request_hits),
            expected,
            "{own:?} / {request_hits}"
        );
    }
}

#[test]
fn other_domains_are_not_planned() {
    let mut other = request(vec![descriptor(&[("tenant", "a")], None, false)], 0);
    other.domain = "someone-else".into();
    assert_eq!(plan(&settings(), &other, now_seconds()), None);
    let answer = unknown_domain(&other, now());
    assert_eq!(answer.overall_code, Code::Ok as i32);
    assert!(answer.statuses.is_empty());
    // Nothing was counted for its descriptor.
    assert_eq!(metadata_of(&answer), (vec![None], Some(now_seconds())));
}

#[test]
fn plans_charges_and_refunds_per_matching_descriptor() {
    let planned = plan(
        &settings(),
        &request(
            vec![
                descriptor(&[("tenant", "a")], None, false),
                descriptor(&[("tenant", "vip")], None, false),
                descriptor(&[("tenant", "a"), ("tokens", "total")], Some(250), false),
                descriptor(&[("region", "x")], None, false),
                descriptor(&[("tier", "trial")], Some(0), false),
                descriptor(&[("tenant", "a"), ("tokens", "total")], Some(40), true),
            ],
            2,
        ),
        now_seconds(),
    )
    .unwrap();
    let minute_end = now_seconds() + 30;
    let month_start = 1_769_904_000; // 2026-02-01T00:00:00Z
    let month_end = 1_772_323_200; // 2026-03-01T00:00:00Z
    assert_eq!(
        planned.charges,
        vec![
            Charge {
                key: format!(
                    "bedrock-gateway:bedrock-gateway|tenant=a|minute|{}",
                    minute_end - 60
                ),
                hits: 2,
                limit: Some(3),
                expire_at: minute_end,
            },
            Charge {
                key: format!(
                    "bedrock-gateway:bedrock-gateway|tenant=a|tokens=total|month|{month_start}"
                ),
                hits: 250,
                limit: Some(1000),
                expire_at: month_end,
            },
            Charge {
                key: format!(
                    "bedrock-gateway:bedrock-gateway|tier=trial|hour|{}",
                    now_seconds() - 30
                ),
                hits: 0,
                // Shadow mode: counted, never refuses.
                limit: None,
                expire_at: now_seconds() + 3570,
            },
        ]
    );
    assert_eq!(
        planned.refunds,
        vec![Adjustment {
            key: format!(
                "bedrock-gateway:bedrock-gateway|tenant=a|tokens=total|month|{month_start}"
            ),
            delta: -40,
            expire_at: month_end,
        }]
    );
}

#[test]
fn an_admitted_request_reports_every_limit() {
    let planned = plan(
        &settings(),
        &request(
            vec![
                descriptor(&[("tenant", "a")], None, false),
                descriptor(&[("tenant", "vip")], None, false),
                descriptor(&[("region", "x")], None, false),
                descriptor(&[("model", "m")], None, false),
            ],
            0,
        ),
        now_seconds(),
    )
    .unwrap();
    let admission = Admission {
        admitted: true,
        counts: vec![1, 1],
    };
    let decision = decide(&planned, &admission, &[], now());
    assert!(!decision.over_limit);
    let response = decision.response;
    assert_eq!(response.overall_code, Code::Ok as i32);
    assert_eq!(response.statuses.len(), 4);
    let tenant = &response.statuses[0];
    assert_eq!(tenant.code, Code::Ok as i32);
    assert_eq!(
        tenant.current_limit,
        Some(LimitProto {
            name: "per-tenant".into(),
            requests_per_unit: 3,
            unit: 2,
        })
    );
    assert_eq!(tenant.limit_remaining, 2);
    assert_eq!(
        tenant.duration_until_reset,
        Some(DurationProto {
            seconds: 29,
            nanos: 750_000_000
        })
    );
    let unlimited = &response.statuses[1];
    assert_eq!(
        (
            unlimited.code,
            unlimited.limit_remaining,
            &unlimited.current_limit
        ),
        (Code::Ok as i32, u32::MAX, &None)
    );
    let unmatched = &response.statuses[2];
    assert_eq!(
        (
            unmatched.code,
            unmatched.limit_remaining,
            unmatched.duration_until_reset
        ),
        (Code::Ok as i32, 0, None)
    );
    let huge = &response.statuses[3];
    assert_eq!(
        huge.current_limit
            .as_ref()
            .map(|l| (l.requests_per_unit, l.unit)),
        Some((u32::MAX, 1)),
        "limits beyond u32 saturate"
    );
    assert_eq!(huge.limit_remaining, u32::MAX);
    // The windows counted in, by descriptor; nothing for the unlimited and the unmatched one.
    assert_eq!(
        metadata_of(&response),
        (
            vec![
                Some(format!("minute/{}", now_seconds() - 30)),
                None,
                None,
                Some(format!("second/{}", now_seconds())),
            ],
            Some(now_seconds())
        )
    );
}

#[test]
fn a_refused_request_names_the_descriptors_over_their_limit() {
    let planned = plan(
        &settings(),
        &request(
            vec![
                descriptor(&[("tenant", "a")], None, false),
                descriptor(&[("tenant", "a"), ("tokens", "total")], Some(300), false),
            ],
            0,
        ),
        now_seconds(),
    )
    .unwrap();
    // Counts before: one request left, but only 200 tokens.
    let admission = Admission {
        admitted: false,
        counts: vec![2, 800],
    };
    let decision = decide(&planned, &admission, &[], now());
    assert!(decision.over_limit);
    let response = decision.response;
    assert_eq!(response.overall_code, Code::OverLimit as i32);
    let codes: Vec<i32> = response.statuses.iter().map(|s| s.code).collect();
    assert_eq!(codes, [Code::Ok as i32, Code::OverLimit as i32]);
    let remaining: Vec<u32> = response
        .statuses
        .iter()
        .map(|s| s.limit_remaining)
        .collect();
    assert_eq!(remaining, [1, 200]);
    let tokens = &response.statuses[1];
    assert_eq!(
        tokens
            .current_limit
            .as_ref()
            .map(|l| (l.requests_per_unit, l.unit)),
        Some((1000, 5))
    );
    // Until 2026-03-01T00:00:00Z.
    assert_eq!(
        tokens.duration_until_reset.map(|d| d.seconds),
        Some(1_772_323_200 - now_seconds() - 1)
    );
    // Refused, the windows are named all the same.
    assert_eq!(
        metadata_of(&response).0,
        [
            Some(format!("minute/{}", now_seconds() - 30)),
            Some("month/1769904000".to_string())
        ]
    );
}

#[test]
fn shadow_limits_never_refuse_but_are_counted_as_exceeded() {
    let planned = plan(
        &settings(),
        &request(vec![descriptor(&[("tier", "trial")], None, false)], 0),
        now_seconds(),
    )
    .unwrap();
    let admission = Admission {
        admitted: true,
        counts: vec![2],
    };
    let decision = decide(&planned, &admission, &[], now());
    assert!(!decision.over_limit);
    assert_eq!(decision.shadow_over_limit, 1);
    let status = &decision.response.statuses[0];
    assert_eq!((status.code, status.limit_remaining), (Code::Ok as i32, 0));
}

#[test]
fn refunds_answer_ok_with_what_is_left() {
    let planned = plan(
        &settings(),
        &request(
            vec![
                descriptor(&[("tenant", "a"), ("tokens", "total")], Some(100), true),
                descriptor(&[("tenant", "b"), ("tokens", "total")], Some(100), true),
                descriptor(&[("tenant", "c"), ("tokens", "total")], Some(0), true),
            ],
            0,
        ),
        now_seconds(),
    )
    .unwrap();
    assert!(planned.charges.is_empty());
    assert_eq!(
        planned.refunds.len(),
        2,
        "a refund of 0 needs no store call"
    );
    let admission = Admission {
        admitted: true,
        counts: vec![],
    };
    // `a` had 700 and now has 600; `b`'s window is gone.
    let decision = decide(&planned, &admission, &[Some(600), None], now());
    let remaining: Vec<u32> = decision
        .response
        .statuses
        .iter()
        .map(|s| s.limit_remaining)
        .collect();
    assert_eq!(remaining, [400, 1000, 1000]);
    assert_eq!(
        metadata_of(&decision.response).0,
        vec![Some("month/1769904000".to_string()); 3]
    );
    assert!(
        decision
            .response
            .statuses
            .iter()
            .all(|s| s.code == Code::Ok as i32)
    );
}

#[test]
fn model_values_are_counted_under_their_model_key() {
    let planned = plan(
        &settings(),
        &request(
            vec![
                descriptor(
                    &[("model", "US.Anthropic.Claude-3-Haiku-20240307-v1:0")],
                    None,
                    false,
                ),
                descriptor(
                    &[(
                        "model",
                        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
                    )],
                    None,
                    false,
                ),
            ],
            0,
        ),
        now_seconds(),
    )
    .unwrap();
    let key = format!(
        "bedrock-gateway:bedrock-gateway|model=anthropic.claude-3-haiku-20240307-v1:0|second|{}",
        now_seconds()
    );
    assert_eq!(
        planned
            .charges
            .iter()
            .map(|c| c.key.as_str())
            .collect::<Vec<_>>(),
        [key.as_str(), key.as_str()]
    );
}

#[test]
fn metadata_has_a_null_for_each_descriptor_nothing_was_counted_for() {
    let at = UNIX_EPOCH + Duration::from_millis(1_800_000_000_900);
    let metadata = metadata(vec![Some("hour/1799996400".into()), None], at);
    let response = RateLimitResponse {
        dynamic_metadata: Some(metadata.clone()),
        ..Default::default()
    };
    assert_eq!(
        metadata_of(&response),
        (
            vec![Some("hour/1799996400".into()), None],
            Some(1_800_000_000)
        )
    );
    assert_eq!(
        metadata.fields[WINDOWS_KEY].kind,
        Some(Kind::ListValue(ListValue {
            values: vec![
                Value {
                    kind: Some(Kind::StringValue("hour/1799996400".into()))
                },
                Value {
                    kind: Some(Kind::NullValue(0))
                },
            ]
        }))
    );
    assert_eq!(
        metadata.fields[DECIDED_AT_KEY].kind,
        Some(Kind::NumberValue(1_800_000_000.0))
    );
}
