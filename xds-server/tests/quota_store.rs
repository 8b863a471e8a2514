//! The same behaviour asked of both quota stores: the memory store, and the Redis store
//! against a real `redis-server` on a free port.

mod support;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use support::redis::RedisServer;
use xds_server::{
    quota::{
        RedisSettings,
        store::{
            Adjustment, Charge, CounterStore, LedgerEntry, Report, ReportOutcome, UsageKey,
            UsageLedger, UsageTotals, memory::MemoryStore, redis::RedisStore,
        },
    },
    util::{Secret, SystemClock},
};

trait Store: CounterStore + UsageLedger {}
impl<T: CounterStore + UsageLedger> Store for T {}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn charge(key: &str, hits: u64, limit: Option<u64>) -> Charge {
    Charge {
        key: key.into(),
        hits,
        limit,
        expire_at: now() + 600,
    }
}

fn adjustment(key: &str, delta: i64) -> Adjustment {
    Adjustment {
        key: key.into(),
        delta,
        expire_at: now() + 600,
    }
}

/// Ledger additions alone, without an id, on days of up to 100 rows.
fn ledger_only(entries: Vec<LedgerEntry>) -> Report {
    Report {
        id: None,
        adjustments: Vec::new(),
        ledger: entries,
        max_rows_per_day: 100,
    }
}

fn key(day: &str, tenant: &str, model: &str) -> UsageKey {
    UsageKey {
        day: day.into(),
        tenant: tenant.into(),
        model: model.into(),
    }
}

fn days(list: &[&str]) -> Vec<String> {
    list.iter().map(|d| d.to_string()).collect()
}

async fn rows(store: &dyn Store, day: &str) -> Vec<(UsageKey, UsageTotals)> {
    let mut rows = store.query(&days(&[day]), None).await.unwrap();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

async fn admit(store: &dyn Store, charges: &[Charge]) -> (bool, Vec<u64>) {
    let admission = store.admit(charges).await.unwrap();
    (admission.admitted, admission.counts)
}

async fn all_or_nothing(store: &dyn Store) {
    let (a, b) = ("aon|a", "aon|b");
    assert_eq!(
        admit(store, &[charge(a, 2, Some(3)), charge(b, 5, Some(5))]).await,
        (true, vec![2, 5])
    );
    // `b` is full: nothing is counted, and the counts are the current ones.
    assert_eq!(
        admit(store, &[charge(a, 1, Some(3)), charge(b, 1, Some(5))]).await,
        (false, vec![2, 5])
    );
    assert_eq!(
        admit(store, &[charge(a, 1, Some(3))]).await,
        (true, vec![3])
    );
    assert_eq!(
        admit(store, &[charge(a, 1, Some(3))]).await,
        (false, vec![3])
    );
    assert_eq!(admit(store, &[]).await, (true, vec![]));
}

async fn pre_checks_count_nothing(store: &dyn Store) {
    let (used, fresh) = ("pre|used", "pre|fresh");
    assert_eq!(
        admit(store, &[charge(used, 4, Some(4))]).await,
        (true, vec![4])
    );
    assert_eq!(
        admit(store, &[charge(used, 0, Some(4))]).await,
        (false, vec![4])
    );
    assert_eq!(
        admit(store, &[charge(fresh, 0, Some(4))]).await,
        (true, vec![0])
    );
    // The pre-check created nothing: there is nothing to give back...
    assert_eq!(
        store.adjust(&[adjustment(fresh, -1)]).await.unwrap(),
        [None]
    );
    // ... but what the request then used counts, in its window.
    assert_eq!(
        store.adjust(&[adjustment(fresh, 3)]).await.unwrap(),
        [Some(3)]
    );
    assert_eq!(
        admit(store, &[charge(fresh, 2, Some(4))]).await,
        (false, vec![3])
    );
    // Not in a window that has ended.
    let ended = Adjustment {
        expire_at: now() - 1,
        ..adjustment("pre|ended", 3)
    };
    assert_eq!(store.adjust(&[ended]).await.unwrap(), [None]);
    assert_eq!(
        admit(store, &[charge("pre|ended", 0, Some(1))]).await,
        (true, vec![0])
    );
}

async fn shadow_and_repeated_keys(store: &dyn Store) {
    let (shadow, twice) = ("shadow|s", "twice|t");
    assert_eq!(
        admit(store, &[charge(shadow, 10, None), charge(shadow, 10, None)]).await,
        (true, vec![10, 20])
    );
    // The same key twice in one call adds up: 3 + 3 > 5.
    assert_eq!(
        admit(
            store,
            &[charge(twice, 3, Some(5)), charge(twice, 3, Some(5))]
        )
        .await,
        (false, vec![0, 0])
    );
    assert_eq!(
        admit(
            store,
            &[charge(twice, 2, Some(5)), charge(twice, 3, Some(5))]
        )
        .await,
        (true, vec![2, 5])
    );
}

async fn corrections(store: &dyn Store) {
    let key = "adj|k";
    assert_eq!(
        admit(store, &[charge(key, 10, Some(100))]).await,
        (true, vec![10])
    );
    assert_eq!(
        store
            .adjust(&[
                adjustment(key, -4),
                adjustment(key, 50),
                adjustment("adj|gone", -1)
            ])
            .await
            .unwrap(),
        [Some(6), Some(56), None]
    );
    // Never below zero.
    assert_eq!(
        store.adjust(&[adjustment(key, -1_000)]).await.unwrap(),
        [Some(0)]
    );
    assert_eq!(
        admit(store, &[charge(key, 100, Some(100))]).await,
        (true, vec![100])
    );
    assert_eq!(store.adjust(&[]).await.unwrap(), []);
    // A refund to a window that no longer exists is dropped and creates nothing.
    assert_eq!(
        admit(store, &[charge("adj|gone", 0, Some(1))]).await,
        (true, vec![0])
    );
}

async fn windows_expire(store: &dyn Store) {
    let key = "exp|k";
    let ended = Charge {
        expire_at: now() - 1,
        ..charge(key, 5, Some(5))
    };
    assert_eq!(admit(store, &[ended]).await, (true, vec![5]));
    // Its window is over: the next window counts from zero.
    assert_eq!(
        admit(store, &[charge(key, 5, Some(5))]).await,
        (true, vec![5])
    );
}

async fn concurrent_admissions_never_overshoot(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .admit(&[charge("race|k", 1, Some(25)), charge("race|all", 1, None)])
                .await
                .unwrap()
                .admitted
        });
    }
    let mut admitted = 0;
    while let Some(result) = tasks.join_next().await {
        admitted += usize::from(result.unwrap());
    }
    assert_eq!(admitted, 25);
    assert_eq!(
        admit(&*store, &[charge("race|all", 0, None)]).await,
        (true, vec![25])
    );
}

async fn ledger(store: &dyn Store) {
    let totals = |requests: u64| UsageTotals {
        requests,
        input_tokens: 10 * requests,
        output_tokens: 20 * requests,
        refusals: 1,
        gateway_refusals: 2,
        cache_read_tokens: 300 * requests,
        cache_write_tokens: 40 * requests,
        cost_nano_usd: 1_234_567_891 * requests,
    };
    let keep = now() + 3600;
    let entry = |key: UsageKey, totals: UsageTotals, expire_at: i64| LedgerEntry {
        key,
        totals,
        expire_at,
    };
    store
        .settle(&ledger_only(vec![
            entry(key("2026-01-01", "team|a", "m=1"), totals(1), keep),
            entry(key("2026-01-01", "b", ""), totals(2), keep),
            entry(key("2026-01-02", "team|a", "m=1"), totals(3), keep),
            entry(key("2026-01-03", "team|a", "old"), totals(1), now() - 1),
        ]))
        .await
        .unwrap();
    store
        .settle(&ledger_only(vec![entry(
            key("2026-01-01", "team|a", "m=1"),
            totals(1),
            keep,
        )]))
        .await
        .unwrap();
    let mut rows = store
        .query(&days(&["2026-01-01", "2026-01-02", "2026-01-03"]), None)
        .await
        .unwrap();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rows,
        vec![
            (key("2026-01-01", "b", ""), totals(2)),
            (
                key("2026-01-01", "team|a", "m=1"),
                UsageTotals {
                    refusals: 2,
                    gateway_refusals: 4,
                    ..totals(2)
                }
            ),
            (key("2026-01-02", "team|a", "m=1"), totals(3)),
        ]
    );
    let only_b = store
        .query(&days(&["2026-01-01", "2026-01-02"]), Some("b"))
        .await
        .unwrap();
    assert_eq!(only_b, vec![(key("2026-01-01", "b", ""), totals(2))]);
    assert!(
        store
            .query(&days(&["2025-12-31"]), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.query(&[], None).await.unwrap().is_empty());
}

/// A report's corrections follow `adjust`'s rules; with an id, the whole report (ledger and
/// corrections) is applied once.
async fn reports_are_applied_once(store: &dyn Store) {
    let counter = "rep|k";
    assert_eq!(
        admit(store, &[charge(counter, 10, Some(100))]).await,
        (true, vec![10])
    );
    let day = "2026-02-01";
    let report = Report {
        id: Some("worker-1|7".into()),
        adjustments: vec![
            adjustment(counter, -4),
            // A refund to a missing counter is dropped; a charge creates it while its window
            // lasts, never in one that has ended; never below zero.
            adjustment("rep|missing", -1),
            adjustment("rep|new", 3),
            Adjustment {
                expire_at: now() - 1,
                ..adjustment("rep|ended", 3)
            },
        ],
        ledger: vec![LedgerEntry {
            key: key(day, "t", "m"),
            totals: UsageTotals {
                requests: 1,
                input_tokens: 7,
                output_tokens: 3,
                refusals: 0,
                gateway_refusals: 1,
                cache_read_tokens: 5,
                cache_write_tokens: 6,
                cost_nano_usd: 7,
            },
            expire_at: now() + 3600,
        }],
        max_rows_per_day: 100,
    };
    assert_eq!(
        store.settle(&report).await.unwrap(),
        ReportOutcome {
            duplicate: false,
            counts: vec![Some(6), None, Some(3), None],
            collapsed: 0,
            ids_forgotten: 0,
        }
    );
    let applied = rows(store, day).await;
    assert_eq!(applied.len(), 1);
    assert_eq!(
        (applied[0].1.requests, applied[0].1.gateway_refusals),
        (1, 1)
    );
    // The same batch again: nothing changes.
    let again = store.settle(&report).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(rows(store, day).await, applied);
    assert_eq!(
        admit(
            store,
            &[charge(counter, 0, None), charge("rep|new", 0, None)]
        )
        .await,
        (true, vec![6, 3])
    );
    // Another id is another batch; no id is never a duplicate.
    let other = Report {
        id: Some("worker-1|8".into()),
        adjustments: vec![adjustment(counter, -100)],
        ..report.clone()
    };
    assert_eq!(store.settle(&other).await.unwrap().counts, [Some(0)]);
    let anonymous = Report {
        id: None,
        adjustments: vec![],
        ..report
    };
    assert!(!store.settle(&anonymous).await.unwrap().duplicate);
    assert!(!store.settle(&anonymous).await.unwrap().duplicate);
    assert_eq!(rows(store, day).await[0].1.requests, 4);
}

/// A day holds at most `max_rows_per_day` rows; more records go to their tenant's `(other)`.
async fn ledger_days_are_bounded(store: &dyn Store) {
    let day = "2026-03-01";
    let one = |tenant: &str, model: &str| LedgerEntry {
        key: key(day, tenant, model),
        totals: UsageTotals {
            requests: 2,
            input_tokens: 1,
            refusals: 1,
            ..Default::default()
        },
        expire_at: now() + 3600,
    };
    let bounded = |entries: Vec<LedgerEntry>| Report {
        max_rows_per_day: 2,
        ..ledger_only(entries)
    };
    let first = store
        .settle(&bounded(vec![
            one("a", "m1"),
            one("a", "m2"),
            one("a", "m3"),
        ]))
        .await
        .unwrap();
    assert_eq!(first.collapsed, 3);
    // Known rows still count; new ones of any tenant go to that tenant's (other) row.
    let second = store
        .settle(&bounded(vec![
            one("a", "m1"),
            one("b", "m1"),
            one("a", "m4"),
            one("b", "m2"),
        ]))
        .await
        .unwrap();
    assert_eq!(second.collapsed, 9);
    let summary: Vec<(String, u64, u64)> = rows(store, day)
        .await
        .into_iter()
        .map(|(key, totals)| {
            (
                format!("{}/{}", key.tenant, key.model),
                totals.requests,
                totals.refusals,
            )
        })
        .collect();
    let row = |name: &str, requests, refusals| (name.to_string(), requests, refusals);
    assert_eq!(
        summary,
        [
            row("a/(other)", 4, 2),
            row("a/m1", 4, 2),
            row("a/m2", 2, 1),
            row("b/(other)", 4, 2),
        ]
    );
    // A higher bound makes room again.
    let wider = Report {
        max_rows_per_day: 5,
        ..bounded(vec![one("c", "m1")])
    };
    assert_eq!(store.settle(&wider).await.unwrap().collapsed, 0);
    assert_eq!(rows(store, day).await.len(), 5);
}

async fn conformance(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    all_or_nothing(&*store).await;
    pre_checks_count_nothing(&*store).await;
    shadow_and_repeated_keys(&*store).await;
    corrections(&*store).await;
    windows_expire(&*store).await;
    ledger(&*store).await;
    reports_are_applied_once(&*store).await;
    ledger_days_are_bounded(&*store).await;
    concurrent_admissions_never_overshoot(store).await;
}

fn redis_store(redis: &RedisServer, key_prefix: &str) -> RedisStore {
    RedisStore::new(&RedisSettings {
        url: Secret::new(redis.url()),
        display_url: redis.url(),
        password: None,
        key_prefix: key_prefix.into(),
    })
    .unwrap()
}

#[tokio::test]
async fn memory_store() {
    conformance(Arc::new(MemoryStore::new(Arc::new(SystemClock)))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_against_a_real_redis() {
    let redis = RedisServer::start().await;
    conformance(Arc::new(redis_store(&redis, "test:"))).await;
    // Ledger keys carry the store's prefix (counter keys come prefixed by the caller), and
    // counters expire with their window.
    let keys = redis.command("KEYS test:usage*").await;
    assert!(
        keys.contains("test:usage|2026-01-01|team%7Ca|m%3D1"),
        "{keys}"
    );
    let ttl = redis.command("TTL race|k").await;
    let seconds: i64 = ttl.trim_start_matches(':').trim_end().parse().unwrap();
    assert!((590..=600).contains(&seconds), "{ttl}");
}

#[tokio::test]
async fn redis_store_fails_cleanly_while_redis_is_down_and_recovers() {
    let mut redis = RedisServer::start().await;
    let store = redis_store(&redis, "down:");
    assert!(
        store
            .admit(&[charge("k", 1, Some(5))])
            .await
            .unwrap()
            .admitted
    );
    redis.stop();
    let error = store.admit(&[charge("k", 1, Some(5))]).await.unwrap_err();
    assert!(error.to_string().starts_with("redis: admit: "), "{error}");
    assert!(store.ping().await.is_err());
    redis.restart().await;
    // The connection is reopened; the restarted Redis kept nothing.
    support::eventually("the store to answer again", || async {
        store.ping().await.is_ok()
    })
    .await;
    assert_eq!(
        store
            .admit(&[charge("k", 1, Some(5))])
            .await
            .unwrap()
            .counts,
        [1]
    );
}

#[tokio::test]
async fn redis_store_keys_all_expire() {
    let redis = RedisServer::start().await;
    let store = redis_store(&redis, "ttl:");
    let report = Report {
        id: Some("w|1".into()),
        adjustments: vec![adjustment("ttl:counter", 2)],
        ledger: vec![LedgerEntry {
            key: key("2026-01-01", "t", "m"),
            totals: UsageTotals {
                requests: 1,
                ..Default::default()
            },
            expire_at: now() + 400 * 86_400,
        }],
        max_rows_per_day: 1,
    };
    store.settle(&report).await.unwrap();
    let other = Report {
        id: None,
        adjustments: vec![],
        ledger: vec![LedgerEntry {
            key: key("2026-01-01", "t", "m2"),
            ..report.ledger[0].clone()
        }],
        ..report.clone()
    };
    assert_eq!(store.settle(&other).await.unwrap().collapsed, 1);
    let ttl = async |key: &str| -> i64 {
        let reply = redis.command(&format!("TTL {key}")).await;
        reply.trim_start_matches(':').trim_end().parse().unwrap()
    };
    assert!((3590..=3600).contains(&ttl("ttl:report|w%7C1").await));
    assert!((590..=600).contains(&ttl("ttl:counter").await));
    for ledger_key in [
        "ttl:usage|2026-01-01",
        "ttl:usage|2026-01-01|t|m",
        "ttl:usage|2026-01-01|t|(other)",
    ] {
        let left = ttl(ledger_key).await;
        assert!(left > 399 * 86_400, "{ledger_key}: {left}");
    }
}

#[tokio::test]
async fn a_redis_report_that_cannot_be_applied_changes_nothing() {
    let redis = RedisServer::start().await;
    let store = redis_store(&redis, "atomic:");
    let day = "2026-04-01";
    let report = Report {
        id: Some("w|9".into()),
        adjustments: vec![adjustment("atomic:good", 5), adjustment("atomic:bad", 5)],
        ledger: vec![LedgerEntry {
            key: key(day, "t", "m"),
            totals: UsageTotals {
                requests: 1,
                ..Default::default()
            },
            expire_at: now() + 3600,
        }],
        max_rows_per_day: 10,
    };
    // Something else wrote a key where a counter should be: the script fails before its first
    // write, so neither the ledger, the other counter nor the id are touched.
    redis.command("SET atomic:bad not-a-number").await;
    let error = store.settle(&report).await.unwrap_err();
    assert!(error.to_string().starts_with("redis: report: "), "{error}");
    assert!(
        error.to_string().contains("does not hold a count"),
        "{error}"
    );
    assert!(rows(&store, day).await.is_empty());
    assert_eq!(redis.command("EXISTS atomic:good").await, ":0\r\n");
    assert_eq!(redis.command("EXISTS atomic:report|w%7C9").await, ":0\r\n");
    // Once the key is gone, the batch resent is applied, once.
    redis.command("DEL atomic:bad").await;
    let applied = store.settle(&report).await.unwrap();
    assert_eq!(applied.counts, [Some(5), Some(5)]);
    assert!(store.settle(&report).await.unwrap().duplicate);
    assert_eq!(rows(&store, day).await[0].1.requests, 1);
}

#[tokio::test]
async fn a_report_resent_after_redis_failed_is_applied_once() {
    let mut redis = RedisServer::start().await;
    let store = redis_store(&redis, "resend:");
    let day = "2026-05-01";
    let report = Report {
        id: Some("w|3".into()),
        ..ledger_only(vec![LedgerEntry {
            key: key(day, "t", "m"),
            totals: UsageTotals {
                requests: 1,
                ..Default::default()
            },
            expire_at: now() + 3600,
        }])
    };
    redis.stop();
    let error = store.settle(&report).await.unwrap_err();
    assert!(error.to_string().starts_with("redis: report: "), "{error}");
    redis.restart().await;
    support::eventually("the store to answer again", || async {
        store.ping().await.is_ok()
    })
    .await;
    assert!(!store.settle(&report).await.unwrap().duplicate);
    assert!(store.settle(&report).await.unwrap().duplicate);
    assert_eq!(rows(&store, day).await[0].1.requests, 1);
}
