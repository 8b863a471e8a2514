use gateway_common::proto::{CounterAdjustment, DescriptorEntry};

use super::*;
use crate::quota::testing::quotas;

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
    let settlement = settle(&settings, &records, late + 120);
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
    let settlement = settle(&settings, &records, now);
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
            "input_tokens": 4, "output_tokens": 6, "refusals": 8})
    );
}
