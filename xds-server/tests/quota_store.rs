//! The same behaviour asked of both quota stores: the memory store, and the Redis store
//! against a real `redis-server` on a free port.

mod support;

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use support::redis::RedisServer;
use xds_server::{
    credentials::{Secret, SystemClock},
    quota::{
        RedisSettings,
        store::{
            Adjustment, Charge, CounterStore, LedgerEntry, UsageKey, UsageLedger, UsageTotals,
            memory::MemoryStore, redis::RedisStore,
        },
    },
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
    let key = |day: &str, tenant: &str, model: &str| UsageKey {
        day: day.into(),
        tenant: tenant.into(),
        model: model.into(),
    };
    let totals = |requests: u64| UsageTotals {
        requests,
        input_tokens: 10 * requests,
        output_tokens: 20 * requests,
        refusals: 1,
    };
    let keep = now() + 3600;
    let entry = |key: UsageKey, totals: UsageTotals, expire_at: i64| LedgerEntry {
        key,
        totals,
        expire_at,
    };
    store
        .record(&[
            entry(key("2026-01-01", "team|a", "m=1"), totals(1), keep),
            entry(key("2026-01-01", "b", ""), totals(2), keep),
            entry(key("2026-01-02", "team|a", "m=1"), totals(3), keep),
            entry(key("2026-01-03", "team|a", "old"), totals(1), now() - 1),
        ])
        .await
        .unwrap();
    store
        .record(&[entry(key("2026-01-01", "team|a", "m=1"), totals(1), keep)])
        .await
        .unwrap();
    let days = |list: &[&str]| list.iter().map(|d| d.to_string()).collect::<Vec<_>>();
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

async fn conformance(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    all_or_nothing(&*store).await;
    pre_checks_count_nothing(&*store).await;
    shadow_and_repeated_keys(&*store).await;
    corrections(&*store).await;
    windows_expire(&*store).await;
    ledger(&*store).await;
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
