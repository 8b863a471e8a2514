//! What only the memory store does: expiry and purges by the injected clock. The behaviour
//! both stores share is tested against each in `tests/quota_store.rs`.

use super::*;
use crate::quota::testing::ManualClock;

fn charge(key: &str, hits: u64, limit: Option<u64>, expire_at: i64) -> Charge {
    Charge {
        key: key.into(),
        hits,
        limit,
        expire_at,
    }
}

#[tokio::test]
async fn windows_end_by_the_clock_and_are_purged_later() {
    let clock = ManualClock::at(1_000);
    let store = MemoryStore::new(clock.clone());
    let admitted = store
        .admit(&[charge("a", 3, Some(3), 1_030), charge("b", 1, None, 1_010)])
        .await
        .unwrap();
    assert_eq!(admitted.counts, [3, 1]);
    assert!(
        !store
            .admit(&[charge("a", 1, Some(3), 1_030)])
            .await
            .unwrap()
            .admitted
    );

    // `b`'s window is over: it counts from zero, `a` still refuses.
    clock.set(1_010);
    let outcome = store
        .admit(&[charge("b", 1, Some(1), 1_020)])
        .await
        .unwrap();
    assert_eq!((outcome.admitted, outcome.counts), (true, vec![1]));
    assert_eq!(
        store
            .adjust(&[Adjustment {
                key: "a".into(),
                delta: -1,
                expire_at: 1_030
            }])
            .await
            .unwrap(),
        [Some(2)]
    );

    // `a` ended too: a refund to it is dropped, and the purge removes both.
    clock.set(1_030);
    assert_eq!(
        store
            .adjust(&[Adjustment {
                key: "a".into(),
                delta: -1,
                expire_at: 1_030
            }])
            .await
            .unwrap(),
        [None]
    );
    assert_eq!(store.counter_keys(), 2, "not purged before a minute passed");
    clock.set(1_000 + PURGE_INTERVAL_SECONDS + 1);
    store.admit(&[]).await.unwrap();
    assert_eq!(store.counter_keys(), 0);
}

fn ledger(entries: Vec<LedgerEntry>) -> Report {
    Report {
        ledger: entries,
        max_rows_per_day: 10,
        ..Default::default()
    }
}

#[tokio::test]
async fn ledger_rows_expire() {
    let clock = ManualClock::at(5_000);
    let store = MemoryStore::new(clock.clone());
    let key = UsageKey {
        day: "1970-01-01".into(),
        tenant: "t".into(),
        model: "m".into(),
    };
    let totals = UsageTotals {
        requests: 1,
        input_tokens: 10,
        output_tokens: 20,
        refusals: 0,
        gateway_refusals: 1,
        cache_read_tokens: 30,
        cache_write_tokens: 40,
        cost_nano_usd: 5,
    };
    let entry = LedgerEntry {
        key: key.clone(),
        totals,
        expire_at: 6_000,
    };
    store
        .settle(&ledger(vec![entry.clone(), entry]))
        .await
        .unwrap();
    let days = ["1970-01-01".to_string()];
    let rows = store.query(&days, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.input_tokens, 20);
    assert_eq!(rows[0].1.gateway_refusals, 2);
    assert_eq!(
        (rows[0].1.cache_read_tokens, rows[0].1.cache_write_tokens),
        (60, 80)
    );
    assert_eq!(rows[0].1.cost_nano_usd, 10);
    assert!(store.query(&days, Some("other")).await.unwrap().is_empty());
    clock.set(6_000);
    assert!(store.query(&days, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_full_store_refuses_new_counters_after_dropping_expired_ones() {
    let clock = ManualClock::at(1_000);
    let store = MemoryStore::with_limits(clock.clone(), 3, 10);
    let admitted = store
        .admit(&[
            charge("a", 1, Some(5), 1_010),
            charge("b", 1, Some(5), 1_060),
            // A pre-check creates nothing.
            charge("z", 0, Some(5), 1_060),
        ])
        .await
        .unwrap();
    assert!(admitted.admitted);
    let full = |error: StoreError| {
        assert_eq!(
            error.0,
            "memory store full: it keeps at most 3 live counters"
        );
    };
    // Room for one more; two more fail whole: nothing is counted.
    full(
        store
            .admit(&[charge("c", 1, None, 1_060), charge("d", 1, None, 1_060)])
            .await
            .unwrap_err(),
    );
    assert_eq!(store.counter_keys(), 2);
    assert!(
        store
            .admit(&[charge("c", 1, None, 1_060)])
            .await
            .unwrap()
            .admitted
    );
    // Counters that exist still count; corrections that would create one fail.
    assert_eq!(
        store
            .admit(&[charge("a", 1, Some(5), 1_010)])
            .await
            .unwrap()
            .counts,
        [2]
    );
    let charge_d = Adjustment {
        key: "d".into(),
        delta: 5,
        expire_at: 1_060,
    };
    full(
        store
            .adjust(std::slice::from_ref(&charge_d))
            .await
            .unwrap_err(),
    );
    // A refund creates nothing, so it needs no room.
    assert_eq!(
        store
            .adjust(&[Adjustment {
                delta: -5,
                ..charge_d.clone()
            }])
            .await
            .unwrap(),
        [None]
    );
    let report = Report {
        adjustments: vec![charge_d.clone()],
        ..ledger(vec![])
    };
    full(store.settle(&report).await.unwrap_err());
    // Once `a`'s window is over, it makes room (before the purge interval).
    clock.set(1_010);
    assert_eq!(store.adjust(&[charge_d]).await.unwrap(), [Some(5)]);
    assert_eq!(store.counter_keys(), 3);
}

#[tokio::test]
async fn report_ids_are_remembered_an_hour_and_the_oldest_forgotten_first() {
    let clock = ManualClock::at(10_000);
    let store = MemoryStore::with_limits(clock.clone(), 100, 2);
    let report = |id: &str| Report {
        id: Some(id.into()),
        ..ledger(vec![LedgerEntry {
            key: UsageKey {
                day: "1970-01-01".into(),
                tenant: "t".into(),
                model: "m".into(),
            },
            totals: UsageTotals {
                requests: 1,
                ..Default::default()
            },
            expire_at: 1_000_000,
        }])
    };
    let requests = async || {
        store.query(&["1970-01-01".into()], None).await.unwrap()[0]
            .1
            .requests
    };
    let first = store.settle(&report("one")).await.unwrap();
    assert_eq!((first.duplicate, first.ids_forgotten), (false, 0));
    assert!(store.settle(&report("one")).await.unwrap().duplicate);
    assert_eq!(requests().await, 1);
    clock.set(10_001);
    assert!(!store.settle(&report("two")).await.unwrap().duplicate);
    // A third id makes the first one forgotten: it would be applied again.
    let third = store.settle(&report("three")).await.unwrap();
    assert_eq!((third.duplicate, third.ids_forgotten), (false, 1));
    assert!(store.settle(&report("two")).await.unwrap().duplicate);
    assert!(!store.settle(&report("one")).await.unwrap().duplicate);
    assert_eq!(requests().await, 4);
    // An hour after it was applied, an id is forgotten.
    clock.set(10_000 + REPORT_ID_TTL_SECONDS);
    assert!(store.settle(&report("three")).await.unwrap().duplicate);
    clock.set(10_001 + REPORT_ID_TTL_SECONDS);
    assert!(!store.settle(&report("three")).await.unwrap().duplicate);
    // Without an id, no de-duplication.
    let anonymous = Report {
        id: None,
        ..report("")
    };
    assert!(!store.settle(&anonymous).await.unwrap().duplicate);
    assert!(!store.settle(&anonymous).await.unwrap().duplicate);
    assert_eq!(requests().await, 7);
}
