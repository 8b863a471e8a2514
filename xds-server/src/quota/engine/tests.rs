//! The engine over the memory store with a hand-set clock: decisions, reloads, reports.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use gateway_common::proto::{CounterAdjustment, DescriptorEntry};

use super::*;
use crate::quota::{
    store::Adjustment,
    testing::{ManualClock, descriptor, quotas},
};

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
        engine.report_usage("", &[], &[]).await,
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
        .report_usage("", &[record.clone(), refused], &[])
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
    engine.report_usage("", &[old], &[]).await.unwrap();
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
    engine.report_usage("w1-1", &[refused], &[]).await.unwrap();
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
    engine.report_usage("w1-7", &batch, &[]).await.unwrap();
    engine.report_usage("w1-7", &batch, &[]).await.unwrap();
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
    engine.report_usage("", &batch[..], &[]).await.unwrap();
    engine.report_usage("", &batch[..], &[]).await.unwrap();
    assert_eq!(engine.usage(&query).await.unwrap()[0].requests, 3);

    // An hour later the id is forgotten.
    clock.set(T0 + 1 + 3_600);
    engine.report_usage("w1-7", &[], &[]).await.unwrap();
    let late = [used("a", "m", T0, vec![])];
    engine.report_usage("w1-7", &late, &[]).await.unwrap();
    assert_eq!(engine.usage(&query).await.unwrap()[0].requests, 4);

    let long = "x".repeat(129);
    assert_eq!(
        engine.report_usage(&long, &late, &[]).await,
        Err(QuotaError::InvalidArgument(
            "report_id: expected at most 128 bytes, found 129".into()
        ))
    );
    engine
        .report_usage(&"x".repeat(128), &late, &[])
        .await
        .unwrap();
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
    engine.report_usage("", &batch, &[]).await.unwrap();
    engine
        .report_usage("", &[used("b", "m9", T0, vec![])], &[])
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

/// [`section`] with `quotas.allowances` set to `allowances` (YAML flow mapping).
fn with_allowances(per_minute: u64, allowances: &str) -> String {
    section(per_minute).replace(
        "failure_mode: open",
        &format!("failure_mode: open\n  allowances: {allowances}"),
    )
}

fn allowance_engine(per_minute: u64, share: &str) -> (Arc<ManualClock>, QuotaEngine) {
    let clock = ManualClock::at(T0);
    let engine = QuotaEngine::new(clock.clone());
    let section = with_allowances(
        per_minute,
        &format!("{{share: {share}, lifetime_ms: 1000}}"),
    );
    engine.apply(Some(&quotas(&section).0)).unwrap();
    (clock, engine)
}

/// Tenant `a`'s request counter in the minute of `T0`, and its monthly token counter.
async fn tenant_counters(engine: &QuotaEngine) -> (u64, u64) {
    use crate::quota::{
        keys::{DEFAULT_KEY_PREFIX, counter_key},
        window::Unit,
    };
    let key = |entries: &[(&str, &str)], unit, start| {
        counter_key(DEFAULT_KEY_PREFIX, "bedrock-gateway", entries, unit, start)
    };
    let counts = engine
        .read_counters(&[
            key(&[("tenant", "a")], Unit::Minute, T0),
            key(
                &[("tenant", "a"), ("tokens", "total")],
                Unit::Month,
                1_769_904_000,
            ),
        ])
        .await
        .unwrap();
    (counts[0], counts[1])
}

/// `(units, window, uncounted)` of each allowance.
fn granted(decided: &Decided) -> Vec<(u64, String, bool)> {
    decided
        .allowances
        .iter()
        .map(|a| (a.units, a.window.clone(), a.uncounted))
        .collect()
}

#[tokio::test]
async fn allowances_are_granted_only_when_configured_and_asked_for() {
    // Not configured: asking gets none.
    let (_, engine) = engine(1000);
    let decided = engine.decide(&filter_request(100), true).await.unwrap();
    assert_eq!(decided.response.overall_code, OK);
    assert!(decided.allowances.is_empty());
    assert_eq!(tenant_counters(&engine).await, (1, 100));

    // Configured, not asked (nor by ShouldRateLimit): none, and nothing charged ahead.
    let (_, engine) = allowance_engine(1000, "0.0625");
    assert!(
        engine
            .decide(&filter_request(100), false)
            .await
            .unwrap()
            .allowances
            .is_empty()
    );
    assert_eq!(ask(&engine, &filter_request(100)).await.0, OK);
    assert_eq!(tenant_counters(&engine).await, (2, 200));

    // Asked: the share of what remains of the tenant's minute, charged with the decision.
    let decided = engine.decide(&filter_request(100), true).await.unwrap();
    assert_eq!(decided.response.overall_code, OK);
    // 997 left: 62 units. The month has 700 tokens left: 43, less than twice the 100
    // reserved, so none there.
    assert_eq!(granted(&decided), [(62, format!("minute/{T0}"), false)]);
    assert_eq!(decided.allowances[0].valid_for_ms, 1000);
    assert_eq!(tenant_counters(&engine).await, (3 + 62, 300));
    // The decision's statuses are what this request left, as without allowances.
    assert_eq!(decided.response.statuses[0].limit_remaining, 997);
    let counted = metrics(&engine);
    assert_eq!(counted["quota_allowances_granted"], 1);
    assert_eq!(counted["quota_allowance_units_granted"], 62);
    assert_eq!(counted["quota_decisions"], 3);
}

#[tokio::test]
async fn no_grants_near_the_limit_and_none_with_a_refusal() {
    let (_, engine) = allowance_engine(10, "0.0625");
    // 9 requests left: 0 units; 500 tokens left: 31, less than twice the 500 reserved.
    let decided = engine.decide(&filter_request(500), true).await.unwrap();
    assert_eq!(decided.response.overall_code, OK);
    assert!(decided.allowances.is_empty());
    assert_eq!(tenant_counters(&engine).await, (1, 500));
    // Refused (too many tokens): nothing granted, nothing charged.
    let refused = engine.decide(&filter_request(5000), true).await.unwrap();
    assert_eq!(refused.response.overall_code, OVER);
    assert!(refused.allowances.is_empty());
    assert_eq!(tenant_counters(&engine).await, (1, 500));
    assert_eq!(metrics(&engine)["quota_allowances_granted"], 0);
}

#[tokio::test]
async fn a_refill_is_granted_without_charging_a_hit() {
    let (_, engine) = allowance_engine(1000, "0.0625");
    let refill = RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors: vec![
            descriptor(&[("tenant", "a")], Some(0), false),
            descriptor(&[("region", "x")], Some(0), false),
        ],
        hits_addend: 0,
    };
    let decided = engine.decide(&refill, true).await.unwrap();
    assert_eq!(decided.response.overall_code, OK);
    // 1000 left, 62 units; the region matches no limit: uncounted.
    assert_eq!(
        granted(&decided),
        [
            (62, format!("minute/{T0}"), false),
            (0, String::new(), true)
        ]
    );
    assert_eq!(tenant_counters(&engine).await.0, 62);
}

#[tokio::test]
async fn grants_never_push_a_counter_over_its_limit() {
    let (_, engine) = allowance_engine(100, "0.5");
    let one = RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors: vec![descriptor(&[("tenant", "a")], Some(1), false)],
        hits_addend: 0,
    };
    let mut units = Vec::new();
    loop {
        let decided = engine.decide(&one, true).await.unwrap();
        let count = tenant_counters(&engine).await.0;
        assert!(count <= 100, "{count}");
        if decided.response.overall_code == OVER {
            assert!(decided.allowances.is_empty());
            break;
        }
        units.push(decided.allowances.first().map_or(0, |a| a.units));
    }
    // Half of what remains each time, until it is less than 2: the last units one by one.
    assert_eq!(units, [49, 24, 12, 5, 2, 0, 0, 0]);
    assert_eq!(tenant_counters(&engine).await.0, 100);
}

/// A memory store where another decision takes `take` hits of every counter a grant charges,
/// just before the grant's admission, or where that admission fails (`take` `None`).
struct Rival {
    inner: Arc<MemoryStore>,
    admits: AtomicU64,
    take: Option<u64>,
}

#[tonic::async_trait]
impl CounterStore for Rival {
    async fn admit(&self, charges: &[Charge]) -> Result<Admission, StoreError> {
        // The first admission is the decision's, the second the grants'.
        if self.admits.fetch_add(1, Ordering::Relaxed) == 1 {
            let Some(take) = self.take else {
                return Err(StoreError("rival: down".into()));
            };
            for charge in charges {
                let rival = Charge {
                    hits: take,
                    limit: None,
                    ..charge.clone()
                };
                self.inner.admit(&[rival]).await?;
            }
        }
        self.inner.admit(charges).await
    }

    async fn adjust(&self, adjustments: &[Adjustment]) -> Result<Vec<Option<u64>>, StoreError> {
        self.inner.adjust(adjustments).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// An engine with allowances (share 0.5, 100 requests a minute) over a [`Rival`] store.
fn raced_engine(take: Option<u64>) -> QuotaEngine {
    let clock = ManualClock::at(T0);
    let engine = QuotaEngine::new(clock.clone());
    let settings = quotas(&with_allowances(100, "{share: 0.5}")).0;
    let memory = Arc::new(MemoryStore::new(clock));
    engine.active.store(Some(Arc::new(Active {
        settings: Arc::new(settings),
        store: Backend {
            counters: Arc::new(Rival {
                inner: memory.clone(),
                admits: AtomicU64::new(0),
                take,
            }),
            ledger: memory,
        },
    })));
    engine
}

#[tokio::test]
async fn a_grant_raced_by_another_decision_is_withdrawn_and_the_decision_stands() {
    let asked = RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors: vec![
            descriptor(&[("tenant", "a")], Some(1), false),
            descriptor(&[("region", "x")], Some(1), false),
        ],
        hits_addend: 0,
    };
    // 99 left after the decision: 49 units; another decision takes 60 first, so 49 more
    // would go over. Refused: the counted grant goes, the uncounted one stays.
    let engine = raced_engine(Some(60));
    let decided = engine.decide(&asked, true).await.unwrap();
    assert_eq!(decided.response.overall_code, OK);
    assert_eq!(granted(&decided), [(0, String::new(), true)]);
    assert_eq!(tenant_counters(&engine).await.0, 61);
    let counted = metrics(&engine);
    assert_eq!(counted["quota_allowances_withdrawn"], 1);
    assert_eq!(counted["quota_allowances_granted"], 1);
    assert_eq!(counted["quota_allowance_units_granted"], 0);

    // The store fails on the grants' admission: the same, and the failure is counted.
    let engine = raced_engine(None);
    let decided = engine.decide(&asked, true).await.unwrap();
    assert_eq!(decided.response.overall_code, OK);
    assert_eq!(granted(&decided), [(0, String::new(), true)]);
    assert_eq!(tenant_counters(&engine).await.0, 1);
    let counted = metrics(&engine);
    assert_eq!(counted["quota_allowances_withdrawn"], 1);
    assert_eq!(counted["quota_store_errors"], 1);
}

#[tokio::test]
async fn returned_units_lower_the_counter_of_their_window_once_per_report() {
    let (clock, engine) = allowance_engine(1000, "0.0625");
    let decided = engine.decide(&filter_request(1), true).await.unwrap();
    let window = decided.allowances[0].window.clone();
    // 999 requests and 999 tokens left: 62 units of each.
    assert_eq!(tenant_counters(&engine).await, (1 + 62, 1 + 62));
    let returned = [
        give_back(&[("tenant", "a")], -50, Some(window.clone())),
        // Only negative: ignored, counted as dropped.
        give_back(&[("tenant", "a")], 9, Some(window.clone())),
    ];
    clock.set(T0 + 1);
    engine.report_usage("w1-9", &[], &returned).await.unwrap();
    engine.report_usage("w1-9", &[], &returned).await.unwrap();
    assert_eq!(tenant_counters(&engine).await, (13, 63));
    // Returns touch neither the ledger nor the usage records.
    let query = UsageQuery::new("", "", "", engine.today()).unwrap();
    assert!(engine.usage(&query).await.unwrap().is_empty());
    let counted = metrics(&engine);
    assert_eq!(counted["quota_allowance_units_returned"], 50);
    assert_eq!(counted["quota_usage_records"], 0);
    assert_eq!(counted["quota_duplicate_reports"], 1);
    assert_eq!(counted["quota_adjustments"], 1);
    assert_eq!(counted["quota_adjustments_dropped"], 1);

    // Once the window has ended, a return to it is dropped.
    clock.set(T0 + 60);
    engine
        .report_usage("w1-10", &[], &returned[..1])
        .await
        .unwrap();
    let counted = metrics(&engine);
    assert_eq!(counted["quota_allowance_units_returned"], 50);
    assert_eq!(counted["quota_adjustments_dropped"], 2);
}
