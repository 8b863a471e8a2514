//! The engine over the memory store with a hand-set clock: decisions, reloads, reports.

use envoy_types::pb::{
    envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
        service::ratelimit::v3::rate_limit_response::Code,
    },
    google::protobuf::UInt64Value,
};
use gateway_common::proto::{CounterAdjustment, DescriptorEntry};

use super::*;
use crate::quota::testing::{ManualClock, quotas};

/// 2026-02-10T12:00:00Z.
const T0: i64 = 1_770_724_800;

fn section(per_minute: u64) -> String {
    format!(
        "
quotas:
  failure_mode: open
  descriptors:
    - key: tenant
      rate_limit: {{unit: minute, requests_per_unit: {per_minute}}}
      descriptors:
        - key: tokens
          value: total
          rate_limit: {{unit: month, requests_per_unit: 1000}}
"
    )
}

fn engine(per_minute: u64) -> (Arc<ManualClock>, QuotaEngine) {
    let clock = ManualClock::at(T0);
    let engine = QuotaEngine::new(clock.clone());
    engine.apply(Some(&quotas(&section(per_minute)).0)).unwrap();
    (clock, engine)
}

fn descriptor(entries: &[(&str, &str)], hits: Option<u64>, negative: bool) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        hits_addend: hits.map(|value| UInt64Value { value }),
        is_negative_hits: negative,
        ..Default::default()
    }
}

/// The filter's request for tenant `a`: one hit, and `tokens` reserved.
fn filter_request(tokens: u64) -> RateLimitRequest {
    RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors: vec![
            descriptor(&[("tenant", "a")], Some(1), false),
            descriptor(&[("tenant", "a"), ("tokens", "total")], Some(tokens), false),
        ],
        hits_addend: 0,
    }
}

/// (overall code, per descriptor (code, remaining)).
async fn ask(engine: &QuotaEngine, request: &RateLimitRequest) -> (i32, Vec<(i32, u32)>) {
    let response = engine.should_rate_limit(request).await.unwrap();
    (
        response.overall_code,
        response
            .statuses
            .iter()
            .map(|s| (s.code, s.limit_remaining))
            .collect(),
    )
}

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

#[tokio::test]
async fn admission_is_all_or_nothing() {
    let (_, engine) = engine(3);
    assert_eq!(
        ask(&engine, &filter_request(600)).await,
        (OK, vec![(OK, 2), (OK, 400)])
    );
    // Too many tokens: refused, and the request counter is left alone.
    assert_eq!(
        ask(&engine, &filter_request(600)).await,
        (OVER, vec![(OK, 2), (OVER, 400)])
    );
    // A pre-check (0 tokens) passes while some are left.
    assert_eq!(
        ask(&engine, &filter_request(0)).await,
        (OK, vec![(OK, 1), (OK, 400)])
    );
    assert_eq!(
        ask(&engine, &filter_request(400)).await,
        (OK, vec![(OK, 0), (OK, 0)])
    );
    // Used up: even a pre-check is over; the tenant's requests too.
    assert_eq!(
        ask(&engine, &filter_request(0)).await,
        (OVER, vec![(OVER, 0), (OVER, 0)])
    );
    let metrics: std::collections::HashMap<&str, u64> = engine
        .metrics()
        .into_iter()
        .map(|(name, _, value)| (name, value))
        .collect();
    assert_eq!(metrics["quota_decisions_total"], 5);
    assert_eq!(metrics["quota_over_limit_total"], 2);
    assert_eq!(metrics["quota_shadow_over_limit_total"], 0);
}

#[tokio::test]
async fn windows_reset_and_refunds_give_back() {
    let (clock, engine) = engine(1);
    assert_eq!(ask(&engine, &filter_request(900)).await.0, OK);
    assert_eq!(ask(&engine, &filter_request(10)).await.0, OVER);
    // A new minute: the request limit resets, the monthly tokens do not.
    clock.set(T0 + 60);
    assert_eq!(
        ask(&engine, &filter_request(200)).await,
        (OVER, vec![(OK, 1), (OVER, 100)])
    );
    // Envoy's way of giving back: negative hits.
    let refund = RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors: vec![descriptor(
            &[("tenant", "a"), ("tokens", "total")],
            Some(300),
            true,
        )],
        hits_addend: 0,
    };
    assert_eq!(ask(&engine, &refund).await, (OK, vec![(OK, 400)]));
    assert_eq!(ask(&engine, &filter_request(200)).await.0, OK);
}

#[tokio::test]
async fn envoys_native_filter_uses_the_request_hits() {
    let (_, engine) = engine(5);
    let native = RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors: vec![descriptor(&[("tenant", "b")], None, false)],
        hits_addend: 3,
    };
    assert_eq!(ask(&engine, &native).await, (OK, vec![(OK, 2)]));
    assert_eq!(ask(&engine, &native).await, (OVER, vec![(OVER, 2)]));
    let unset = RateLimitRequest {
        hits_addend: 0,
        ..native
    };
    assert_eq!(ask(&engine, &unset).await, (OK, vec![(OK, 1)]));
}

#[tokio::test]
async fn reloads_keep_counters_unless_the_store_changes() {
    let (_, engine) = engine(2);
    assert_eq!(ask(&engine, &filter_request(100)).await.0, OK);
    assert_eq!(ask(&engine, &filter_request(100)).await.0, OK);
    assert_eq!(ask(&engine, &filter_request(100)).await.0, OVER);

    // A higher limit: the two requests already made still count.
    engine.apply(Some(&quotas(&section(3)).0)).unwrap();
    assert_eq!(
        ask(&engine, &filter_request(100)).await,
        (OK, vec![(OK, 0), (OK, 700)])
    );

    // Another store, and back: counting starts afresh.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let redis = section(3).replace(
        "failure_mode: open",
        &format!("failure_mode: open\n  store: {{type: redis, url: \"redis://127.0.0.1:{port}\"}}"),
    );
    engine.apply(Some(&quotas(&redis).0)).unwrap();
    assert_eq!(engine.report().unwrap().store, "redis");
    engine.apply(Some(&quotas(&section(3)).0)).unwrap();
    assert_eq!(
        ask(&engine, &filter_request(100)).await,
        (OK, vec![(OK, 2), (OK, 900)])
    );

    // Without quotas every domain is unknown.
    engine.apply(None).unwrap();
    let response = engine.should_rate_limit(&filter_request(1)).await.unwrap();
    assert_eq!((response.overall_code, response.statuses.len()), (OK, 0));
    assert_eq!(
        engine.report_usage(&[]).await,
        Err(QuotaError::NotConfigured)
    );
    assert_eq!(engine.report(), None);
}

#[tokio::test]
async fn a_failing_store_answers_unavailable_and_shows_unhealthy() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let clock = ManualClock::at(T0);
    let engine = QuotaEngine::new(clock);
    let redis = section(3).replace(
        "failure_mode: open",
        &format!(
            "failure_mode: open\n  store: {{type: redis, url: \"redis://:hunter2@127.0.0.1:{port}\"}}"
        ),
    );
    engine.apply(Some(&quotas(&redis).0)).unwrap();
    assert_eq!(engine.store_healthy(), Some(true));
    let error = engine
        .should_rate_limit(&filter_request(1))
        .await
        .unwrap_err();
    assert!(matches!(error, QuotaError::Store(_)), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("quota store unavailable: redis: admit: "),
        "{error}"
    );
    assert_eq!(engine.store_healthy(), Some(false));
    let report = engine.report().unwrap();
    assert!(!report.healthy);
    assert_eq!(
        report.redis_url.as_deref(),
        Some(format!("redis://127.0.0.1:{port}").as_str())
    );
    let shown = format!("{report:?} {error}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let store_errors = engine
        .metrics()
        .into_iter()
        .find(|m| m.0 == "quota_store_errors_total")
        .unwrap()
        .2;
    assert_eq!(store_errors, 1);
}

#[tokio::test]
async fn reports_settle_reservations_and_fill_the_ledger() {
    let (clock, engine) = engine(10);
    assert_eq!(ask(&engine, &filter_request(900)).await.0, OK);
    let record = UsageRecord {
        tenant: "a".into(),
        model: "m".into(),
        operation: "Converse".into(),
        service: "bedrock-runtime".into(),
        admitted_at_unix_seconds: T0,
        input_tokens: 120,
        output_tokens: 30,
        refused: false,
        refused_by_gateway: false,
        adjustments: vec![CounterAdjustment {
            entries: vec![
                DescriptorEntry {
                    key: "tenant".into(),
                    value: "a".into(),
                },
                DescriptorEntry {
                    key: "tokens".into(),
                    value: "total".into(),
                },
            ],
            // Used 150 of the 900 reserved.
            delta: -750,
            window: String::new(),
        }],
    };
    let refused = UsageRecord {
        refused: true,
        input_tokens: 0,
        output_tokens: 0,
        adjustments: vec![],
        ..record.clone()
    };
    clock.set(T0 + 5);
    engine
        .report_usage(&[record.clone(), refused])
        .await
        .unwrap();
    assert_eq!(
        ask(&engine, &filter_request(0)).await,
        (OK, vec![(OK, 8), (OK, 850)])
    );
    let query = UsageQuery::new("", "", "", engine.today()).unwrap();
    let rows = engine.usage(&query).await.unwrap();
    assert_eq!(
        rows,
        vec![UsageRow {
            day: "2026-02-10".into(),
            tenant: "a".into(),
            model: "m".into(),
            requests: 1,
            input_tokens: 120,
            output_tokens: 30,
            refusals: 1,
        }]
    );
    // A refund to last month's window, which has ended, is dropped.
    let old = UsageRecord {
        admitted_at_unix_seconds: T0 - 40 * 86_400,
        ..record
    };
    engine.report_usage(&[old]).await.unwrap();
    let metrics: std::collections::HashMap<&str, u64> = engine
        .metrics()
        .into_iter()
        .map(|(name, _, value)| (name, value))
        .collect();
    assert_eq!(metrics["quota_usage_records_total"], 3);
    assert_eq!(metrics["quota_refusals_reported_total"], 1);
    assert_eq!(metrics["quota_adjustments_total"], 1);
    assert_eq!(metrics["quota_adjustments_dropped_total"], 1);
}
