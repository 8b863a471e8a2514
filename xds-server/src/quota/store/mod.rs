//! Where counters and the usage ledger live: [`memory`] (one process) or [`redis`] (shared by
//! every xds-server on it, and kept across restarts). The admission rule itself is here, pure:
//! [`admission_over`]; both stores apply it (the Redis one in a Lua script that mirrors it).
//!
//! A usage report is applied by [`UsageLedger::settle`] as one atomic step: its ledger
//! additions, its counter corrections and the record of its id (so that a batch resent under
//! the same id is applied once). Both stores are bounded: the ledger keeps at most
//! [`Report::max_rows_per_day`] rows a day (more records go to their tenant's
//! [`OTHER_MODEL`] row); the memory store at most [`memory::MAX_COUNTERS`] counters and
//! [`memory::MAX_REPORT_IDS`] report ids, and every Redis key has a time to live.

pub mod memory;
pub mod redis;

use std::collections::HashMap;

use tonic::async_trait;

/// Largest count or limit: what a Lua number (a double, in Redis scripts) holds exactly.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

/// The model of the ledger row that counts a tenant's records of a day that has no room for
/// another row (see [`Report::max_rows_per_day`]).
pub const OTHER_MODEL: &str = "(other)";

/// How long a report id is remembered (seconds): a batch resent within this time after it was
/// applied is not applied again.
pub const REPORT_ID_TTL_SECONDS: i64 = 3600;

/// Longest report id (bytes).
pub const MAX_REPORT_ID_BYTES: usize = 128;

/// One descriptor's hits for [`CounterStore::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key: String,
    pub hits: u64,
    /// `None`: counted, never refuses (shadow mode).
    pub limit: Option<u64>,
    /// Unix seconds when the counter's window ends; the key is dropped then.
    pub expire_at: i64,
}

/// The outcome of [`CounterStore::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Whether every charge was within its limit (and so all were counted).
    pub admitted: bool,
    /// Per charge, the count after the call: incremented when admitted, unchanged when not.
    pub counts: Vec<u64>,
}

/// A signed correction of one counter, for [`CounterStore::adjust`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub key: String,
    pub delta: i64,
    /// Unix seconds when the counter's window ends.
    pub expire_at: i64,
}

/// Whether `hits` more on `count` break `limit`. A pre-check (`hits` 0) is over once the limit
/// is used up.
pub fn exceeds(count: u64, hits: u64, limit: u64) -> bool {
    if hits == 0 {
        count >= limit
    } else {
        count.checked_add(hits).is_none_or(|total| total > limit)
    }
}

/// Per charge, whether it is over its limit given the counts before the call. Charges of the
/// same key in one call add up (a descriptor sent twice counts twice).
pub fn admission_over(charges: &[Charge], counts_before: &[u64]) -> Vec<bool> {
    let mut pending: HashMap<&str, u64> = HashMap::new();
    charges
        .iter()
        .zip(counts_before)
        .map(|(charge, &count)| {
            let earlier = pending.entry(charge.key.as_str()).or_default();
            let before = count.saturating_add(*earlier);
            *earlier = earlier.saturating_add(charge.hits);
            charge
                .limit
                .is_some_and(|limit| exceeds(before, charge.hits, limit))
        })
        .collect()
}

/// A store failed (Redis unreachable, timed out, answered an error; the memory store is full).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The quota counters.
#[async_trait]
pub trait CounterStore: Send + Sync + 'static {
    /// All or nothing: when any charge with a limit is over it ([`admission_over`]), nothing
    /// is counted; otherwise every charge is, atomically.
    async fn admit(&self, charges: &[Charge]) -> Result<Admission, StoreError>;
    /// Applies each correction to its counter, never going below 0, and returns the counts
    /// after. A refund (negative) to a counter that does not exist is dropped (`None`): its
    /// window is gone, or nothing was counted in it. A charge (positive) to a missing counter
    /// creates it while its window lasts (`expire_at` in the future), so usage admitted on a
    /// pre-check of 0 hits still counts; for a window that has ended it is dropped too.
    async fn adjust(&self, adjustments: &[Adjustment]) -> Result<Vec<Option<u64>>, StoreError>;
    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The store's clock minus this process's, in milliseconds, when it has one of its own
    /// and it was measured.
    fn clock_offset_ms(&self) -> Option<i64> {
        None
    }
}

/// One row of the usage ledger: a day (in the quotas' time zone), tenant and model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub tenant: String,
    /// Empty for calls that named no model.
    pub model: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Requests that were neither refused by a quota nor by the gateway.
    pub requests: u64,
    /// Prompt tokens neither read from nor written to the prompt cache.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Requests refused by a quota.
    pub refusals: u64,
    /// Requests admitted, then refused by the gateway itself (no credentials, ...).
    pub gateway_refusals: u64,
    /// Prompt tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// What the tokens cost at the filters' prices, in nano-US-dollars.
    pub cost_nano_usd: u64,
}

impl UsageTotals {
    pub fn add(&mut self, other: &UsageTotals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.refusals = self.refusals.saturating_add(other.refusals);
        self.gateway_refusals = self.gateway_refusals.saturating_add(other.gateway_refusals);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(other.cache_write_tokens);
        self.cost_nano_usd = self.cost_nano_usd.saturating_add(other.cost_nano_usd);
    }

    /// The usage records these totals count: each is a request, a refusal or a gateway
    /// refusal.
    pub fn records(&self) -> u64 {
        self.requests
            .saturating_add(self.refusals)
            .saturating_add(self.gateway_refusals)
    }
}

/// Totals to add to one ledger row, kept until `expire_at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub key: UsageKey,
    pub totals: UsageTotals,
    pub expire_at: i64,
}

/// One `ReportUsage` batch as a store applies it: all of it, once, or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The caller's id of the batch: applied only if no batch with this id was applied in the
    /// last [`REPORT_ID_TTL_SECONDS`]. `None`: applied whatever came before.
    pub id: Option<String>,
    /// Counter corrections, applied as [`CounterStore::adjust`] applies them.
    pub adjustments: Vec<Adjustment>,
    /// Additions to the ledger.
    pub ledger: Vec<LedgerEntry>,
    /// Rows (tenant and model) a day may have: an entry that would add a row to a day that has
    /// this many goes to the row of its tenant and [`OTHER_MODEL`] instead (those rows may go
    /// beyond the bound: at most one per tenant). At least 1.
    pub max_rows_per_day: u64,
}

/// What became of a [`Report`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportOutcome {
    /// A batch with the same id was applied before: nothing changed.
    pub duplicate: bool,
    /// Per adjustment, the count after, as [`CounterStore::adjust`] returns them (empty for a
    /// duplicate).
    pub counts: Vec<Option<u64>>,
    /// Records ([`UsageTotals::records`]) counted under [`OTHER_MODEL`] instead of their model.
    pub collapsed: u64,
    /// Report ids forgotten before their time to make room for this one (memory store).
    pub ids_forgotten: u64,
}

/// The usage ledger.
#[async_trait]
pub trait UsageLedger: Send + Sync + 'static {
    /// Applies `report` atomically: its id is recorded, its ledger additions and counter
    /// corrections are made, or, when the id was seen or the store fails, none of this.
    async fn settle(&self, report: &Report) -> Result<ReportOutcome, StoreError>;
    /// Every row of these days (`YYYY-MM-DD`), of one tenant or all; in no particular order.
    async fn query(
        &self,
        days: &[String],
        tenant: Option<&str>,
    ) -> Result<Vec<(UsageKey, UsageTotals)>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key: &str, hits: u64, limit: Option<u64>) -> Charge {
        Charge {
            key: key.into(),
            hits,
            limit,
            expire_at: 0,
        }
    }

    #[test]
    fn exceeding() {
        let cases = [
            // (count, hits, limit, over)
            (0, 1, 1, false),
            (1, 1, 1, true),
            (5, 5, 10, false),
            (5, 6, 10, true),
            (0, 11, 10, true),
            // A pre-check is over once nothing is left.
            (9, 0, 10, false),
            (10, 0, 10, true),
            (0, 0, 0, true),
            (u64::MAX, 1, u64::MAX, true),
        ];
        for (count, hits, limit, over) in cases {
            assert_eq!(
                exceeds(count, hits, limit),
                over,
                "{count}+{hits} vs {limit}"
            );
        }
    }

    #[test]
    fn over_flags_add_up_repeated_keys_and_ignore_shadow_limits() {
        let charges = [
            charge("a", 3, Some(5)),
            charge("a", 3, Some(5)),
            charge("b", 100, None),
            charge("c", 0, Some(2)),
        ];
        assert_eq!(
            admission_over(&charges, &[0, 0, 1_000, 2]),
            [false, true, false, true]
        );
        assert_eq!(
            admission_over(&charges, &[0, 0, 0, 1]),
            [false, true, false, false]
        );
    }
}
