//! Counters and ledger in this process's memory: a mutex'd map each. Counters count only while
//! their window lasts (by the injected clock) and expired ones are purged at most once a
//! minute, during the next operation. Lost when the process stops, or when `quotas.store`
//! changes; kept across every other configuration change.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use tonic::async_trait;

use super::{
    Adjustment, Admission, Charge, CounterStore, LedgerEntry, StoreError, UsageKey, UsageLedger,
    UsageTotals, admission_over,
};
use crate::{
    credentials::Clock,
    util::{lock, unix_seconds},
};

/// Seconds between purges of expired counters and ledger rows.
const PURGE_INTERVAL_SECONDS: i64 = 60;

#[derive(Debug, Clone, Copy)]
struct Counter {
    count: u64,
    expire_at: i64,
}

#[derive(Debug, Default)]
struct Counters {
    map: HashMap<String, Counter>,
    last_purge: i64,
}

impl Counters {
    fn purge(&mut self, now: i64) {
        if now - self.last_purge >= PURGE_INTERVAL_SECONDS {
            self.map.retain(|_, counter| counter.expire_at > now);
            self.last_purge = now;
        }
    }

    fn live(&self, key: &str, now: i64) -> Option<Counter> {
        self.map
            .get(key)
            .copied()
            .filter(|counter| counter.expire_at > now)
    }
}

#[derive(Debug, Default)]
struct Ledger {
    rows: HashMap<UsageKey, (UsageTotals, i64)>,
    last_purge: i64,
}

pub struct MemoryStore {
    counters: Mutex<Counters>,
    ledger: Mutex<Ledger>,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            counters: Mutex::default(),
            ledger: Mutex::default(),
            clock,
        }
    }

    fn now(&self) -> i64 {
        unix_seconds(self.clock.now())
    }

    /// Counters kept now, expired or not yet purged included (for tests of the purge).
    pub fn counter_keys(&self) -> usize {
        lock(&self.counters).map.len()
    }
}

#[async_trait]
impl CounterStore for MemoryStore {
    async fn admit(&self, charges: &[Charge]) -> Result<Admission, StoreError> {
        let now = self.now();
        let mut counters = lock(&self.counters);
        counters.purge(now);
        let before: Vec<u64> = charges
            .iter()
            .map(|charge| counters.live(&charge.key, now).map_or(0, |c| c.count))
            .collect();
        if admission_over(charges, &before).contains(&true) {
            return Ok(Admission {
                admitted: false,
                counts: before,
            });
        }
        let counts = charges
            .iter()
            .map(|charge| {
                if charge.hits == 0 {
                    return counters.live(&charge.key, now).map_or(0, |c| c.count);
                }
                let fresh = Counter {
                    count: 0,
                    expire_at: charge.expire_at,
                };
                let counter = counters.map.entry(charge.key.clone()).or_insert(fresh);
                if counter.expire_at <= now {
                    *counter = fresh;
                }
                counter.count = counter.count.saturating_add(charge.hits);
                counter.expire_at = charge.expire_at;
                counter.count
            })
            .collect();
        Ok(Admission {
            admitted: true,
            counts,
        })
    }

    async fn adjust(&self, adjustments: &[Adjustment]) -> Result<Vec<Option<u64>>, StoreError> {
        let now = self.now();
        let mut counters = lock(&self.counters);
        counters.purge(now);
        Ok(adjustments
            .iter()
            .map(|adjustment| {
                let live = counters
                    .map
                    .get(&adjustment.key)
                    .is_some_and(|counter| counter.expire_at > now);
                if !live {
                    if adjustment.delta <= 0 || adjustment.expire_at <= now {
                        return None;
                    }
                    let fresh = Counter {
                        count: 0,
                        expire_at: adjustment.expire_at,
                    };
                    counters.map.insert(adjustment.key.clone(), fresh);
                }
                let counter = counters.map.get_mut(&adjustment.key)?;
                counter.count = if adjustment.delta < 0 {
                    counter
                        .count
                        .saturating_sub(adjustment.delta.unsigned_abs())
                } else {
                    counter
                        .count
                        .saturating_add(adjustment.delta.unsigned_abs())
                };
                counter.expire_at = adjustment.expire_at;
                Some(counter.count)
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl UsageLedger for MemoryStore {
    async fn record(&self, entries: &[LedgerEntry]) -> Result<(), StoreError> {
        let now = self.now();
        let mut ledger = lock(&self.ledger);
        if now - ledger.last_purge >= PURGE_INTERVAL_SECONDS {
            ledger.rows.retain(|_, (_, expire_at)| *expire_at > now);
            ledger.last_purge = now;
        }
        for entry in entries {
            let row = ledger
                .rows
                .entry(entry.key.clone())
                .or_insert((UsageTotals::default(), entry.expire_at));
            row.0.add(&entry.totals);
            row.1 = row.1.max(entry.expire_at);
        }
        Ok(())
    }

    async fn query(
        &self,
        days: &[String],
        tenant: Option<&str>,
    ) -> Result<Vec<(UsageKey, UsageTotals)>, StoreError> {
        let now = self.now();
        let days: HashSet<&str> = days.iter().map(String::as_str).collect();
        Ok(lock(&self.ledger)
            .rows
            .iter()
            .filter(|(key, (_, expire_at))| {
                *expire_at > now
                    && days.contains(key.day.as_str())
                    && tenant.is_none_or(|t| t == key.tenant)
            })
            .map(|(key, (totals, _))| (key.clone(), *totals))
            .collect())
    }
}

#[cfg(test)]
mod tests;
