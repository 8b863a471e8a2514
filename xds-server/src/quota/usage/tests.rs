use gateway_common::proto::{CounterAdjustment, DescriptorEntry};

use super::*;
use crate::quota::{
    keys::{DEFAULT_KEY_PREFIX, counter_key},
    testing::quotas,
    window::Unit,
};

const QUOTAS: &str = "
quotas:
  failure_mode: closed
  time_zone: Europe/Berlin
  descriptors:
    - key: tenant
      descriptors:
        - key: tokens
          value: total
          rate_limit: {unit: month, requests_per_unit: 1000000}
        - key: tokens
          value: output
          rate_limit: {unit: minute, requests_per_unit: 1000}
    - key: tenant
      value: vip
      unlimited: true
";

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|date| date.and_hms_opt(h, mi, 0))
        .unwrap()
        .and_utc()
        .timestamp()
}

fn adjustment(tenant: &str, kind: &str, delta: i64) -> CounterAdjustment {
    CounterAdjustment {
        entries: vec![
            DescriptorEntry {
                key: "tenant".into(),
                value: tenant.into(),
            },
            DescriptorEntry {
                key: "tokens".into(),
                value: kind.into(),
            },
        ],
        delta,
        window: String::new(),
    }
}

fn record(tenant: &str, model: &str, at: i64, adjustments: Vec<CounterAdjustment>) -> UsageRecord {
    UsageRecord {
        tenant: tenant.into(),
        model: model.into(),
        operation: "Converse".into(),
        service: "bedrock-runtime".into(),
        admitted_at_unix_seconds: at,
        input_tokens: 100,
        output_tokens: 50,
        refused: false,
        adjustments,
        refused_by_gateway: false,
        cache_read_input_tokens: 7,
        cache_write_input_tokens: 3,
        cost_nano_usd: 1_000_000_001,
        ..Default::default()
    }
}

#[test]
fn records_become_ledger_rows_per_local_day_tenant_and_model() {
    let (settings, _) = quotas(QUOTAS);
    // 23:30 UTC on 31 March is 1 April in Berlin.
    let late = utc(2026, 3, 31, 23, 30);
    let refused = UsageRecord {
        refused: true,
        input_tokens: 0,
        output_tokens: 0,
        // Never charged, so nothing to correct (and nothing counted as dropped).
        adjustments: vec![adjustment("a", "total", -500)],
        ..record("a", "m", late, vec![])
    };
    let records = [
        record("a", "m", late, vec![]),
        record("a", "m", late + 60, vec![]),
        refused,
        record("a", "", late, vec![]),
        record("b", "m", utc(2026, 3, 31, 12, 0), vec![]),
    ];
    let settlement = settle(&settings, &records, &[], late + 120);
    let rows: Vec<(&str, &str, &str, UsageTotals)> = settlement
        .ledger
        .iter()
        .map(|e| {
            (
                e.key.day.as_str(),
                e.key.tenant.as_str(),
                e.key.model.as_str(),
                e.totals,
            )
        })
        .collect();
    let used = |requests: u64| UsageTotals {
        requests,
        input_tokens: 100 * requests,
        output_tokens: 50 * requests,
        refusals: 0,
        gateway_refusals: 0,
        cache_read_tokens: 7 * requests,
        cache_write_tokens: 3 * requests,
        cost_nano_usd: 1_000_000_001 * requests,
    };
    assert_eq!(
        rows,
        vec![
            ("2026-03-31", "b", "m", used(1)),
            ("2026-04-01", "a", "", used(1)),
            (
                "2026-04-01",
                "a",
                "m",
                UsageTotals {
                    refusals: 1,
                    ..used(2)
                }
            ),
        ]
    );
    // Kept until 400 days after the day ends: local midnight of 2027-05-07 (CEST).
    assert_eq!(settlement.ledger[1].expire_at, utc(2027, 5, 6, 22, 0));
    assert_eq!(settlement.dropped, 0);
    assert!(settlement.adjustments.is_empty());
}

#[test]
fn corrections_go_to_the_window_of_admission_and_are_merged() {
    let (settings, _) = quotas(QUOTAS);
    let admitted = utc(2026, 6, 15, 10, 0);
    let now = admitted + 90;
    let records = [
        record(
            "a",
            "m",
            admitted,
            vec![
                adjustment("a", "total", -300),
                // The minute window ended 30 s ago: dropped.
                adjustment("a", "output", -20),
                adjustment("a", "input", 5),
                // Unlimited and unmatched: dropped.
                adjustment("vip", "total", -1),
                adjustment("a", "nonsense", -1),
                // Zero: nothing to do, not dropped.
                adjustment("a", "total", 0),
            ],
        ),
        record("a", "m", admitted + 60, vec![adjustment("a", "total", 120)]),
        record("a", "m", now - 10, vec![adjustment("a", "output", -7)]),
        // Without `admitted_at`, the window is unknown.
        record("a", "m", 0, vec![adjustment("a", "total", -9)]),
    ];
    let settlement = settle(&settings, &records, &[], now);
    // June 2026 in Berlin starts 2026-05-31T22:00Z and ends 2026-06-30T22:00Z.
    let month = utc(2026, 5, 31, 22, 0);
    let minute = (now - 10) - (now - 10).rem_euclid(60);
    assert_eq!(
        settlement.adjustments,
        vec![
            Adjustment {
                key: format!(
                    "bedrock-gateway:bedrock-gateway|tenant=a|tokens=output|minute|{minute}"
                ),
                delta: -7,
                expire_at: minute + 60,
            },
            Adjustment {
                key: format!("bedrock-gateway:bedrock-gateway|tenant=a|tokens=total|month|{month}"),
                delta: -180,
                expire_at: utc(2026, 6, 30, 22, 0),
            },
        ]
    );
    assert_eq!(settlement.dropped, 5);
    // The record without `admitted_at` counts on today's row.
    assert!(settlement.ledger.iter().all(|e| e.key.day == "2026-06-15"));
    assert_eq!(settlement.ledger[0].totals.requests, 4);
}

#[test]
fn queries() {
    let today = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
    let query = UsageQuery::new("", "", "", today).unwrap();
    assert_eq!(
        (query.tenant.clone(), query.days()),
        (None, vec!["2026-03-10".to_string()])
    );

    let query = UsageQuery::new("team-a", "2026-02-27", "2026-03-01", today).unwrap();
    assert_eq!(query.tenant.as_deref(), Some("team-a"));
    assert_eq!(query.days(), ["2026-02-27", "2026-02-28", "2026-03-01"]);

    let query =
        UsageQuery::from_query_string(Some("tenant=team%20b%7Cx&from=2026-03-09"), today).unwrap();
    assert_eq!(query.tenant.as_deref(), Some("team b|x"));
    assert_eq!(query.days(), ["2026-03-09", "2026-03-10"]);
    assert_eq!(
        UsageQuery::from_query_string(None, today),
        UsageQuery::new("", "", "", today)
    );

    let errors = [
        (
            Some("from=2026-3-1"),
            "from: expected a day as YYYY-MM-DD, found \"2026-3-1\"",
        ),
        (
            Some("to=yesterday"),
            "to: expected a day as YYYY-MM-DD, found \"yesterday\"",
        ),
        (
            Some("from=2026-03-11"),
            "from: expected a day no later than to (2026-03-10), found \"2026-03-11\"",
        ),
        (
            Some("from=2025-01-01&to=2026-03-10"),
            "to: expected at most 401 days from `from`, found \"2026-03-10\"",
        ),
        (
            Some("day=2026-03-10"),
            "day: unknown parameter (expected tenant, from, to)",
        ),
        (
            Some("tenant=a&tenant=b"),
            "tenant: expected once, found twice",
        ),
    ];
    for (query, message) in errors {
        assert_eq!(
            UsageQuery::from_query_string(query, today),
            Err(message.to_string()),
            "{query:?}"
        );
    }
}

#[test]
fn rows_are_merged_and_sorted() {
    let key = |day: &str, tenant: &str, model: &str| UsageKey {
        day: day.into(),
        tenant: tenant.into(),
        model: model.into(),
    };
    let one = UsageTotals {
        requests: 1,
        input_tokens: 2,
        output_tokens: 3,
        refusals: 4,
        gateway_refusals: 5,
        cache_read_tokens: 6,
        cache_write_tokens: 7,
        cost_nano_usd: 8,
    };
    let sorted = rows(vec![
        (key("2026-01-02", "a", "m"), one),
        (key("2026-01-01", "b", "m"), one),
        (key("2026-01-01", "a", "z"), one),
        (key("2026-01-01", "a", "m"), one),
        (key("2026-01-01", "a", "m"), one),
    ]);
    let order: Vec<(&str, &str, &str, u64)> = sorted
        .iter()
        .map(|r| {
            (
                r.day.as_str(),
                r.tenant.as_str(),
                r.model.as_str(),
                r.requests,
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("2026-01-01", "a", "m", 2),
            ("2026-01-01", "a", "z", 1),
            ("2026-01-01", "b", "m", 1),
            ("2026-01-02", "a", "m", 1),
        ]
    );
    let json = serde_json::to_value(&sorted[0]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"day": "2026-01-01", "tenant": "a", "model": "m", "requests": 2,
            "input_tokens": 4, "output_tokens": 6, "refusals": 8, "gateway_refusals": 10,
            "cache_read_tokens": 12, "cache_write_tokens": 14, "cost_nano_usd": 16,
            "cost_usd": "0.000000016"})
    );
}

fn named(mut adjustment: CounterAdjustment, window: &str) -> CounterAdjustment {
    adjustment.window = window.to_string();
    adjustment
}

#[test]
fn corrections_go_to_the_window_the_decision_named() {
    let (settings, _) = quotas(QUOTAS);
    let prefix = "bedrock-gateway:bedrock-gateway|tenant=a";
    // Decided at 10:00:50 UTC; the filter's clock, 12 s ahead, says the request was admitted
    // at 10:01:02; the report arrives at 10:00:55 by the server's clock.
    let decided = utc(2026, 6, 15, 10, 0) + 50;
    let minute = decided - 50;
    let admitted = decided + 12;
    let now = decided + 5;
    // June 2026 in Berlin starts 2026-05-31T22:00Z.
    let month = utc(2026, 5, 31, 22, 0);
    let hour = utc(2026, 6, 15, 10, 0);
    let records = [
        record(
            "a",
            "m",
            admitted,
            vec![
                named(adjustment("a", "output", -20), &format!("minute/{minute}")),
                named(adjustment("a", "total", -300), &format!("month/{month}")),
                // The limit is per minute now; the decision charged an hour: that hour.
                named(adjustment("a", "output", 7), &format!("hour/{hour}")),
            ],
        ),
        // Without `admitted_at`, a named window is enough.
        record(
            "a",
            "m",
            0,
            vec![named(
                adjustment("a", "output", -1),
                &format!("minute/{minute}"),
            )],
        ),
        record(
            "a",
            "m",
            admitted,
            vec![
                // Not a unit, not a window's start (UTC's month is not Berlin's), or over.
                named(adjustment("a", "total", -1), &format!("fortnight/{month}")),
                named(adjustment("a", "total", -1), "month"),
                named(
                    adjustment("a", "total", -1),
                    &format!("month/{}", month + 7_200),
                ),
                named(
                    adjustment("a", "output", -1),
                    &format!("minute/{}", minute - 60),
                ),
                // A window that has not begun (more than the clock difference tolerated).
                named(
                    adjustment("a", "output", 1),
                    &format!("minute/{}", minute + 3_600),
                ),
                // No counted limit matches these entries now.
                named(adjustment("vip", "total", -1), &format!("month/{month}")),
                named(adjustment("a", "nonsense", -1), &format!("month/{month}")),
            ],
        ),
    ];
    let settlement = settle(&settings, &records, &[], now);
    assert_eq!(
        settlement.adjustments,
        vec![
            Adjustment {
                key: format!("{prefix}|tokens=output|hour|{hour}"),
                delta: 7,
                expire_at: hour + 3_600,
            },
            Adjustment {
                key: format!("{prefix}|tokens=output|minute|{minute}"),
                delta: -21,
                expire_at: minute + 60,
            },
            Adjustment {
                key: format!("{prefix}|tokens=total|month|{month}"),
                delta: -300,
                expire_at: utc(2026, 6, 30, 22, 0),
            },
        ]
    );
    assert_eq!(settlement.dropped, 7);
}

const WITH_REQUESTS: &str = "
quotas:
  failure_mode: closed
  descriptors:
    - key: tenant
      rate_limit: {unit: day, requests_per_unit: 100}
      descriptors:
        - key: model
          rate_limit: {unit: minute, requests_per_unit: 10}
        - key: tokens
          value: total
          rate_limit: {unit: day, requests_per_unit: 100000}
";

fn entries(pairs: &[(&str, &str)]) -> Vec<DescriptorEntry> {
    pairs
        .iter()
        .map(|(key, value)| DescriptorEntry {
            key: key.to_string(),
            value: value.to_string(),
        })
        .collect()
}

#[test]
fn gateway_refusals_are_their_own_column_and_give_their_charges_back() {
    let (settings, _) = quotas(WITH_REQUESTS);
    let at = utc(2026, 6, 15, 10, 0);
    let day = utc(2026, 6, 15, 0, 0);
    let give_back = |pairs: &[(&str, &str)], delta: i64| CounterAdjustment {
        entries: entries(pairs),
        delta,
        window: format!("day/{day}"),
    };
    let refused_by_gateway = UsageRecord {
        refused_by_gateway: true,
        // Whatever it says, a request that never reached Bedrock used no tokens.
        input_tokens: 5,
        output_tokens: 5,
        ..record(
            "a",
            "m",
            at,
            vec![
                // The request's hit and its token reservation, given back.
                give_back(&[("tenant", "a")], -1),
                give_back(&[("tenant", "a"), ("tokens", "total")], -4_000),
            ],
        )
    };
    // A quota refusal also flagged as a gateway refusal is a quota refusal: never charged.
    let both = UsageRecord {
        refused: true,
        ..refused_by_gateway.clone()
    };
    let settlement = settle(&settings, &[refused_by_gateway, both], &[], at + 5);
    assert_eq!(
        settlement.ledger[0].totals,
        UsageTotals {
            refusals: 1,
            gateway_refusals: 1,
            ..Default::default()
        }
    );
    let prefix = "bedrock-gateway:bedrock-gateway|tenant=a";
    assert_eq!(
        settlement.adjustments,
        vec![
            Adjustment {
                key: format!("{prefix}|day|{day}"),
                delta: -1,
                expire_at: day + 86_400,
            },
            Adjustment {
                key: format!("{prefix}|tokens=total|day|{day}"),
                delta: -4_000,
                expire_at: day + 86_400,
            },
        ]
    );
    assert_eq!(settlement.dropped, 0);
}

#[test]
fn models_are_ledger_rows_and_counters_by_their_model_key() {
    let (settings, _) = quotas(WITH_REQUESTS);
    let at = utc(2026, 6, 15, 10, 0);
    let minute = at;
    let records = [
        record(
            "a",
            "US.Anthropic.Claude-3-Haiku-20240307-v1:0",
            at,
            vec![CounterAdjustment {
                entries: entries(&[
                    ("tenant", "a"),
                    ("model", "us.anthropic.claude-3-haiku-20240307-v1:0"),
                ]),
                delta: -1,
                window: format!("minute/{minute}"),
            }],
        ),
        record("a", "anthropic.claude-3-haiku-20240307-v1:0", at, vec![]),
    ];
    let settlement = settle(&settings, &records, &[], at + 5);
    assert_eq!(settlement.ledger.len(), 1);
    assert_eq!(
        (
            settlement.ledger[0].key.model.as_str(),
            settlement.ledger[0].totals.requests
        ),
        ("anthropic.claude-3-haiku-20240307-v1:0", 2)
    );
    assert_eq!(
        settlement.adjustments[0].key,
        format!(
            "bedrock-gateway:bedrock-gateway|tenant=a|model=anthropic.claude-3-haiku-20240307-v1:0|minute|{minute}"
        )
    );
}

#[test]
fn corrections_are_bounded_by_what_a_count_holds() {
    let (settings, _) = quotas(WITH_REQUESTS);
    let at = utc(2026, 6, 15, 10, 0);
    let huge = |delta: i64| CounterAdjustment {
        entries: entries(&[("tenant", "a"), ("tokens", "total")]),
        delta,
        window: String::new(),
    };
    let settlement = settle(
        &settings,
        &[
            record("a", "m", at, vec![huge(i64::MAX), huge(i64::MAX)]),
            record("b", "m", at, vec![]),
        ],
        &[],
        at,
    );
    assert_eq!(settlement.adjustments[0].delta, MAX_COUNT as i64);
    let settlement = settle(
        &settings,
        &[record("a", "m", at, vec![huge(i64::MIN)])],
        &[],
        at,
    );
    assert_eq!(settlement.adjustments[0].delta, -(MAX_COUNT as i64));
}

/// A return of allowance units to `window`.
fn given_back(tenant: &str, kind: &str, delta: i64, window: &str) -> CounterAdjustment {
    CounterAdjustment {
        window: window.to_string(),
        ..adjustment(tenant, kind, delta)
    }
}

#[test]
fn returned_allowance_units_correct_the_window_they_name_and_nothing_else() {
    let (settings, _) = quotas(QUOTAS);
    let at = utc(2026, 3, 10, 12, 0);
    let minute = format!("minute/{at}");
    let returned = [
        given_back("a", "output", -40, &minute),
        // Added up with the record's correction of the same counter.
        given_back("a", "output", -2, &minute),
        // Only negative deltas: a positive one would charge what no decision admitted.
        given_back("a", "output", 5, &minute),
        // A window that has ended, none at all, and no counted limit: dropped.
        given_back("a", "output", -7, &format!("minute/{}", at - 60)),
        given_back("a", "output", -7, ""),
        given_back("vip", "output", -7, &minute),
        // Nothing to give back: ignored, not dropped.
        given_back("a", "output", 0, &minute),
    ];
    let records = [record(
        "a",
        "m",
        at,
        vec![given_back("a", "output", -100, &minute)],
    )];
    let settlement = settle(&settings, &records, &returned, at + 30);
    let key = counter_key(
        DEFAULT_KEY_PREFIX,
        "bedrock-gateway",
        &[("tenant", "a"), ("tokens", "output")],
        Unit::Minute,
        at,
    );
    assert_eq!(
        settlement.adjustments,
        [Adjustment {
            key,
            delta: -142,
            expire_at: at + 60,
        }]
    );
    assert_eq!(settlement.returned_units, 42);
    assert_eq!(settlement.dropped, 4);
    // Returns add no ledger row: only the record does.
    assert_eq!(settlement.ledger.len(), 1);
    assert_eq!(settlement.ledger[0].totals.requests, 1);

    // A batch of returns alone corrects counters and writes no ledger.
    let alone = settle(&settings, &[], &returned[..1], at + 30);
    assert!(alone.ledger.is_empty());
    assert_eq!(
        (alone.adjustments[0].delta, alone.returned_units),
        (-40, 40)
    );
}
