//! Usage reports and the ledger, pure: [`settle`] turns a `ReportUsage` batch into ledger
//! additions and counter corrections; [`UsageQuery`] checks what `GetUsage` and `GET /usage`
//! ask for; [`rows`] sorts the answer.
//!
//! A correction goes to the window that contained the request's `admitted_at`, under the limit
//! its entries match now; corrections to windows that have ended, to descriptors that match no
//! counted limit, and of records without `admitted_at` are dropped (and counted). Refused
//! records were never charged, so their corrections (there should be none) are ignored.

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeDelta};
use gateway_common::proto::{self, UsageRecord};
use serde::Serialize;

use super::{
    QuotaSettings,
    keys::counter_key,
    store::{Adjustment, LedgerEntry, UsageKey, UsageTotals},
    tree::Limit,
    window::{format_day, local_date, local_midnight, parse_day, window},
};

/// Days a ledger row is kept after its day ends.
pub const RETENTION_DAYS: i64 = 400;
/// Longest range one query may cover.
pub const MAX_QUERY_DAYS: i64 = RETENTION_DAYS + 1;

/// What one batch of usage records changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settlement {
    /// One entry per day, tenant and model in the batch.
    pub ledger: Vec<LedgerEntry>,
    /// One per counter (corrections of the same counter added up).
    pub adjustments: Vec<Adjustment>,
    /// Corrections that apply to no counter.
    pub dropped: u64,
}

/// Settles `records` at `now` (Unix seconds).
pub fn settle(settings: &QuotaSettings, records: &[UsageRecord], now: i64) -> Settlement {
    let tz = settings.time_zone;
    let mut ledger: BTreeMap<UsageKey, UsageTotals> = BTreeMap::new();
    let mut adjustments: BTreeMap<String, Adjustment> = BTreeMap::new();
    let mut dropped = 0;
    for record in records {
        let admitted_at =
            (record.admitted_at_unix_seconds > 0).then_some(record.admitted_at_unix_seconds);
        let key = UsageKey {
            day: format_day(local_date(admitted_at.unwrap_or(now), tz)),
            tenant: record.tenant.clone(),
            model: record.model.clone(),
        };
        let totals = if record.refused {
            UsageTotals {
                refusals: 1,
                ..Default::default()
            }
        } else {
            UsageTotals {
                requests: 1,
                input_tokens: record.input_tokens,
                output_tokens: record.output_tokens,
                refusals: 0,
            }
        };
        ledger.entry(key).or_default().add(&totals);
        if record.refused {
            continue;
        }
        for adjustment in record.adjustments.iter().filter(|a| a.delta != 0) {
            let entries: Vec<(&str, &str)> = adjustment
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            let limit = match (admitted_at, settings.descriptors.find(&entries)) {
                (Some(at), Some(Limit::Rate(limit))) => Some((at, limit)),
                _ => None,
            };
            let Some((at, limit)) = limit else {
                dropped += 1;
                continue;
            };
            let window = window(limit.unit, at, tz);
            if window.end <= now {
                dropped += 1;
                continue;
            }
            let key = counter_key(
                settings.store.key_prefix(),
                &settings.domain,
                &entries,
                limit.unit,
                window.start,
            );
            adjustments
                .entry(key.clone())
                .and_modify(|a| a.delta = a.delta.saturating_add(adjustment.delta))
                .or_insert(Adjustment {
                    key,
                    delta: adjustment.delta,
                    expire_at: window.end,
                });
        }
    }
    Settlement {
        ledger: ledger
            .into_iter()
            .map(|(key, totals)| {
                let expire_at = ledger_expiry(&key.day, settings);
                LedgerEntry {
                    key,
                    totals,
                    expire_at,
                }
            })
            .collect(),
        adjustments: adjustments.into_values().filter(|a| a.delta != 0).collect(),
        dropped,
    }
}

/// A ledger row is kept until [`RETENTION_DAYS`] after its day ends.
fn ledger_expiry(day: &str, settings: &QuotaSettings) -> i64 {
    let date = parse_day(day).unwrap_or_default();
    let end = date
        .checked_add_signed(TimeDelta::days(RETENTION_DAYS + 1))
        .unwrap_or(date);
    local_midnight(end, settings.time_zone)
}

/// A checked ledger query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only this tenant; `None` for every tenant.
    pub tenant: Option<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl UsageQuery {
    /// From `GetUsage`'s fields: an empty tenant is every tenant, an empty day is `today`.
    pub fn new(tenant: &str, from: &str, to: &str, today: NaiveDate) -> Result<Self, String> {
        let day = |name: &str, text: &str| {
            if text.is_empty() {
                return Ok(today);
            }
            parse_day(text)
                .ok_or_else(|| format!("{name}: expected a day as YYYY-MM-DD, found {text:?}"))
        };
        let from_day = day("from", from)?;
        let to_day = day("to", to)?;
        if from_day > to_day {
            return Err(format!(
                "from: expected a day no later than to ({to_day}), found {from:?}"
            ));
        }
        if (to_day - from_day).num_days() >= MAX_QUERY_DAYS {
            return Err(format!(
                "to: expected at most {MAX_QUERY_DAYS} days from `from`, found {to:?}"
            ));
        }
        Ok(Self {
            tenant: (!tenant.is_empty()).then(|| tenant.to_string()),
            from: from_day,
            to: to_day,
        })
    }

    /// From the query string of `GET /usage?tenant=T&from=YYYY-MM-DD&to=YYYY-MM-DD`.
    pub fn from_query_string(query: Option<&str>, today: NaiveDate) -> Result<Self, String> {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !matches!(name.as_ref(), "tenant" | "from" | "to") {
                return Err(format!(
                    "{name}: unknown parameter (expected tenant, from, to)"
                ));
            }
            if fields.insert(name.to_string(), value.to_string()).is_some() {
                return Err(format!("{name}: expected once, found twice"));
            }
        }
        let field = |name: &str| fields.get(name).map_or("", String::as_str);
        Self::new(field("tenant"), field("from"), field("to"), today)
    }

    /// Every day of the range, `YYYY-MM-DD`.
    pub fn days(&self) -> Vec<String> {
        self.from
            .iter_days()
            .take_while(|day| *day <= self.to)
            .map(format_day)
            .collect()
    }
}

/// One ledger row, as `GET /usage` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub day: String,
    pub tenant: String,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub refusals: u64,
}

/// Rows sorted by day, tenant and model.
pub fn rows(found: Vec<(UsageKey, UsageTotals)>) -> Vec<UsageRow> {
    let mut merged: BTreeMap<UsageKey, UsageTotals> = BTreeMap::new();
    for (key, totals) in found {
        merged.entry(key).or_default().add(&totals);
    }
    merged
        .into_iter()
        .map(|(key, totals)| UsageRow {
            day: key.day,
            tenant: key.tenant,
            model: key.model,
            requests: totals.requests,
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
            refusals: totals.refusals,
        })
        .collect()
}

impl From<UsageRow> for proto::UsageRow {
    fn from(row: UsageRow) -> Self {
        Self {
            day: row.day,
            tenant: row.tenant,
            model: row.model,
            requests: row.requests,
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            refusals: row.refusals,
            gateway_refusals: 0,
        }
    }
}

#[cfg(test)]
mod tests;
