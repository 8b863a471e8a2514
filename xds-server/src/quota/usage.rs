//! Usage reports and the ledger, pure: [`settle`] turns a `ReportUsage` batch into ledger
//! additions and counter corrections (those of its records, and the allowance units it gives
//! back); [`UsageQuery`] checks what `GetUsage` and `GET /usage`
//! ask for; [`rows`] sorts the answer.
//!
//! A correction goes to the window its decision named (`UNIT/START`, see
//! [`window_label`](super::window::window_label)), whatever unit the limit its entries match
//! has now; one that names none goes to the window of the limit's unit that contained the
//! request's `admitted_at`. Corrections that name a window that is not one (an unknown unit, a
//! start that is not its window's), a window that has ended or starts more than five minutes
//! after `now`, descriptors that match no counted
//! limit now, and of records without `admitted_at` and window are dropped (and counted).
//! Records refused by a quota were never charged, so their corrections (there should be none)
//! are ignored; records refused by the gateway after admission give their charges back
//! through theirs. Allowance units given back (`ReportUsageRequest.returned`) are corrections
//! too, each to the window it names (one that names none is dropped): only negative ones, a
//! positive one is dropped. Model values (of records and of `model` entries) are model keys
//! ([`gateway_common::model::key`]), as the filter sends them.

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeDelta};
use gateway_common::{
    model,
    proto::{self, CounterAdjustment, UsageRecord},
};
use serde::Serialize;

use super::{
    decide::canonical_entries,
    keys::counter_key,
    settings::QuotaSettings,
    store::{Adjustment, LedgerEntry, MAX_COUNT, UsageKey, UsageTotals},
    tree::Limit,
    window::{format_day, local_date, local_midnight, parse_day, parse_window_label, window},
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
    /// Allowance units given back to a counter (in `adjustments`, added up with the
    /// corrections of the same counter).
    pub returned_units: u64,
}

/// Settles `records`, and the allowance units `returned` gives back, at `now` (Unix seconds).
pub fn settle(
    settings: &QuotaSettings,
    records: &[UsageRecord],
    returned: &[CounterAdjustment],
    now: i64,
) -> Settlement {
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
            model: model::key(&record.model),
        };
        ledger.entry(key).or_default().add(&totals(record));
        if record.refused {
            continue;
        }
        for adjustment in record.adjustments.iter().filter(|a| a.delta != 0) {
            let Some(correction) = correction(settings, adjustment, admitted_at, now) else {
                dropped += 1;
                continue;
            };
            add(&mut adjustments, correction);
        }
    }
    let mut returned_units: u64 = 0;
    for given_back in returned.iter().filter(|a| a.delta != 0) {
        // Allowances only give back: a positive return would charge what no decision admitted.
        let correction = (given_back.delta < 0)
            .then(|| correction(settings, given_back, None, now))
            .flatten();
        let Some(correction) = correction else {
            dropped += 1;
            continue;
        };
        returned_units = returned_units.saturating_add(correction.delta.unsigned_abs());
        add(&mut adjustments, correction);
    }
    let max = i64::try_from(MAX_COUNT).unwrap_or(i64::MAX);
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
        adjustments: adjustments
            .into_values()
            .filter(|a| a.delta != 0)
            .map(|a| Adjustment {
                // No count holds more: a larger correction means the same.
                delta: a.delta.clamp(-max, max),
                ..a
            })
            .collect(),
        dropped,
        returned_units,
    }
}

/// Adds `correction` to the one of the same counter in `adjustments`.
fn add(adjustments: &mut BTreeMap<String, Adjustment>, correction: Adjustment) {
    adjustments
        .entry(correction.key.clone())
        .and_modify(|a| a.delta = a.delta.saturating_add(correction.delta))
        .or_insert(correction);
}

/// What one record adds to its ledger row: a request with its tokens, a refusal by a quota or
/// a refusal by the gateway (which used no tokens).
fn totals(record: &UsageRecord) -> UsageTotals {
    if record.refused {
        UsageTotals {
            refusals: 1,
            ..Default::default()
        }
    } else if record.refused_by_gateway {
        UsageTotals {
            gateway_refusals: 1,
            ..Default::default()
        }
    } else {
        UsageTotals {
            requests: 1,
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cache_read_tokens: record.cache_read_input_tokens,
            cache_write_tokens: record.cache_write_input_tokens,
            cost_nano_usd: record.cost_nano_usd,
            ..Default::default()
        }
    }
}

/// How far in the future a named window may start: the clock difference tolerated between the
/// server that decided and the one that settles.
const MAX_CLOCK_AHEAD_SECONDS: i64 = 300;

/// The counter correction `adjustment` makes at `now`, if any: to the window it names, else to
/// the window of its limit's unit that contained `admitted_at`.
fn correction(
    settings: &QuotaSettings,
    adjustment: &CounterAdjustment,
    admitted_at: Option<i64>,
    now: i64,
) -> Option<Adjustment> {
    let tz = settings.time_zone;
    let entries = canonical_entries(
        adjustment
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str())),
    );
    let Some(Limit::Rate(limit)) = settings.descriptors.find(&entries) else {
        return None;
    };
    let (unit, window) = if adjustment.window.is_empty() {
        (limit.unit, window(limit.unit, admitted_at?, tz))
    } else {
        // The window admission charged, in its own unit even if the limit has another now.
        parse_window_label(&adjustment.window, tz)?
    };
    // A window that has ended is gone; one that has not begun was never charged (beyond the
    // clock difference servers sharing a store may have): neither gets a counter.
    if window.end <= now || window.start > now.saturating_add(MAX_CLOCK_AHEAD_SECONDS) {
        return None;
    }
    Some(Adjustment {
        key: counter_key(
            settings.store.key_prefix(),
            &settings.domain,
            &entries,
            unit,
            window.start,
        ),
        delta: adjustment.delta,
        expire_at: window.end,
    })
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
    pub gateway_refusals: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Nano-US-dollars (10^-9 USD): exact, the sum of what each request cost.
    pub cost_nano_usd: u64,
    /// The same in US dollars, as a decimal string (`"0.001234567"`).
    pub cost_usd: String,
}

/// Nano-US-dollars as a decimal string of US dollars, every digit kept.
pub fn usd(nano: u64) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
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
            gateway_refusals: totals.gateway_refusals,
            cache_read_tokens: totals.cache_read_tokens,
            cache_write_tokens: totals.cache_write_tokens,
            cost_nano_usd: totals.cost_nano_usd,
            cost_usd: usd(totals.cost_nano_usd),
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
            gateway_refusals: row.gateway_refusals,
            cache_read_input_tokens: row.cache_read_tokens,
            cache_write_input_tokens: row.cache_write_tokens,
            cost_nano_usd: row.cost_nano_usd,
        }
    }
}

#[cfg(test)]
mod tests;
