//! Counters and ledger in this process's memory: a mutex'd map each. Counters count only while
//! their window lasts (by the injected clock) and expired ones are purged at most once a
//! minute, during the next operation (or at once when the store is full). Lost when the
//! process stops, or when `quotas.store` changes; kept across every other configuration change.
//!
//! Bounded: at most [`MAX_COUNTERS`] counters (an operation that would create one more, once
//! the expired ones are dropped, fails with a [`StoreError`]), at most [`MAX_REPORT_IDS`]
//! report ids (the oldest forgotten first), and the ledger's rows per day as each report says.
//! A report is applied under both locks (counters, then ledger; nothing else takes both).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use tonic::async_trait;

use super::{
    Adjustment, Admission, Charge, CounterStore, LedgerEntry, OTHER_MODEL, REPORT_ID_TTL_SECONDS,
    Report, ReportOutcome, StoreError, UsageKey, UsageLedger, UsageTotals, admission_over,
};
use crate::{
    util::Clock,
    util::{lock, unix_seconds},
};

/// Seconds between purges of expired counters and ledger rows.
const PURGE_INTERVAL_SECONDS: i64 = 60;

/// Most counters kept at once (callers choose part of their keys: model ids).
pub const MAX_COUNTERS: usize = 1_000_000;

/// Most report ids remembered at once; beyond, the oldest are forgotten first.
pub const MAX_REPORT_IDS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Counter {
    count: u64,
    expire_at: i64,
}

#[derive(Debug)]
struct Counters {
    map: HashMap<String, Counter>,
    last_purge: i64,
    max: usize,
}

impl Counters {
    fn purge(&mut self, now: i64) {
        if now - self.last_purge >= PURGE_INTERVAL_SECONDS {
            self.purge_now(now);
        }
    }

    fn purge_now(&mut self, now: i64) {
        self.map.retain(|_, counter| counter.expire_at > now);
        self.last_purge = now;
    }

    fn live(&self, key: &str, now: i64) -> Option<Counter> {
        self.map
            .get(key)
            .copied()
            .filter(|counter| counter.expire_at > now)
    }

    /// Makes room for the counters `keys` would create (those not kept yet), dropping expired
    /// counters when needed; an error, with nothing changed, when there still is none.
    fn make_room<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let keys: Vec<&str> = keys.into_iter().collect();
        if self.map.len().saturating_add(keys.len()) <= self.max {
            return Ok(());
        }
        let keys: HashSet<&str> = keys.into_iter().collect();
        let fits = |map: &HashMap<String, Counter>, max: usize| {
            let new = keys.iter().filter(|key| !map.contains_key(**key)).count();
            map.len().saturating_add(new) <= max
        };
        if fits(&self.map, self.max) {
            return Ok(());
        }
        self.purge_now(now);
        if fits(&self.map, self.max) {
            return Ok(());
        }
        Err(StoreError(format!(
            "memory store full: it keeps at most {} live counters",
            self.max
        )))
    }

    /// One correction, as [`CounterStore::adjust`] says (room already made).
    fn adjust(&mut self, adjustment: &Adjustment, now: i64) -> Option<u64> {
        if self.live(&adjustment.key, now).is_none() {
            if adjustment.delta <= 0 || adjustment.expire_at <= now {
                return None;
            }
            let fresh = Counter {
                count: 0,
                expire_at: adjustment.expire_at,
            };
            self.map.insert(adjustment.key.clone(), fresh);
        }
        let counter = self.map.get_mut(&adjustment.key)?;
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
    }
}

/// The keys of the counters `adjustments` may create: charges to windows that last.
fn created_by(adjustments: &[Adjustment], now: i64) -> impl Iterator<Item = &str> {
    adjustments
        .iter()
        .filter(move |a| a.delta > 0 && a.expire_at > now)
        .map(|a| a.key.as_str())
}

/// Ids of applied reports, each until it expires; at most `max`, the oldest forgotten first.
#[derive(Debug)]
struct ReportIds {
    expiry: HashMap<String, i64>,
    /// In the order they were remembered (with the same time to live: by expiry).
    order: VecDeque<(String, i64)>,
    max: usize,
}

impl ReportIds {
    fn purge(&mut self, now: i64) {
        while let Some((id, at)) = self.order.front() {
            if *at > now {
                break;
            }
            if self.expiry.get(id) == Some(at) {
                self.expiry.remove(id);
            }
            self.order.pop_front();
        }
    }

    fn seen(&self, id: &str, now: i64) -> bool {
        self.expiry.get(id).is_some_and(|at| *at > now)
    }

    /// Remembers `id`; returns how many ids were forgotten to make room.
    fn remember(&mut self, id: &str, now: i64) -> u64 {
        let at = now.saturating_add(REPORT_ID_TTL_SECONDS);
        self.expiry.insert(id.to_string(), at);
        self.order.push_back((id.to_string(), at));
        let mut forgotten = 0;
        while self.expiry.len() > self.max {
            let Some((oldest, at)) = self.order.pop_front() else {
                break;
            };
            if self.expiry.get(&oldest) == Some(&at) {
                self.expiry.remove(&oldest);
                forgotten += 1;
            }
        }
        forgotten
    }
}

#[derive(Debug)]
struct Ledger {
    rows: HashMap<UsageKey, (UsageTotals, i64)>,
    /// Rows kept per day.
    rows_per_day: HashMap<String, u64>,
    last_purge: i64,
    reports: ReportIds,
}

impl Ledger {
    fn purge(&mut self, now: i64) {
        if now - self.last_purge < PURGE_INTERVAL_SECONDS {
            return;
        }
        self.rows.retain(|_, (_, expire_at)| *expire_at > now);
        self.rows_per_day.clear();
        for key in self.rows.keys() {
            *self.rows_per_day.entry(key.day.clone()).or_default() += 1;
        }
        self.last_purge = now;
    }

    /// Adds `entry` to its row or, when its day has `max_rows` rows and it is not one of them,
    /// to its tenant's [`OTHER_MODEL`] row. Returns the records so collapsed.
    fn add(&mut self, entry: &LedgerEntry, max_rows: u64) -> u64 {
        let day_rows = self.rows_per_day.get(&entry.key.day).copied().unwrap_or(0);
        let key = if self.rows.contains_key(&entry.key) || day_rows < max_rows {
            entry.key.clone()
        } else {
            UsageKey {
                model: OTHER_MODEL.to_string(),
                ..entry.key.clone()
            }
        };
        let collapsed = if key.model == entry.key.model {
            0
        } else {
            entry.totals.records()
        };
        match self.rows.get_mut(&key) {
            Some((totals, expire_at)) => {
                totals.add(&entry.totals);
                *expire_at = (*expire_at).max(entry.expire_at);
            }
            None => {
                *self.rows_per_day.entry(key.day.clone()).or_default() += 1;
                self.rows.insert(key, (entry.totals, entry.expire_at));
            }
        }
        collapsed
    }
}

pub struct MemoryStore {
    counters: Mutex<Counters>,
    ledger: Mutex<Ledger>,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_limits(clock, MAX_COUNTERS, MAX_REPORT_IDS)
    }

    /// A store that keeps at most `max_counters` counters and `max_report_ids` report ids.
    pub fn with_limits(clock: Arc<dyn Clock>, max_counters: usize, max_report_ids: usize) -> Self {
        Self {
            counters: Mutex::new(Counters {
                map: HashMap::new(),
                last_purge: 0,
                max: max_counters,
            }),
            ledger: Mutex::new(Ledger {
                rows: HashMap::new(),
                rows_per_day: HashMap::new(),
                last_purge: 0,
                reports: ReportIds {
                    expiry: HashMap::new(),
                    order: VecDeque::new(),
                    max: max_report_ids,
                },
            }),
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
        counters.make_room(
            charges
                .iter()
                .filter(|charge| charge.hits > 0)
                .map(|charge| charge.key.as_str()),
            now,
        )?;
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
        counters.make_room(created_by(adjustments, now), now)?;
        Ok(adjustments
            .iter()
            .map(|adjustment| counters.adjust(adjustment, now))
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl UsageLedger for MemoryStore {
    async fn settle(&self, report: &Report) -> Result<ReportOutcome, StoreError> {
        let now = self.now();
        let mut counters = lock(&self.counters);
        let mut ledger = lock(&self.ledger);
        ledger.reports.purge(now);
        if let Some(id) = &report.id
            && ledger.reports.seen(id, now)
        {
            return Ok(ReportOutcome {
                duplicate: true,
                ..Default::default()
            });
        }
        counters.purge(now);
        counters.make_room(created_by(&report.adjustments, now), now)?;
        let counts = report
            .adjustments
            .iter()
            .map(|adjustment| counters.adjust(adjustment, now))
            .collect();
        drop(counters);
        ledger.purge(now);
        let collapsed = report
            .ledger
            .iter()
            .map(|entry| ledger.add(entry, report.max_rows_per_day))
            .sum();
        let ids_forgotten = report
            .id
            .as_deref()
            .map_or(0, |id| ledger.reports.remember(id, now));
        Ok(ReportOutcome {
            duplicate: false,
            counts,
            collapsed,
            ids_forgotten,
        })
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
