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
    assert_eq!(metrics["quota_decisions"], 5);
    assert_eq!(metrics["quota_over_limit"], 2);
    assert_eq!(metrics["quota_shadow_over_limit"], 0);
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
        engine.report_usage("", &[]).await,
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
        .find(|m| m.0 == "quota_store_errors")
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
        cache_read_input_tokens: 700,
        cache_write_input_tokens: 80,
        cost_nano_usd: 123_456_789_012,
        duration_us: 0,
        time_to_first_output_us: 0,
        status_code: 200,
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
        .report_usage("", &[record.clone(), refused])
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
            gateway_refusals: 0,
            cache_read_tokens: 700,
            cache_write_tokens: 80,
            cost_nano_usd: 123_456_789_012,
            cost_usd: "123.456789012".into(),
        }]
    );
    // A refund to last month's window, which has ended, is dropped.
    let old = UsageRecord {
        admitted_at_unix_seconds: T0 - 40 * 86_400,
        ..record
    };
    engine.report_usage("", &[old]).await.unwrap();
    let metrics: std::collections::HashMap<&str, u64> = engine
        .metrics()
        .into_iter()
        .map(|(name, _, value)| (name, value))
        .collect();
    assert_eq!(metrics["quota_usage_records"], 3);
    assert_eq!(metrics["quota_refusals_reported"], 1);
    assert_eq!(metrics["quota_adjustments"], 1);
    assert_eq!(metrics["quota_adjustments_dropped"], 1);
}

/// The windows a decision named, as the filter reads them.
fn windows_of(response: &RateLimitResponse) -> Vec<Option<String>> {
    use prost::Message as _;
    gateway_common::ratelimit::RateLimitResponse::decode(response.encode_to_vec().as_slice())
        .unwrap()
        .windows()
}

fn metrics(engine: &QuotaEngine) -> std::collections::HashMap<&'static str, u64> {
    engine
        .metrics()
        .into_iter()
        .map(|(name, _, value)| (name, value))
        .collect()
}

fn give_back(pairs: &[(&str, &str)], delta: i64, window: Option<String>) -> CounterAdjustment {
    CounterAdjustment {
        entries: pairs
            .iter()
            .map(|(key, value)| DescriptorEntry {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        delta,
        window: window.unwrap_or_default(),
    }
}

fn used(tenant: &str, model: &str, at: i64, adjustments: Vec<CounterAdjustment>) -> UsageRecord {
    UsageRecord {
        tenant: tenant.into(),
        model: model.into(),
        operation: "Converse".into(),
        service: "bedrock-runtime".into(),
        admitted_at_unix_seconds: at,
        input_tokens: 10,
        output_tokens: 5,
        refused: false,
        refused_by_gateway: false,
        adjustments,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_gateway_refusal_gives_its_charges_back_to_the_windows_the_decision_named() {
    let (clock, engine) = engine(2);
    clock.set(T0 + 50);
    let decision = engine
        .should_rate_limit(&filter_request(300))
        .await
        .unwrap();
    let windows = windows_of(&decision);
    assert_eq!(
        windows,
        [
            Some(format!("minute/{T0}")),
            Some("month/1769904000".to_string())
        ]
    );
    // The filter's clock is 15 s ahead: by it, the request was admitted in the next minute.
    let refused = UsageRecord {
        refused_by_gateway: true,
        input_tokens: 0,
        output_tokens: 0,
        ..used(
            "a",
            "m",
            T0 + 65,
            vec![
                give_back(&[("tenant", "a")], -1, windows[0].clone()),
                give_back(
                    &[("tenant", "a"), ("tokens", "total")],
                    -300,
                    windows[1].clone(),
                ),
            ],
        )
    };
    clock.set(T0 + 55);
    engine.report_usage("w1-1", &[refused]).await.unwrap();
    assert_eq!(
        ask(&engine, &filter_request(0)).await,
        (OK, vec![(OK, 1), (OK, 1000)])
    );
    let query = UsageQuery::new("", "", "", engine.today()).unwrap();
    let rows = engine.usage(&query).await.unwrap();
    assert_eq!(
        (
            rows[0].requests,
            rows[0].gateway_refusals,
            rows[0].input_tokens
        ),
        (0, 1, 0)
    );
    let metrics = metrics(&engine);
    assert_eq!(metrics["quota_gateway_refusals_reported"], 1);
    assert_eq!(metrics["quota_adjustments"], 2);
}

#[tokio::test]
async fn a_report_is_applied_once_per_id() {
    let (clock, engine) = engine(10);
    assert_eq!(ask(&engine, &filter_request(500)).await.0, OK);
    let batch = [used(
        "a",
        "m",
        T0,
        vec![give_back(
            &[("tenant", "a"), ("tokens", "total")],
            -485,
            None,
        )],
    )];
    clock.set(T0 + 1);
    engine.report_usage("w1-7", &batch).await.unwrap();
    engine.report_usage("w1-7", &batch).await.unwrap();
    assert_eq!(
        ask(&engine, &filter_request(0)).await,
        (OK, vec![(OK, 8), (OK, 985)])
    );
    let query = UsageQuery::new("", "", "", engine.today()).unwrap();
    assert_eq!(engine.usage(&query).await.unwrap()[0].requests, 1);
    let counted = metrics(&engine);
    assert_eq!(counted["quota_duplicate_reports"], 1);
    assert_eq!(counted["quota_usage_records"], 1);
    assert_eq!(counted["quota_adjustments"], 1);

    // Without an id, each delivery counts.
    engine.report_usage("", &batch[..]).await.unwrap();
    engine.report_usage("", &batch[..]).await.unwrap();
    assert_eq!(engine.usage(&query).await.unwrap()[0].requests, 3);

    // An hour later the id is forgotten.
    clock.set(T0 + 1 + 3_600);
    engine.report_usage("w1-7", &[]).await.unwrap();
    let late = [used("a", "m", T0, vec![])];
    engine.report_usage("w1-7", &late).await.unwrap();
    assert_eq!(engine.usage(&query).await.unwrap()[0].requests, 4);

    let long = "x".repeat(129);
    assert_eq!(
        engine.report_usage(&long, &late).await,
        Err(QuotaError::InvalidArgument(
            "report_id: expected at most 128 bytes, found 129".into()
        ))
    );
    engine.report_usage(&"x".repeat(128), &late).await.unwrap();
    assert_eq!(metrics(&engine)["quota_duplicate_reports"], 1);
}

#[tokio::test]
async fn a_full_ledger_day_counts_new_models_under_other() {
    let clock = ManualClock::at(T0);
    let engine = QuotaEngine::new(clock.clone());
    let section = section(10).replace(
        "failure_mode: open",
        "failure_mode: open\n  ledger_max_rows_per_day: 2",
    );
    engine.apply(Some(&quotas(&section).0)).unwrap();
    let batch: Vec<UsageRecord> = [
        ("a", "m1"),
        ("a", "m2"),
        ("a", "m3"),
        ("b", "m1"),
        ("a", "m1"),
    ]
    .iter()
    .map(|(tenant, model)| used(tenant, model, T0, vec![]))
    .collect();
    engine.report_usage("", &batch).await.unwrap();
    engine
        .report_usage("", &[used("b", "m9", T0, vec![])])
        .await
        .unwrap();
    let query = UsageQuery::new("", "", "", engine.today()).unwrap();
    let rows: Vec<(String, String, u64)> = engine
        .usage(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.tenant, r.model, r.requests))
        .collect();
    let row =
        |tenant: &str, model: &str, requests| (tenant.to_string(), model.to_string(), requests);
    assert_eq!(
        rows,
        [
            row("a", "(other)", 1),
            row("a", "m1", 2),
            row("a", "m2", 1),
            row("b", "(other)", 2),
        ]
    );
    assert_eq!(metrics(&engine)["quota_ledger_rows_collapsed"], 3);
}
