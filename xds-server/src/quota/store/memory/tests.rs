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
    };
    let entry = LedgerEntry {
        key: key.clone(),
        totals,
        expire_at: 6_000,
    };
    store.record(&[entry.clone(), entry]).await.unwrap();
    let days = ["1970-01-01".to_string()];
    let rows = store.query(&days, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.input_tokens, 20);
    assert!(store.query(&days, Some("other")).await.unwrap().is_empty());
    clock.set(6_000);
    assert!(store.query(&days, None).await.unwrap().is_empty());
}
