//! The usage ledger for people, on the admin port: `GET /usage.csv` (the rows of `GET /usage`
//! as CSV, for chargeback), `GET /usage/budgets` (per tenant, its request, token and cost
//! limits and their counters now) and `GET /usage.html` (a self-contained page that shows this
//! month's use against those budgets, drawn by its own script from `/usage` and
//! `/usage/budgets`). See docs/usage-page.md.

use std::{collections::BTreeSet, sync::LazyLock, time::SystemTime};

use base64::Engine as _;
use chrono::{Datelike, NaiveDate};
use gateway_common::quota_config::{ContextKey, TOKENS_KEY, TokenKind};
use http::{HeaderName, StatusCode, header};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    answer::{Answer, quota_error},
    csv,
    quota::{
        QuotaEngine, QuotaSettings,
        keys::counter_key,
        tree::Limit,
        usage::{UsageQuery, UsageRow},
        window::{format_day, local_date, window},
    },
    util::{rfc3339, unix_seconds},
};

/// The columns of `/usage.csv`, in order.
pub const CSV_COLUMNS: [&str; 11] = [
    "day",
    "tenant",
    "model",
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "refusals",
    "gateway_refusals",
];

/// The ledger rows as CSV: a header line, then one record per row, in [`CSV_COLUMNS`]' order.
pub fn usage_csv(rows: &[UsageRow]) -> String {
    let mut out = String::with_capacity(100 * (rows.len() + 1));
    csv::push_record(&mut out, &CSV_COLUMNS);
    for row in rows {
        csv::push_record(
            &mut out,
            &[
                row.day.clone(),
                row.tenant.clone(),
                row.model.clone(),
                row.requests.to_string(),
                row.input_tokens.to_string(),
                row.output_tokens.to_string(),
                row.cache_read_tokens.to_string(),
                row.cache_write_tokens.to_string(),
                row.cost_usd.clone(),
                row.refusals.to_string(),
                row.gateway_refusals.to_string(),
            ],
        );
    }
    out
}

/// `GET /usage.csv?tenant=T&from=YYYY-MM-DD&to=YYYY-MM-DD`: the query and errors of
/// `GET /usage`, the rows as CSV, to be saved as `usage-FROM-TO.csv`.
pub async fn csv(quotas: &QuotaEngine, query: Option<&str>) -> Answer {
    let query = match UsageQuery::from_query_string(query, quotas.today()) {
        Ok(query) => query,
        Err(message) => return Answer::text(StatusCode::BAD_REQUEST, &message),
    };
    match quotas.usage(&query).await {
        Ok(rows) => Answer {
            status: StatusCode::OK,
            content_type: "text/csv; charset=utf-8",
            headers: vec![
                (
                    header::CONTENT_DISPOSITION,
                    // Both days are checked `YYYY-MM-DD`: nothing in the name needs quoting.
                    format!(
                        "attachment; filename=\"usage-{}-{}.csv\"",
                        format_day(query.from),
                        format_day(query.to)
                    ),
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            ],
            body: usage_csv(&rows),
        },
        Err(error) => quota_error(error),
    }
}

/// `/usage/budgets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budgets {
    /// The quotas' time zone (of calendar windows and of the ledger's days).
    pub time_zone: String,
    /// When the counters were read (UTC).
    pub now: String,
    /// Today in `time_zone`.
    pub today: String,
    /// This month so far, in `time_zone`: what the page asks `/usage` for.
    pub month: DayRange,
    /// Tenants with ledger rows this month (or the one asked for), sorted.
    pub tenants: Vec<TenantBudgets>,
    /// The limits of descriptors without a tenant (`key: tokens` at the top of the tree): one
    /// counter for every caller together.
    pub everyone: Vec<Budget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayRange {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantBudgets {
    pub tenant: String,
    /// The limits that apply to the tenant's descriptors `tenant` (requests) and
    /// `tenant, tokens=KIND`, in the order requests, total, input, output, cache_read,
    /// cache_write, cost; those without a limit are left out.
    pub budgets: Vec<Budget>,
}

/// One limit and its counter in the current window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// `requests`, or the token kind: `total`, `input`, `output`, `cache_read`, `cache_write`,
    /// `cost`.
    pub kind: &'static str,
    /// What `limit` and `used` count: `requests`, `tokens` or `micro_usd` (10^-6 USD).
    pub measure: &'static str,
    /// `unlimited: true` in the tree: never counted (no unit, limit, window nor counter).
    pub unlimited: bool,
    pub unit: Option<&'static str>,
    /// `requests_per_unit`.
    pub limit: Option<u64>,
    /// `rate_limit.name`.
    pub name: Option<String>,
    pub shadow_mode: bool,
    /// The current window, `[window_start, window_end)` (UTC).
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    /// The counter now: what was charged in the current window, reservations of requests in
    /// flight included.
    pub used: Option<u64>,
}

/// Descriptors without a tenant whose limits `/usage/budgets` shows, tenant ones with it.
fn kinds() -> impl Iterator<Item = Option<TokenKind>> {
    std::iter::once(None).chain(TokenKind::ALL.into_iter().map(Some))
}

/// The limit (if any) of the descriptor of `tenant` (or of everyone) and `kind` (`None`:
/// requests) at `now`, and the key of its counter.
fn limit_of(
    settings: &QuotaSettings,
    tenant: Option<&str>,
    kind: Option<TokenKind>,
    now: i64,
) -> Option<(Budget, Option<String>)> {
    let mut entries: Vec<(&str, &str)> = Vec::new();
    if let Some(tenant) = tenant {
        entries.push((ContextKey::Tenant.name(), tenant));
    }
    if let Some(kind) = kind {
        entries.push((TOKENS_KEY, kind.name()));
    }
    if entries.is_empty() {
        return None;
    }
    let measure = match kind {
        None => "requests",
        Some(TokenKind::Cost) => "micro_usd",
        Some(_) => "tokens",
    };
    let kind = kind.map_or("requests", TokenKind::name);
    let budget = Budget {
        kind,
        measure,
        unlimited: false,
        unit: None,
        limit: None,
        name: None,
        shadow_mode: false,
        window_start: None,
        window_end: None,
        used: None,
    };
    match settings.descriptors.find(&entries)? {
        Limit::Unlimited => Some((
            Budget {
                unlimited: true,
                ..budget
            },
            None,
        )),
        Limit::Rate(limit) => {
            let current = window(limit.unit, now, settings.time_zone);
            let at = |seconds: i64| {
                rfc3339(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.unsigned_abs()),
                )
            };
            let key = counter_key(
                settings.store.key_prefix(),
                &settings.domain,
                &entries,
                limit.unit,
                current.start,
            );
            Some((
                Budget {
                    unit: Some(limit.unit.name()),
                    limit: Some(limit.requests_per_unit),
                    name: limit.name.clone(),
                    shadow_mode: limit.shadow_mode,
                    window_start: Some(at(current.start)),
                    window_end: Some(at(current.end)),
                    ..budget
                },
                Some(key),
            ))
        }
    }
}

/// The first day of `today`'s month.
fn first_of_month(today: NaiveDate) -> NaiveDate {
    today.with_day(1).unwrap_or(today)
}

/// `GET /usage/budgets?tenant=T`: see [`Budgets`]. 400 for another parameter, 404 without
/// quotas, 503 when the store cannot be read.
pub async fn budgets(quotas: &QuotaEngine, query: Option<&str>, now: SystemTime) -> Answer {
    let mut tenant: Option<String> = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name != "tenant" {
            return Answer::text(
                StatusCode::BAD_REQUEST,
                &format!("{name}: unknown parameter (expected tenant)"),
            );
        }
        if tenant.replace(value.into_owned()).is_some() {
            return Answer::text(
                StatusCode::BAD_REQUEST,
                "tenant: expected once, found twice",
            );
        }
    }
    let tenant = tenant.filter(|t| !t.is_empty());
    let Some(settings) = quotas.settings() else {
        return quota_error(crate::quota::QuotaError::NotConfigured);
    };
    let now_seconds = unix_seconds(now);
    let today = local_date(now_seconds, settings.time_zone);
    let month = UsageQuery {
        tenant: tenant.clone(),
        from: first_of_month(today),
        to: today,
    };
    let tenants: BTreeSet<String> = match &tenant {
        Some(tenant) => BTreeSet::from([tenant.clone()]),
        None => match quotas.usage(&month).await {
            Ok(rows) => rows.into_iter().map(|row| row.tenant).collect(),
            Err(error) => return quota_error(error),
        },
    };
    let mut budgets = Budgets {
        time_zone: settings.time_zone.name().to_string(),
        now: rfc3339(now),
        today: format_day(today),
        month: DayRange {
            from: format_day(month.from),
            to: format_day(month.to),
        },
        tenants: Vec::with_capacity(tenants.len()),
        everyone: Vec::new(),
    };
    // Every limit with a counter, then all the counters in one read.
    let mut keys: Vec<String> = Vec::new();
    let mut slots: Vec<(Option<usize>, usize)> = Vec::new();
    let mut collect = |who: Option<&str>, into: &mut Vec<Budget>, index: Option<usize>| {
        for kind in kinds() {
            if let Some((budget, key)) = limit_of(&settings, who, kind, now_seconds) {
                if let Some(key) = key {
                    keys.push(key);
                    slots.push((index, into.len()));
                }
                into.push(budget);
            }
        }
    };
    collect(None, &mut budgets.everyone, None);
    for (index, tenant) in tenants.into_iter().enumerate() {
        let mut own = Vec::new();
        collect(Some(&tenant), &mut own, Some(index));
        budgets.tenants.push(TenantBudgets {
            tenant,
            budgets: own,
        });
    }
    let counts = match quotas.read_counters(&keys).await {
        Ok(counts) => counts,
        Err(error) => return quota_error(error),
    };
    for ((tenant, at), count) in slots.into_iter().zip(counts) {
        let list = match tenant {
            Some(index) => &mut budgets.tenants[index].budgets,
            None => &mut budgets.everyone,
        };
        list[at].used = Some(count);
    }
    match serde_json::to_string(&budgets) {
        Ok(json) => Answer {
            status: StatusCode::OK,
            content_type: "application/json",
            headers: vec![(header::X_CONTENT_TYPE_OPTIONS, "nosniff".into())],
            body: json + "\n",
        },
        Err(e) => Answer::text(StatusCode::INTERNAL_SERVER_ERROR, &format!("budgets: {e}")),
    }
}

/// The page: one HTML document with its style and script inline, nothing else to load.
pub const PAGE: &str = include_str!("usage_page.html");

/// The text between `open` and `close` in the page.
fn inline(open: &str, close: &str) -> &'static str {
    let start = PAGE.find(open).map_or(0, |at| at + open.len());
    let end = PAGE[start..].find(close).map_or(start, |at| start + at);
    &PAGE[start..end]
}

/// `'sha256-...'` of an inline script or style, as a Content-Security-Policy source.
fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// The page's Content-Security-Policy: its own script and style (by hash) and requests to
/// this origin, nothing else; no `unsafe-inline`, so markup that got in could run nothing.
pub static PAGE_CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'none'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        csp_hash(inline("<script>", "</script>")),
        csp_hash(inline("<style>", "</style>")),
    )
});

/// `GET /usage.html`.
pub fn page() -> Answer {
    let headers: Vec<(HeaderName, String)> = vec![
        (header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        (header::REFERRER_POLICY, "no-referrer".into()),
    ];
    Answer {
        status: StatusCode::OK,
        content_type: "text/html; charset=utf-8",
        headers,
        body: PAGE.to_string(),
    }
}

#[cfg(test)]
mod tests;
